package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// This file starts and stops the charond under test and speaks its HTTP API.

// daemon is one charond child process with its own data and playbook directories.
type daemon struct {
	cmd         *exec.Cmd
	pid         int
	addr        string // 127.0.0.1:PORT
	base        string // http://127.0.0.1:PORT
	playbookDir string
	stderrPath  string        // charond's log
	client      *http.Client  // for API calls; streams use raw connections
	exited      chan struct{} // closed once the process has been waited for
}

// daemonOptions are what a scenario adds to charond's command line and environment.
type daemonOptions struct {
	runner string   // -ansible-playbook; empty keeps charond's default (ansible-playbook from PATH)
	flags  []string // more flags, such as -max-streams
	env    []string // more environment, such as CHARONBENCH_RUNNER=1
	// apiConns is how many keep-alive connections the API client keeps, enough for the
	// queue benchmark's 64 submissions in flight.
	apiConns int
}

// benchPlaybook is the playbook of jobs run by the fake runner, which never reads it; it only
// has to exist inside -playbook-dir.
const (
	benchPlaybook     = "charonbench.yml"
	benchPlaybookText = "- hosts: localhost\n  gather_facts: false\n  tasks: []\n"
)

// startDaemon starts charond under root (a temporary directory it owns) and waits until
// /healthz answers. A port taken between choosing it and charond binding it is retried.
func startDaemon(ctx context.Context, root string, opt daemonOptions) (*daemon, error) {
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		d, err := tryStartDaemon(ctx, filepath.Join(root, fmt.Sprintf("charond-%d", attempt)), opt)
		if err == nil {
			return d, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

func tryStartDaemon(ctx context.Context, dir string, opt daemonOptions) (*daemon, error) {
	d := &daemon{playbookDir: filepath.Join(dir, "playbooks"), stderrPath: filepath.Join(dir, "charond.log"),
		exited: make(chan struct{})}
	if err := os.MkdirAll(d.playbookDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(d.playbookDir, benchPlaybook), []byte(benchPlaybookText), 0o600); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	d.addr = "127.0.0.1:" + strconv.Itoa(port)
	d.base = "http://" + d.addr
	args := []string{"-addr", d.addr, "-data-dir", filepath.Join(dir, "data"), "-playbook-dir", d.playbookDir,
		// Short, so that stopping charond with a job still running does not take 10 s.
		"-kill-grace", "2s"}
	if opt.runner != "" {
		args = append(args, "-ansible-playbook", opt.runner)
	}
	args = append(args, opt.flags...)
	logFile, err := os.Create(d.stderrPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own copy
	d.cmd = exec.Command(charondPath, args...)
	d.cmd.Env = append(os.Environ(), opt.env...)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", charondPath, err)
	}
	d.pid = d.cmd.Process.Pid
	go func() {
		// Ends when charond exits; stop waits for it.
		d.cmd.Wait()
		close(d.exited)
	}()
	conns := max(opt.apiConns, 4)
	d.client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute}}
	progress("started charond pid %d on %s (%s)", d.pid, d.addr, strings.Join(args, " "))
	if err := d.waitHealthy(ctx, 60*time.Second); err != nil {
		d.stop()
		return nil, fmt.Errorf("%w; charond's log ends:\n%s", err, d.logTail(2000))
	}
	return d, nil
}

// freePort asks the kernel for a free loopback port. Another process could take it before
// charond binds it; startDaemon retries then.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHealthy polls /healthz until it answers 200, charond exits, or timeout passes.
func (d *daemon) waitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			return errors.New("charond exited during start")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		resp, err := d.client.Get(d.base + "/healthz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("charond did not answer /healthz within %s", timeout)
}

// stop sends SIGTERM to charond (by its PID: it is our child) and waits for it to exit,
// then SIGKILL if it has not within 20 s (its drain is 0 and its kill grace 2 s).
func (d *daemon) stop() {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		progress("charond pid %d did not stop within 20 s of SIGTERM: killing it", d.pid)
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.client.CloseIdleConnections()
}

// logTail is the end of charond's log, for error messages.
func (d *daemon) logTail(n int64) string {
	f, err := os.Open(d.stderrPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.Size() > n {
		f.Seek(info.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// jobView is a job as charond's API shows it (the fields charonbench reads).
type jobView struct {
	ID         string         `json:"id"`
	Name       string         `json:"name"`
	Status     string         `json:"status"`
	Priority   int            `json:"priority"`
	Playbook   string         `json:"playbook"`
	Inventory  []string       `json:"inventory"`
	Variables  map[string]any `json:"variables"`
	CreatedAt  time.Time      `json:"created_at"`
	StartedAt  *time.Time     `json:"started_at"`
	FinishedAt *time.Time     `json:"finished_at"`
	ExitCode   *int           `json:"exit_code"`
	Message    string         `json:"message"`
	LogLines   int            `json:"log_lines"`
}

// infoView is /api/v1/info.
type infoView struct {
	Version string `json:"version"`
	Ansible string `json:"ansible_playbook_version"`
	Workers int    `json:"workers"`
	Queued  int    `json:"queued"`
	Running int    `json:"running"`
}

// apiError is an answer with an unexpected status.
type apiError struct {
	status int
	body   string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

// call sends one API request and decodes a JSON answer into out (if not nil) when the status
// is want; any other status is an *apiError.
func (d *daemon) call(ctx context.Context, method, path, contentType string, body []byte, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return &apiError{status: resp.StatusCode, body: strings.TrimSpace(string(raw))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// submit posts a job (YAML or JSON, by contentType) and returns it as queued.
func (d *daemon) submit(ctx context.Context, contentType string, body []byte) (jobView, error) {
	var v jobView
	err := d.call(ctx, "POST", "/api/v1/jobs", contentType, body, http.StatusCreated, &v)
	return v, err
}

// submitJSON posts a job given as a Go value.
func (d *daemon) submitJSON(ctx context.Context, spec any) (jobView, error) {
	body, err := json.Marshal(spec)
	if err != nil {
		return jobView{}, err
	}
	return d.submit(ctx, "application/json", body)
}

func (d *daemon) job(ctx context.Context, id string) (jobView, error) {
	var v jobView
	err := d.call(ctx, "GET", "/api/v1/jobs/"+id, "", nil, http.StatusOK, &v)
	return v, err
}

func (d *daemon) cancel(ctx context.Context, id string) error {
	return d.call(ctx, "POST", "/api/v1/jobs/"+id+"/cancel", "", nil, http.StatusAccepted, nil)
}

func (d *daemon) list(ctx context.Context, limit int) ([]jobView, error) {
	var v struct {
		Jobs []jobView `json:"jobs"`
	}
	err := d.call(ctx, "GET", "/api/v1/jobs?limit="+strconv.Itoa(limit), "", nil, http.StatusOK, &v)
	return v.Jobs, err
}

func (d *daemon) info(ctx context.Context) (infoView, error) {
	var v infoView
	err := d.call(ctx, "GET", "/api/v1/info", "", nil, http.StatusOK, &v)
	return v, err
}

// waitJob polls a job every interval until ok says its state will do, or timeout passes.
func (d *daemon) waitJob(ctx context.Context, id string, timeout, interval time.Duration, ok func(jobView) bool) (jobView, error) {
	deadline := time.Now().Add(timeout)
	for {
		v, err := d.job(ctx, id)
		if err != nil {
			return v, err
		}
		if ok(v) {
			return v, nil
		}
		if time.Now().After(deadline) {
			return v, fmt.Errorf("job %s still %s after %s", id, v.Status, timeout)
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// benchJob is the submission of a job for the fake runner.
func benchJob(name string, priority int, vars runnerVars) map[string]any {
	return map[string]any{
		"name":      name,
		"playbook":  benchPlaybook,
		"priority":  priority,
		"timeout":   "1h",
		"variables": vars,
	}
}

// fakeRunnerSetup is how a scenario makes charond run this program as its ansible-playbook:
// the path of this executable, and the flags and environment that turn it into the runner.
func fakeRunnerSetup() (daemonOptions, error) {
	self, err := os.Executable()
	if err != nil {
		return daemonOptions{}, fmt.Errorf("find this program's executable: %w", err)
	}
	return daemonOptions{
		runner: self,
		// -allow-jinja-in-vars makes charond write the variables as JSON, which the fake runner
		// reads with the standard library (by default they are YAML with !unsafe tags).
		flags: []string{"-env-allow", "PATH,HOME,CHARONBENCH_*", "-allow-jinja-in-vars"},
		env:   []string{runnerEnv + "=1"},
	}, nil
}

// makeTempRoot creates the run's temporary directory; the returned cleanup removes it unless
// -keep was given.
func makeTempRoot(name string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "charonbench-"+name+"-")
	if err != nil {
		return "", nil, err
	}
	return dir, func() {
		if keepTemp {
			progress("kept %s", dir)
			return
		}
		os.RemoveAll(dir)
	}, nil
}
