package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file runs the dashboard's browser tests (issue 14): each test starts charond in-process
// with the fake runner, makes the jobs its scenario needs, and runs one script of e2e/ in
// Node, where Playwright drives Debian's Chromium against the page charond serves. The script
// gets what it needs in environment variables (CHARON_URL, job ids, CHARON_TOKEN...), checks
// the page by the accessible names of its contract, and exits non-zero with what it saw when
// a check fails; the test fails with the script's output then. Screenshots go to
// CHARON_SCREENSHOT_DIR (default: charon-screenshots in the temporary directory), and the test
// logs their paths.

const (
	// e2eTimeout bounds one browser script. Each takes a few seconds; its own waits give up
	// after 15 s, so the bound is only there for a script that hangs.
	e2eTimeout = 50 * time.Second
	// benchTimeout bounds the benchmark: three runs, each with a 30-second live job.
	benchTimeout = 8 * time.Minute
)

// e2eTools is what the browser tests run: node, Chromium, and e2e/ with its node_modules.
type e2eTools struct {
	node, chromium, dir string
}

// findE2E returns the tools of the browser tests, or skips when node or e2e/node_modules is
// missing (fails under CI's CHARON_REQUIRE_ANSIBLE=1, whose .ci/run installs them), as
// findChromium does for Chromium.
func findE2E(t *testing.T) *e2eTools {
	t.Helper()
	chromium := findChromium(t)
	missing := func(what string) {
		t.Helper()
		if os.Getenv("CHARON_REQUIRE_ANSIBLE") == "1" {
			t.Fatal(what)
		}
		t.Skip(what)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("no node for the dashboard's browser tests (apt-get install nodejs, then npm ci --prefix e2e)")
	}
	dir, err := filepath.Abs("e2e")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		missing("no e2e/node_modules/playwright-core for the dashboard's browser tests: run npm ci --prefix e2e")
	}
	return &e2eTools{node: node, chromium: chromium, dir: dir}
}

// screenshotDir is where the scripts write their screenshots: CHARON_SCREENSHOT_DIR, or
// charon-screenshots in the temporary directory. It outlives the test, so that a person can
// look at the pictures afterwards.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CHARON_SCREENSHOT_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "charon-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// run runs e2e/<script>.mjs with env added to the test's environment, and fails the test with
// the script's output unless it exits 0. It returns the output. The script and the browser it
// starts run in a process group of their own, killed whole if the script outlives timeout.
func (e *e2eTools) run(t *testing.T, script string, timeout time.Duration, env map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	name, shotDir := strings.ReplaceAll(t.Name(), "/", "-"), screenshotDir(t)
	// The pictures of an earlier run of this test would pass for this run's.
	old, _ := filepath.Glob(filepath.Join(shotDir, name+"-*.png"))
	for _, f := range old {
		os.Remove(f)
	}
	cmd := exec.CommandContext(ctx, e.node, filepath.Join(e.dir, script+".mjs"))
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(), "CHARON_CHROMIUM="+e.chromium, "CHARON_SCREENSHOT_DIR="+shotDir, "CHARON_TEST="+name)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second // the browser may hold the output pipe a moment after node ends
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Run()
	// A script that died without closing its browser leaves it in the group: it goes too.
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if shot, ok := strings.CutPrefix(line, "screenshot: "); ok {
			t.Logf("screenshot %s", shot)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("e2e/%s.mjs did not end within %v; its output:\n%s", script, timeout, out.String())
	}
	if err != nil {
		t.Fatalf("e2e/%s.mjs: %v after %v; its output:\n%s", script, err, time.Since(start).Round(time.Millisecond), out.String())
	}
	t.Logf("e2e/%s.mjs passed in %v:\n%s", script, time.Since(start).Round(time.Millisecond), out.String())
	return out.String()
}

// dashboardDaemon starts charond for a browser test on a temporary directory, with flags
// added to the test harness's own. It is stopped when the test ends.
func dashboardDaemon(t *testing.T, flags ...string) *testDaemon {
	t.Helper()
	td, err := startDaemonOn(t, t.TempDir(), flags)
	if err != nil {
		t.Fatal(err)
	}
	return td
}

// startDaemonOn starts charond on dir as startTestDaemonIn does, with flags, and registers its
// stop with the test. Unlike startTestDaemonIn it reports an error instead of failing, so
// that a goroutine other than the test's may call it.
func startDaemonOn(t testing.TB, dir string, flags []string) (*testDaemon, error) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	d, err := tryStartDaemon(t, dir, logger, flags)
	if err != nil {
		return nil, err
	}
	td := &testDaemon{daemon: d, URL: "http://" + d.addr, dir: dir}
	t.Cleanup(func() { td.stop(t) })
	return td, nil
}

// loopbackPort returns a loopback port that nothing listened on a moment ago.
func loopbackPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startDaemonAt starts charond on dir listening on addr. Another process may take the port
// between loopbackPort and the listen, and a port freed a moment ago may not be free yet, so a
// listen that fails for a port in use is tried again for up to a few seconds.
func startDaemonAt(t testing.TB, dir, addr string, flags []string) (*testDaemon, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		td, err := startDaemonOn(t, dir, append([]string{"-addr", addr}, flags...))
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return td, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newToken returns a random bearer token: 32 hex digits.
func newToken(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestDashboardListLive opens the jobs list and submits jobs through the API while it is
// open: the new job's row appears first, and its status goes queued, running, completed
// without a reload. A sleeping job holds the one worker so that the new one stays queued until
// the script cancels it, and the new one waits at a gate the script opens, so each status
// lasts until the script has seen it. Then the Status select filters the rows.
func TestDashboardListLive(t *testing.T) {
	e := findE2E(t)
	td := dashboardDaemon(t)
	e.run(t, "list", e2eTimeout, map[string]string{"CHARON_URL": td.URL, "CHARON_GATE_DIR": t.TempDir()})
}

// TestDashboardLogAcrossRestart follows a running job's log on its page through a restart of
// charond on the same address and data dir, through the script's control channel: POST
// /restart cuts every connection at once, as a crash would, so the page's streams break in
// the middle of the log; it lets the job print some more lines, then stops charond (the job
// ends cancelled, its log kept) and starts a new one, and answers once that one listens. The
// page must reconnect and show lines 1..N, each once and in order, N the job's log_lines: the
// script checks the stream it received (Last-Event-ID carried over, every line once) and the
// rows it rendered, walking the whole log.
func TestDashboardLogAcrossRestart(t *testing.T) {
	e := findE2E(t)
	dir := t.TempDir()
	var td *testDaemon
	var err error
	for try := 0; try < 5; try++ { // another process may take a port loopbackPort found
		if td, err = startDaemonAt(t, dir, fmt.Sprintf("127.0.0.1:%d", loopbackPort(t)), nil); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	addr := td.addr
	// ~400 lines a second for a minute: it is running when the script restarts charond.
	id := td.submitFake(t, "followed across a restart", 5, map[string]any{"fake": "lines", "count": 20000, "interval_ms": 2})
	td.waitStatus(t, id, StatusRunning)

	var mu sync.Mutex // guards cur, and makes restarts one at a time
	cur := td
	ctl := http.NewServeMux()
	ctl.HandleFunc("POST /restart", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		next, err := restartCut(t, cur, id, addr)
		if err != nil {
			t.Errorf("restart: %v", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		cur = next
		fmt.Fprintln(w, "restarted")
	})
	ctlSrv := httptest.NewServer(ctl)
	defer ctlSrv.Close()
	e.run(t, "restart", e2eTimeout, map[string]string{"CHARON_URL": td.URL, "CHARON_JOB_ID": id, "CHARON_CONTROL_URL": ctlSrv.URL})
}

// restartCut cuts old's connections, waits until job id has printed 200 more lines, stops old
// and starts a new charond on its directory and addr. It runs on the control server's
// goroutine, so it reports errors instead of failing the test.
func restartCut(t *testing.T, old *testDaemon, id, addr string) (*testDaemon, error) {
	job, err := old.sched.get(id)
	if err != nil {
		return nil, err
	}
	cutAt := job.logs.length()
	old.httpSrv.Close()
	for deadline := time.Now().Add(waitTimeout); job.logs.length() < cutAt+200; time.Sleep(waitPoll) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("job %s printed %d lines in %v after the cut, want 200", id, job.logs.length()-cutAt, waitTimeout)
		}
	}
	t.Logf("restart: cut the connections at line %d, stopping at line %d", cutAt, job.logs.length())
	old.stop(t)
	return startDaemonAt(t, old.dir, addr, nil)
}

// TestDashboardMillionLines opens a finished job of a million lines: at its tail, with fewer
// than 500 rows in the DOM; at line 1 by its address and back with "Jump to end"; then the
// search finds a line deep inside and scrolls to it, Enter and Shift+Enter going on to the
// next and the previous hit.
func TestDashboardMillionLines(t *testing.T) {
	e := findE2E(t)
	td := dashboardDaemon(t)
	id := td.submitFake(t, "a million lines", 5, map[string]any{"fake": "lines", "count": 1000000})
	td.waitStatus(t, id, StatusCompleted)
	env := map[string]string{"CHARON_URL": td.URL, "CHARON_JOB_ID": id}
	t.Run("tail", func(t *testing.T) { e.run(t, "tail", e2eTimeout, env) })
	t.Run("search", func(t *testing.T) { e.run(t, "search", e2eTimeout, env) })
}

// TestDashboardSubmit submits through the editor: a document that is not YAML, and one
// without a playbook, show charond's message in an alert; a valid one opens the new job.
func TestDashboardSubmit(t *testing.T) {
	e := findE2E(t)
	td := dashboardDaemon(t)
	e.run(t, "submit", e2eTimeout, map[string]string{"CHARON_URL": td.URL})
}

// TestDashboardCancelRelaunch cancels a running job from its page, relaunches it (a new job
// whose relaunch_of is the first), cancels that one too, switches between the Log and Tasks
// views, and deletes the first job.
func TestDashboardCancelRelaunch(t *testing.T) {
	e := findE2E(t)
	td := dashboardDaemon(t)
	id := td.submitFake(t, "cancel me", 5, map[string]any{"fake": "sleep", "seconds": 60})
	td.waitStatus(t, id, StatusRunning)
	e.run(t, "actions", e2eTimeout, map[string]string{"CHARON_URL": td.URL, "CHARON_JOB_ID": id})
}

// TestDashboardToken runs charond with a token: the page asks for it once, refuses a wrong
// one, works with the right one (kept in sessionStorage across a reload), sends it as a
// bearer header with every API request, and never in a URL.
func TestDashboardToken(t *testing.T) {
	e := findE2E(t)
	token := newToken(t)
	td := dashboardDaemon(t, "-token", token)
	e.run(t, "token", e2eTimeout, map[string]string{"CHARON_URL": td.URL, "CHARON_TOKEN": token})
}

// TestDashboardOneOrigin visits every view of the page (the list, a job's Log and Tasks, a
// line's address, the editor, a download): no request leaves charond's origin. Every other
// script checks the same of its own requests.
func TestDashboardOneOrigin(t *testing.T) {
	e := findE2E(t)
	td := dashboardDaemon(t)
	id := td.submitFake(t, "small", 5, map[string]any{"fake": "lines", "count": 50})
	td.waitStatus(t, id, StatusCompleted)
	e.run(t, "origin", e2eTimeout, map[string]string{"CHARON_URL": td.URL, "CHARON_JOB_ID": id})
}

// TestDashboardBenchmark runs e2e/bench.mjs when CHARON_BENCH=1 (CI does not pay for it):
// a finished million-line job opened at its tail, at line 1 and at a search hit, and a live
// job at some 1,000 lines a second followed for 20 s; CHARON_BENCH_RUNS runs (default 3),
// reported as JSON and a table with medians.
func TestDashboardBenchmark(t *testing.T) {
	if os.Getenv("CHARON_BENCH") != "1" {
		t.Skip("set CHARON_BENCH=1 to run the dashboard's browser benchmark")
	}
	e := findE2E(t)
	td := dashboardDaemon(t)
	id := td.submitFake(t, "a million lines", 5, map[string]any{"fake": "lines", "count": 1000000})
	td.waitStatus(t, id, StatusCompleted)
	runs := os.Getenv("CHARON_BENCH_RUNS")
	if _, err := strconv.Atoi(runs); err != nil {
		runs = "3"
	}
	// The live jobs are made by the script, one a run, through the API: the fake runner's
	// variables are plain job variables.
	out := e.run(t, "bench", benchTimeout, map[string]string{"CHARON_URL": td.URL, "CHARON_JOB_ID": id, "CHARON_BENCH_RUNS": runs})
	if path := os.Getenv("CHARON_BENCH_OUT"); path != "" {
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if js, ok := strings.CutPrefix(sc.Text(), "json: "); ok {
				if err := os.WriteFile(path, []byte(js+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}
