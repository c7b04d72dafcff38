package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// apiBlockWorker occupies the daemon's one worker with a job that waits for a gate file, and
// returns that job's id and a function that opens the gate.
func apiBlockWorker(t *testing.T, td *testDaemon) (string, func()) {
	t.Helper()
	gate := filepath.Join(t.TempDir(), "gate")
	id := td.submitFake(t, "blocker", 15, map[string]any{"fake": "gate", "gate": gate, "count": 3})
	td.waitStatus(t, id, StatusRunning)
	return id, func() {
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// apiQuickJob is the variables of a job the fake runner finishes at once, successfully.
var apiQuickJob = map[string]any{"fake": "lines", "count": 1}

func apiTime(t *testing.T, job map[string]any, field string) time.Time {
	t.Helper()
	s, ok := job[field].(string)
	if !ok {
		t.Fatalf("%s = %v, want a timestamp", field, job[field])
	}
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("%s: %v", field, err)
	}
	return ts
}

var jobIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestAPISubmit(t *testing.T) {
	td := startTestDaemon(t)
	blocker, open := apiBlockWorker(t, td)
	defer open()

	before := time.Now()
	resp, raw := do(t, "POST", td.URL+"/api/v1/jobs", contentType("application/x-yaml"), seedSimpleJob)
	if got, want := resp.StatusCode, http.StatusCreated; got != want {
		t.Fatalf("status = %d, want %d; body %s", got, want, raw)
	}
	if got, want := resp.Header.Get("Content-Type"), "application/json"; got != want {
		t.Errorf("Content-Type = %q, want %q", got, want)
	}
	var job map[string]any
	if err := json.Unmarshal(raw, &job); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, raw)
	}
	id, _ := job["id"].(string)
	if !jobIDPattern.MatchString(id) {
		t.Errorf("id = %q, want the 8-4-4-4-12 hex form", id)
	}
	if got, want := resp.Header.Get("Location"), "/api/v1/jobs/"+id; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
	fields := []struct {
		name string
		want any
	}{
		{"name", "Simple Ansible Task"},
		{"description", "A basic Ansible task that runs quickly"},
		{"status", "queued"},
		{"priority", 5.0},
		{"timeout", 60.0},
		{"queue_position", 1.0},
		{"exit_code", nil},
		{"started_at", nil},
		{"finished_at", nil},
	}
	for _, f := range fields {
		got, ok := job[f.name]
		if !ok {
			t.Errorf("answer has no %q: %s", f.name, raw)
			continue
		}
		if got != f.want {
			t.Errorf("%s = %#v, want %#v", f.name, got, f.want)
		}
	}
	created := apiTime(t, job, "created_at")
	if created.Before(before.Add(-time.Second)) || created.After(time.Now().Add(time.Second)) {
		t.Errorf("created_at = %v, want about %v", created, before)
	}

	// The Location header names the job.
	if got := td.getJob(t, id)["id"]; got != id {
		t.Errorf("GET %s: id = %v", resp.Header.Get("Location"), got)
	}
	if id == blocker {
		t.Errorf("two jobs got the same id %s", id)
	}
}

// apiSlowLog is a log handler that lingers on one message, as a slow log sink would, which
// widens the window between a job being queued and the handler answering.
type apiSlowLog struct {
	message string
	delay   time.Duration
}

func (h apiSlowLog) Enabled(context.Context, slog.Level) bool { return true }
func (h apiSlowLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h apiSlowLog) WithGroup(string) slog.Handler            { return h }
func (h apiSlowLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.message {
		time.Sleep(h.delay)
	}
	return nil
}

// TestAPISubmitAnswersQueued submits to an idle worker: the 201 answer must still show the job
// as the submission left it, queued, even when the worker picks it up at once. A slow log
// sink (the handler logs "job queued" between queueing the job and answering) makes the
// worker win that race every time.
func TestAPISubmitAnswersQueued(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) {
		d.srv.log = slog.New(apiSlowLog{message: "job queued", delay: 100 * time.Millisecond})
	})
	body, _ := json.Marshal(map[string]any{"name": "q", "playbook": miniPlaybook, "variables": apiQuickJob})
	for i := 0; i < 3; i++ {
		job := td.submit(t, "application/json", string(body), http.StatusCreated)
		if got, want := job["status"], "queued"; got != want {
			t.Errorf("submission %d: status = %v, want %v (started_at %v)", i, got, want, job["started_at"])
		}
		td.waitStatus(t, job["id"].(string), StatusCompleted)
	}
}

func TestAPISubmitContentTypes(t *testing.T) {
	td := startTestDaemon(t)
	yamlBody := "name: ct\nplaybook: |\n  - hosts: localhost\n    tasks: []\nvariables: {fake: lines, count: 1}\n"
	jsonBody := `{"name":"ct","playbook":"- hosts: localhost\n  tasks: []\n","variables":{"fake":"lines","count":1}}`
	tests := []struct {
		contentType string
		body        string
		want        int
	}{
		{"application/x-yaml", yamlBody, http.StatusCreated},
		{"application/yaml", yamlBody, http.StatusCreated},
		{"text/yaml", yamlBody, http.StatusCreated},
		{"application/x-yaml; charset=utf-8", yamlBody, http.StatusCreated},
		{"Application/YAML", yamlBody, http.StatusCreated},
		{"application/json", jsonBody, http.StatusCreated},
		{"application/json; charset=utf-8", jsonBody, http.StatusCreated},
		{"application/json", yamlBody, http.StatusBadRequest},
		{"text/plain", yamlBody, http.StatusUnsupportedMediaType},
		{"application/xml", yamlBody, http.StatusUnsupportedMediaType},
		{"multipart/form-data; boundary=x", yamlBody, http.StatusUnsupportedMediaType},
		{"application/x-www-form-urlencoded", "name=ct", http.StatusUnsupportedMediaType},
		{"not a media type;;", yamlBody, http.StatusUnsupportedMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.contentType, func(t *testing.T) {
			resp, raw := do(t, "POST", td.URL+"/api/v1/jobs", contentType(tt.contentType), tt.body)
			if tt.want != http.StatusCreated {
				want := "Content-Type"
				if tt.want == http.StatusBadRequest {
					want = "JSON"
				}
				wantError(t, resp, raw, tt.want, want)
				return
			}
			if got := resp.StatusCode; got != tt.want {
				t.Fatalf("status = %d, want %d; body %s", got, tt.want, raw)
			}
			var job map[string]any
			if err := json.Unmarshal(raw, &job); err != nil {
				t.Fatalf("answer is not JSON: %v", err)
			}
			td.waitStatus(t, job["id"].(string), StatusCompleted)
		})
	}
}

func TestAPISubmitInvalidJob(t *testing.T) {
	td := startTestDaemon(t)
	tests := []struct {
		name string
		body string
		want string
	}{
		{"missing name", "playbook: |\n  - hosts: all\n", "name:"},
		{"priority out of range", "name: t\nplaybook: |\n  - hosts: all\npriority: 16\n", "priority:"},
		{"unknown field", "name: t\nplaybook: |\n  - hosts: all\nprio: 1\n", `"prio"`},
		{"bad host", "name: t\nplaybook: |\n  - hosts: all\ninventory: [a, \"-b\"]\n", "inventory[1]:"},
		{"missing external playbook", "name: t\nplaybook: nope.yml\n", "playbook:"},
		{"empty body", "", "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, raw := do(t, "POST", td.URL+"/api/v1/jobs", contentType("application/x-yaml"), tt.body)
			wantError(t, resp, raw, http.StatusBadRequest, tt.want)
		})
	}
	_, list := getJSON(t, td.URL+"/api/v1/jobs")
	if got := list["jobs"].([]any); len(got) != 0 {
		t.Errorf("refused submissions were queued: %v", got)
	}
}

// TestAPIBodyLimit checks -max-body at its edge: a body of exactly the limit is read, one
// byte more is 413.
func TestAPIBodyLimit(t *testing.T) {
	body := "name: limit\nplaybook: |\n  - hosts: localhost\n    tasks: []\nvariables: {fake: lines, count: 1}\n"
	tests := []struct {
		name    string
		maxBody int64
		body    string
		want    int
	}{
		{"exactly the limit", int64(len(body)), body, http.StatusCreated},
		{"one byte over", int64(len(body)) - 1, body, http.StatusRequestEntityTooLarge},
		{"far over", 64, body + "# " + strings.Repeat("x", 4096) + "\n", http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := startTestDaemon(t, func(d *daemon) { d.srv.maxBody = tt.maxBody })
			resp, raw := do(t, "POST", td.URL+"/api/v1/jobs", contentType("application/x-yaml"), tt.body)
			if tt.want != http.StatusCreated {
				wantError(t, resp, raw, tt.want, "-max-body")
				return
			}
			if got := resp.StatusCode; got != tt.want {
				t.Fatalf("status = %d, want %d; body %s", got, tt.want, raw)
			}
			var job map[string]any
			if err := json.Unmarshal(raw, &job); err != nil {
				t.Fatal(err)
			}
			td.waitStatus(t, job["id"].(string), StatusCompleted)
		})
	}
}

// TestAPIErrorRoutes checks that unknown jobs, wrong methods and unknown routes all answer
// {"error": "..."} in JSON, never the mux's plain-text pages.
func TestAPIErrorRoutes(t *testing.T) {
	td := startTestDaemon(t)
	const unknown = "0badc0de-0000-4000-8000-000000000000"
	tests := []struct {
		method string
		path   string
		status int
		want   string   // in the error message
		allow  []string // the Allow header of a 405, as a set
	}{
		{"GET", "/api/v1/jobs/" + unknown, 404, "job not found: " + unknown, nil},
		{"GET", "/api/v1/jobs/" + unknown + "/logs", 404, "job not found: " + unknown, nil},
		{"GET", "/api/v1/jobs/" + unknown + "/logs?format=jsonl", 404, "job not found: " + unknown, nil},
		{"POST", "/api/v1/jobs/" + unknown + "/cancel", 404, "job not found: " + unknown, nil},
		{"GET", "/api/v1/jobs/" + unknown + "/logs/stream", 404, "job not found: " + unknown, nil},
		{"GET", "/api/v1/jobs/" + unknown + "/events/stream", 404, "job not found: " + unknown, nil},
		{"GET", "/api/v1/jobs/nope", 404, "job not found: nope", nil},
		{"POST", "/api/v1/jobs/nope/cancel", 404, "job not found: nope", nil},
		{"DELETE", "/api/v1/jobs", 405, "DELETE", []string{"GET", "HEAD", "POST"}},
		{"PUT", "/api/v1/jobs", 405, "PUT", []string{"GET", "HEAD", "POST"}},
		{"DELETE", "/api/v1/jobs/" + unknown, 404, "job not found: " + unknown, nil},
		{"POST", "/api/v1/jobs/" + unknown, 405, "POST", []string{"DELETE", "GET", "HEAD"}},
		{"GET", "/api/v1/jobs/" + unknown + "/cancel", 405, "GET", []string{"POST"}},
		{"POST", "/api/v1/jobs/" + unknown + "/logs", 405, "POST", []string{"GET", "HEAD"}},
		{"POST", "/api/v1/jobs/" + unknown + "/logs/stream", 405, "POST", []string{"GET", "HEAD"}},
		{"DELETE", "/api/v1/jobs/" + unknown + "/events/stream", 405, "DELETE", []string{"GET", "HEAD"}},
		{"POST", "/healthz", 405, "POST", []string{"GET", "HEAD"}},
		{"PUT", "/api/v1/info", 405, "PUT", []string{"GET", "HEAD"}},
		{"POST", "/", 405, "POST", []string{"GET", "HEAD"}}, // GET / is the dashboard
		{"GET", "/ui/", 404, "/ui/", nil},
		{"GET", "/ui/nope.js", 404, "no such file: /ui/nope.js", nil},
		{"POST", "/ui/app.js", 405, "POST", []string{"GET", "HEAD"}},
		{"GET", "/nope", 404, "/nope", nil},
		{"GET", "/api/v1", 404, "/api/v1", nil},
		{"GET", "/api/v2/jobs", 404, "/api/v2/jobs", nil},
		{"GET", "/api/v1/jobs/", 404, "", nil},
		{"GET", "/api/v1/jobs/a/b", 404, "/api/v1/jobs/a/b", nil},
		{"GET", "/api/v1/jobs/a/logs/stream/more", 404, "", nil},
		{"GET", "/healthz/", 404, "", nil},
		{"GET", "/api/v1/jobs?status=bogus", 400, "status:", nil},
		{"GET", "/api/v1/jobs?limit=0", 400, "limit:", nil},
		{"GET", "/api/v1/jobs?limit=-1", 400, "limit:", nil},
		{"GET", "/api/v1/jobs?limit=ten", 400, "limit:", nil},
		{"GET", "/api/v1/jobs?limit=1.5", 400, "limit:", nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, raw := do(t, tt.method, td.URL+tt.path, nil, "")
			wantError(t, resp, raw, tt.status, tt.want)
			if tt.allow == nil {
				return
			}
			var got []string
			for _, m := range strings.Split(resp.Header.Get("Allow"), ",") {
				got = append(got, strings.TrimSpace(m))
			}
			sort.Strings(got)
			if fmt.Sprint(got) != fmt.Sprint(tt.allow) {
				t.Errorf("Allow = %q, want %v", resp.Header.Get("Allow"), tt.allow)
			}
		})
	}
}

func TestAPIHealthz(t *testing.T) {
	td := startTestDaemon(t)
	resp, raw := do(t, "GET", td.URL+"/healthz", nil, "")
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Fatalf("status = %d, want %d", got, want)
	}
	if got, want := resp.Header.Get("Content-Type"), "application/json"; got != want {
		t.Errorf("Content-Type = %q, want %q", got, want)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"status": "ok"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("body = %v, want %v", got, want)
	}
}

func TestAPIInfo(t *testing.T) {
	td := startTestDaemon(t)
	_, open := apiBlockWorker(t, td)
	defer open()
	td.submitFake(t, "waiting", 5, apiQuickJob)

	status, info := getJSON(t, td.URL+"/api/v1/info")
	if got, want := status, http.StatusOK; got != want {
		t.Fatalf("status = %d, want %d", got, want)
	}
	for _, key := range []string{"version", "workers", "queued", "running", "ansible_playbook_version"} {
		if _, ok := info[key]; !ok {
			t.Errorf("info has no %q: %v", key, info)
		}
	}
	if got, ok := info["version"].(string); !ok || got == "" {
		t.Errorf("version = %v, want a non-empty string", info["version"])
	}
	if _, ok := info["ansible_playbook_version"].(string); !ok {
		t.Errorf("ansible_playbook_version = %v, want a string", info["ansible_playbook_version"])
	}
	counts := []struct {
		key  string
		want float64
	}{{"workers", 1}, {"running", 1}, {"queued", 1}}
	for _, c := range counts {
		if got := info[c.key]; got != c.want {
			t.Errorf("%s = %v, want %v", c.key, got, c.want)
		}
	}
}

// apiListIDs lists jobs with the query and returns their ids in the answer's order.
func apiListIDs(t *testing.T, td *testDaemon, query string) []string {
	t.Helper()
	status, body := getJSON(t, td.URL+"/api/v1/jobs"+query)
	if status != http.StatusOK {
		t.Fatalf("GET /api/v1/jobs%s: status %d: %v", query, status, body)
	}
	jobs, ok := body["jobs"].([]any)
	if !ok {
		t.Fatalf("GET /api/v1/jobs%s: jobs = %v, want a list", query, body["jobs"])
	}
	ids := []string{}
	for _, j := range jobs {
		ids = append(ids, j.(map[string]any)["id"].(string))
	}
	return ids
}

func TestAPIListJobs(t *testing.T) {
	td := startTestDaemon(t)
	blocker, open := apiBlockWorker(t, td)
	defer open()
	a := td.submitFake(t, "a", 1, apiQuickJob)
	b := td.submitFake(t, "b", 15, apiQuickJob)
	c := td.submitFake(t, "c", 5, apiQuickJob)

	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{c, b, a, blocker}},
		{"?status=queued", []string{c, b, a}},
		{"?status=running", []string{blocker}},
		{"?status=completed", []string{}},
		{"?limit=2", []string{c, b}},
		{"?limit=1", []string{c}},
		{"?limit=100", []string{c, b, a, blocker}},
		{"?status=queued&limit=2", []string{c, b}},
		{"?status=", []string{c, b, a, blocker}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			if got := apiListIDs(t, td, tt.query); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("ids = %v, want %v", got, tt.want)
			}
		})
	}

	open()
	for _, id := range []string{blocker, a, b, c} {
		td.waitStatus(t, id, StatusCompleted)
	}
	if got, want := apiListIDs(t, td, "?status=completed"), []string{c, b, a, blocker}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("completed ids = %v, want %v", got, want)
	}
}

// TestAPIGetJob follows jobs through their life: queue_position while queued, log_lines as
// output arrives, exit_code null until the end.
func TestAPIGetJob(t *testing.T) {
	td := startTestDaemon(t)
	blocker, open := apiBlockWorker(t, td)
	defer open()
	low := td.submitFake(t, "low", 5, apiQuickJob)
	high := td.submitFake(t, "high", 10, apiQuickJob)

	positions := []struct {
		id   string
		want float64
	}{{high, 1}, {low, 2}}
	for _, p := range positions {
		job := td.getJob(t, p.id)
		if got := job["status"]; got != "queued" {
			t.Errorf("%s: status = %v, want queued", p.id, got)
		}
		if got := job["queue_position"]; got != p.want {
			t.Errorf("%s: queue_position = %v, want %v", p.id, got, p.want)
		}
		for _, key := range []string{"exit_code", "started_at", "finished_at"} {
			if v, ok := job[key]; !ok || v != nil {
				t.Errorf("%s: %s = %v (present %v), want null", p.id, key, v, ok)
			}
		}
		if got := job["log_lines"]; got != 0.0 {
			t.Errorf("%s: log_lines = %v, want 0", p.id, got)
		}
	}

	// The blocker printed its first 3 lines and waits at the gate.
	job := td.waitJob(t, blocker, "3 log lines", func(j map[string]any) bool { return j["log_lines"] == 3.0 })
	if got := job["status"]; got != "running" {
		t.Errorf("blocker: status = %v, want running", got)
	}
	if _, ok := job["queue_position"]; ok {
		t.Errorf("blocker: running job has queue_position %v", job["queue_position"])
	}
	if v, ok := job["exit_code"]; !ok || v != nil {
		t.Errorf("blocker: exit_code = %v (present %v), want null while running", v, ok)
	}
	started := apiTime(t, job, "started_at")
	if created := apiTime(t, job, "created_at"); started.Before(created) {
		t.Errorf("started_at %v is before created_at %v", started, created)
	}

	open()
	job = td.waitStatus(t, blocker, StatusCompleted)
	if got, want := job["exit_code"], 0.0; got != want {
		t.Errorf("blocker: exit_code = %v, want %v", got, want)
	}
	if got, want := job["log_lines"], 6.0; got != want {
		t.Errorf("blocker: log_lines = %v, want %v", got, want)
	}
	if got, want := job["message"], "Job finished successfully"; got != want {
		t.Errorf("blocker: message = %v, want %q", got, want)
	}
	if finished := apiTime(t, job, "finished_at"); finished.Before(started) {
		t.Errorf("finished_at %v is before started_at %v", finished, started)
	}
	for _, id := range []string{high, low} {
		td.waitStatus(t, id, StatusCompleted)
	}
}

func TestAPILogs(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "logs", 5, map[string]any{"fake": "lines", "count": 6, "stderr_every": 3})
	td.waitStatus(t, id, StatusCompleted)
	wantStream := map[string]string{
		"line 1": "stdout", "line 2": "stdout", "line 3": "stderr",
		"line 4": "stdout", "line 5": "stdout", "line 6": "stderr",
	}

	for _, query := range []string{"", "?format=text"} {
		t.Run("text"+query, func(t *testing.T) {
			resp, raw := do(t, "GET", td.URL+"/api/v1/jobs/"+id+"/logs"+query, nil, "")
			if got, want := resp.StatusCode, http.StatusOK; got != want {
				t.Fatalf("status = %d, want %d; body %s", got, want, raw)
			}
			if got := resp.Header.Get("Content-Type"); !strings.HasPrefix(got, "text/plain") {
				t.Errorf("Content-Type = %q, want text/plain", got)
			}
			got := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
			sort.Strings(got)
			if want := fakeLines(6); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("lines = %q, want %q", got, want)
			}
		})
	}

	t.Run("jsonl", func(t *testing.T) {
		resp, raw := do(t, "GET", td.URL+"/api/v1/jobs/"+id+"/logs?format=jsonl", nil, "")
		if got, want := resp.StatusCode, http.StatusOK; got != want {
			t.Fatalf("status = %d, want %d; body %s", got, want, raw)
		}
		sc := bufio.NewScanner(bytes.NewReader(raw))
		n := 0
		for sc.Scan() {
			n++
			var rec map[string]any
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatalf("line %d is not JSON: %v: %q", n, err, sc.Text())
			}
			if len(rec) != 3 {
				t.Errorf("line %d has keys %v, want line, timestamp, stream", n, rec)
			}
			line, _ := rec["line"].(string)
			if got, want := rec["stream"], wantStream[line]; got != want {
				t.Errorf("%q: stream = %v, want %q", line, got, want)
			}
			ts, _ := rec["timestamp"].(string)
			if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
				t.Errorf("%q: timestamp %q: %v", line, ts, err)
			}
		}
		if got, want := n, 6; got != want {
			t.Errorf("%d lines, want %d", got, want)
		}
	})

	t.Run("bogus format", func(t *testing.T) {
		resp, raw := do(t, "GET", td.URL+"/api/v1/jobs/"+id+"/logs?format=bogus", nil, "")
		wantError(t, resp, raw, http.StatusBadRequest, "format:")
	})
}

func TestAPICancel(t *testing.T) {
	td := startTestDaemon(t)
	running := td.submitFake(t, "sleeper", 15, map[string]any{"fake": "sleep", "seconds": 30})
	td.waitStatus(t, running, StatusRunning)
	queued := td.submitFake(t, "waiting", 5, apiQuickJob)

	t.Run("queued job", func(t *testing.T) {
		resp, raw := do(t, "POST", td.URL+"/api/v1/jobs/"+queued+"/cancel", nil, "")
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status = %d, want 200 or 202; body %s", resp.StatusCode, raw)
		}
		var answer map[string]any
		if err := json.Unmarshal(raw, &answer); err != nil {
			t.Fatal(err)
		}
		// At once: the answer itself, and the job read back, say cancelled.
		for _, job := range []map[string]any{answer, td.getJob(t, queued)} {
			if got, want := job["status"], "cancelled"; got != want {
				t.Errorf("status = %v, want %v", got, want)
			}
			if msg, _ := job["message"].(string); !strings.Contains(strings.ToLower(msg), "cancelled") {
				t.Errorf("message = %q, want it to say cancelled", msg)
			}
			if _, ok := job["queue_position"]; ok {
				t.Errorf("cancelled job has queue_position %v", job["queue_position"])
			}
			if v, ok := job["exit_code"]; !ok || v != nil {
				t.Errorf("exit_code = %v (present %v), want null", v, ok)
			}
			if v, _ := job["finished_at"].(string); v == "" {
				t.Errorf("finished_at = %v, want a timestamp", job["finished_at"])
			}
		}
		_, info := getJSON(t, td.URL+"/api/v1/info")
		if got, want := info["queued"], 0.0; got != want {
			t.Errorf("info queued = %v, want %v", got, want)
		}
	})

	t.Run("cancelled job again", func(t *testing.T) {
		resp, raw := do(t, "POST", td.URL+"/api/v1/jobs/"+queued+"/cancel", nil, "")
		wantError(t, resp, raw, http.StatusConflict, queued)
	})

	t.Run("running job", func(t *testing.T) {
		resp, raw := do(t, "POST", td.URL+"/api/v1/jobs/"+running+"/cancel", nil, "")
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status = %d, want 200 or 202; body %s", resp.StatusCode, raw)
		}
		job := td.waitStatus(t, running, StatusCancelled)
		if v, ok := job["exit_code"]; !ok || v != nil {
			t.Errorf("exit_code = %v (present %v), want null", v, ok)
		}
	})

	t.Run("completed job", func(t *testing.T) {
		done := td.submitFake(t, "done", 5, apiQuickJob)
		td.waitStatus(t, done, StatusCompleted)
		resp, raw := do(t, "POST", td.URL+"/api/v1/jobs/"+done+"/cancel", nil, "")
		wantError(t, resp, raw, http.StatusConflict, "already ended")
		if got, want := td.getJob(t, done)["status"], "completed"; got != want {
			t.Errorf("status after refused cancel = %v, want %v", got, want)
		}
	})
}

// TestAPIPriorityOrder queues jobs behind a busy worker and checks they start highest priority
// first, and in submission order among equals.
func TestAPIPriorityOrder(t *testing.T) {
	td := startTestDaemon(t)
	_, open := apiBlockWorker(t, td)
	defer open()
	priorities := []int{1, 15, 5, 10, 5}
	ids := make([]string, len(priorities))
	for i, p := range priorities {
		ids[i] = td.submitFake(t, fmt.Sprintf("p%d-%d", p, i), p, apiQuickJob)
	}
	open()

	type start struct {
		name     string
		started  time.Time
		finished time.Time
	}
	var starts []start
	for _, id := range ids {
		job := td.waitStatus(t, id, StatusCompleted)
		starts = append(starts, start{job["name"].(string), apiTime(t, job, "started_at"), apiTime(t, job, "finished_at")})
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i].started.Before(starts[j].started) })
	var got []string
	for i, s := range starts {
		got = append(got, s.name)
		// One worker: each job starts only after the one before it has finished.
		if i > 0 && s.started.Before(starts[i-1].finished) {
			t.Errorf("%s started at %v, before %s finished at %v", s.name, s.started, starts[i-1].name, starts[i-1].finished)
		}
	}
	if want := []string{"p15-1", "p10-3", "p5-2", "p5-4", "p1-0"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("start order = %v, want %v", got, want)
	}
}

func TestAPICORS(t *testing.T) {
	tests := []struct {
		name      string
		origins   []string
		method    string
		path      string
		origin    string
		preflight bool
		status    int
		want      string // Access-Control-Allow-Origin; "" for none
	}{
		{"preflight from allowed origin", []string{"http://example.test"}, "OPTIONS", "/api/v1/jobs", "http://example.test", true, 204, "http://example.test"},
		{"preflight from other origin", []string{"http://example.test"}, "OPTIONS", "/api/v1/jobs", "http://evil.test", true, 0, ""},
		{"GET from allowed origin", []string{"http://example.test"}, "GET", "/healthz", "http://example.test", false, 200, "http://example.test"},
		{"GET from other origin", []string{"http://example.test"}, "GET", "/healthz", "http://evil.test", false, 200, ""},
		{"GET without origin", []string{"http://example.test"}, "GET", "/healthz", "", false, 200, ""},
		{"error from allowed origin", []string{"http://example.test"}, "GET", "/api/v1/jobs/nope", "http://example.test", false, 404, "http://example.test"},
		{"preflight with star", []string{"*"}, "OPTIONS", "/api/v1/jobs", "http://any.test", true, 204, "*"},
		{"GET with star", []string{"*"}, "GET", "/healthz", "http://any.test", false, 200, "*"},
		{"no origins configured", nil, "GET", "/healthz", "http://example.test", false, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := startTestDaemon(t, func(d *daemon) { d.srv.corsOrigins = tt.origins })
			h := map[string]string{}
			if tt.origin != "" {
				h["Origin"] = tt.origin
			}
			if tt.preflight {
				h["Access-Control-Request-Method"] = "POST"
				h["Access-Control-Request-Headers"] = "content-type"
			}
			resp, raw := do(t, tt.method, td.URL+tt.path, h, "")
			if tt.status != 0 && resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d; body %s", resp.StatusCode, tt.status, raw)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != tt.want {
				t.Errorf("Access-Control-Allow-Origin = %q, want %q", got, tt.want)
			}
			if tt.preflight && tt.want != "" {
				if got := resp.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(got, "POST") {
					t.Errorf("Access-Control-Allow-Methods = %q, want POST in it", got)
				}
				if got := strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers")); !strings.Contains(got, "content-type") {
					t.Errorf("Access-Control-Allow-Headers = %q, want Content-Type in it", got)
				}
			}
		})
	}
}
