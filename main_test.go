package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a fake ansible-playbook, as os/exec's own tests do: when
// CHARON_FAKE_RUNNER is set it acts out the scenario named by the job's variables instead of
// running tests. See fakeRunnerMain in fakerunner_test.go.
func TestMain(m *testing.M) {
	if os.Getenv("CHARON_FAKE_RUNNER") == "1" {
		os.Exit(fakeRunnerMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// testDaemon is charond wired, started and stopped as in production, with the test binary as
// its ansible-playbook unless the test asks for the real one.
type testDaemon struct {
	*daemon
	URL      string
	dir      string
	stopOnce sync.Once
}

// testOption adjusts a test daemon before it starts.
type testOption func(d *daemon)

// withRealAnsible runs the real ansible-playbook instead of the fake.
func withRealAnsible(d *daemon) {
	d.cfg.AnsiblePlaybook = "ansible-playbook"
	d.sched.runner.playbookCmd = "ansible-playbook"
	d.sched.runner.extraEnv = nil
}

// startTestDaemon starts a daemon on a temporary data dir and playbook dir. It is shut down
// when the test ends.
func startTestDaemon(t testing.TB, opts ...testOption) *testDaemon {
	t.Helper()
	return startTestDaemonIn(t, t.TempDir(), opts...)
}

// startTestDaemonIn starts a daemon whose data dir is dir/data and playbook dir dir/playbooks,
// so that a test can start another on the same directories after stopping the first.
func startTestDaemonIn(t testing.TB, dir string, opts ...testOption) *testDaemon {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	d, err := tryStartDaemon(t, dir, logger, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	td := &testDaemon{daemon: d, URL: "http://" + d.addr, dir: dir}
	t.Cleanup(func() { td.stop(t) })
	return td
}

// tryStartDaemon starts a daemon as startTestDaemonIn does, with flags added to the test's
// own, through the daemon's own newDaemon and start. The daemon runs only if err is nil, and
// then the caller stops it; when start fails, the daemon it made comes back with the error.
func tryStartDaemon(t testing.TB, dir string, logger *slog.Logger, flags []string, opts ...testOption) (*daemon, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// charond's defaults, from its own flags, with what a test needs changed.
	cfg, err := parseFlags(append([]string{
		"-addr", "127.0.0.1:0",
		"-workers", "1",
		"-ansible-playbook", self,
		"-playbook-dir", filepath.Join(dir, "playbooks"),
		"-data-dir", filepath.Join(dir, "data"),
		"-default-timeout", "1m",
		"-max-timeout", "1h",
		"-kill-grace", "2s",
		"-heartbeat", "1s",
		"-stream-write-timeout", "2s",
		"-retention", "24h",
	}, flags...), func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.PlaybookDir, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(cfg, logger)
	if err != nil {
		return nil, err
	}
	// The race detector makes a process sleep a second at exit; the fake runner needn't.
	d.sched.runner.extraEnv = []string{"CHARON_FAKE_RUNNER=1", "GORACE=atexit_sleep_ms=0"}
	// Tests probe the store themselves (probeStore), when their faults are in place.
	d.probeInterval = 24 * time.Hour
	for _, o := range opts {
		o(d)
	}
	d.srv.workers = d.cfg.Workers
	if err := d.start(); err != nil {
		return d, err // made, not started: a test may look at what it holds
	}
	return d, nil
}

// stop shuts the daemon down as charond does on SIGTERM, and closes its store. It may be
// called more than once.
func (td *testDaemon) stop(t testing.TB) {
	td.stopOnce.Do(func() {
		if err := td.daemon.stop(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
}

// submit posts a job document and decodes the answer; it fails the test unless the status is want.
func (td *testDaemon) submit(t testing.TB, ct, body string, want int) map[string]any {
	t.Helper()
	status, got := doJSON(t, "POST", td.URL+"/api/v1/jobs", contentType(ct), body)
	if status != want {
		t.Fatalf("POST status = %d, want %d; answer %v", status, want, got)
	}
	return got
}

// submitFake queues a job for the fake runner; vars choose the scenario.
func (td *testDaemon) submitFake(t testing.TB, name string, priority int, vars map[string]any) string {
	t.Helper()
	doc := map[string]any{
		"name":      name,
		"playbook":  "- hosts: localhost\n  tasks: []\n",
		"priority":  priority,
		"variables": vars,
	}
	body, _ := json.Marshal(doc)
	got := td.submit(t, "application/json", string(body), http.StatusCreated)
	return got["id"].(string)
}

// getJob fetches a job.
func (td *testDaemon) getJob(t testing.TB, id string) map[string]any {
	t.Helper()
	status, job := getJSON(t, td.URL+"/api/v1/jobs/"+id)
	if status != http.StatusOK {
		t.Fatalf("GET job %s: status %d: %v", id, status, job)
	}
	return job
}

// waitJob polls the job until cond holds, and returns it then.
func (td *testDaemon) waitJob(t testing.TB, id, what string, cond func(job map[string]any) bool) map[string]any {
	t.Helper()
	var job map[string]any
	waitFor(t, fmt.Sprintf("job %s: %s", id, what), func() (bool, string) {
		job = td.getJob(t, id)
		return cond(job), fmt.Sprint(job)
	})
	return job
}

// waitStatus polls the job until it reaches the status.
func (td *testDaemon) waitStatus(t testing.TB, id string, want Status) map[string]any {
	t.Helper()
	return td.waitJob(t, id, string(want), func(job map[string]any) bool { return job["status"] == string(want) })
}

// waitLogLines waits until the job has printed at least n lines.
func waitLogLines(t testing.TB, td *testDaemon, id string, n int) {
	t.Helper()
	td.waitJob(t, id, fmt.Sprintf("at least %d log lines", n), func(job map[string]any) bool { return job["log_lines"].(float64) >= float64(n) })
}

func contextWithTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// fakeLines is what the fake runner prints for the "lines" scenario.
func fakeLines(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("line %d", i+1)
	}
	return out
}

func TestParseFlags(t *testing.T) {
	env := map[string]string{"CHARON_ADDR": "127.0.0.1:9999", "CHARON_WORKERS": "3", "CHARON_CORS_ORIGINS": "*"}
	getenv := func(k string) string { return env[k] }
	c, err := parseFlags(nil, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:9999" || c.Workers != 3 || c.CORSOrigins != "*" || c.KillGrace != 10*time.Second || c.MaxBody != 1<<20 {
		t.Errorf("config from env = %+v", c)
	}
	c, err = parseFlags([]string{"-addr", ":7000", "-workers", "1"}, getenv, io.Discard)
	if err != nil || c.Addr != ":7000" || c.Workers != 1 {
		t.Errorf("flags should win over env: %+v %v", c, err)
	}
	c, err = parseFlags(nil, func(string) string { return "" }, io.Discard)
	if err != nil || c.Addr != "127.0.0.1:8080" || c.Workers != runtime.NumCPU() || c.DataDir != "./charon-data" || c.AnsiblePlaybook != "ansible-playbook" {
		t.Errorf("defaults = %+v %v", c, err)
	}
	for _, bad := range [][]string{{"-workers", "0"}, {"-default-timeout", "2h", "-max-timeout", "1h"}, {"extra"}, {"-max-body", "0"}} {
		if _, err := parseFlags(bad, getenv, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

// TestParseFlagsEnv checks the environment's values for flags that are not strings: one that
// does not parse is refused like a bad flag, naming the variable and the flag, where it used
// to give way to the default without a word.
func TestParseFlagsEnv(t *testing.T) {
	for _, tc := range []struct {
		name        string
		env         string // CHARON_WORKERS
		args        []string
		wantErr     string // "" for none
		wantWorkers int
	}{
		{"a number", "3", nil, "", 3},
		{"empty is unset", "", nil, "", runtime.NumCPU()},
		{"not a number", "abc", nil, `CHARON_WORKERS="abc": not a whole number (-workers)`, 0},
		{"a fraction", "1.5", nil, `CHARON_WORKERS="1.5": not a whole number (-workers)`, 0},
		{"spaces", " 3", nil, `CHARON_WORKERS=" 3": not a whole number (-workers)`, 0},
		// The flag wins over the variable, but the variable is still wrong.
		{"flag given too", "abc", []string{"-workers", "2"}, `CHARON_WORKERS="abc": not a whole number (-workers)`, 0},
		{"help comes first", "abc", []string{"-h"}, flag.ErrHelp.Error(), 0},
		// A number that parses is checked like the flag's.
		{"zero", "0", nil, "-workers must be at least 1, not 0", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return map[string]string{"CHARON_WORKERS": tc.env}[k] }
			c, err := parseFlags(tc.args, getenv, io.Discard)
			var gotErr string
			if err != nil {
				gotErr = err.Error()
			}
			if gotErr != tc.wantErr {
				t.Fatalf("error = %q, want %q", gotErr, tc.wantErr)
			}
			if err == nil {
				if got, want := c.Workers, tc.wantWorkers; got != want {
					t.Errorf("workers = %d, want %d", got, want)
				}
			}
		})
	}
}

// TestSignalShutdown runs a real charond process, starts a job and streams, and sends SIGTERM:
// charond must cancel the running job, end its stream with the final events, end the stream of
// the queued job (which stays queued, on disk), and exit 0 in time.
func TestSignalShutdown(t *testing.T) {
	bin := buildCharond(t)
	self, _ := os.Executable()
	dir := t.TempDir()
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-data-dir", dir, "-playbook-dir", dir,
		"-ansible-playbook", self, "-kill-grace", "1s", "-workers", "1", "-env-allow", fakeRunnerEnv)
	cmd.Env = append(os.Environ(), "CHARON_FAKE_RUNNER=1", "GORACE=atexit_sleep_ms=0")
	url := startProcess(t, cmd)

	td := &testDaemon{URL: url}
	running := td.submitFake(t, "sleeper", 5, map[string]any{"fake": "ignore_term"})
	queued := td.submitFake(t, "waiting", 5, map[string]any{"fake": "lines"})
	waitLogLines(t, td, running, 1)
	_, logs := openStream(t, url+"/api/v1/jobs/"+running+"/logs/stream", nil)
	_, events := openStream(t, url+"/api/v1/jobs/"+queued+"/events/stream", nil)
	<-logs // connected
	<-events

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	waitExit(t, cmd, 15*time.Second)
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	all := collect(t, logs)
	if last := all[len(all)-1]; last.Event != "completed" || !strings.Contains(last.Data, `"status":"cancelled"`) {
		t.Errorf("running job's stream ended with %+v, want completed with status cancelled", last)
	}
	all = collect(t, events)
	if last := all[len(all)-1]; last.Event == "completed" || !strings.Contains(last.Data, `"status":"queued"`) {
		t.Errorf("queued job's stream ended with %+v, want it closed with the job still queued", last)
	}
}

// waitExit waits for a charond process to exit 0 within d.
func waitExit(t *testing.T, cmd *exec.Cmd, d time.Duration) {
	t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("charond exited with %v, want 0", err)
		}
	case <-time.After(d):
		cmd.Process.Kill()
		t.Fatalf("charond did not exit within %v", d)
	}
}

// fakeRunnerEnv lets the variables that make the test binary a fake ansible-playbook through
// to the jobs of a charond process.
const fakeRunnerEnv = "PATH,HOME,CHARON_FAKE_RUNNER,GORACE"

// buildCharond builds the daemon from this package into a temporary directory.
func buildCharond(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "charond")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startProcess starts a charond process, waits for its "listening" log line and returns its
// URL. The process is killed when the test ends, if it is still running.
func startProcess(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	addr := make(chan string, 1)
	go func() {
		// Reads charond's log until the process exits, so it never blocks on a full pipe.
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if testing.Verbose() {
				fmt.Fprintln(os.Stderr, "charond:", sc.Text())
			}
			if _, rest, ok := strings.Cut(sc.Text(), `msg="charond listening" addr=`); ok {
				a, _, _ := strings.Cut(rest, " ")
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		return "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("charond did not start listening")
	}
	return ""
}
