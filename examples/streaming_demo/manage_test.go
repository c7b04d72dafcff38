package main

// Tests of the commands that manage jobs: list, status, cancel, relaunch and watch, against a
// fake charond that serves the endpoints they use.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// managerFake stands in for charond for the commands that manage jobs. It knows the jobs in
// jobs, newest first; it cancels and relaunches them as charond does, serves the log stream of
// a relaunched job, and serves the stream of every job's status changes, which it can spoil
// once so that the client has to reconnect.
type managerFake struct {
	jobs []kv // each job's JSON, newest first; relaunches are put in front

	listRefusal int // when not 0, GET /api/v1/jobs is answered with this status

	relaunchFinal string // the final status of a relaunched job's run; "completed" if ""

	changes []string // the data of the status changes on the stream of every job, ids 1..n
	// What the first connection to that stream does after sending spoilAt changes: "drop" (the
	// connection breaks), "close" (charond ends the stream, as when it shuts down), "gone"
	// (charond ends the stream and stops listening). Later connections send what follows
	// Last-Event-ID and then wait until the client goes away.
	spoil   string
	spoilAt int
	// replayFrom, when not 0, makes every connection start from change replayFrom whatever
	// Last-Event-ID says, as a server that replays too much would.
	replayFrom int

	// lastEventID is the last_event_id GET /api/v1/info answers: where watch starts by default.
	lastEventID int

	listener net.Listener // set before the server starts; "gone" closes it

	mu  sync.Mutex // guards jobs after the server starts, and rec
	rec managerRecord
}

// managerRecord is what managerFake saw of the client.
type managerRecord struct {
	requests     []string // method and URI of each request, in order
	auths        []string // the Authorization header of each request
	bodies       []string // the body of each POST
	contentTypes []string // the Content-Type of each POST
	lastIDs      []string // the Last-Event-ID of each connection to the stream of every job
}

func (f *managerFake) seen() managerRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.rec
	r.requests = slices.Clone(r.requests)
	r.auths = slices.Clone(r.auths)
	r.bodies = slices.Clone(r.bodies)
	r.contentTypes = slices.Clone(r.contentTypes)
	r.lastIDs = slices.Clone(r.lastIDs)
	return r
}

func (f *managerFake) start(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/jobs", f.list)
	mux.HandleFunc("GET /api/v1/jobs/{id}", f.known(func(w http.ResponseWriter, r *http.Request, j kv) {
		writeJSON(w, http.StatusOK, j)
	}))
	mux.HandleFunc("POST /api/v1/jobs/{id}/cancel", f.known(f.cancel))
	mux.HandleFunc("POST /api/v1/jobs/{id}/relaunch", f.known(f.relaunch))
	mux.HandleFunc("GET /api/v1/jobs/{id}/logs/stream", f.known(f.logs))
	mux.HandleFunc("GET /api/v1/events/stream", f.stream)
	mux.HandleFunc("GET /api/v1/info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, kv{"version": "fake", "last_event_id": f.lastEventID})
	})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.mu.Lock()
		f.rec.requests = append(f.rec.requests, r.Method+" "+r.URL.RequestURI())
		f.rec.auths = append(f.rec.auths, r.Header.Get("Authorization"))
		if r.Method == http.MethodPost {
			f.rec.bodies = append(f.rec.bodies, string(body))
			f.rec.contentTypes = append(f.rec.contentTypes, r.Header.Get("Content-Type"))
		}
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	f.listener = srv.Listener
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// known passes the job the request names to h, or answers 404 as charond does.
func (f *managerFake) known(h func(http.ResponseWriter, *http.Request, kv)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		f.mu.Lock()
		i := slices.IndexFunc(f.jobs, func(j kv) bool { return j["id"] == id })
		var j kv
		if i >= 0 {
			j = f.jobs[i]
		}
		f.mu.Unlock()
		if j == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "job not found: " + id})
			return
		}
		h(w, r, j)
	}
}

func (f *managerFake) list(w http.ResponseWriter, r *http.Request) {
	if f.listRefusal != 0 {
		writeJSON(w, f.listRefusal, map[string]string{"error": "the daemon's reason"})
		return
	}
	status := r.URL.Query().Get("status")
	f.mu.Lock()
	jobs := []kv{}
	for _, j := range f.jobs {
		if status == "" || j["status"] == status {
			jobs = append(jobs, j)
		}
	}
	f.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"jobs": jobs})
}

func (f *managerFake) cancel(w http.ResponseWriter, r *http.Request, j kv) {
	f.mu.Lock()
	status := j["status"]
	if status == "queued" {
		j["status"], j["message"], j["queue_position"] = "cancelled", "Job cancelled before it started", nil
		j["finished_at"] = "2026-03-01T10:00:09Z"
	}
	answer, _ := json.Marshal(j)
	f.mu.Unlock()
	switch status {
	case "queued", "running":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		w.Write(answer)
	default:
		writeJSON(w, http.StatusConflict, map[string]string{"error": fmt.Sprintf("job %s has already ended (%s)", j["id"], status)})
	}
}

func (f *managerFake) relaunch(w http.ResponseWriter, r *http.Request, j kv) {
	var req struct{ Hosts string }
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || (req.Hosts != "all" && req.Hosts != "failed") {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("bad relaunch request (%v)", err)})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if st := j["status"]; st == "queued" || st == "running" {
		writeJSON(w, http.StatusConflict, map[string]string{"error": fmt.Sprintf("job %s is %s: relaunch it once it has ended", j["id"], st)})
		return
	}
	limit := j["limit"]
	if req.Hosts == "failed" {
		var failed []string
		if summary, ok := j["summary"].(kv); ok {
			for host, counts := range summary["hosts"].(map[string]hostStats) {
				if counts.Failed > 0 || counts.Unreachable > 0 {
					failed = append(failed, host)
				}
			}
		}
		if len(failed) == 0 {
			writeJSON(w, http.StatusConflict, map[string]string{"error": fmt.Sprintf("job %s has no failed hosts to relaunch", j["id"])})
			return
		}
		slices.Sort(failed)
		limit = strings.Join(failed, ",")
	}
	relaunched := fakeJob("new-1", j["name"].(string), "queued", kv{"relaunch_of": j["id"], "limit": limit, "queue_position": 1})
	f.jobs = append([]kv{relaunched}, f.jobs...)
	w.Header().Set("Location", "/api/v1/jobs/new-1")
	writeJSON(w, http.StatusCreated, relaunched)
}

// logs serves a job's log stream: connected, two lines, completed.
func (f *managerFake) logs(w http.ResponseWriter, r *http.Request, j kv) {
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprintf(w, "event: connected\ndata: {\"message\":\"Connected to the stream for job %s\"}\n\n", j["id"])
	for i, line := range []string{"PLAY [again]", "ok: [web2]"} {
		fmt.Fprintf(w, "id: %d\nevent: log\ndata: %s\n\n", i+1, logData(line))
	}
	final := f.relaunchFinal
	if final == "" {
		final = "completed"
	}
	fmt.Fprintf(w, "id: 2\nevent: completed\ndata: {\"message\":\"Log stream completed\",\"status\":%q}\n\n", final)
}

// stream serves the stream of every job's status changes (see managerFake.spoil).
func (f *managerFake) stream(w http.ResponseWriter, r *http.Request) {
	lastID := r.Header.Get("Last-Event-ID")
	f.mu.Lock()
	f.rec.lastIDs = append(f.rec.lastIDs, lastID)
	first := len(f.rec.lastIDs) == 1
	f.mu.Unlock()
	after, _ := strconv.Atoi(lastID)
	if f.replayFrom != 0 {
		after = f.replayFrom - 1
	}
	if first && f.spoil == "gone" {
		w.Header().Set("Connection", "close") // so that the client cannot come back on it
	}
	w.Header().Set("Content-Type", "text/event-stream")
	flusher := w.(http.Flusher)
	send := func(format string, args ...any) {
		fmt.Fprintf(w, format, args...)
		flusher.Flush()
	}
	send(": ping\n\nevent: connected\ndata: {\"message\":\"Connected to the event stream\",\"timestamp\":\"2026-03-01T10:00:00Z\"}\n\n")
	for i := after; i < len(f.changes); i++ {
		if first && f.spoil != "" && i == f.spoilAt {
			switch f.spoil {
			case "drop":
				panic(http.ErrAbortHandler)
			case "gone":
				f.listener.Close()
			}
			return
		}
		send("id: %d\nevent: job_event\ndata: %s\n\n", i+1, f.changes[i])
		if i%2 == 0 {
			send(": ping\n\n")
		}
	}
	<-r.Context().Done()
}

// fakeJob is a job's JSON as charond sends it, with the fields in more added or replaced.
func fakeJob(id, name, status string, more kv) kv {
	j := kv{
		"id": id, "name": name, "description": "", "status": status, "priority": 5,
		"created_at": "2026-03-01T10:00:00Z", "started_at": nil, "finished_at": nil, "exit_code": nil,
		"message": "", "summary": nil, "concurrency": "", "waiting_for": nil, "relaunch_of": nil,
		"artifacts": nil, "command": nil, "limit": "", "tags": []string{}, "skip_tags": []string{},
	}
	switch status {
	case "running":
		j["started_at"], j["message"] = "2026-03-01T10:00:05Z", "Job started"
	case "completed", "failed", "timed_out", "cancelled":
		j["started_at"], j["finished_at"] = "2026-03-01T10:00:05Z", "2026-03-01T10:01:07.5Z"
		j["exit_code"] = map[string]int{"completed": 0, "failed": 2, "timed_out": -1, "cancelled": -1}[status]
	}
	for k, v := range more {
		j[k] = v
	}
	return j
}

// summaryOf is a job's summary with the hosts' counts given and one failed task for each host
// that failed.
func summaryOf(hosts map[string]hostStats) kv {
	failed := []kv{}
	for host, s := range hosts {
		if s.Failed > 0 {
			failed = append(failed, kv{"host": host, "play": "Site", "task": "Install nginx", "message": "No package matching 'nginx'"})
		}
	}
	return kv{"hosts": hosts, "failed_tasks": failed}
}

// change is the data of a status change on the stream of every job.
func change(id, name, status, message string, more kv) string {
	m := kv{"type": "status_changed", "job_id": id, "name": name, "priority": 5, "status": status,
		"message": message, "timestamp": "2026-03-01T10:00:05Z"}
	for k, v := range more {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// local is how the client shows t, in the local time zone, in list and status.
func local(t string) string {
	at, _ := time.Parse(time.RFC3339Nano, t)
	return at.Local().Format("2006-01-02 15:04:05")
}

// runWith runs the client's command line args against srv, with the token if not "", and
// returns its exit status and output.
func runWith(ctx context.Context, srv *httptest.Server, token string, args ...string) (code int, out, errOut string) {
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string { return map[string]string{"CHARON_URL": srv.URL, "CHARON_TOKEN": token}[k] }
	code = run(ctx, append([]string{"streaming_demo"}, args...), &stdout, &stderr, getenv)
	return code, stdout.String(), stderr.String()
}

// lineWith returns the line of out that holds every one of parts, or "" if none does.
func lineWith(out string, parts ...string) string {
	for _, line := range strings.Split(out, "\n") {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			return line
		}
	}
	return ""
}

func wantLine(t *testing.T, out string, parts ...string) {
	t.Helper()
	if lineWith(out, parts...) == "" {
		t.Errorf("no line holds all of %q; output:\n%s", parts, out)
	}
}

// someJobs are one job in each status, and one waiting for another's concurrency key.
func someJobs() []kv {
	return []kv{
		fakeJob("a1", "Waiting deploy", "queued", kv{"queue_position": 2, "concurrency": "prod", "waiting_for": "r1"}),
		fakeJob("q1", "Queued backup", "queued", kv{"queue_position": 1, "priority": 9}),
		fakeJob("r1", "Running deploy", "running", kv{"concurrency": "prod"}),
		fakeJob("c1", "Completed ping", "completed", nil),
		fakeJob("f1", "Failed site", "failed", kv{"summary": summaryOf(map[string]hostStats{
			"web1": {OK: 3}, "web2": {OK: 1, Failed: 1}, "web3": {OK: 1, Failed: 1}})}),
		fakeJob("t1", "Slow playbook", "timed_out", nil),
		fakeJob("x1", "Cancelled early", "cancelled", kv{"started_at": nil, "finished_at": "2026-03-01T10:00:09Z"}),
	}
}

func TestList(t *testing.T) {
	f := &managerFake{jobs: someJobs()}
	srv := f.start(t)

	code, out, errOut := runWith(context.Background(), srv, "s3cret", "list")

	if code != exitCompleted {
		t.Fatalf("exit status %d, want 0; stderr:\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 8 {
		t.Fatalf("%d lines, want a heading and 7 jobs:\n%s", len(lines), out)
	}
	for _, word := range []string{"ID", "STATUS", "PRIORITY", "NAME", "PROGRESS"} {
		if !strings.Contains(lines[0], word) {
			t.Errorf("heading %q lacks %s", lines[0], word)
		}
	}
	// Each line's words, in order; and the name and progress start under their headings.
	tests := []struct{ want, name, progress string }{
		{"a1 ⏳ Queued 5 Waiting deploy #2 in queue, waiting for r1", "Waiting deploy", "#2"},
		{"q1 ⏳ Queued 9 Queued backup #1 in queue", "Queued backup", "#1"},
		{"r1 🏃 Running 5 Running deploy started " + local("2026-03-01T10:00:05Z"), "Running deploy", "started"},
		{"c1 ✅ Completed 5 Completed ping took 1m2.5s", "Completed ping", "took"},
		{"f1 ❌ Failed 5 Failed site took 1m2.5s", "Failed site", "took"},
		{"t1 ⏰ Timed out 5 Slow playbook took 1m2.5s", "Slow playbook", "took"},
		{"x1 🚫 Cancelled 5 Cancelled early ended " + local("2026-03-01T10:00:09Z") + ", never started", "Cancelled early", "ended"},
	}
	// column is where s starts on the terminal: the status icons are two columns wide.
	column := func(line, s string) (n int) {
		for _, r := range line[:strings.Index(line, s)] {
			n++
			if r >= 0x2300 { // ⏳ and the rest of statusStyle's icons
				n++
			}
		}
		return n
	}
	for i, tt := range tests {
		line := lines[i+1]
		if got := strings.Join(strings.Fields(line), " "); got != tt.want {
			t.Errorf("line %d:\n got %q\nwant %q", i+1, got, tt.want)
			continue
		}
		if column(line, tt.name) != column(lines[0], "NAME") || column(line, tt.progress) != column(lines[0], "PROGRESS") {
			t.Errorf("line %d is not in line with the heading:\n%s\n%s", i+1, lines[0], line)
		}
	}
	seen := f.seen()
	if want := []string{"GET /api/v1/jobs"}; !slices.Equal(seen.requests, want) {
		t.Errorf("requests %q, want %q", seen.requests, want)
	}
	if seen.auths[0] != "Bearer s3cret" {
		t.Errorf("Authorization = %q, want the bearer token", seen.auths[0])
	}
}

func TestListStatus(t *testing.T) {
	for _, args := range [][]string{{"list", "--status", "failed"}, {"list", "--status=failed"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			f := &managerFake{jobs: someJobs()}
			code, out, errOut := runWith(context.Background(), f.start(t), "", args...)

			if code != exitCompleted {
				t.Fatalf("exit status %d, want 0; stderr:\n%s", code, errOut)
			}
			if want := []string{"GET /api/v1/jobs?status=failed"}; !slices.Equal(f.seen().requests, want) {
				t.Errorf("requests %q, want %q", f.seen().requests, want)
			}
			wantLine(t, out, "f1", "❌ Failed", "Failed site")
			if n := strings.Count(out, "\n"); n != 2 {
				t.Errorf("%d lines, want the heading and the failed job:\n%s", n, out)
			}
		})
	}
}

func TestListEmpty(t *testing.T) {
	tests := []struct {
		name string
		fake *managerFake
		args []string
	}{
		{"no jobs", &managerFake{}, []string{"list"}},
		{"none in the status", &managerFake{jobs: []kv{fakeJob("c1", "n", "completed", nil)}}, []string{"list", "--status", "running"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, _ := runWith(context.Background(), tt.fake.start(t), "", tt.args...)
			if code != exitCompleted || out != "No jobs.\n" {
				t.Errorf("exit status %d, output %q; want 0 and %q", code, out, "No jobs.\n")
			}
		})
	}
}

func TestListRefused(t *testing.T) {
	f := &managerFake{listRefusal: http.StatusBadRequest}
	code, _, errOut := runWith(context.Background(), f.start(t), "", "list", "--status", "running")
	if code != exitUsage {
		t.Errorf("exit status %d, want %d", code, exitUsage)
	}
	if want := "❌ the daemon's reason (HTTP 400)\n"; !strings.Contains(errOut, want) {
		t.Errorf("stderr lacks %q:\n%s", want, errOut)
	}
}

func TestListUnreachable(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	code, _, errOut := runWith(context.Background(), closed, "", "list")
	if code != exitUsage {
		t.Errorf("exit status %d, want %d", code, exitUsage)
	}
	wantInOutput(t, errOut, "❌ cannot reach charond at "+closed.URL+": ", "Is charond running?")
}

// TestManageUsage checks that each command refuses the wrong arguments before sending
// anything, with a word on what it takes, and the usage.
func TestManageUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"list", "extra"}, "streaming_demo list takes no argument but --status S"},
		{[]string{"list", "--status"}, "streaming_demo list: --status needs a value"},
		{[]string{"list", "--status", "bogus"}, `streaming_demo list: --status "bogus" is not a job status; ` +
			"use one of queued, running, completed, failed, timed_out, cancelled"},
		{[]string{"list", "--status="}, `--status "" is not a job status`},
		{[]string{"list", "--all"}, `streaming_demo list: unknown option "--all"`},
		{[]string{"status"}, "streaming_demo status takes one job ID"},
		{[]string{"status", "a", "b"}, "streaming_demo status takes one job ID"},
		{[]string{"status", ""}, "streaming_demo status takes one job ID"},
		{[]string{"cancel"}, "streaming_demo cancel takes one job ID"},
		{[]string{"cancel", "a", "b"}, "streaming_demo cancel takes one job ID"},
		{[]string{"relaunch"}, "streaming_demo relaunch takes one job ID, and --failed"},
		{[]string{"relaunch", "--failed"}, "streaming_demo relaunch takes one job ID, and --failed"},
		{[]string{"relaunch", "a", "b"}, "streaming_demo relaunch takes one job ID, and --failed"},
		{[]string{"relaunch", "a", "--failed=yes"}, "streaming_demo relaunch: --failed takes no value"},
		{[]string{"relaunch", "a", "--hosts", "web1"}, `streaming_demo relaunch: unknown option "--hosts"`},
		{[]string{"watch", "extra"}, "streaming_demo watch takes no argument but --since N"},
		{[]string{"watch", "--since", "x"}, `streaming_demo watch: --since "x" is not an event ID`},
		{[]string{"watch", "--since", "-1"}, `--since "-1" is not an event ID`},
		{[]string{"watch", "--since"}, "streaming_demo watch: --since needs a value"},
		{[]string{"list", "--status", "\x1b]0;pwned\x07"}, `--status "\x1b]0;pwned\a" is not a job status`},
	}
	f := &managerFake{}
	srv := f.start(t)
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runWith(context.Background(), srv, "", tt.args...)
			if code != exitUsage {
				t.Errorf("exit status %d, want %d", code, exitUsage)
			}
			if !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "\n\nUsage: streaming_demo") {
				t.Errorf("stderr lacks %q and the usage:\n%s", tt.want, errOut)
			}
			if out != "" {
				t.Errorf("stdout:\n%s", out)
			}
			assertTerminalSafe(t, "stderr", errOut)
		})
	}
	if n := len(f.seen().requests); n != 0 {
		t.Errorf("%d requests sent for wrong arguments, want none", n)
	}
}

func TestUsageNamesTheNewCommands(t *testing.T) {
	for _, want := range []string{"\n  list [--status S]\n", "\n  status ID ", "\n  cancel ID ",
		"\n  relaunch ID [--failed]\n", "\n  watch [--since N]\n", "while it is queued or running"} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}

func TestStatus(t *testing.T) {
	full := fakeJob("f1", "Site", "failed", kv{
		"description": "The whole site",
		"priority":    7,
		"message":     "Job failed with exit code 2",
		"concurrency": "prod",
		"relaunch_of": "f0",
		"limit":       "web*",
		"tags":        []string{"deploy"},
		"check":       true,
		"command":     []string{"/usr/bin/ansible-playbook", "-i", "/tmp/inv", "--limit", "web*", "site.yml", "it's"},
		"summary": summaryOf(map[string]hostStats{
			"web1": {OK: 3, Changed: 1}, "web2": {OK: 1, Failed: 1}}),
		"artifacts": kv{"url": "https://example.com/a", "sizes": []int{1, 2}},
	})
	f := &managerFake{jobs: []kv{full}}
	code, out, errOut := runWith(context.Background(), f.start(t), "", "status", "f1")

	if code != exitJobFailed {
		t.Errorf("exit status %d, want %d; stderr:\n%s", code, exitJobFailed, errOut)
	}
	want := []string{
		"Site\n   Job ID: f1\n   Status: ❌ Failed (exit code 2)\n   Message: Job failed with exit code 2\n" +
			"   Description: The whole site\n   Priority: 7\n",
		"   Created: " + local("2026-03-01T10:00:00Z") + "\n   Started: " + local("2026-03-01T10:00:05Z") + "\n",
		"   Finished: " + local("2026-03-01T10:01:07.5Z") + " (took 1m2.5s)\n",
		"   Concurrency: prod\n   Relaunch of: f0\n   Options: --limit web* --tags deploy --check\n",
		`   Command: /usr/bin/ansible-playbook -i /tmp/inv --limit 'web*' site.yml 'it'\''s'` + "\n",
		"   Hosts:\n     web1  ok=3 changed=1 unreachable=0 failed=0 skipped=0 rescued=0 ignored=0\n" +
			"     web2  ok=1 changed=0 unreachable=0 failed=1 skipped=0 rescued=0 ignored=0\n",
		"   Failed tasks:\n     ❌ web2: TASK [Install nginx] in PLAY [Site]: No package matching 'nginx'\n",
		"   Artifacts:\n     {\n       \"sizes\": [\n         1,\n         2\n       ],\n       \"url\": \"https://example.com/a\"\n     }\n",
	}
	wantInOutput(t, out, want...)
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
	if strings.Contains(out, "Queue position") || strings.Contains(out, "Waiting for") {
		t.Errorf("an ended job shows its place in the queue:\n%s", out)
	}
	if got := f.seen().requests; !slices.Equal(got, []string{"GET /api/v1/jobs/f1"}) {
		t.Errorf("requests %q", got)
	}
}

func TestStatusExitStatus(t *testing.T) {
	tests := []struct {
		job      kv
		wantCode int
		want     []string
	}{
		{fakeJob("j", "n", "queued", kv{"queue_position": 3, "waiting_for": "r1", "concurrency": "prod"}), exitCompleted,
			[]string{"   Status: ⏳ Queued\n", "   Queue position: 3\n", "   Waiting for: r1 (it holds the concurrency key)\n"}},
		{fakeJob("j", "n", "running", nil), exitCompleted, []string{"   Status: 🏃 Running\n", "   Message: Job started\n"}},
		{fakeJob("j", "n", "completed", kv{"summary": summaryOf(map[string]hostStats{"localhost": {OK: 2}})}), exitCompleted,
			[]string{"   Status: ✅ Completed (exit code 0)\n", "     localhost  ok=2 "}},
		{fakeJob("j", "n", "failed", nil), exitJobFailed, []string{"   Status: ❌ Failed (exit code 2)\n"}},
		{fakeJob("j", "n", "timed_out", nil), exitJobFailed, []string{"   Status: ⏰ Timed out (exit code -1)\n"}},
		{fakeJob("j", "n", "cancelled", kv{"exit_code": nil}), exitJobFailed, []string{"   Status: 🚫 Cancelled\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.job["status"].(string), func(t *testing.T) {
			f := &managerFake{jobs: []kv{tt.job}}
			code, out, _ := runWith(context.Background(), f.start(t), "", "status", "j")
			if code != tt.wantCode {
				t.Errorf("exit status %d, want %d", code, tt.wantCode)
			}
			wantInOutput(t, out, tt.want...)
			for _, absent := range []string{"Artifacts", "Command", "Failed tasks", "Relaunch of", "Options"} {
				if strings.Contains(out, absent) {
					t.Errorf("output shows %s, which the job has none of:\n%s", absent, out)
				}
			}
		})
	}
}

func TestStatusUnknownJob(t *testing.T) {
	f := &managerFake{}
	code, out, errOut := runWith(context.Background(), f.start(t), "", "status", "nope")
	if code != exitUsage || out != "" {
		t.Errorf("exit status %d, want %d; stdout:\n%s", code, exitUsage, out)
	}
	wantInOutput(t, errOut, "❌ job not found: nope (HTTP 404)\n", "charond knows no job nope.")
}

func TestCancel(t *testing.T) {
	tests := []struct {
		name     string
		job      kv
		wantCode int
		wantOut  []string
		wantErr  []string
	}{
		{
			name:    "running job",
			job:     fakeJob("j1", "Deploy", "running", nil),
			wantOut: []string{"🚫 Cancelling job j1...\n✅ Cancellation requested\n   Job ID: j1\n   Name: Deploy\n   Status: 🏃 Running\n", "   streaming_demo events j1\n"},
		},
		{
			name:    "queued job",
			job:     fakeJob("j1", "Deploy", "queued", kv{"queue_position": 1}),
			wantOut: []string{"🚫 Job cancelled\n   Job ID: j1\n   Name: Deploy\n   Status: 🚫 Cancelled\n   Message: Job cancelled before it started\n"},
		},
		{
			name:     "job that has ended",
			job:      fakeJob("j1", "Deploy", "completed", nil),
			wantCode: exitUsage,
			wantErr:  []string{"❌ job j1 has already ended (completed) (HTTP 409)\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &managerFake{jobs: []kv{tt.job}}
			code, out, errOut := runWith(context.Background(), f.start(t), "tok", "cancel", "j1")
			if code != tt.wantCode {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, tt.wantCode, errOut)
			}
			wantInOutput(t, out, tt.wantOut...)
			wantInOutput(t, errOut, tt.wantErr...)
			seen := f.seen()
			if !slices.Equal(seen.requests, []string{"POST /api/v1/jobs/j1/cancel"}) ||
				seen.bodies[0] != "" || seen.contentTypes[0] != "" || seen.auths[0] != "Bearer tok" {
				t.Errorf("requests %q, bodies %q, Content-Types %q, auth %q; want one POST without a body, with the token",
					seen.requests, seen.bodies, seen.contentTypes, seen.auths)
			}
			if t.Failed() {
				t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
			}
		})
	}
	t.Run("unknown job", func(t *testing.T) {
		code, _, errOut := runWith(context.Background(), (&managerFake{}).start(t), "", "cancel", "nope")
		if code != exitUsage {
			t.Errorf("exit status %d, want %d", code, exitUsage)
		}
		wantInOutput(t, errOut, "❌ job not found: nope (HTTP 404)\n", "charond knows no job nope.")
	})
}

func failedSite() kv {
	return fakeJob("f1", "Site", "failed", kv{"summary": summaryOf(map[string]hostStats{
		"web1": {OK: 3}, "web2": {OK: 1, Failed: 1}, "web3": {Unreachable: 1}})})
}

func TestRelaunch(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		final     string
		wantBody  string
		wantLimit string
		wantCode  int
	}{
		{name: "all hosts", args: []string{"relaunch", "f1"}, wantBody: `{"hosts":"all"}`},
		{name: "failed hosts", args: []string{"relaunch", "f1", "--failed"}, wantBody: `{"hosts":"failed"}`,
			wantLimit: "web2,web3"},
		{name: "failed hosts, flag first", args: []string{"relaunch", "--failed", "f1"}, wantBody: `{"hosts":"failed"}`,
			wantLimit: "web2,web3"},
		{name: "relaunch fails again", args: []string{"relaunch", "f1"}, final: "failed", wantBody: `{"hosts":"all"}`,
			wantCode: exitJobFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &managerFake{jobs: []kv{failedSite()}, relaunchFinal: tt.final}

			code, out, errOut := runWith(context.Background(), f.start(t), "tok", tt.args...)

			if code != tt.wantCode {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, tt.wantCode, errOut)
			}
			seen := f.seen()
			wantRequests := []string{"POST /api/v1/jobs/f1/relaunch", "GET /api/v1/jobs/new-1/logs/stream"}
			if !slices.Equal(seen.requests, wantRequests) {
				t.Errorf("requests %q, want %q", seen.requests, wantRequests)
			}
			if seen.bodies[0] != tt.wantBody || seen.contentTypes[0] != "application/json" {
				t.Errorf("posted %q as %q, want %q as application/json", seen.bodies[0], seen.contentTypes[0], tt.wantBody)
			}
			for i, auth := range seen.auths {
				if auth != "Bearer tok" {
					t.Errorf("request %d: Authorization %q, want the bearer token", i, auth)
				}
			}
			block := "✅ Job relaunched!\n   Job ID: new-1\n   Name: Site\n   Status: queued\n   Relaunch of: f1\n"
			if tt.wantLimit != "" {
				block += "   Options: --limit " + tt.wantLimit + "\n"
			}
			wantInOutput(t, out, block+"\n📋 Streaming logs for job new-1...\n", "📝 LOG: PLAY [again]\n", "📝 LOG: ok: [web2]\n",
				"\n📋 Log stream ended\n")
			if tt.wantLimit == "" && strings.Contains(out, "Options:") {
				t.Errorf("a relaunch of all hosts shows options:\n%s", out)
			}
			if t.Failed() {
				t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
			}
		})
	}
}

func TestRelaunchRefused(t *testing.T) {
	tests := []struct {
		name string
		job  kv
		args []string
		want string
	}{
		{"while running", fakeJob("f1", "Site", "running", nil), []string{"relaunch", "f1"},
			"❌ charond refused the relaunch: job f1 is running: relaunch it once it has ended (HTTP 409)\n"},
		{"no failed host", fakeJob("f1", "Site", "completed", kv{"summary": summaryOf(map[string]hostStats{"web1": {OK: 1}})}),
			[]string{"relaunch", "f1", "--failed"}, "❌ charond refused the relaunch: job f1 has no failed hosts to relaunch (HTTP 409)\n"},
		{"no summary", fakeJob("f1", "Site", "failed", nil), []string{"relaunch", "--failed", "f1"},
			"❌ charond refused the relaunch: job f1 has no failed hosts to relaunch (HTTP 409)\n"},
		{"unknown job", failedSite(), []string{"relaunch", "nope"}, "❌ charond refused the relaunch: job not found: nope (HTTP 404)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &managerFake{jobs: []kv{tt.job}}
			code, out, errOut := runWith(context.Background(), f.start(t), "", tt.args...)
			if code != exitUsage {
				t.Errorf("exit status %d, want %d", code, exitUsage)
			}
			wantInOutput(t, errOut, tt.want)
			if strings.Contains(out, "Streaming") || len(f.seen().requests) != 1 {
				t.Errorf("a refused relaunch went on to stream; requests %q, stdout:\n%s", f.seen().requests, out)
			}
		})
	}
}

// numberedChanges are n status changes, each of its own job "job-i", whose message is "change
// i of n"; the last one is final, with a summary.
func numberedChanges(n int) []string {
	changes := make([]string, n)
	for i := range changes {
		status, more := "running", kv(nil)
		if i == n-1 {
			status, more = "failed", kv{"exit_code": 2, "summary": summaryOf(map[string]hostStats{
				"web1": {OK: 1}, "web2": {OK: 1, Changed: 1}, "web3": {Failed: 1}})}
		}
		changes[i] = change(fmt.Sprintf("job-%d-0000-4000", i+1), fmt.Sprintf("Job %d", i+1), status,
			fmt.Sprintf("change %d of %d", i+1, n), more)
	}
	return changes
}

// watchClient is a client of srv with delays shortened for tests, writing its stream to out.
func watchClient(srv *httptest.Server, out io.Writer, errOut *bytes.Buffer) *client {
	c := newClient(srv.URL, "", "streaming_demo", &printer{out: out, err: errOut, loc: time.UTC})
	c.retryBase, c.retryMax = time.Millisecond, 10*time.Millisecond
	c.idleTimeout = 5 * time.Second // the fake pings only between changes, and stalls are not tested here
	return c
}

func TestWatchResumesAcrossReconnections(t *testing.T) {
	tests := []struct {
		name        string
		fake        *managerFake
		wantLastIDs []string
	}{
		{"connection dropped", &managerFake{spoil: "drop", spoilAt: 3}, []string{"0", "3"}},
		{"charond restarts", &managerFake{spoil: "close", spoilAt: 2}, []string{"0", "2"}},
		{"charond replays too much", &managerFake{spoil: "drop", spoilAt: 4, replayFrom: 1}, []string{"0", "4"}},
		{"no reconnection", &managerFake{}, []string{"0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.fake
			f.changes = numberedChanges(5)
			srv := f.start(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := &notifyWriter{want: "change 5 of 5", seen: cancel} // Ctrl-C once the last change is printed
			var errOut bytes.Buffer

			code := watchClient(srv, out, &errOut).watchJobs(ctx, "")

			if code != exitInterrupted {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, exitInterrupted, errOut.String())
			}
			pos := 0
			for i := 1; i <= 5; i++ {
				line := fmt.Sprintf("change %d of 5", i)
				if n := strings.Count(out.String(), line); n != 1 {
					t.Errorf("%q printed %d times, want once", line, n)
				}
				if at := strings.Index(out.String(), line); at < pos {
					t.Errorf("%q out of order", line)
				} else {
					pos = at
				}
			}
			wantLine(t, out.String(), "[10:00:05] 🏃 Running   Job 1 (job-1-00) change 1 of 5")
			wantLine(t, out.String(), "[10:00:05] ❌ Failed    Job 5 (job-5-00) change 5 of 5 — 3 hosts: 1 ok, 1 changed, 1 failed")
			if n := strings.Count(out.String(), "🔗 Connected"); n != 1 {
				t.Errorf("Connected printed %d times, want once:\n%s", n, out.String())
			}
			if got := f.seen().lastIDs; !slices.Equal(got, tt.wantLastIDs) {
				t.Errorf("Last-Event-ID of each connection = %q, want %q", got, tt.wantLastIDs)
			}
			reconnected := len(tt.wantLastIDs) > 1
			if strings.Contains(errOut.String(), "🔄 Reconnected to the event stream") != reconnected {
				t.Errorf("stderr, when the client should reconnect: %v:\n%s", reconnected, errOut.String())
			}
			wantInOutput(t, errOut.String(), "⏹️  Stopped watching. To go on from here:\n   streaming_demo watch --since 5\n")
		})
	}
}

// TestWatchStartsNow watches without --since: the client starts after the last change
// charond has made, as /api/v1/info says, so what it shows is what happens from then on.
func TestWatchStartsNow(t *testing.T) {
	f := &managerFake{changes: numberedChanges(5), lastEventID: 3}
	srv := f.start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &notifyWriter{want: "change 5 of 5", seen: cancel}
	var errOut bytes.Buffer
	if code := watchClient(srv, out, &errOut).watchJobs(ctx, ""); code != exitInterrupted {
		t.Errorf("exit status %d, want %d; stderr:\n%s", code, exitInterrupted, errOut.String())
	}
	if got := f.seen().lastIDs; !slices.Equal(got, []string{"3"}) {
		t.Errorf("Last-Event-ID of each connection = %q, want [3]", got)
	}
	for i, want := range []bool{false, false, false, true, true} {
		if line := fmt.Sprintf("change %d of 5", i+1); strings.Contains(out.String(), line) != want {
			t.Errorf("output shows %q: %v, want %v:\n%s", line, !want, want, out.String())
		}
	}
}

func TestWatchSince(t *testing.T) {
	// The fake replays from the first change, whatever the client asks: the client still shows
	// only the changes after the one it named.
	f := &managerFake{changes: numberedChanges(5), replayFrom: 1}
	srv := f.start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &notifyWriter{want: "change 5 of 5", seen: cancel}
	var errOut bytes.Buffer
	getenv := func(k string) string { return map[string]string{"CHARON_URL": srv.URL, "CHARON_TOKEN": "tok"}[k] }

	code := run(ctx, []string{"streaming_demo", "watch", "--since", "2"}, out, &errOut, getenv)

	if code != exitInterrupted {
		t.Errorf("exit status %d, want %d; stderr:\n%s", code, exitInterrupted, errOut.String())
	}
	seen := f.seen()
	if len(seen.lastIDs) == 0 || seen.lastIDs[0] != "2" {
		t.Errorf("Last-Event-ID of each connection = %q, want 2 first", seen.lastIDs)
	}
	for i, auth := range seen.auths {
		if auth != "Bearer tok" {
			t.Errorf("connection %d: Authorization %q, want the bearer token", i, auth)
		}
	}
	for i := 1; i <= 5; i++ {
		want := 1
		if i <= 2 {
			want = 0
		}
		if n := strings.Count(out.String(), fmt.Sprintf("change %d of 5", i)); n != want {
			t.Errorf("change %d printed %d times, want %d:\n%s", i, n, want, out.String())
		}
	}
}

func TestWatchGivesUpWhenCharondIsGone(t *testing.T) {
	f := &managerFake{changes: numberedChanges(3), spoil: "gone", spoilAt: 2}
	srv := f.start(t)
	var out, errOut bytes.Buffer
	c := watchClient(srv, &out, &errOut)
	c.maxRetries = 3

	code := c.watchJobs(context.Background(), "")

	if code != exitUsage {
		t.Errorf("exit status %d, want %d", code, exitUsage)
	}
	wantInOutput(t, out.String(), "change 1 of 3", "change 2 of 3")
	wantInOutput(t, errOut.String(), "reconnecting in", "❌ cannot reach charond at "+srv.URL+": ", "Is charond running?")
	if strings.Count(errOut.String(), "reconnecting in") != 3 {
		t.Errorf("want 3 attempts to reconnect:\n%s", errOut.String())
	}
}

func TestWatchUnreachable(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	code, _, errOut := runWith(context.Background(), closed, "", "watch")
	if code != exitUsage {
		t.Errorf("exit status %d, want %d", code, exitUsage)
	}
	wantInOutput(t, errOut, "❌ cannot reach charond at "+closed.URL+": ", "Is charond running?")
}

func TestWatchRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or invalid bearer token"})
	}))
	defer srv.Close()
	code, _, errOut := runWith(context.Background(), srv, "", "watch")
	if code != exitUsage {
		t.Errorf("exit status %d, want %d", code, exitUsage)
	}
	wantInOutput(t, errOut, "❌ missing or invalid bearer token (HTTP 401)\n")
}

func TestWatchChangeLines(t *testing.T) {
	tests := []struct {
		name  string
		data  string
		want  string
		color string
	}{
		{"queued", change("0f3c7290-aaaa", "Deploy", "queued", "Job queued", nil),
			"⏳ Queued    Deploy (0f3c7290) Job queued", ansiYellow},
		{"running", change("0f3c7290-aaaa", "Deploy", "running", "Job started", nil),
			"🏃 Running   Deploy (0f3c7290) Job started", ansiBlue},
		{"completed on one host", change("0f3c7290-aaaa", "Deploy", "completed", "Job completed",
			kv{"exit_code": 0, "summary": summaryOf(map[string]hostStats{"localhost": {OK: 4}})}),
			"✅ Completed Deploy (0f3c7290) Job completed — 1 host: 1 ok", ansiGreen},
		{"failed", change("0f3c7290-aaaa", "Deploy", "failed", "Job failed with exit code 4",
			kv{"exit_code": 4, "summary": summaryOf(map[string]hostStats{"a": {OK: 1}, "b": {OK: 1}, "c": {Unreachable: 1}})}),
			"❌ Failed    Deploy (0f3c7290) Job failed with exit code 4 — 3 hosts: 2 ok, 1 unreachable", ansiRed},
		{"timed out without summary", change("0f3c7290-aaaa", "Deploy", "timed_out", "Job timed out",
			kv{"exit_code": nil, "summary": nil}),
			"⏰ Timed out Deploy (0f3c7290) Job timed out", ansiRed},
		{"cancelled", change("0f3c7290-aaaa", "Deploy", "cancelled", "Job cancelled", kv{"exit_code": nil}),
			"🚫 Cancelled Deploy (0f3c7290) Job cancelled", ansiMagenta},
		{"not a status change", jobEvent("something_new", 5, "hello", nil), "📌 something_new: hello", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			p := &printer{out: &out, err: &out, color: true, loc: time.UTC}
			p.change("job_event", decodeData(tt.data))
			want := tt.want + "\n"
			if tt.color != "" {
				want = tt.color + tt.want + ansiReset + "\n"
			}
			if !strings.HasSuffix(out.String(), want) {
				t.Errorf("printed %q, want it to end with %q", out.String(), want)
			}
		})
	}
}

// hostile is a job name that would retitle the terminal and reorder its line if printed raw.
const hostile = "evil\x1b]0;pwned\x07\u202egnp.exe\u009b2J"

// hostileEscaped is hostile as the client shows it.
const hostileEscaped = `evil\x1b]0;pwned\a\u202egnp.exe\u009b2J`

func TestManageEscapesWhatCharondSends(t *testing.T) {
	evil := fakeJob("e\x1b[2J1", hostile, "failed", kv{
		"message":     "Job failed\r\x1b[Kok",
		"waiting_for": "w\u2066x",
		"concurrency": "k\x07",
		"relaunch_of": "r\x1b[A",
		"limit":       "h\x1b[1m",
		"command":     []string{"ansible-playbook", "--extra-vars", "x=\x1b]0;y\x07"},
		"summary": kv{
			"hosts":        map[string]hostStats{"h\x1b[2K": {Failed: 1}},
			"failed_tasks": []kv{{"host": "h\x1b[2K", "task": "t\u202e", "play": "p\x00", "message": "boom\x1b[1A\nsecond\u009b"}},
		},
		// A raw bidi control and C1 control inside a JSON string, and an escaped ESC.
		"artifacts": json.RawMessage("{\"note\": \"a\u202eb\u0085c\", \"esc\": \"\\u001b[2J\"}"),
	})
	tests := []struct {
		name    string
		fake    *managerFake
		args    []string
		wantOut []string
	}{
		{
			name:    "list",
			fake:    &managerFake{jobs: []kv{evil}},
			args:    []string{"list"},
			wantOut: []string{`e\x1b[2J1  ❌ Failed`, "  " + hostileEscaped + "  waiting for w\\u2066x\n"},
		},
		{
			name: "status",
			fake: &managerFake{jobs: []kv{evil}},
			args: []string{"status", "e\x1b[2J1"},
			wantOut: []string{
				hostileEscaped + "\n   Job ID: e\\x1b[2J1\n",
				`   Message: Job failed\r\x1b[Kok` + "\n",
				`   Waiting for: w\u2066x `,
				`   Concurrency: k\a` + "\n",
				`   Relaunch of: r\x1b[A` + "\n",
				`   Options: --limit h\x1b[1m` + "\n",
				`   Command: ansible-playbook --extra-vars 'x=\x1b]0;y\a'` + "\n",
				`     h\x1b[2K  ok=0 `,
				`     ❌ h\x1b[2K: TASK [t\u202e] in PLAY [p\x00]: boom\x1b[1A` + "\n" + `        second\u009b` + "\n",
				`"note": "a\u202eb\u0085c"`,
				`"esc": "\u001b[2J"`,
			},
		},
		{
			name: "watch",
			fake: &managerFake{changes: []string{change("e\x1b[2J1", hostile, "failed", "boom\x1b[2J",
				kv{"summary": summaryOf(map[string]hostStats{"h\x1b": {Failed: 1}})})}},
			args:    []string{"watch"},
			wantOut: []string{"❌ Failed    " + hostileEscaped + ` (e\x1b[2J1) boom\x1b[2J — 1 host: 1 failed` + "\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := tt.fake.start(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := &notifyWriter{want: "Failed", seen: cancel} // watch: Ctrl-C once the change is printed
			var errOut bytes.Buffer
			getenv := func(k string) string { return map[string]string{"CHARON_URL": srv.URL}[k] }

			run(ctx, append([]string{"streaming_demo"}, tt.args...), out, &errOut, getenv)

			wantInOutput(t, out.String(), tt.wantOut...)
			assertTerminalSafe(t, "stdout", out.String())
			assertTerminalSafe(t, "stderr", errOut.String())
			if t.Failed() {
				t.Logf("stdout: %q\nstderr: %q", out.String(), errOut.String())
			}
		})
	}
}

// TestManageColours checks that on a terminal the list and status show the status in its
// colour, with the data escaped inside it, and no other control.
func TestManageColours(t *testing.T) {
	j := job{ID: "j1", Name: hostile, Status: "failed", Priority: 5}
	var out strings.Builder
	p := &printer{out: &out, err: &out, color: true, loc: time.UTC}
	p.jobList([]job{j})
	p.jobDetails(j)
	for _, want := range []string{
		ansiBold + "ID  STATUS     PRIORITY  NAME",
		"j1  " + ansiRed + "❌ Failed" + ansiReset + "         5  " + hostileEscaped + "\n",
		ansiBold + hostileEscaped + ansiReset + "\n",
		"   Status: " + ansiRed + "❌ Failed" + ansiReset + "\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%q", want, out.String())
		}
	}
	ownCodes := strings.NewReplacer(ansiReset, "", ansiBold, "", ansiRed, "")
	assertTerminalSafe(t, "output without the client's colours", ownCodes.Replace(out.String()))
}

func TestListTruncatesLongNames(t *testing.T) {
	long := strings.Repeat("abcdefghij", 5)
	var out strings.Builder
	p := &printer{out: &out, err: &out}
	p.jobList([]job{{ID: "j1", Name: long, Status: "running", StartedAt: &time.Time{}}, {ID: "j2", Name: "short", Status: "queued"}})
	wantLine(t, out.String(), "j1", "  "+long[:maxNameWidth-1]+"…  started ")
	if strings.Contains(out.String(), long[:maxNameWidth]) {
		t.Errorf("the name is not cut at %d characters:\n%s", maxNameWidth, out.String())
	}
}

func TestParseFlags(t *testing.T) {
	spec := map[string]bool{"--since": true, "--failed": false}
	tests := []struct {
		args      []string
		wantFlags map[string]string
		wantRest  []string
		wantErr   string
	}{
		{args: nil, wantFlags: map[string]string{}},
		{args: []string{"a", "--failed", "b"}, wantFlags: map[string]string{"--failed": ""}, wantRest: []string{"a", "b"}},
		{args: []string{"--since", "3", "--since=4"}, wantFlags: map[string]string{"--since": "4"}},
		{args: []string{"--", "--failed"}, wantFlags: map[string]string{}, wantRest: []string{"--failed"}},
		{args: []string{"-"}, wantFlags: map[string]string{}, wantRest: []string{"-"}},
		{args: []string{"--since"}, wantErr: "--since needs a value"},
		{args: []string{"--failed=1"}, wantErr: "--failed takes no value"},
		{args: []string{"-x"}, wantErr: `unknown option "-x"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			flags, rest, err := parseFlags(tt.args, spec)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || fmt.Sprint(flags) != fmt.Sprint(tt.wantFlags) || !slices.Equal(rest, tt.wantRest) {
				t.Errorf("got %v %q %v, want %v %q", flags, rest, err, tt.wantFlags, tt.wantRest)
			}
		})
	}
}
