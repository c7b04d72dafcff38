package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// fakeCharond stands in for charond. It knows one job, "job-1", whose logs and events are
// fixed and already complete, and it can spoil the first connection to a stream so that the
// client has to reconnect.
type fakeCharond struct {
	logs     []string // the job's log lines, ids 1..n
	events   []string // the job's status changes, ids 1..n
	final    string   // the job's final status
	exitCode int

	// What the first stream connection does after sending spoilAt items: "" nothing (it runs
	// to the completed event), "drop" (the connection breaks), "close" (the server ends the
	// response early), "stall" (it sends nothing more, not even a ping), "quiet" (it sends only
	// pings for a while, then goes on).
	spoil   string
	spoilAt int
	// ignoreLastID makes every connection start from the first item, as a server that
	// ignores Last-Event-ID would.
	ignoreLastID bool
	// hang makes streams send their items and then wait until the client goes away.
	hang bool

	statuses []string // what GET /api/v1/jobs/job-1 answers in turn; the last one repeats
	refuse   int      // when not 0, job submissions are answered with this status

	mu  sync.Mutex // guards rec: handlers write it, the test reads it through seen
	rec fakeRecord
}

// fakeRecord is what fakeCharond saw of the client.
type fakeRecord struct {
	requests    int
	lastIDs     []string // the Last-Event-ID of each stream connection, in order
	posted      []byte
	contentType string
	auth        string
}

// seen returns a copy of what the fake saw.
func (f *fakeCharond) seen() fakeRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.rec
	r.lastIDs = append([]string(nil), r.lastIDs...)
	return r
}

func (f *fakeCharond) start(t *testing.T) *httptest.Server {
	t.Helper()
	known := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if id := r.PathValue("id"); id != "job-1" {
				writeJSON(w, http.StatusNotFound, map[string]string{"error": "job not found: " + id})
				return
			}
			h(w, r)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/jobs", f.submit)
	mux.HandleFunc("GET /api/v1/jobs/{id}", known(f.job))
	mux.HandleFunc("GET /api/v1/jobs/{id}/logs/stream", known(f.stream))
	mux.HandleFunc("GET /api/v1/jobs/{id}/events/stream", known(f.stream))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.rec.requests++
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

func (f *fakeCharond) submit(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.rec.posted, f.rec.contentType, f.rec.auth = body, r.Header.Get("Content-Type"), r.Header.Get("Authorization")
	f.mu.Unlock()
	if f.refuse != 0 {
		writeJSON(w, f.refuse, map[string]string{"error": "the daemon's reason"})
		return
	}
	var spec struct{ Name string }
	yaml.Unmarshal(body, &spec)
	w.Header().Set("Location", "/api/v1/jobs/job-1")
	writeJSON(w, http.StatusCreated, map[string]any{"id": "job-1", "name": spec.Name, "status": "queued"})
}

func (f *fakeCharond) job(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	status := f.final
	if len(f.statuses) > 0 {
		status = f.statuses[0]
		if len(f.statuses) > 1 {
			f.statuses = f.statuses[1:]
		}
	}
	f.mu.Unlock()
	j := map[string]any{"id": "job-1", "name": "Demo Long Running Task", "status": status}
	switch status {
	case "queued":
		j["queue_position"] = 1
	case "completed", "failed", "timed_out", "cancelled":
		j["exit_code"] = f.exitCode
		j["started_at"] = "2023-12-07T15:30:40Z"
		j["finished_at"] = "2023-12-07T15:31:42.5Z"
	}
	writeJSON(w, http.StatusOK, j)
}

// stream serves the log or event stream as charond does: connected, the items after
// Last-Event-ID, completed; or 204 when a reconnection finds nothing left to send.
func (f *fakeCharond) stream(w http.ResponseWriter, r *http.Request) {
	items, kind := f.logs, "log"
	if strings.HasSuffix(r.URL.Path, "/events/stream") {
		items, kind = f.events, "job_event"
	}
	lastID := r.Header.Get("Last-Event-ID")
	f.mu.Lock()
	f.rec.lastIDs = append(f.rec.lastIDs, lastID)
	first := len(f.rec.lastIDs) == 1
	f.mu.Unlock()
	after, _ := strconv.Atoi(lastID)
	if f.ignoreLastID {
		after = 0
	}
	if lastID != "" && after >= len(items) && !f.hang {
		w.WriteHeader(http.StatusNoContent)
		return
	}

	w.Header().Set("Content-Type", "text/event-stream")
	flusher := w.(http.Flusher)
	send := func(format string, args ...any) {
		fmt.Fprintf(w, format, args...)
		flusher.Flush()
	}
	send(": hello\nretry: 10\n\nevent: connected\ndata: {\"message\":\"Connected to the stream for job job-1\",\"timestamp\":\"2023-12-07T15:30:39Z\"}\n\n")
	for i := after; ; i++ {
		if first && f.spoil != "" && i == f.spoilAt {
			switch f.spoil {
			case "drop":
				panic(http.ErrAbortHandler)
			case "close":
				return
			case "stall":
				<-r.Context().Done()
				return
			case "quiet":
				// Quiet for twice the client's idle timeout, with pings far more often than
				// it, so that only the pings can keep the stream open even on a loaded machine.
				for range 25 {
					time.Sleep(40 * time.Millisecond)
					send(": ping\n\n")
				}
			}
		}
		if i == len(items) {
			break
		}
		send("id: %d\nevent: %s\ndata: %s\n\n", i+1, kind, items[i])
	}
	if f.hang {
		<-r.Context().Done()
		return
	}
	send("id: %d\nevent: completed\ndata: {\"message\":\"Stream completed\",\"status\":%q,\"exit_code\":%d,"+
		"\"timestamp\":\"2023-12-07T15:31:00Z\"}\n\n", len(items), f.final, f.exitCode)
}

func logData(line string) string {
	b, _ := json.Marshal(map[string]string{"line": line, "timestamp": "2023-12-07T15:30:45.123Z", "stream": "stdout"})
	return string(b)
}

func statusData(status, message string) string {
	b, _ := json.Marshal(map[string]string{"type": "status_changed", "job_id": "job-1", "status": status,
		"message": message, "timestamp": "2023-12-07T15:30:40Z"})
	return string(b)
}

func numberedLines(n int) []string {
	lines := make([]string, n)
	for i := range lines {
		lines[i] = logData(fmt.Sprintf("line %d of %d", i+1, n))
	}
	return lines
}

// testClient is a client of srv with delays shortened for tests, and its output.
func testClient(srv *httptest.Server) (*client, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	c := newClient(srv.URL, "", "streaming_demo", &printer{out: &out, err: &errOut})
	c.retryBase, c.retryMax = time.Millisecond, 10*time.Millisecond
	c.idleTimeout = 500 * time.Millisecond // the "quiet" spoil depends on it
	c.pollInterval = time.Millisecond
	return c, &out, &errOut
}

// assertLinesOnce checks that out holds "line i of n" exactly once for every i, in order.
func assertLinesOnce(t *testing.T, out string, n int) {
	t.Helper()
	pos := 0
	for i := 1; i <= n; i++ {
		line := fmt.Sprintf("📝 LOG: line %d of %d\n", i, n)
		if c := strings.Count(out, line); c != 1 {
			t.Errorf("%q printed %d times, want once", line, c)
			continue
		}
		at := strings.Index(out, line)
		if at < pos {
			t.Errorf("%q out of order", line)
		}
		pos = at
	}
}

func TestStreamReconnects(t *testing.T) {
	tests := []struct {
		name        string
		fake        *fakeCharond
		wantCode    int
		wantLastIDs []string
	}{
		{
			name:        "connection dropped mid-stream",
			fake:        &fakeCharond{spoil: "drop", spoilAt: 3},
			wantLastIDs: []string{"", "3"},
		},
		{
			name:        "server ends the response early",
			fake:        &fakeCharond{spoil: "close", spoilAt: 5},
			wantLastIDs: []string{"", "5"},
		},
		{
			name:        "connection goes silent",
			fake:        &fakeCharond{spoil: "stall", spoilAt: 2},
			wantLastIDs: []string{"", "2"},
		},
		{
			name:        "pings keep a quiet stream open",
			fake:        &fakeCharond{spoil: "quiet", spoilAt: 3},
			wantLastIDs: []string{""},
		},
		{
			name:        "server replays from the start",
			fake:        &fakeCharond{spoil: "drop", spoilAt: 4, ignoreLastID: true},
			wantLastIDs: []string{"", "4"},
		},
		{
			name:        "job ended while reconnecting",
			fake:        &fakeCharond{spoil: "drop", spoilAt: 6, final: "failed", exitCode: 2},
			wantCode:    exitJobFailed,
			wantLastIDs: []string{"", "6"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.fake
			f.logs = numberedLines(6)
			if f.final == "" {
				f.final = "completed"
			}
			c, out, errOut := testClient(f.start(t))

			code := c.follow(context.Background(), "stream", "logs", "job-1")

			if code != tt.wantCode {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, tt.wantCode, errOut)
			}
			assertLinesOnce(t, out.String(), 6)
			if got := strings.Count(out.String(), "🔗 Connected"); got != 1 {
				t.Errorf("Connected printed %d times, want once", got)
			}
			if !strings.HasSuffix(out.String(), "\n📋 Log stream ended\n") {
				t.Errorf("output does not end with the stream's end:\n%s", out)
			}
			if reconnected := len(tt.wantLastIDs) > 1; strings.Contains(errOut.String(), "reconnecting") != reconnected {
				t.Errorf("stderr, when the client should reconnect: %v:\n%s", reconnected, errOut)
			}
			if got := fmt.Sprint(f.seen().lastIDs); got != fmt.Sprint(tt.wantLastIDs) {
				t.Errorf("Last-Event-ID of each connection = %s, want %s", got, tt.wantLastIDs)
			}
		})
	}
}

func TestStreamFinalStatus(t *testing.T) {
	tests := []struct {
		final     string
		exitCode  int
		wantCode  int
		wantEnder string
	}{
		{"completed", 0, exitCompleted, `✅ Completed {"message": "Stream completed"}`},
		{"failed", 2, exitJobFailed, `❌ Failed {"message": "Stream completed"} (exit code 2)`},
		{"timed_out", -1, exitJobFailed, `⏰ Timed out {"message": "Stream completed"} (exit code -1)`},
		{"cancelled", -1, exitJobFailed, `🚫 Cancelled {"message": "Stream completed"} (exit code -1)`},
	}
	for _, tt := range tests {
		t.Run(tt.final, func(t *testing.T) {
			f := &fakeCharond{logs: numberedLines(2), final: tt.final, exitCode: tt.exitCode}
			c, out, _ := testClient(f.start(t))
			if code := c.follow(context.Background(), "stream", "logs", "job-1"); code != tt.wantCode {
				t.Errorf("exit status %d, want %d", code, tt.wantCode)
			}
			want := "[" + time.Date(2023, 12, 7, 15, 30, 45, 0, time.UTC).Local().Format("15:04:05") +
				"] 📝 LOG: line 1 of 2\n"
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q (time from the event):\n%s", want, out)
			}
			if !strings.Contains(out.String(), "] "+tt.wantEnder+"\n") {
				t.Errorf("output lacks %q:\n%s", tt.wantEnder, out)
			}
		})
	}
}

func TestEvents(t *testing.T) {
	f := &fakeCharond{
		events: []string{
			statusData("queued", "Job queued"),
			statusData("running", "Job started"),
			`{"type":"runner_on_ok","host":"localhost","task":"ping","message":"ok: [localhost]"}`,
			statusData("failed", "Job failed with exit code 2"),
		},
		final: "failed", exitCode: 2,
		spoil: "drop", spoilAt: 2,
	}
	c, out, _ := testClient(f.start(t))

	code := c.follow(context.Background(), "events", "events", "job-1")

	if code != exitJobFailed {
		t.Errorf("exit status %d, want %d", code, exitJobFailed)
	}
	for _, want := range []string{
		"⏳ queued     Job queued\n",
		"🏃 running    Job started\n",
		"  TASK [ping]\n",
		"    ✅ localhost\n",
		"❌ failed     Job failed with exit code 2\n",
		"❌ Failed {\"message\": \"Stream completed\"} (exit code 2)\n",
		"📋 Event stream ended\n",
	} {
		if got := strings.Count(out.String(), want); got != 1 {
			t.Errorf("%q printed %d times, want once; output:\n%s", want, got, out)
		}
	}
}

func TestSubmit(t *testing.T) {
	f := &fakeCharond{logs: numberedLines(3), final: "completed"}
	srv := f.start(t)
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		return map[string]string{"CHARON_URL": srv.URL + "/", "CHARON_TOKEN": "s3cret"}[k]
	}

	code := run(context.Background(), []string{"streaming_demo", "submit", "simple_job.yaml"}, &out, &errOut, getenv)

	if code != exitCompleted {
		t.Fatalf("exit status %d, want 0; stderr:\n%s", code, errOut.String())
	}
	seen := f.seen()
	file, _ := os.ReadFile("simple_job.yaml")
	if !bytes.Equal(seen.posted, file) {
		t.Errorf("posted body differs from simple_job.yaml:\n%s", seen.posted)
	}
	if seen.contentType != "application/x-yaml" {
		t.Errorf("Content-Type = %q, want application/x-yaml", seen.contentType)
	}
	if seen.auth != "Bearer s3cret" {
		t.Errorf("Authorization = %q, want the bearer token", seen.auth)
	}
	for _, want := range []string{
		"✅ Job submitted!\n   Job ID: job-1\n   Name: Simple Ansible Task\n   Status: queued\n",
		"] 🔗 Connected {\"message\": \"Connected to the stream for job job-1\"}\n",
		"] ✅ Completed {\"message\": \"Stream completed\"}\n\n📋 Log stream ended\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	assertLinesOnce(t, out.String(), 3)
	if strings.Contains(out.String(), "\033") {
		t.Errorf("colour codes in output that is not a terminal:\n%q", out.String())
	}
}

func TestSubmitResolvesPlaybookPath(t *testing.T) {
	f := &fakeCharond{final: "completed"}
	c, _, errOut := testClient(f.start(t))
	// A path to the job file from elsewhere, as when run from another directory.
	jobFile := filepath.Join("..", "streaming_demo", "ansible_job.yaml")

	if code := c.submit(context.Background(), jobFile, nil); code != exitCompleted {
		t.Fatalf("exit status %d; stderr:\n%s", code, errOut)
	}

	posted := f.seen().posted
	var got, want map[string]any
	if err := yaml.Unmarshal(posted, &got); err != nil {
		t.Fatalf("posted body is not YAML: %v\n%s", err, posted)
	}
	file, _ := os.ReadFile("ansible_job.yaml")
	yaml.Unmarshal(file, &want)
	wantPath, _ := filepath.Abs(filepath.Join("..", "..", "ansible", "provision-masternode.yaml"))
	want["playbook"] = wantPath
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("posted job:\n got %v\nwant %v", got, want)
	}
	if _, err := os.Stat(wantPath); err != nil {
		t.Errorf("the playbook the job names is missing: %v", err)
	}
}

func TestLoadJobFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name         string
		content      string
		wantErr      string // the start of the error; "" for none
		wantPlaybook string // the playbook path sent, when it was rewritten
	}{
		{name: "embedded playbook is sent as it is", content: "name: a\nplaybook: |\n  - hosts: all\n"},
		{name: "absolute path is sent as it is", content: "name: a\nplaybook: /srv/site.yml\n"},
		{name: "relative path is made absolute", content: "name: a\nplaybook: sub/../site.yml\n",
			wantPlaybook: filepath.Join(dir, "site.yml")},
		{name: "syntax error", content: "name: a\nplaybook: |\n  - hosts: all\n bad: [\n",
			wantErr: filepath.Join(dir, "job.yaml") + ":3: did not find expected key"},
		{name: "tab indentation", content: "name: a\n\tplaybook: x\n",
			wantErr: filepath.Join(dir, "job.yaml") + ":2: found a tab character that violates indentation"},
		{name: "duplicate field", content: "name: a\nname: b\n",
			wantErr: filepath.Join(dir, "job.yaml") + `:2: mapping key "name" already defined at line 1`},
		{name: "not a mapping", content: "- name: a\n",
			wantErr: filepath.Join(dir, "job.yaml") + ":1: a job is a mapping"},
		{name: "empty", content: "",
			wantErr: filepath.Join(dir, "job.yaml") + ": the job file is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "job.yaml")
			os.WriteFile(path, []byte(tt.content), 0o644)

			body, playbook, err := loadJobFile(path)

			switch {
			case tt.wantErr != "":
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q...", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("error = %v", err)
			}
			if playbook != tt.wantPlaybook {
				t.Errorf("playbook = %q, want %q", playbook, tt.wantPlaybook)
			}
			if tt.wantPlaybook == "" && string(body) != tt.content {
				t.Errorf("body = %q, want the file unchanged", body)
			}
			var job struct{ Name, Playbook string }
			yaml.Unmarshal(body, &job)
			if job.Name != "a" || (tt.wantPlaybook != "" && job.Playbook != tt.wantPlaybook) {
				t.Errorf("sent job = %+v, want name a and playbook %q", job, tt.wantPlaybook)
			}
		})
	}
}

func TestSubmitBadYAMLSendsNothing(t *testing.T) {
	f := &fakeCharond{}
	c, _, errOut := testClient(f.start(t))
	path := filepath.Join(t.TempDir(), "broken.yaml")
	os.WriteFile(path, []byte("name: x\nplaybook: [\n"), 0o644)

	code := c.submit(context.Background(), path, nil)

	if code != exitUsage {
		t.Errorf("exit status %d, want %d", code, exitUsage)
	}
	if want := path + ":2: did not find expected node content"; !strings.Contains(errOut.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, errOut)
	}
	if n := f.seen().requests; n != 0 {
		t.Errorf("%d requests sent for a broken file, want none", n)
	}
}

func TestErrorsUserCanActOn(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	tests := []struct {
		name   string
		fake   *fakeCharond // nil: url instead
		url    string
		cmd    string
		arg    string
		want   []string
		status int
	}{
		{name: "connection refused", url: closed.URL, cmd: "stream", arg: "job-1",
			want: []string{closed.URL, "Is charond running?"}},
		{name: "connection refused on submit", url: closed.URL, cmd: "submit", arg: "simple_job.yaml",
			want: []string{closed.URL, "Is charond running?"}},
		{name: "unknown job", fake: &fakeCharond{}, cmd: "stream", arg: "nope", want: []string{"job not found: nope"}},
		{name: "unknown job events", fake: &fakeCharond{}, cmd: "events", arg: "nope", want: []string{"job not found: nope"}},
		{name: "bad request", fake: &fakeCharond{refuse: 400}, cmd: "submit", arg: "ansible_job.yaml",
			want: []string{"charond refused the job: the daemon's reason (HTTP 400)", "playbook path was sent as /"}},
		{name: "too large", fake: &fakeCharond{refuse: 413}, cmd: "submit", arg: "simple_job.yaml",
			want: []string{"the daemon's reason (HTTP 413)"}},
		{name: "unsupported type", fake: &fakeCharond{refuse: 415}, cmd: "submit", arg: "simple_job.yaml",
			want: []string{"the daemon's reason (HTTP 415)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := tt.url
			if tt.fake != nil {
				url = tt.fake.start(t).URL
			}
			var out, errOut bytes.Buffer
			getenv := func(k string) string { return map[string]string{"CHARON_URL": url}[k] }

			code := run(context.Background(), []string{"streaming_demo", tt.cmd, tt.arg}, &out, &errOut, getenv)

			if code != exitUsage {
				t.Errorf("exit status %d, want %d", code, exitUsage)
			}
			for _, want := range tt.want {
				if !strings.Contains(errOut.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, errOut.String())
				}
			}
		})
	}
}

func TestInterruptKeepsJobAndTellsHowToResume(t *testing.T) {
	for _, cmd := range []string{"stream", "events"} {
		t.Run(cmd, func(t *testing.T) {
			f := &fakeCharond{logs: numberedLines(2), events: []string{statusData("running", "Job started")}, hang: true}
			srv := f.start(t)
			ctx, cancel := context.WithCancel(context.Background())
			out := &notifyWriter{want: "[", seen: cancel} // Ctrl-C once a stream line is printed
			var errOut bytes.Buffer
			getenv := func(k string) string { return map[string]string{"CHARON_URL": srv.URL}[k] }

			code := run(ctx, []string{"./streaming_demo", cmd, "job-1"}, out, &errOut, getenv)

			if code != exitInterrupted {
				t.Errorf("exit status %d, want %d", code, exitInterrupted)
			}
			want := "it keeps running. To watch it again:\n   ./streaming_demo " + cmd + " job-1\n"
			if !strings.Contains(errOut.String(), want) {
				t.Errorf("stderr lacks %q:\n%s", want, errOut.String())
			}
		})
	}
}

// notifyWriter calls seen once something containing want has been written.
type notifyWriter struct {
	bytes.Buffer
	want string
	seen func()
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(w.want)) {
		w.seen()
	}
	return w.Buffer.Write(p)
}

func TestDemo(t *testing.T) {
	f := &fakeCharond{
		logs:     []string{logData("🚀 Starting demo job..."), logData("✅ Demo job completed successfully!")},
		final:    "completed",
		statuses: []string{"queued", "queued", "running", "completed"},
	}
	c, out, errOut := testClient(f.start(t))

	code := c.demo(context.Background())

	if code != exitCompleted {
		t.Fatalf("exit status %d; stderr:\n%s", code, errOut)
	}
	var posted struct{ Name string }
	body := f.seen().posted
	if err := yaml.Unmarshal(body, &posted); err != nil || posted.Name != "Demo Long Running Task" {
		t.Errorf("posted job %q (%v), want the built-in demo job", body, err)
	}
	want := []string{
		"🏁 Charon Log Streaming Demo\n" + strings.Repeat("=", 80) + "\nCharon URL: " + c.base + "\n\n",
		"🚀 Submitting demo job...\n✅ Demo job submitted!\n   Job ID: job-1\n   Name: Demo Long Running Task\n   Status: queued\n\n",
		"⏳ Waiting for job to start...\n   Position 1 in the queue\n📋 Starting log stream for demo job...\n" + rule + "\n",
		"] 📝 LOG: 🚀 Starting demo job...\n",
		"] ✅ Completed {\"message\": \"Stream completed\"}\n\n📋 Log stream ended\n\n✅ Final status: completed (exit code 0)\n⏱️  Duration: 1m2.5s\n",
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		wantOut  bool // usage on stdout (asked for) rather than stderr (a mistake)
	}{
		{args: nil, wantCode: exitUsage},
		{args: []string{"-h"}, wantCode: exitCompleted, wantOut: true},
		{args: []string{"--help"}, wantCode: exitCompleted, wantOut: true},
		{args: []string{"help"}, wantCode: exitCompleted, wantOut: true},
		{args: []string{"frobnicate"}, wantCode: exitUsage},
		{args: []string{"submit"}, wantCode: exitUsage},
		{args: []string{"stream"}, wantCode: exitUsage},
		{args: []string{"events", "a", "b"}, wantCode: exitUsage},
		{args: []string{"demo", "extra"}, wantCode: exitUsage},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"streaming_demo"}, tt.args...)
			code := run(context.Background(), args, &out, &errOut, func(string) string { return "" })
			if code != tt.wantCode {
				t.Errorf("exit status %d, want %d", code, tt.wantCode)
			}
			where, other := &errOut, &out
			if tt.wantOut {
				where, other = &out, &errOut
			}
			if !strings.Contains(where.String(), "Usage: streaming_demo") || other.Len() != 0 {
				t.Errorf("usage not (only) where expected; stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
			}
		})
	}
}

func TestUseColor(t *testing.T) {
	tty, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0) // a character device, like a terminal
	if err != nil {
		t.Skip(err)
	}
	defer tty.Close()
	regular, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	tests := []struct {
		name    string
		w       io.Writer
		noColor string
		want    bool
	}{
		{"terminal", tty, "", true},
		{"terminal with NO_COLOR", tty, "1", false},
		{"regular file", regular, "", false},
		{"buffer", &bytes.Buffer{}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return map[string]string{"NO_COLOR": tt.noColor}[k] }
			if got := useColor(tt.w, getenv); got != tt.want {
				t.Errorf("useColor = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		base, server, max time.Duration
		n                 int
		want              time.Duration
	}{
		{time.Second, 0, 15 * time.Second, 1, time.Second},
		{time.Second, 0, 15 * time.Second, 3, 4 * time.Second},
		{time.Second, 0, 15 * time.Second, 10, 15 * time.Second},
		{time.Second, 3 * time.Second, 15 * time.Second, 1, 3 * time.Second},
		{time.Second, 3 * time.Second, 15 * time.Second, 2, 6 * time.Second},
	}
	for _, tt := range tests {
		if got := backoff(tt.base, tt.server, tt.max, tt.n); got != tt.want {
			t.Errorf("backoff(%v, %v, %v, %d) = %v, want %v", tt.base, tt.server, tt.max, tt.n, got, tt.want)
		}
	}
}
