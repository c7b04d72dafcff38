package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// gatedJob starts a job that prints lines 1..n, then waits for the test to open its gate
// before printing n+1..2n. It returns the job id and the function that opens the gate.
func gatedJob(t *testing.T, td *testDaemon, n int) (string, func()) {
	t.Helper()
	gate := filepath.Join(t.TempDir(), "gate")
	id := td.submitFake(t, "gated", 5, map[string]any{"fake": "gate", "count": n, "gate": gate})
	waitLogLines(t, td, id, n)
	return id, func() {
		if err := os.WriteFile(gate, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStreamHeadersAndConnectedEvent(t *testing.T) {
	td := startTestDaemon(t)
	id, open := gatedJob(t, td, 2)
	resp, events := openStream(t, td.URL+"/api/v1/jobs/"+id+"/logs/stream", nil)
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	open()
	all := collectCompleted(t, events)
	first := all[0]
	hello := sseData(t, first)
	wantMsg := "Connected to log stream for job " + id
	if first.Event != "connected" || first.ID != "" || hello["message"] != wantMsg || hello["line"] != wantMsg || hello["timestamp"] == nil {
		t.Errorf("first event = %+v, want connected with message and line %q, no id", first, wantMsg)
	}
	last := all[len(all)-1]
	done := sseData(t, last)
	if last.Event != "completed" || last.ID != "4" || done["message"] != "Log stream completed" || done["line"] != "Log stream completed" ||
		done["status"] != "completed" || done["exit_code"] != float64(0) {
		t.Errorf("last event = %+v, want completed with id 4, status and exit code", last)
	}
	for _, ev := range all[1 : len(all)-1] {
		if d := sseData(t, ev); d["stream"] != "stdout" || d["timestamp"] == nil {
			t.Errorf("log event data = %s, want line, timestamp and stream", ev.Data)
		}
	}
}

// sseData decodes an event's data, which must be a JSON object.
func sseData(t *testing.T, ev sseEvent) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
		t.Fatalf("%s event data is not a JSON object: %v: %q", ev.Event, err, ev.Data)
	}
	return d
}

// TestLateClientGetsEveryLineOnce joins a job half way: the client must see the lines printed
// before it came, then the live ones, each once, with no gap or repeat at the seam.
func TestLateClientGetsEveryLineOnce(t *testing.T) {
	td := startTestDaemon(t)
	id, open := gatedJob(t, td, 500)
	_, events := openStream(t, td.URL+"/api/v1/jobs/"+id+"/logs/stream", nil)
	open()
	got := logLines(t, collect(t, events), 1)
	if strings.Join(got, ",") != strings.Join(fakeLines(1000), ",") {
		t.Fatalf("got %d lines, want lines 1..1000 in order", len(got))
	}
}

func TestStreamResume(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "ten", 5, map[string]any{"fake": "lines", "count": 10})
	td.waitStatus(t, id, StatusCompleted)
	url := td.URL + "/api/v1/jobs/" + id + "/logs/stream"
	tests := []struct {
		name      string
		url       string
		header    map[string]string
		wantFirst int
	}{
		{"Last-Event-ID", url, map[string]string{"Last-Event-ID": "3"}, 4},
		{"since", url + "?since=7", nil, 8},
		{"header wins over since", url + "?since=1", map[string]string{"Last-Event-ID": "8"}, 9},
		{"from the start", url, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, events := openStream(t, tt.url, tt.header)
			got := logLines(t, collect(t, events), tt.wantFirst)
			if want := fakeLines(10)[tt.wantFirst-1:]; strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

// TestReconnectAfterEndIs204 checks what stops EventSource's endless reconnects: a resume with
// nothing left to send to an ended job gets 204.
func TestReconnectAfterEndIs204(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "three", 5, map[string]any{"fake": "lines", "count": 3})
	td.waitStatus(t, id, StatusCompleted)
	for _, path := range []string{"/logs/stream", "/events/stream"} {
		last := "3" // three lines; three status events (queued, running, completed)
		resp, _ := openStream(t, td.URL+"/api/v1/jobs/"+id+path, map[string]string{"Last-Event-ID": last})
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("%s with Last-Event-ID %s: status %d, want 204", path, last, resp.StatusCode)
		}
	}
	resp, _ := openStream(t, td.URL+"/api/v1/jobs/"+id+"/logs/stream", map[string]string{"Last-Event-ID": "2"})
	if resp.StatusCode != http.StatusOK {
		t.Errorf("resume with a line left: status %d, want 200", resp.StatusCode)
	}
}

func TestStreamBadResumePoint(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "one", 5, map[string]any{"fake": "lines", "count": 1})
	for _, tc := range []struct{ query, header, want string }{
		{"?since=abc", "", "since:"},
		{"?since=-1", "", "since:"},
		{"", "x", "Last-Event-ID:"},
	} {
		var h map[string]string
		if tc.header != "" {
			h = map[string]string{"Last-Event-ID": tc.header}
		}
		resp, body := do(t, "GET", td.URL+"/api/v1/jobs/"+id+"/logs/stream"+tc.query, h, "")
		if resp.StatusCode != 400 || !strings.Contains(string(body), tc.want) {
			t.Errorf("%q %q: %d %s, want 400 naming %s", tc.query, tc.header, resp.StatusCode, body, tc.want)
		}
	}
}

func TestEventsStreamShowsEveryTransition(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "ev", 5, map[string]any{"fake": "exit", "code": 4})
	_, events := openStream(t, td.URL+"/api/v1/jobs/"+id+"/events/stream", nil)
	all := collectCompleted(t, events)
	var got []string
	for i, ev := range all[1 : len(all)-1] {
		var d struct{ Type, JobID, Status, Message, Timestamp string }
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
			t.Fatalf("event %d data is not JSON: %v: %q", i+1, err, ev.Data)
		}
		if ev.Event != "job_event" || ev.ID != fmt.Sprint(i+1) || d.Type != "status_changed" || d.Timestamp == "" {
			t.Errorf("event %d = %+v", i+1, ev)
		}
		got = append(got, d.Status)
	}
	if want := "queued,running,failed"; strings.Join(got, ",") != want {
		t.Errorf("statuses = %v, want %s", got, want)
	}
	if last := all[len(all)-1]; last.Event != "completed" || last.ID != "3" {
		t.Errorf("last = %+v, want completed with id 3", last)
	}
}

// TestHeartbeat reads the raw stream: an idle stream must carry `: ping` comments.
func TestHeartbeat(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) { d.srv.stream.Heartbeat = 20 * time.Millisecond })
	id := td.submitFake(t, "idle", 5, map[string]any{"fake": "sleep", "seconds": 60})
	// The raw lines: sseReader, as a browser, skips comments.
	resp := send(t, "GET", td.URL+"/api/v1/jobs/"+id+"/logs/stream", nil, "")
	sc := bufio.NewScanner(resp.Body)
	sawRetry := false
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "retry: ") {
			sawRetry = true
		}
		if sc.Text() == ": ping" {
			break
		}
	}
	if !sawRetry {
		t.Error("no retry: hint before the first ping")
	}
}

// TestDisconnectReleasesEverything opens many streams and drops them: the subscriber maps, the
// count of open streams and the open files must return to where they were.
func TestDisconnectReleasesEverything(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "long", 5, map[string]any{"fake": "lines", "count": 100000, "interval_ms": 1})
	job := mustJob(t, td, id)
	waitLogLines(t, td, id, 1)
	baseFiles := openFiles(t)

	var bodies []io.Closer
	for i := 0; i < 50; i++ {
		for _, path := range []string{"/logs/stream", "/events/stream"} {
			resp := send(t, "GET", td.URL+"/api/v1/jobs/"+id+path, nil, "")
			if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
				t.Fatalf("stream %d: %v", len(bodies), err)
			}
			bodies = append(bodies, resp.Body)
		}
	}
	if n := job.logs.subscriberCount() + job.events.subscriberCount(); n != 100 {
		t.Fatalf("subscribers = %d, want 100", n)
	}
	for _, b := range bodies {
		b.Close()
	}
	waitSubscribers(t, job, 0)
	waitFor(t, "the streams to be counted closed", func() (bool, string) {
		n := td.srv.openStreams.Load()
		return n == 0, fmt.Sprintf("%d open streams", n)
	})
	waitFilesClosed(t, baseFiles)
}

// TestStuckClientDoesNotSlowJob connects a client that sends its request and never reads,
// then lets the job print 100,000 more lines (megabytes of frames, far beyond what socket
// buffers hold). The job must ingest them all and end while the stuck client is still there.
func TestStuckClientDoesNotSlowJob(t *testing.T) {
	// A write timeout long enough to keep the stuck client connected throughout.
	td := startTestDaemon(t, func(d *daemon) { d.srv.stream.WriteTimeout = time.Minute })
	id, open := gatedJob(t, td, 100000)
	job := mustJob(t, td, id)

	conn, err := net.Dial("tcp", strings.TrimPrefix(td.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/jobs/%s/logs/stream HTTP/1.1\r\nHost: localhost\r\n\r\n", id)
	waitSubscribers(t, job, 1)
	open()
	td.waitStatus(t, id, StatusCompleted)
	if n := job.logs.length(); n != 200000 {
		t.Errorf("job logged %d lines, want 200000", n)
	}
	if n := job.logs.subscriberCount(); n != 1 {
		t.Errorf("stuck subscribers = %d, want 1 still connected when the job ended", n)
	}
}

// waitSubscribers waits until the job's two streams have n subscribers between them.
func waitSubscribers(t *testing.T, job *Job, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d subscribers", n), func() (bool, string) {
		got := job.logs.subscriberCount() + job.events.subscriberCount()
		return got == n, fmt.Sprintf("%d subscribers", got)
	})
}

// TestStuckClientIsDroppedAfterWriteTimeout checks that a client that never reads is let go
// once a write has blocked for the stream write timeout.
func TestStuckClientIsDroppedAfterWriteTimeout(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) { d.srv.stream.WriteTimeout = 200 * time.Millisecond })
	id := td.submitFake(t, "big", 5, map[string]any{"fake": "lines", "count": 200000})
	td.waitStatus(t, id, StatusCompleted)
	job := mustJob(t, td, id)
	conn, err := net.Dial("tcp", strings.TrimPrefix(td.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/jobs/%s/logs/stream HTTP/1.1\r\nHost: localhost\r\n\r\n", id)
	waitSubscribers(t, job, 1)
	waitSubscribers(t, job, 0) // dropped: megabytes of the stream were never read
}

func TestEncodeRecordAndJSONString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", `"plain"`},
		{"quote \" backslash \\", `"quote \" backslash \\"`},
		{"tab\tcr\rnl\n", `"tab\tcr\rnl\n"`},
		{"\x00\x1f", `"\u0000\u001f"`},
		{"bad \xff utf8", `"bad \ufffd utf8"`},
		{"emoji 🚀 é", `"emoji 🚀 é"`},
		{"sep \u2028", `"sep \u2028"`},
	}
	for _, tt := range tests {
		got := string(appendJSONString(nil, []byte(tt.in)))
		if got != tt.want {
			t.Errorf("appendJSONString(%q) = %s, want %s", tt.in, got, tt.want)
		}
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Errorf("%s does not decode: %v", got, err)
		}
	}
	rec := encodeRecord(7, "log", []byte(`{"line":"x"}`))
	if want := "id: 7\nevent: log\ndata: {\"line\":\"x\"}\n\n"; string(rec.frame) != want || string(rec.data) != `{"line":"x"}` {
		t.Errorf("frame = %q, data = %q", rec.frame, rec.data)
	}
}

// TestEndIsSeenTheSameEverywhere checks that a job's end shows in one step: a client sent
// `completed` finds the job ended when it asks, and a client that sees the job ended and
// reconnects gets 204. Either half failed now and then when the status and the streams ended
// one after the other.
func TestEndIsSeenTheSameEverywhere(t *testing.T) {
	td := startTestDaemon(t)
	for i := 0; i < 20; i++ {
		id := td.submitFake(t, "quick", 5, map[string]any{"fake": "lines", "count": 1})
		_, events := openStream(t, td.URL+"/api/v1/jobs/"+id+"/events/stream", nil)
		collectCompleted(t, events)
		if got := td.getJob(t, id)["status"]; got != string(StatusCompleted) {
			t.Fatalf("job %d: status %v right after its stream completed, want completed", i, got)
		}
		resp, _ := openStream(t, td.URL+"/api/v1/jobs/"+id+"/events/stream", map[string]string{"Last-Event-ID": "3"})
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("job %d: reconnect after the end: %d, want 204", i, resp.StatusCode)
		}
	}
}
