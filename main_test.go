package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
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

// testDaemon is charond wired as in production, served by httptest, with the test binary as
// its ansible-playbook unless the test asks for the real one.
type testDaemon struct {
	*daemon
	URL      string
	http     *httptest.Server
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
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// charond's defaults, from its own flags, with what a test needs changed.
	cfg, err := parseFlags([]string{
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
	}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.PlaybookDir, 0o755); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	d, err := newDaemon(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	// The race detector makes a process sleep a second at exit; the fake runner needn't.
	d.sched.runner.extraEnv = []string{"CHARON_FAKE_RUNNER=1", "GORACE=atexit_sleep_ms=0"}
	for _, o := range opts {
		o(d)
	}
	d.srv.workers = d.cfg.Workers
	d.sched.start(cfg.Workers)
	ts := httptest.NewServer(d.srv.routes())
	td := &testDaemon{daemon: d, URL: ts.URL, http: ts, dir: dir}
	t.Cleanup(func() { td.stop(t) })
	return td
}

// stop shuts the daemon down as charond does on SIGTERM, and closes its store. It may be
// called more than once.
func (td *testDaemon) stop(t testing.TB) {
	td.stopOnce.Do(func() {
		if err := td.sched.shutdown(contextWithTimeout(t, 10*time.Second), 0); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		close(td.stopping)
		td.http.CloseClientConnections()
		td.http.Close()
		td.sched.close()
	})
}

// submit posts a job document and decodes the answer; it fails the test unless the status is want.
func (td *testDaemon) submit(t testing.TB, contentType, body string, want int) map[string]any {
	t.Helper()
	resp, err := http.Post(td.URL+"/api/v1/jobs", contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("POST answer is not JSON: %v: %q", err, raw)
	}
	if resp.StatusCode != want {
		t.Fatalf("POST status = %d, want %d; body %s", resp.StatusCode, want, raw)
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

// getJSON fetches a URL and decodes its JSON answer, returning the status too.
func getJSON(t testing.TB, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("GET %s: answer is not JSON: %v: %q", url, err, raw)
	}
	return resp.StatusCode, got
}

// waitStatus polls the job until it reaches the status, or fails the test after a while.
func (td *testDaemon) waitStatus(t testing.TB, id string, want Status) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, job := getJSON(t, td.URL+"/api/v1/jobs/"+id)
		if code != http.StatusOK {
			t.Fatalf("GET job %s: %d %v", id, code, job)
		}
		if Status(job["status"].(string)) == want {
			return job
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %v, still not %s: %v", id, job["status"], want, job)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sseEvent is one event as a client sees it.
type sseEvent struct {
	ID    string
	Event string
	Data  string
	At    time.Time // when the client read it
}

// readSSE parses an event stream until EOF, sending each event on out. It follows the WHATWG
// rules as far as charond's streams need them: fields, comments and blank-line dispatch.
func readSSE(r io.Reader, out chan<- sseEvent) error {
	defer close(out)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	var ev sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Event != "" || len(data) > 0 {
				ev.Data = strings.Join(data, "\n")
				ev.At = time.Now()
				out <- ev
			}
			ev, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				ev.ID = value
			case "event":
				ev.Event = value
			case "data":
				data = append(data, value)
			}
		}
	}
	return sc.Err()
}

// openStream connects to a stream and returns its events; headers may set Last-Event-ID.
func openStream(t testing.TB, url string, headers map[string]string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan sseEvent, 1024)
	go func() {
		// Ends when the server closes the stream or the test closes resp.Body.
		readSSE(resp.Body, events)
	}()
	t.Cleanup(func() { resp.Body.Close() })
	return resp, events
}

// collect reads a stream's events up to and including `completed`.
func collect(t testing.TB, events <-chan sseEvent) []sseEvent {
	t.Helper()
	var all []sseEvent
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return all
			}
			all = append(all, ev)
			if ev.Event == "completed" {
				return all
			}
		case <-timeout:
			t.Fatalf("stream did not complete; got %d events", len(all))
		}
	}
}

// logLines extracts the log events' ids and line texts, checking that ids count up from first.
func logLines(t testing.TB, events []sseEvent, first int) []string {
	t.Helper()
	var lines []string
	for _, ev := range events {
		if ev.Event != "log" {
			continue
		}
		want := strconv.Itoa(first + len(lines))
		if ev.ID != want {
			t.Fatalf("log event id = %s, want %s (lost or repeated line)", ev.ID, want)
		}
		var d struct{ Line string }
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
			t.Fatalf("log data is not JSON: %v: %q", err, ev.Data)
		}
		lines = append(lines, d.Line)
	}
	return lines
}

func contextWithTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitGoroutines waits until the number of goroutines is back to at most base, and fails the
// test with a dump of them if it is not within a few seconds.
func waitGoroutines(t testing.TB, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("goroutines: %d, want at most %d\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fakeLines is what the fake runner prints for the "lines" scenario.
func fakeLines(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("line %d", i+1)
	}
	return out
}

// httpGet returns a URL's body.
func httpGet(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// httpPost posts a body and returns the response with its body already read and closed.
func httpPost(url, contentType, body string) (*http.Response, error) {
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
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
