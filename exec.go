package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// runner starts ansible-playbook for a job and captures its output line by line.
type runner struct {
	// playbookCmd is the ansible-playbook to run: a path, or a name looked up in PATH.
	playbookCmd string
	// playbookDir is -playbook-dir, real and absolute: an external playbook must still lie
	// inside it when its job starts, not only when it was submitted.
	playbookDir string
	// dataDir is -data-dir, real and absolute: no playbook may lie in it.
	dataDir string
	// inventoryDir is -inventory-dir, real and absolute: inventory paths must still lie in it
	// when their job starts.
	inventoryDir string
	// vaultArgs are the -vault-password-file and -vault-id options every run gets, so that
	// playbooks and inventories in -playbook-dir may use vaulted files and variables. Only
	// the files' paths are here; no password passes through charond.
	vaultArgs []string
	// templateVars hands job variables to Ansible as templates (-allow-jinja-in-vars); by
	// default they are text Ansible never templates.
	templateVars bool
	// workRoot holds one work dir per running job (-data-dir/work).
	workRoot string
	// killGrace is how long a cancelled job has between SIGTERM and SIGKILL.
	killGrace time.Duration
	// maxLine is the longest line kept; the rest of a longer line is dropped and the line says so.
	maxLine int
	// envAllow names the variables of charond's environment that a job inherits: exact names,
	// or prefixes ending in '*'. Everything else, CHARON_TOKEN included, stays out.
	envAllow []string
	// extraEnv is added to the child's environment after the allowed ones (tests use it to
	// turn the test binary into a fake ansible-playbook).
	extraEnv []string
	// contain finds every process of a run, however detached, to kill what is left at its end.
	contain *containment
	// noteFault reports a failure to write the work dir, which lives in -data-dir, to the
	// store's health; nil in tests that run no store.
	noteFault func(error)
}

// pipeGrace is how long output may keep arriving after ansible-playbook has exited and what
// it left was killed. Only a process that containment missed (one that, without cgroup v2,
// cleared its environment) can still hold the pipes then; after this grace charond stops
// reading rather than wait for it.
var pipeGrace = 2 * time.Second

// runResult is how a run ended.
type runResult struct {
	exitCode int            // the process's exit code; meaningful when !killed, signal == 0 and startErr == nil
	signal   syscall.Signal // the signal that ended the process, or 0 if it exited
	killed   bool           // charond signalled the process group because the run's context ended
	startErr error
}

// lineSink receives a batch of complete lines read from one of the child's pipes. The lines
// are only valid during the call.
type lineSink func(stream string, lines [][]byte)

// runHooks are how a run reports back while it goes.
type runHooks struct {
	lines   lineSink                         // output lines, stream "stdout" or "stderr"
	events  func([]byte)                     // each line the callback plugin writes
	started func(pgid int, command []string) // once the process runs: its group and what it executed
}

// eventsFD is the child's file descriptor for the callback plugin's pipe: the first of
// cmd.ExtraFiles, after stdin, stdout and stderr.
const eventsFD = 3

// run executes the job's playbook until it exits or ctx ends, reporting to hooks. It returns
// only after the process is reaped, everything it started is killed, and every pipe is read.
func (r *runner) run(ctx context.Context, job *Job, hooks runHooks) runResult {
	workDir, err := r.prepareWorkDir(job)
	if err != nil {
		return runResult{startErr: err}
	}
	defer os.RemoveAll(workDir)

	cmd := r.command(job, workDir)
	reads, writes, err := attachPipes(cmd)
	if err != nil {
		return runResult{startErr: err}
	}
	scope := r.contain.enter(job.ID)
	defer scope.remove()
	if cmd, err = scope.start(cmd); err != nil {
		closeAll(append(reads, writes...)...)
		return runResult{startErr: r.explainStartError(err)}
	}
	// The child has its own copies of the write ends; ours must go, or EOF never comes.
	closeAll(writes...)
	// Setpgid makes the group id the child's pid. The command is the program's resolved path,
	// then the arguments it was given.
	hooks.started(cmd.Process.Pid, append([]string{cmd.Path}, cmd.Args[1:]...))

	var readers sync.WaitGroup
	readers.Add(3)
	go func() { defer readers.Done(); readLines(reads[0], "stdout", r.maxLine, hooks.lines) }()
	go func() { defer readers.Done(); readLines(reads[1], "stderr", r.maxLine, hooks.lines) }()
	go func() {
		defer readers.Done()
		readLines(reads[2], "events", r.maxLine, func(_ string, lines [][]byte) {
			for _, l := range lines {
				hooks.events(l)
			}
		})
	}()

	killed := r.waitOrKill(ctx, cmd, scope)
	// Leftovers (a playbook's background job, a daemon that called setsid, an async task) would
	// outlive the job and may hold the pipes open: kill them all now that the leader is gone,
	// before waiting for the pipes.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	scope.killAll()
	waitReaders(&readers, pipeGrace, reads...)

	res := runResult{killed: killed, exitCode: cmd.ProcessState.ExitCode()}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		res.signal = ws.Signal()
	}
	return res
}

// waitOrKill waits for the process to exit. If ctx ends first it sends SIGTERM to the whole
// process group (ansible-playbook ignores SIGINT while a task runs, and cleans up on SIGTERM),
// then after killGrace SIGKILL to the group and to everything in the run's scope, which reaches
// a leader that left its group too. It reports whether it signalled.
func (r *runner) waitOrKill(ctx context.Context, cmd *exec.Cmd, scope *jobScope) bool {
	exited := make(chan struct{})
	go func() {
		// Owned by waitOrKill, which always receives from exited before returning.
		cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
		return false
	case <-ctx.Done():
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	grace := time.NewTimer(r.killGrace)
	defer grace.Stop()
	select {
	case <-exited:
	case <-grace.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		scope.kill()
		<-exited
	}
	return true
}

// waitReaders waits for both pipe readers to reach EOF, or closes the pipes after grace so a
// process outside the group that still holds them cannot keep the job alive.
func waitReaders(readers *sync.WaitGroup, grace time.Duration, pipes ...*os.File) {
	done := make(chan struct{})
	go func() {
		readers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		closeAll(pipes...)
		<-done
	}
	closeAll(pipes...)
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// attachPipes gives the child three pipes: stdout, stderr and the callback plugin's events
// (fd 3), each read on its own so that none can stall another. It returns the read ends and
// the write ends in that order.
func attachPipes(cmd *exec.Cmd) (reads, writes []*os.File, err error) {
	for _, name := range []string{"stdout", "stderr", "events"} {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(append(reads, writes...)...)
			return nil, nil, fmt.Errorf("create %s pipe: %w", name, err)
		}
		reads, writes = append(reads, r), append(writes, w)
	}
	cmd.Stdout, cmd.Stderr = writes[0], writes[1]
	cmd.ExtraFiles = []*os.File{writes[2]}
	return reads, writes, nil
}

// command builds the ansible-playbook command line. Every job field reaches it as a file in the
// work dir, never as command-line text, and no shell is involved.
func (r *runner) command(job *Job, workDir string) *exec.Cmd {
	playbook := filepath.Join(workDir, "playbook.yml")
	dir := workDir
	if !job.Spec.Embedded() {
		playbook = job.Spec.PlaybookPath
		// Relative roles, includes and files of an external playbook resolve from its directory.
		dir = filepath.Dir(playbook)
	}
	inventory := job.Spec.InventoryPath
	if inventory == "" {
		inventory = filepath.Join(workDir, inventoryName)
	}
	args := job.Spec.args(inventory, filepath.Join(workDir, "vars.yml"))
	args = append(append(args, r.vaultArgs...), playbook)
	cmd := exec.Command(r.playbookCmd, args...)
	cmd.Dir = dir
	cmd.Stdin = nil // /dev/null: a playbook that prompts fails instead of hanging
	cmd.Env = append(r.inheritedEnv(),
		"PYTHONUNBUFFERED=1", // Python block-buffers a pipe: without this nothing streams until the end
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_FORCE_COLOR=0",
		"ANSIBLE_RETRY_FILES_ENABLED=0",
		// Marks every process of the run, so a restarted charond can tell the job's leftovers
		// from an unrelated process that reuses the group id.
		"CHARON_JOB_ID="+job.ID,
		fmt.Sprintf("CHARON_EVENTS_FD=%d", eventsFD),
	)
	cmd.Env = append(cmd.Env, callbackEnv(filepath.Join(workDir, "callback_plugins"))...)
	cmd.Env = append(cmd.Env, r.extraEnv...)
	// Its own process group, so that cancel and timeout reach every process the playbook starts.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// inheritedEnv is the part of charond's environment that envAllow lets through.
func (r *runner) inheritedEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if nameAllowed(name, r.envAllow) {
			out = append(out, kv)
		}
	}
	return out
}

// callbackEnv enables Charon's callback plugin from dir, keeping whatever callback plugin
// path and enabled callbacks charond's own environment sets, and Ansible's default plugin path.
func callbackEnv(dir string) []string {
	paths := os.Getenv("ANSIBLE_CALLBACK_PLUGINS")
	if paths == "" {
		paths = "~/.ansible/plugins/callback:/usr/share/ansible/plugins/callback"
	}
	enabled := callbackName
	if own := os.Getenv("ANSIBLE_CALLBACKS_ENABLED"); own != "" {
		enabled = own + "," + callbackName
	}
	return []string{
		"ANSIBLE_CALLBACK_PLUGINS=" + dir + ":" + paths,
		"ANSIBLE_CALLBACKS_ENABLED=" + enabled,
	}
}

// version runs `ansible-playbook --version` with the jobs' environment and returns its first
// line, such as "ansible-playbook [core 2.14.18]".
func (r *runner) version(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, r.playbookCmd, "--version")
	cmd.Env = append(r.inheritedEnv(), r.extraEnv...)
	out, err := cmd.Output()
	if err != nil {
		return "", r.explainStartError(err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(first), nil
}

// explainStartError turns a failure to start into a message an operator can act on.
func (r *runner) explainStartError(err error) error {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot run %s: not found. Install ansible-core (for example `apt-get install ansible-core` or `pipx install ansible-core`) or point -ansible-playbook at it", r.playbookCmd)
	}
	return fmt.Errorf("cannot run %s: %v", r.playbookCmd, err)
}

// prepareWorkDir checks that the job may still run as it was accepted, then writes its
// inventory, variables and embedded playbook into a fresh directory that only charond's user
// can read, since variables may hold secrets.
func (r *runner) prepareWorkDir(job *Job) (string, error) {
	if err := r.checkStillAllowed(job.Spec); err != nil {
		return "", fmt.Errorf("refusing to start: %w", err)
	}
	// Encoded first: a spec that cannot be written is the job's failure, not the disk's.
	files, err := r.workFiles(job.Spec)
	if err != nil {
		return "", err
	}
	dir, err := r.writeWorkDir(job.ID, files)
	if err != nil && r.noteFault != nil {
		// The work dir lives in -data-dir: a failure there is the data dir's, not the job's.
		r.noteFault(err)
	}
	return dir, err
}

// checkStillAllowed checks again, when the job starts, what was checked when it was
// submitted and may have changed since: the playbook file or a directory on its path may have
// been swapped for a symlink to somewhere else while the job was queued, and a job queued by
// an older charond had its host names checked by older rules.
func (r *runner) checkStillAllowed(spec *JobSpec) error {
	for i, host := range spec.Inventory {
		if err := checkHost(fmt.Sprintf("inventory[%d]", i), host); err != nil {
			return err
		}
	}
	for _, host := range inventoryHosts(spec.InventoryGroups) {
		if err := checkHost("inventory", host); err != nil {
			return err
		}
	}
	if spec.InventoryPath != "" {
		if _, err := resolveInventoryPath(spec.InventoryPath, r.inventoryDir, r.dataDir); err != nil {
			return err
		}
	}
	if spec.Embedded() {
		return nil
	}
	_, err := resolvePlaybookPath(spec.PlaybookPath, r.playbookDir, r.dataDir)
	return err
}

// workFiles encodes the files of a job's work dir, by name: its variables, its inventory
// (unless it names one on disk), its embedded playbook, and Charon's callback plugin.
func (r *runner) workFiles(spec *JobSpec) (map[string][]byte, error) {
	inventory, err := inventoryContent(spec)
	if err != nil {
		return nil, fmt.Errorf("encode inventory: %w", err)
	}
	vars, err := r.varsFile(spec.Variables)
	if err != nil {
		return nil, fmt.Errorf("encode variables: %w", err)
	}
	files := map[string][]byte{
		"vars.yml": vars,
		filepath.Join("callback_plugins", callbackName+".py"): callbackPlugin,
	}
	if spec.Embedded() {
		files["playbook.yml"] = []byte(spec.Playbook)
	}
	if inventory != nil {
		files[inventoryName] = inventory
	}
	return files, nil
}

// writeWorkDir creates the job's work dir and its files. The work root is not created with
// its parents: if -data-dir has gone, the job fails rather than quietly making a new one.
func (r *runner) writeWorkDir(id string, files map[string][]byte) (dir string, err error) {
	if err := os.Mkdir(r.workRoot, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create work root: %w", err)
	}
	dir = filepath.Join(r.workRoot, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("create work dir: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := os.Mkdir(filepath.Join(dir, "callback_plugins"), 0o700); err != nil {
		return "", fmt.Errorf("create callback plugin dir: %w", err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			return "", fmt.Errorf("write %s: %w", name, err)
		}
	}
	return dir, nil
}

// varsFile encodes the job's variables for `-e @file`. By default every string in them, keys
// of nested mappings included, is tagged !unsafe: Ansible then treats it as text and never
// templates it, so "{{ lookup('pipe', 'id') }}" in a value forwarded from a branch name or a
// ticket title stays those characters. With -allow-jinja-in-vars the values are plain JSON,
// which Ansible templates like any extra vars.
func (r *runner) varsFile(vars map[string]any) ([]byte, error) {
	if r.templateVars {
		return json.Marshal(vars)
	}
	doc := &yaml.Node{Kind: yaml.MappingNode}
	for _, name := range sortedKeys(vars) {
		value, err := unsafeNode(vars[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		// Top-level names are checked identifiers (variableName): they hold no template.
		doc.Content = append(doc.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name}, value)
	}
	if len(doc.Content) == 0 {
		return []byte("{}\n"), nil
	}
	return yaml.Marshal(doc)
}

// unsafeNode builds the YAML node of a variable's value with every string tagged !unsafe.
// Numbers, booleans and null keep their types: Ansible templates only strings.
func unsafeNode(v any) (*yaml.Node, error) {
	switch v := v.(type) {
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!unsafe", Value: v, Style: yaml.DoubleQuotedStyle}, nil
	case map[string]any:
		n := &yaml.Node{Kind: yaml.MappingNode}
		for _, k := range sortedKeys(v) {
			key, _ := unsafeNode(k)
			value, err := unsafeNode(v[k])
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, key, value)
		}
		return n, nil
	case []any:
		n := &yaml.Node{Kind: yaml.SequenceNode}
		for _, item := range v {
			value, err := unsafeNode(item)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, value)
		}
		return n, nil
	}
	n := &yaml.Node{}
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	if n.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("unexpected value of type %T", v)
	}
	return n, nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// inventoryName is the file the runner writes a job's own inventory to. The YAML inventory
// plugin reads it; the list form is written as JSON, which is YAML too.
const inventoryName = "inventory.json"

// inventoryContent is the inventory file of the job, or nil when the job names one of its own
// on disk.
func inventoryContent(spec *JobSpec) ([]byte, error) {
	switch {
	case spec.InventoryPath != "":
		return nil, nil
	case spec.InventoryGroups != nil:
		doc, err := inventoryNode(spec.InventoryGroups)
		if err != nil {
			return nil, err
		}
		return yaml.Marshal(doc)
	}
	return json.Marshal(inventoryFile(spec))
}

// inventoryFile is the job's inventory in Ansible's YAML inventory layout (written as JSON,
// which the YAML inventory plugin reads). localhost and 127.0.0.1 get what Ansible's implicit
// localhost has: the local connection and the Python that runs Ansible. Variables given with
// the job are extra vars, which win over these, so a job can still choose another connection.
func inventoryFile(spec *JobSpec) map[string]any {
	hosts := make(map[string]any, len(spec.Inventory))
	for _, h := range spec.Inventory {
		if h == "localhost" || h == "127.0.0.1" {
			hosts[h] = map[string]any{
				"ansible_connection":         "local",
				"ansible_python_interpreter": "{{ ansible_playbook_python }}",
			}
		} else {
			hosts[h] = map[string]any{}
		}
	}
	return map[string]any{"all": map[string]any{"hosts": hosts}}
}

// readChunk is how much readLines asks of the pipe at once; every complete line in one read
// goes to the sink as one batch.
const readChunk = 64 << 10

// readLines splits what r delivers into lines and hands them to sink, one batch per read, until
// EOF or a read error (the pipe closed under it). A line longer than maxLine keeps its first
// maxLine bytes and says how much was cut; a last line without a newline is still delivered.
func readLines(r io.Reader, stream string, maxLine int, sink lineSink) {
	buf := make([]byte, readChunk)
	var ls lineSplitter
	ls.maxLine = maxLine
	var batch [][]byte
	for {
		n, err := r.Read(buf)
		if n > 0 {
			batch = ls.split(buf[:n], batch[:0])
			if len(batch) > 0 {
				sink(stream, batch)
			}
		}
		if err != nil {
			if last := ls.rest(); last != nil {
				sink(stream, [][]byte{last})
			}
			return
		}
	}
}

// lineSplitter cuts a byte stream into lines, holding at most maxLine bytes of an unfinished one.
type lineSplitter struct {
	maxLine int
	partial []byte // the start of a line whose end has not arrived yet
	dropped int    // bytes of the current line cut beyond maxLine
	out     []byte // the last line assembled from partial, reused
}

// split appends to lines each line that chunk completes. The results point into chunk or into
// the splitter, and stay valid until the next call.
func (s *lineSplitter) split(chunk []byte, lines [][]byte) [][]byte {
	for len(chunk) > 0 {
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			s.hold(chunk)
			return lines
		}
		piece := chunk[:i]
		chunk = chunk[i+1:]
		if len(s.partial) == 0 && s.dropped == 0 && len(piece) <= s.maxLine {
			lines = append(lines, trimCR(piece)) // the common case: no copy
			continue
		}
		s.hold(piece)
		lines = append(lines, s.finish())
	}
	return lines
}

// rest returns an unterminated last line, or nil.
func (s *lineSplitter) rest() []byte {
	if len(s.partial) == 0 && s.dropped == 0 {
		return nil
	}
	return s.finish()
}

// hold keeps the start of an unfinished line, up to maxLine bytes, and counts the rest.
func (s *lineSplitter) hold(b []byte) {
	room := s.maxLine - len(s.partial)
	if room > len(b) {
		room = len(b)
	}
	s.partial = append(s.partial, b[:room]...)
	s.dropped += len(b) - room
}

// finish completes the held line, noting a cut.
func (s *lineSplitter) finish() []byte {
	line := trimCR(s.partial)
	if s.dropped > 0 {
		kept := cutAtRuneStart(line)
		s.dropped += len(line) - len(kept)
		line = fmt.Appendf(kept, " [charond: line truncated: %d bytes dropped, lines are kept up to %d bytes (-max-line)]", s.dropped, s.maxLine)
	}
	s.out = append(s.out[:0], line...)
	s.partial = s.partial[:0]
	s.dropped = 0
	return s.out
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

// cutAtRuneStart drops a UTF-8 sequence split by the length cap, so the kept part stays valid.
func cutAtRuneStart(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			break
		}
	}
	return b
}
