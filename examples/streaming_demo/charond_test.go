package main

// Tests against the real charond, built from the repository root, running the real
// ansible-playbook. They skip when ansible-playbook is missing, unless CHARON_REQUIRE_ANSIBLE=1
// says it must be there, and under -short.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// repoRoot is the repository root, seen from this package's directory.
var repoRoot, _ = filepath.Abs(filepath.Join("..", ".."))

// The charond binary, built once for all tests that need it.
var (
	buildOnce   sync.Once
	charondPath string
	buildErr    error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if charondPath != "" {
		os.RemoveAll(filepath.Dir(charondPath))
	}
	os.Exit(code)
}

// needAnsible skips the test unless the real ansible-playbook can be run.
func needAnsible(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not running charond and ansible-playbook")
	}
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		if os.Getenv("CHARON_REQUIRE_ANSIBLE") == "1" {
			t.Fatalf("CHARON_REQUIRE_ANSIBLE=1 but ansible-playbook cannot be run: %v", err)
		}
		t.Skipf("ansible-playbook not found (%v); set CHARON_REQUIRE_ANSIBLE=1 to make this a failure", err)
	}
}

// startCharond builds charond (once) and runs it on a port it picks itself, with its data in
// a temporary directory, the repository root as its playbook directory and TMPDIR set to tmp,
// for charond and its jobs. It returns charond's URL.
func startCharond(t *testing.T, tmp string) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "charond-build-")
		if err != nil {
			buildErr = err
			return
		}
		charondPath = filepath.Join(dir, "charond")
		cmd := exec.Command("go", "build", "-o", charondPath, ".")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build charond in %s: %v\n%s", repoRoot, err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}

	logs := &lockedBuffer{}
	// Jobs inherit only the environment charond allows them; the tests' jobs need TMPDIR too, so
	// that what they write stays in the test's directory.
	// Port 0: charond listens on a port the kernel picks, and logs it. (A port the test picked
	// and freed could be taken by another process before charond listens on it.)
	cmd := exec.Command(charondPath, "-addr", "127.0.0.1:0", "-data-dir", t.TempDir(), "-playbook-dir", repoRoot,
		"-env-allow", "PATH,HOME,LANG,LC_*,USER,ANSIBLE_*,TMPDIR")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { // ends when charond exits: on its own, or after the cleanup's signals
		exitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("charond's log:\n%s", logs.String())
		}
	})

	// charond checks ansible-playbook before it listens, which takes seconds on a busy machine.
	deadline := time.Now().Add(90 * time.Second)
	for {
		if m := listeningAddr.FindStringSubmatch(logs.String()); m != nil {
			return "http://" + m[1]
		}
		select {
		case <-exited:
			t.Fatalf("charond exited before it listened: %v", exitErr)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("charond did not listen within 90 s")
		}
	}
}

// listeningAddr finds the address in charond's log line "charond listening", which it writes
// once its listener is open.
var listeningAddr = regexp.MustCompile(`msg="charond listening" addr=(\S+)`)

// lockedBuffer is a bytes.Buffer that charond's output copiers and the test may share.
type lockedBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// timedWriter records when each line of output was first written.
type timedWriter struct {
	buf   bytes.Buffer
	times map[string]time.Time // by line
}

func (w *timedWriter) Write(p []byte) (int, error) {
	now := time.Now()
	for _, line := range strings.Split(string(p), "\n") {
		if _, ok := w.times[line]; !ok {
			w.times[line] = now
		}
	}
	return w.buf.Write(p)
}

// arrival is when the first output line containing text was written.
func (w *timedWriter) arrival(t *testing.T, text string) time.Time {
	t.Helper()
	for line, at := range w.times {
		if strings.Contains(line, text) {
			return at
		}
	}
	t.Fatalf("no output line contains %q", text)
	return time.Time{}
}

// runClient runs the client as `streaming_demo args...` against url.
func runClient(t *testing.T, url string, args ...string) (code int, out *timedWriter, errOut string) {
	t.Helper()
	out = &timedWriter{times: map[string]time.Time{}}
	var stderr bytes.Buffer
	getenv := func(k string) string { return map[string]string{"CHARON_URL": url}[k] }
	code = run(context.Background(), append([]string{"streaming_demo"}, args...), out, &stderr, getenv)
	// The arguments are quoted: a test may pass escape sequences, which must not reach the
	// terminal of whoever runs the tests with -v.
	t.Logf("streaming_demo %q: exit status %d\n%s%s", args, code, out.buf.String(), stderr.String())
	return code, out, stderr.String()
}

func wantInOutput(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestRealSimpleJob(t *testing.T) {
	needAnsible(t)
	url := startCharond(t, t.TempDir())

	code, out, _ := runClient(t, url, "submit", "simple_job.yaml")

	if code != exitCompleted {
		t.Errorf("exit status %d, want 0", code)
	}
	logLines := []string{
		"📝 LOG:     \"msg\": \"Hello from Charon Ansible job!\"\n",
		"📝 LOG:     \"msg\": \"Job is running...\"\n",
		"📝 LOG:     \"msg\": \"Job completed successfully!\"\n",
		"✅ Completed {\"message\": \"Log stream completed\"}\n\n📋 Log stream ended\n",
	}
	wantInOutput(t, out.buf.String(), logLines...)
	m := regexp.MustCompile(`Job ID: (\S+)`).FindStringSubmatch(out.buf.String())
	if m == nil {
		t.Fatal("no job ID in the output")
	}

	t.Run("stream", func(t *testing.T) {
		code, out, _ := runClient(t, url, "stream", m[1])
		if code != exitCompleted {
			t.Errorf("exit status %d, want 0", code)
		}
		wantInOutput(t, out.buf.String(), logLines...)
	})
	t.Run("events", func(t *testing.T) {
		code, out, _ := runClient(t, url, "events", m[1])
		if code != exitCompleted {
			t.Errorf("exit status %d, want 0", code)
		}
		if !regexp.MustCompile(`(?s)⏳ queued .*\n.*🏃 running .*\n.*✅ completed .*\n.*✅ Completed {"message": "Event stream completed"}\n\n📋 Event stream ended\n`).
			MatchString(out.buf.String()) {
			t.Error("output lacks queued, running, completed and the stream's end, in that order")
		}
		// Between running and completed: the play, each task with localhost's result under
		// it, and the recap.
		var want strings.Builder
		want.WriteString(`(?s)🏃 running .*\] ▶ PLAY \[Simple Demo Playbook\]\n`)
		for _, task := range []string{"Show welcome message", "Simulate some work", "Wait a moment", "Show completion message"} {
			want.WriteString(`\S+   TASK \[` + regexp.QuoteMeta(task) + `\]\n\S+     ✅ localhost \(\d+\.\d\ds\)\n`)
		}
		want.WriteString(`\S+ 📊 PLAY RECAP\n {13}localhost  ok=4 changed=0 unreachable=0 failed=0 skipped=0 rescued=0 ignored=0\n` +
			`\S+ ✅ completed `)
		if !regexp.MustCompile(want.String()).MatchString(out.buf.String()) {
			t.Errorf("output lacks the play, its four tasks each ok on localhost, and the recap, in order (%s)", want.String())
		}
	})
}

// TestRealEventsAsTheyHappen follows the events of simple_job.yaml while it runs: each task
// shows as it starts and localhost's result as it lands, so the 3 s pause shows between the
// heading of its task and its result.
func TestRealEventsAsTheyHappen(t *testing.T) {
	needAnsible(t)
	url := startCharond(t, t.TempDir())
	body, _, err := loadJobFile("simple_job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	j, err := newClient(url, "", "streaming_demo", &printer{out: io.Discard, err: io.Discard}).postJob(context.Background(), body)
	if err != nil {
		t.Fatal(err)
	}

	code, out, _ := runClient(t, url, "events", j.ID)

	if code != exitCompleted {
		t.Errorf("exit status %d, want 0", code)
	}
	started, landed := out.arrival(t, "TASK [Wait a moment]"), out.arrival(t, "📊 PLAY RECAP")
	if gap := landed.Sub(started); gap < 2500*time.Millisecond {
		t.Errorf("the pause's task heading came %v before the recap, want about 3 s: events are not shown as they happen", gap)
	}
	if strings.Count(out.buf.String(), "✅ localhost (") != 4 {
		t.Error("want four results for localhost")
	}
}

// TestRealLongJob runs long_job.yaml with its variables cut down (still strings, as shipped) so
// that it takes seconds, and checks that its items arrive as they happen, not all at the end.
// As shipped (20 items, 2 s apart) it takes 40 s, too long for every test run; TestRealDemo
// runs a job of that kind at full length.
func TestRealLongJob(t *testing.T) {
	needAnsible(t)
	url := startCharond(t, t.TempDir())
	file, err := os.ReadFile("long_job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var job map[string]any
	if err := yaml.Unmarshal(file, &job); err != nil {
		t.Fatal(err)
	}
	job["variables"] = map[string]string{"task_count": "4", "sleep_interval": "1", "checkpoint_interval": "2"}
	short, _ := yaml.Marshal(job)
	path := filepath.Join(t.TempDir(), "long_job.yaml")
	os.WriteFile(path, short, 0o644)

	code, out, _ := runClient(t, url, "submit", path)

	if code != exitCompleted {
		t.Errorf("exit status %d, want 0", code)
	}
	got := out.buf.String()
	if n := strings.Count(got, "📊 Processing item "); n != 4 {
		t.Errorf("%d items processed, want 4", n)
	}
	wantInOutput(t, got, "⚡ Checkpoint reached at item 2\"", "⚡ Checkpoint reached at item 4\"",
		"✅ Long running Ansible task completed successfully!")
	if strings.Contains(got, "Checkpoint reached at item 3") {
		t.Error("a checkpoint at item 3, want them every 2 items")
	}
	first, last := out.arrival(t, "Processing item 1/4"), out.arrival(t, "Processing item 4/4")
	if gap := last.Sub(first); gap < 2500*time.Millisecond {
		t.Errorf("items 1 and 4 arrived %v apart, want about 3 s: the log is not streamed as it happens", gap)
	}

	t.Run("stream through a connection that breaks", func(t *testing.T) {
		m := regexp.MustCompile(`Job ID: (\S+)`).FindStringSubmatch(got)
		if m == nil {
			t.Fatal("no job ID in the output")
		}
		proxy := cuttingProxy(t, url, 6) // connected and 5 lines

		code, again, errOut := runClient(t, proxy, "stream", m[1])

		if code != exitCompleted {
			t.Errorf("exit status %d, want 0", code)
		}
		if !strings.Contains(errOut, "reconnecting") {
			t.Error("the client did not reconnect; the test's proxy did not cut the stream")
		}
		if a, b := logLines(got), logLines(again.buf.String()); strings.Join(a, "\n") != strings.Join(b, "\n") {
			t.Errorf("log through the broken connection differs from the log as it ran:\n%s\n---\n%s",
				strings.Join(b, "\n"), strings.Join(a, "\n"))
		}
	})
}

// logLines returns the log lines in the client's output, without their times.
func logLines(out string) []string {
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		if _, text, ok := strings.Cut(line, "] 📝 LOG: "); ok {
			lines = append(lines, text)
		}
	}
	return lines
}

// cuttingProxy forwards to target, but breaks the first event stream it passes on after n
// events, as a flaky network would. It returns the proxy's URL.
func cuttingProxy(t *testing.T, target string, n int) string {
	t.Helper()
	u, err := neturl.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // pass each event on at once
	var cut atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/stream") && cut.CompareAndSwap(false, true) {
			w = &cuttingWriter{ResponseWriter: w, left: n}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// cuttingWriter passes on its first left events, then breaks the connection.
type cuttingWriter struct {
	http.ResponseWriter
	left int
}

func (c *cuttingWriter) Write(p []byte) (int, error) {
	for i := 0; i+1 < len(p); i++ {
		if p[i] == '\n' && p[i+1] == '\n' {
			if c.left--; c.left == 0 {
				c.ResponseWriter.Write(p[:i+2])
				c.Flush()
				panic(http.ErrAbortHandler)
			}
		}
	}
	return c.ResponseWriter.Write(p)
}

func (c *cuttingWriter) Flush() { c.ResponseWriter.(http.Flusher).Flush() }

func TestRealAnsibleJob(t *testing.T) {
	needAnsible(t)
	tmp := t.TempDir()
	url := startCharond(t, tmp)
	// The job file's playbook path is relative to the file, which the client resolves.
	jobFile, _ := filepath.Abs("ansible_job.yaml")

	code, out, _ := runClient(t, url, "submit", jobFile)

	if code != exitCompleted {
		t.Errorf("exit status %d, want 0", code)
	}
	wantInOutput(t, out.buf.String(), "Master node preflight passed on localhost", "PLAY RECAP")
	rendered, _ := filepath.Glob(filepath.Join(tmp, "charon-masternode-*", "kubeadm-config.yaml"))
	if len(rendered) != 1 {
		t.Fatalf("rendered kubeadm configuration under TMPDIR: %v, want one file", rendered)
	}
	var kinds []string
	dec := yaml.NewDecoder(bytes.NewReader(must(os.ReadFile(rendered[0]))))
	for {
		var doc struct{ Kind string }
		if dec.Decode(&doc) != nil {
			break
		}
		kinds = append(kinds, doc.Kind)
	}
	if got, want := strings.Join(kinds, ","), "InitConfiguration,ClusterConfiguration,KubeletConfiguration"; got != want {
		t.Errorf("kubeadm-config.yaml holds %s, want %s", got, want)
	}
}

func TestRealPreflightFailsClearly(t *testing.T) {
	needAnsible(t)
	url := startCharond(t, t.TempDir())
	jobFile, _ := filepath.Abs("ansible_job.yaml")
	var job map[string]any
	yaml.Unmarshal(must(os.ReadFile(jobFile)), &job)
	job["playbook"] = filepath.Join(repoRoot, "ansible", "provision-masternode.yaml")
	job["variables"].(map[string]any)["master_min_cpus"] = "100000"
	path := filepath.Join(t.TempDir(), "job.yaml")
	os.WriteFile(path, must(yaml.Marshal(job)), 0o644)

	code, out, _ := runClient(t, url, "submit", path)

	if code != exitJobFailed {
		t.Errorf("exit status %d, want %d", code, exitJobFailed)
	}
	if !regexp.MustCompile(`Master node preflight failed on localhost: CPU has \d+ vCPUs, needs at least 100000`).
		MatchString(out.buf.String()) {
		t.Error("output lacks the preflight's reason")
	}
}

func TestRealRefusedPath(t *testing.T) {
	needAnsible(t)
	url := startCharond(t, t.TempDir())
	path := filepath.Join(t.TempDir(), "job.yaml")
	os.WriteFile(path, []byte("name: outside\nplaybook: ../elsewhere.yml\n"), 0o644)

	code, _, errOut := runClient(t, url, "submit", path)

	if code != exitUsage {
		t.Errorf("exit status %d, want %d", code, exitUsage)
	}
	for _, want := range []string{"charond refused the job: ", "(HTTP 400)", "playbook path was sent as " + filepath.Dir(filepath.Dir(path))} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
}

// TestRealDemo runs the demo command as it is: its job takes about 30 s.
func TestRealDemo(t *testing.T) {
	needAnsible(t)
	url := startCharond(t, t.TempDir())

	code, out, _ := runClient(t, url, "demo")

	if code != exitCompleted {
		t.Errorf("exit status %d, want 0", code)
	}
	got := out.buf.String()
	wantInOutput(t, got, "Charon URL: "+url+"\n", "   Name: Demo Long Running Task\n",
		"📝 LOG:     \"msg\": \"🚀 Starting demo job...\"\n",
		"⚡ Checkpoint reached at item 5\"", "⚡ Checkpoint reached at item 10\"", "⚡ Checkpoint reached at item 15\"",
		"📝 LOG:     \"msg\": \"✅ Demo job completed successfully!\"\n",
		"📋 Log stream ended\n\n✅ Final status: completed (exit code 0)\n⏱️  Duration: ")
	items := regexp.MustCompile(`📊 Processing item \d+/15 \(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d UTC \d{4}\)`).FindAllString(got, -1)
	if len(items) != 15 {
		t.Errorf("%d items with their date, want 15", len(items))
	}
	if gap := out.arrival(t, "item 15/15").Sub(out.arrival(t, "item 1/15")); gap < 26*time.Second {
		t.Errorf("items 1 and 15 arrived %v apart, want about 28 s (2 s apart)", gap)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
