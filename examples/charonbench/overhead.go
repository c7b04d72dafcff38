package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// This file is the overhead benchmark: a real playbook through charond, against the same
// playbook run by ansible-playbook directly, the way charond runs it.

// overheadFigures are the overhead benchmark's results.
type overheadFigures struct {
	Benchmark      string       `json:"benchmark"`
	Job            string       `json:"job"`
	Pairs          int          `json:"pairs"`
	Charond        overheadSide `json:"charond"`
	Direct         overheadSide `json:"direct"`
	RatioEndToEnd  float64      `json:"ratio_end_to_end"`
	RatioFirstLine float64      `json:"ratio_first_line"`
	// The medians of each pair's ratio: the pairs run back to back, so these cancel some of
	// the drift of a shared machine that the ratio of medians keeps.
	PairRatioEndToEnd  float64 `json:"median_pair_ratio_end_to_end"`
	PairRatioFirstLine float64 `json:"median_pair_ratio_first_line"`
	// CharondCPUMSPerJob is charond's own CPU per timed job (its runners not included).
	CharondCPUMSPerJob float64 `json:"charond_cpu_ms_per_job"`
	// MachineBusyPct is how busy the whole machine was during the timed pairs.
	MachineBusyPct  float64 `json:"machine_busy_pct"`
	TargetEndToEnd  float64 `json:"target_end_to_end"`
	TargetFirstLine float64 `json:"target_first_line"`
	MeetsTargets    bool    `json:"meets_targets"`
}

// overheadSide is one side's timings: each run, and their summaries.
type overheadSide struct {
	EndToEnd  summary     `json:"end_to_end"`
	FirstLine summary     `json:"first_line"`
	Runs      []runTiming `json:"runs"`
}

// runTiming is one run of the playbook.
type runTiming struct {
	EndToEnd  time.Duration `json:"-"`
	FirstLine time.Duration `json:"-"`
	E2EMS     float64       `json:"end_to_end_ms"`
	FirstMS   float64       `json:"first_line_ms"`
	Lines     int           `json:"lines"`
}

func runOverhead(ctx context.Context, args []string, out io.Writer) (any, error) {
	fs := newFlagSet("overhead")
	pairs := fs.Int("pairs", 7, "How many charond/direct pairs to time (at least 5), alternating which side goes first.")
	warmup := fs.Int("warmup", 1, "Untimed runs of each side first, so that both find Python's caches warm.")
	jobPath := fs.String("job", "", "The job file to run (default examples/streaming_demo/simple_job.yaml, found from the working directory or this program's source).")
	ansible := fs.String("ansible-playbook", "ansible-playbook", "The ansible-playbook that both charond and the direct runs use: a path, or a name looked up in PATH.")
	if err := parseSubcommand(fs, args); err != nil {
		return nil, err
	}
	if *pairs < 5 {
		return nil, fmt.Errorf("-pairs must be at least 5, not %d", *pairs)
	}
	ansiblePath, err := exec.LookPath(*ansible)
	if err != nil {
		return nil, fmt.Errorf("-ansible-playbook: %w (the overhead benchmark needs the real ansible-playbook)", err)
	}
	if ansiblePath, err = filepath.Abs(ansiblePath); err != nil {
		return nil, err
	}
	job, err := findJobFile(*jobPath)
	if err != nil {
		return nil, err
	}
	body, err := os.ReadFile(job)
	if err != nil {
		return nil, err
	}

	root, cleanup, err := makeTempRoot("overhead")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	d, err := startDaemon(ctx, root, daemonOptions{runner: ansiblePath})
	if err != nil {
		return nil, err
	}
	defer d.stop()

	// The warm-up through charond also yields the job as charond parsed it, so the direct
	// runs use exactly its playbook, inventory and variables without a YAML parser here.
	progress("warm-up through charond")
	_, spec, err := charondRun(ctx, d, body)
	if err != nil {
		return nil, fmt.Errorf("warm-up through charond: %w", err)
	}
	direct, err := newDirectRunner(ansiblePath, filepath.Join(root, "direct"), spec)
	if err != nil {
		return nil, err
	}
	progress("warm-up direct")
	if _, err := direct.run(ctx); err != nil {
		return nil, fmt.Errorf("warm-up direct: %w", err)
	}
	for i := 1; i < *warmup; i++ {
		if _, _, err := charondRun(ctx, d, body); err != nil {
			return nil, err
		}
		if _, err := direct.run(ctx); err != nil {
			return nil, err
		}
	}

	var viaCharond, viaDirect []runTiming
	var charondCPU time.Duration
	machine := newCPUMeter(d.pid)
	for i := 0; i < *pairs; i++ {
		order := []string{"charond", "direct"}
		if i%2 == 1 {
			order = []string{"direct", "charond"}
		}
		for _, side := range order {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if side == "charond" {
				before, _ := procCPU(d.pid)
				t, _, err := charondRun(ctx, d, body)
				after, _ := procCPU(d.pid)
				charondCPU += after - before
				if err != nil {
					return nil, fmt.Errorf("pair %d through charond: %w", i+1, err)
				}
				viaCharond = append(viaCharond, t)
			} else {
				t, err := direct.run(ctx)
				if err != nil {
					return nil, fmt.Errorf("pair %d direct: %w", i+1, err)
				}
				viaDirect = append(viaDirect, t)
			}
		}
		c, dr := viaCharond[len(viaCharond)-1], viaDirect[len(viaDirect)-1]
		progress("pair %d/%d: charond %s (first line %s, %d lines)  direct %s (first line %s, %d lines)", i+1, *pairs,
			fmtMS(ms(c.EndToEnd)), fmtMS(ms(c.FirstLine)), c.Lines, fmtMS(ms(dr.EndToEnd)), fmtMS(ms(dr.FirstLine)), dr.Lines)
	}

	busy := machine.since().MachinePercent
	f := overheadFigures{Benchmark: "overhead", Job: job, Pairs: *pairs, MachineBusyPct: busy,
		Charond: newOverheadSide(viaCharond), Direct: newOverheadSide(viaDirect),
		TargetEndToEnd: 1.02, TargetFirstLine: 1.05}
	f.RatioEndToEnd = ratio(f.Charond.EndToEnd.P50, f.Direct.EndToEnd.P50)
	f.RatioFirstLine = ratio(f.Charond.FirstLine.P50, f.Direct.FirstLine.P50)
	f.MeetsTargets = f.RatioEndToEnd <= f.TargetEndToEnd && f.RatioFirstLine <= f.TargetFirstLine
	var pe2e, pfirst []float64
	for i := range viaCharond {
		pe2e = append(pe2e, ratio(ms(viaCharond[i].EndToEnd), ms(viaDirect[i].EndToEnd)))
		pfirst = append(pfirst, ratio(ms(viaCharond[i].FirstLine), ms(viaDirect[i].FirstLine)))
	}
	f.PairRatioEndToEnd, f.PairRatioFirstLine = median(pe2e), median(pfirst)
	f.CharondCPUMSPerJob = ms(charondCPU) / float64(*pairs)
	printOverhead(out, f, ansiblePath)
	return f, nil
}

func newOverheadSide(runs []runTiming) overheadSide {
	var e2e, first []time.Duration
	for _, r := range runs {
		e2e, first = append(e2e, r.EndToEnd), append(first, r.FirstLine)
	}
	return overheadSide{EndToEnd: summarize(e2e), FirstLine: summarize(first), Runs: runs}
}

func printOverhead(out io.Writer, f overheadFigures, ansible string) {
	fmt.Fprintf(out, "\ncharonbench overhead: %s, %d pairs, alternating (%s)\n\n", filepath.Base(f.Job), f.Pairs, ansible)
	fmt.Fprintf(out, "%-26s %12s %24s\n", "", "median", "spread (min – max)")
	row := func(name string, s summary) {
		fmt.Fprintf(out, "%-26s %12s %24s\n", name, fmtMS(s.P50), fmtMS(s.Min)+" – "+fmtMS(s.Max))
	}
	row("charond end to end", f.Charond.EndToEnd)
	row("direct  end to end", f.Direct.EndToEnd)
	row("charond to first line", f.Charond.FirstLine)
	row("direct  to first line", f.Direct.FirstLine)
	fmt.Fprintf(out, "\nratio of medians charond/direct: end to end %.3f (target ≤ %.2f: %s), first line %.3f (target ≤ %.2f: %s)\n",
		f.RatioEndToEnd, f.TargetEndToEnd, verdict(f.RatioEndToEnd <= f.TargetEndToEnd),
		f.RatioFirstLine, f.TargetFirstLine, verdict(f.RatioFirstLine <= f.TargetFirstLine))
	fmt.Fprintf(out, "median of the per-pair ratios: end to end %.3f, first line %.3f\n", f.PairRatioEndToEnd, f.PairRatioFirstLine)
	fmt.Fprintf(out, "charond's own CPU per job (its runner not counted): %s; the machine was %.0f%% busy during the pairs\n\n",
		fmtMS(f.CharondCPUMSPerJob), f.MachineBusyPct)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// findJobFile resolves -job, defaulting to simple_job.yaml from the working directory (the
// repository root) or from this program's source directory.
func findJobFile(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	candidates := []string{filepath.Join("examples", "streaming_demo", "simple_job.yaml")}
	if _, src, _, ok := runtime.Caller(0); ok {
		candidates = append(candidates, filepath.Join(filepath.Dir(src), "..", "streaming_demo", "simple_job.yaml"))
	}
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return filepath.Abs(c)
		}
	}
	return "", fmt.Errorf("cannot find simple_job.yaml (tried %s): run from the repository root or pass -job", strings.Join(candidates, ", "))
}

// charondRun submits the job and reads its log stream until `completed`. The clock starts
// just before the POST; the first line is the first `log` event on the stream opened right
// after the POST is answered. It also returns the job as charond shows it.
func charondRun(ctx context.Context, d *daemon, body []byte) (runTiming, jobView, error) {
	t0 := time.Now()
	job, err := d.submit(ctx, "application/x-yaml", body)
	if err != nil {
		return runTiming{}, jobView{}, err
	}
	s, err := openStream(ctx, d.addr, "/api/v1/jobs/"+job.ID+"/logs/stream", time.Now().Add(5*time.Minute))
	if err != nil {
		return runTiming{}, job, err
	}
	defer s.conn.Close()
	var t runTiming
	for {
		ev, err := s.sse.next()
		if err != nil {
			return t, job, fmt.Errorf("job %s: stream ended before `completed`: %w", job.ID, err)
		}
		switch ev.Event {
		case "log":
			if t.Lines == 0 {
				t.FirstLine = time.Since(t0)
			}
			t.Lines++
		case "completed":
			t.EndToEnd = time.Since(t0)
			var end struct {
				Status string `json:"status"`
			}
			json.Unmarshal(ev.Data, &end)
			if end.Status != "completed" {
				return t, job, fmt.Errorf("job %s ended %q, not completed; its log: GET %s/api/v1/jobs/%s/logs", job.ID, end.Status, d.base, job.ID)
			}
			t.E2EMS, t.FirstMS = ms(t.EndToEnd), ms(t.FirstLine)
			full, err := d.job(ctx, job.ID)
			return t, full, err
		}
	}
}

// directRunner runs the job's playbook with ansible-playbook directly, set up as charond sets
// up a job: the same inventory, variables file, environment, working directory and process
// group, stdin on /dev/null. Only charond's event callback plugin is missing, by design.
type directRunner struct {
	ansible                   string
	dir                       string
	inventory, vars, playbook string
	env                       []string
}

func newDirectRunner(ansible, dir string, spec jobView) (*directRunner, error) {
	if !strings.Contains(spec.Playbook, "\n") {
		return nil, errors.New("the job's playbook is a path; the overhead benchmark needs an embedded playbook")
	}
	for k, v := range spec.Variables {
		if v == "********" {
			progress("warning: variable %q is masked in charond's answer; the direct run gets the mask, not its value", k)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	r := &directRunner{ansible: ansible, dir: dir, inventory: filepath.Join(dir, "inventory.json"),
		vars: filepath.Join(dir, "vars.json"), playbook: filepath.Join(dir, "playbook.yml")}
	// The inventory charond writes: localhost uses the local connection and the Python that
	// runs Ansible, as Ansible's implicit localhost does.
	hosts := map[string]any{}
	for _, h := range spec.Inventory {
		if h == "localhost" || h == "127.0.0.1" {
			hosts[h] = map[string]any{"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
		} else {
			hosts[h] = map[string]any{}
		}
	}
	inv, _ := json.Marshal(map[string]any{"all": map[string]any{"hosts": hosts}})
	vars, err := json.Marshal(spec.Variables)
	if err != nil {
		return nil, err
	}
	for path, content := range map[string][]byte{r.inventory: inv, r.vars: vars, r.playbook: []byte(spec.Playbook)} {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			return nil, err
		}
	}
	// charond's default -env-allow, plus what charond adds for every job.
	allow := []string{"PATH", "HOME", "LANG", "LC_*", "USER", "ANSIBLE_*", "SSH_AUTH_SOCK"}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		for _, a := range allow {
			if p, wild := strings.CutSuffix(a, "*"); (wild && strings.HasPrefix(name, p)) || name == a {
				r.env = append(r.env, kv)
				break
			}
		}
	}
	r.env = append(r.env, "PYTHONUNBUFFERED=1", "ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0", "ANSIBLE_RETRY_FILES_ENABLED=0")
	return r, nil
}

// run times one direct run: from just before exec to the process's exit and EOF on stdout;
// the first line is the first line read from stdout.
func (r *directRunner) run(ctx context.Context) (runTiming, error) {
	// The job's own timeout bounds it under charond; this bounds it here.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.ansible, "-i", r.inventory, "-e", "@"+r.vars, r.playbook)
	cmd.Dir = r.dir
	cmd.Env = r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr // read all along, as charond reads it
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return runTiming{}, err
	}
	var t runTiming
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return t, err
	}
	br := bufio.NewReaderSize(stdout, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if err == nil || (err == io.EOF && len(line) > 0) { // a whole line, or an unterminated last one
			if t.Lines == 0 {
				t.FirstLine = time.Since(t0)
			}
			t.Lines++
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // the rest of a long line follows
		}
		if err != nil {
			break
		}
	}
	werr := cmd.Wait()
	t.EndToEnd = time.Since(t0)
	t.E2EMS, t.FirstMS = ms(t.EndToEnd), ms(t.FirstLine)
	if werr != nil {
		return t, fmt.Errorf("ansible-playbook: %w; stderr: %s", werr, stderr.String())
	}
	return t, nil
}
