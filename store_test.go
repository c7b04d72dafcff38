package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestRestartKeepsJobs shuts a daemon down with finished, cancelled and queued jobs, and a
// record left "running" as a crash would leave it, then starts another on the same data dir:
// every job must be there with its status, its log byte for byte with the same ids, and the
// queued jobs must run in their original order.
func TestRestartKeepsJobs(t *testing.T) {
	dir := t.TempDir()
	a := startTestDaemonIn(t, dir)
	done := a.submitFake(t, "done", 5, map[string]any{"fake": "lines", "count": 5000})
	a.waitStatus(t, done, StatusCompleted)
	blocker := a.submitFake(t, "blocker", 5, map[string]any{"fake": "sleep", "seconds": 60})
	waitLogLines(t, a, blocker, 1)
	low := a.submitFake(t, "low", 1, map[string]any{"fake": "lines", "count": 2})
	high := a.submitFake(t, "high", 15, map[string]any{"fake": "lines", "count": 2})
	mid := a.submitFake(t, "mid", 5, map[string]any{"fake": "lines", "count": 2})
	wantLog := get(t, a.URL+"/api/v1/jobs/"+done+"/logs?format=jsonl")
	wantEvents := get(t, a.URL+"/api/v1/jobs/"+done+"/events")
	_, wantList := getJSON(t, a.URL+"/api/v1/jobs")
	a.stop(t)

	// A job that was running when charond crashed, with its process group still alive.
	leftover := startLeftover(t, crashedID)
	appendRecord(t, dir, jobRecord{ID: crashedID, Version: 3, Seq: 99, CreatedAt: time.Now(), JobSpec: JobSpec{Name: "crashed", Playbook: "x.yml", Priority: 5, Timeout: time.Minute}, jobState: jobState{Status: StatusRunning, StartedAt: time.Now(), PGID: leftover.pid()}})

	b := startTestDaemonIn(t, dir)
	if got := get(t, b.URL+"/api/v1/jobs/"+done+"/logs?format=jsonl"); string(got) != string(wantLog) {
		t.Errorf("log after restart differs (%d bytes, want %d)", len(got), len(wantLog))
	}
	if got := get(t, b.URL+"/api/v1/jobs/"+done+"/events"); string(got) != string(wantEvents) {
		t.Errorf("events after restart:\n%s\nwant:\n%s", got, wantEvents)
	}
	_, events := openStream(t, b.URL+"/api/v1/jobs/"+done+"/logs/stream", map[string]string{"Last-Event-ID": "4990"})
	if got := logLines(t, collectCompleted(t, events), 4991); strings.Join(got, ",") != strings.Join(fakeLines(5000)[4990:], ",") {
		t.Errorf("resumed stream after restart = %q", got)
	}
	job := b.waitStatus(t, crashedID, StatusFailed)
	if job["message"] != "interrupted: charond stopped while the job was running" {
		t.Errorf("crashed job message = %q", job["message"])
	}
	waitProcessGone(t, leftover.pid())
	b.waitStatus(t, blocker, StatusCancelled)
	var starts []time.Time
	for _, id := range []string{high, mid, low} {
		j := b.waitStatus(t, id, StatusCompleted)
		at, _ := time.Parse(time.RFC3339Nano, j["started_at"].(string))
		starts = append(starts, at)
	}
	if !(starts[0].Before(starts[1]) && starts[1].Before(starts[2])) {
		t.Errorf("queued jobs started at %v, want in priority order high, mid, low", starts)
	}
	// A queued job's first event is rebuilt from its record after a restart, ids unchanged.
	recorded, _ := jobEvents(t, b, high)
	var got []string
	for _, ev := range recorded {
		got = append(got, fmt.Sprint(ev["id"], " ", ev["status"], " ", ev["message"]))
	}
	if want := "1 queued Job queued with priority 15|2 running Job started|3 completed Job finished successfully"; strings.Join(got, "|") != want {
		t.Errorf("events of a job queued across the restart: %q, want %q", got, want)
	}
	_, list := getJSON(t, b.URL+"/api/v1/jobs")
	if got, want := jobIDs(list), append([]string{crashedID}, jobIDs(wantList)...); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("job list after restart = %v, want %v", got, want)
	}
}

// crashedID is the id of the job a crash left "running" in TestRestartKeepsJobs: an id of
// the form charond makes, since a record with any other is skipped as damaged.
const crashedID = "0c0ffee0-dead-4bad-8bad-c0ffee000001"

func jobIDs(list map[string]any) []string {
	var ids []string
	for _, j := range list["jobs"].([]any) {
		ids = append(ids, j.(map[string]any)["id"].(string))
	}
	return ids
}

// startLeftover starts a process in its own group marked as a job's, as a run that outlived
// a crashed charond would be.
func startLeftover(t *testing.T, jobID string) *child {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	cmd.Env = append(os.Environ(), jobMarker+jobID)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return startChild(t, cmd)
}

func appendRecord(t *testing.T, dir string, rec jobRecord) {
	t.Helper()
	line, _ := json.Marshal(rec)
	f, err := os.OpenFile(filepath.Join(dir, "data", "jobs.journal"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(append(line, '\n'))
}

// TestLeftoverOfAnotherJobIsSpared checks the guard against a reused process group id: a group
// without the job's marker is not killed.
func TestLeftoverOfAnotherJobIsSpared(t *testing.T) {
	other := startLeftover(t, "some-other-job")
	killLeftovers(other.pid(), "crashed-job-id", slog.New(slog.NewTextHandler(io.Discard, nil)))
	// killLeftovers sends SIGKILL before it returns, if it sends anything; a process killed so
	// is beyond any signal that follows. So the test's own SIGTERM ends it only if it was spared.
	// (If it is gone already, Signal fails with ErrProcessDone, and how it ended says why.)
	if err := other.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	if ws := other.waitExit(t); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("an unrelated process group was killed: it ended with %v, not by the test's SIGTERM", other.cmd.ProcessState)
	}
}

// TestDamagedStoreLoads writes a journal with a corrupt record and a torn last one, and logs
// with torn last lines: the store must load what is whole, cut what is torn, and go on.
func TestDamagedStoreLoads(t *testing.T) {
	dir := t.TempDir()
	a := startTestDaemonIn(t, dir)
	id := a.submitFake(t, "ok", 5, map[string]any{"fake": "lines", "count": 3})
	a.waitStatus(t, id, StatusCompleted)
	a.stop(t)

	data := filepath.Join(dir, "data")
	appendFile(t, filepath.Join(data, "jobs.journal"), "this is not json\n{\"id\":\"torn-rec")
	appendFile(t, filepath.Join(data, "logs", id+".log"), `{"line":"half a li`)
	appendFile(t, filepath.Join(data, "logs", id+".events"), `{"type":"sta`)
	if err := os.MkdirAll(filepath.Join(data, "work", "left-by-crash"), 0o700); err != nil {
		t.Fatal(err)
	}

	b := startTestDaemonIn(t, dir)
	job := b.waitStatus(t, id, StatusCompleted)
	if job["log_lines"] != float64(3) {
		t.Errorf("log_lines = %v, want 3", job["log_lines"])
	}
	if text := get(t, b.URL+"/api/v1/jobs/"+id+"/logs"); string(text) != "line 1\nline 2\nline 3\n" {
		t.Errorf("log = %q", text)
	}
	if entries, _ := os.ReadDir(filepath.Join(data, "work")); len(entries) != 0 {
		t.Errorf("work dirs left by a crash were not removed: %v", entries)
	}
	// The torn tail is gone from the file, so new appends start on a line of their own.
	raw, _ := os.ReadFile(filepath.Join(data, "logs", id+".log"))
	if strings.Contains(string(raw), "half a li") {
		t.Error("torn log line was not cut")
	}
	next := b.submitFake(t, "after", 5, map[string]any{"fake": "lines", "count": 1})
	b.waitStatus(t, next, StatusCompleted)
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// TestStreamFromFileAndWindow streams a log larger than the in-memory window from the start
// and from the middle, while the job runs and after it ended: the lines read back from the
// file and those from the window must join without a gap or a repeat.
func TestStreamFromFileAndWindow(t *testing.T) {
	td := startTestDaemon(t)
	n := 3 * windowSize
	id, open := gatedJob(t, td, n)
	_, early := openStream(t, td.URL+"/api/v1/jobs/"+id+"/logs/stream", nil)
	_, middle := openStream(t, td.URL+"/api/v1/jobs/"+id+"/logs/stream?since=1000", nil)
	open()
	if got := logLines(t, collectCompleted(t, early), 1); strings.Join(got, ",") != strings.Join(fakeLines(2*n), ",") {
		t.Errorf("from the start: %d lines, want %d in order", len(got), 2*n)
	}
	if got := logLines(t, collectCompleted(t, middle), 1001); len(got) != 2*n-1000 {
		t.Errorf("from line 1000: %d lines, want %d", len(got), 2*n-1000)
	}
	_, after := openStream(t, td.URL+"/api/v1/jobs/"+id+"/logs/stream?since=777", nil)
	if got := logLines(t, collectCompleted(t, after), 778); strings.Join(got, ",") != strings.Join(fakeLines(2 * n)[777:], ",") {
		t.Errorf("after the end, from line 777: %d lines", len(got))
	}
}

func TestDeleteJob(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "done", 5, map[string]any{"fake": "lines", "count": 2})
	td.waitStatus(t, id, StatusCompleted)
	running := td.submitFake(t, "running", 5, map[string]any{"fake": "sleep", "seconds": 60})
	queued := td.submitFake(t, "queued", 5, map[string]any{"fake": "lines"})
	waitLogLines(t, td, running, 1)
	for _, tc := range []struct {
		id   string
		want int
	}{{running, 409}, {queued, 409}, {id, 204}, {id, 404}} {
		if resp, _ := do(t, "DELETE", td.URL+"/api/v1/jobs/"+tc.id, nil, ""); resp.StatusCode != tc.want {
			t.Errorf("DELETE %s: %d, want %d", tc.id, resp.StatusCode, tc.want)
		}
	}
	for _, kind := range []streamKind{logStream, eventsStream} {
		if _, err := os.Stat(td.sched.store.logPath(id, kind)); !os.IsNotExist(err) {
			t.Errorf("%s file of a deleted job still exists: %v", kind.file, err)
		}
	}
}

func TestRetentionAndMaxJobs(t *testing.T) {
	var ahead atomic.Int64 // how far the daemon's clock is ahead of time.Now, in nanoseconds
	td := startTestDaemon(t, func(d *daemon) {
		d.sched.maxJobs = 3
		d.sched.now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	})
	var ids []string
	for i := 0; i < 5; i++ {
		id := td.submitFake(t, fmt.Sprint("job", i), 5, map[string]any{"fake": "lines", "count": 1})
		td.waitStatus(t, id, StatusCompleted)
		ids = append(ids, id)
	}
	waitFor(t, "pruning to 3 jobs", func() (bool, string) {
		n := len(td.sched.list("", 100))
		return n == 3, fmt.Sprintf("%d jobs", n)
	})
	for i, id := range ids {
		code, _ := getJSON(t, td.URL+"/api/v1/jobs/"+id)
		if want := map[bool]int{true: 404, false: 200}[i < 2]; code != want {
			t.Errorf("job %d: %d, want %d", i, code, want)
		}
	}
	ahead.Store(int64(25 * time.Hour)) // past the test's 24h retention
	td.sched.prune()
	if n := len(td.sched.list("", 100)); n != 0 {
		t.Errorf("%d jobs left after the retention passed, want 0", n)
	}
}

// TestDrainLetsRunningJobsFinish shuts down with a drain timeout: the running job completes,
// a submission meanwhile gets 503, and a queued job stays queued for the next start.
func TestDrainLetsRunningJobsFinish(t *testing.T) {
	dir := t.TempDir()
	a := startTestDaemonIn(t, dir)
	running := a.submitFake(t, "finishing", 5, map[string]any{"fake": "lines", "count": 20, "interval_ms": 25})
	queued := a.submitFake(t, "waiting", 5, map[string]any{"fake": "lines", "count": 1})
	waitLogLines(t, a, running, 1)
	drained := make(chan error, 1)
	go func() { drained <- a.sched.shutdown(contextWithTimeout(t, 30*time.Second), 10*time.Second) }()
	waitFor(t, "shutdown to begin", func() (bool, string) {
		a.sched.mu.Lock()
		defer a.sched.mu.Unlock()
		return a.sched.closed, "the scheduler still takes jobs"
	})
	a.submit(t, "application/json", `{"name":"late","playbook":"- hosts: all\n"}`, http.StatusServiceUnavailable)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if st := mustJob(t, a, running).Status(); st != StatusCompleted {
		t.Errorf("drained job = %s, want completed", st)
	}
	if st := mustJob(t, a, queued).Status(); st != StatusQueued {
		t.Errorf("queued job = %s, want still queued", st)
	}
	a.stop(t)
	b := startTestDaemonIn(t, dir)
	b.waitStatus(t, queued, StatusCompleted)
}

func mustJob(t *testing.T, td *testDaemon, id string) *Job {
	t.Helper()
	job, err := td.sched.get(id)
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// TestKill9LosesNothingAcknowledged kills a real charond with SIGKILL while a job prints and a
// client streams it, then restarts it on the same data dir: the job is failed/interrupted,
// every line the client saw is in its log with the same id, its leftover process is killed,
// and the queued job runs.
func TestKill9LosesNothingAcknowledged(t *testing.T) {
	bin := buildCharond(t)
	self, _ := os.Executable()
	dir := t.TempDir()
	removeCgroupSubtreeAtEnd(t, dir) // the restarted charond is killed, not stopped
	start := func() (*exec.Cmd, *testDaemon) {
		cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-data-dir", dir, "-playbook-dir", dir,
			"-ansible-playbook", self, "-workers", "1", "-env-allow", fakeRunnerEnv)
		cmd.Env = append(os.Environ(), "CHARON_FAKE_RUNNER=1", "GORACE=atexit_sleep_ms=0")
		return cmd, &testDaemon{URL: startProcess(t, cmd)}
	}
	cmd, a := start()
	printing := a.submitFake(t, "printing", 5, map[string]any{"fake": "lines", "count": 100000, "interval_ms": 1})
	queued := a.submitFake(t, "queued", 5, map[string]any{"fake": "lines", "count": 3})
	_, events := openStream(t, a.URL+"/api/v1/jobs/"+printing+"/logs/stream", nil)
	var seen []sseEvent
	for ev := range events {
		if ev.Event == "log" {
			seen = append(seen, ev)
		}
		if len(seen) == 200 {
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	for ev := range events { // what was already on its way to the client before the kill
		if ev.Event == "log" {
			seen = append(seen, ev)
		}
	}

	_, b := start()
	b.waitStatus(t, queued, StatusCompleted)
	job := b.waitStatus(t, printing, StatusFailed)
	if job["message"] != "interrupted: charond stopped while the job was running" {
		t.Errorf("message = %q", job["message"])
	}
	stored := get(t, b.URL+"/api/v1/jobs/"+printing+"/logs?format=jsonl")
	lines := strings.Split(string(stored), "\n")
	if len(seen) < 200 {
		t.Fatalf("the client saw %d lines before the kill, want at least 200", len(seen))
	}
	for _, ev := range seen {
		n, err := strconv.Atoi(ev.ID)
		if err != nil || n < 1 {
			t.Fatalf("log event id %q: want a line number", ev.ID)
		}
		if n > len(lines) || lines[n-1] != ev.Data {
			t.Fatalf("line %s the client saw is not stored as it was sent (%d stored lines)", ev.ID, len(lines)-1)
		}
	}
	t.Logf("client saw %d lines; %d stored", len(seen), len(lines)-1)
}

// BenchmarkMillionLineJobMemory reports the heap growth while a job prints 1,000,000 lines
// and a client streams them: logs are kept on disk with a small window in memory.
func BenchmarkMillionLineJobMemory(b *testing.B) {
	for i := 0; i < b.N; i++ {
		td := startTestDaemon(b)
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		peak := before.HeapAlloc
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			var m runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
					runtime.ReadMemStats(&m)
					if m.HeapAlloc > peak {
						peak = m.HeapAlloc
					}
				}
			}
		}()
		id := td.submitFake(b, "million", 5, map[string]any{"fake": "lines", "count": 1000000})
		resp := send(b, "GET", td.URL+"/api/v1/jobs/"+id+"/logs/stream", nil, "")
		n := 0
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "event: log") {
				n++
			}
		}
		resp.Body.Close()
		close(stop)
		<-sampled
		if n != 1000000 {
			b.Fatalf("client got %d lines", n)
		}
		b.ReportMetric(float64(peak-before.HeapAlloc)/(1<<20), "MiB-heap-growth")
	}
}

// TestEventLogWindowStaysBounded appends far more events than the window holds: memory keeps
// at most two windows' worth, the rest is read back from the file, and an ended log keeps none.
func TestEventLogWindowStaysBounded(t *testing.T) {
	l, _, err := openEventLog(filepath.Join(t.TempDir(), "x.log"), logStream)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	for i := 1; i <= 5*windowSize; i++ {
		if err := l.appendData([]byte(strconv.Quote(fmt.Sprint(i)))); err != nil {
			t.Fatal(err)
		}
		if n := len(l.window); n > 2*windowSize {
			t.Fatalf("window holds %d events after %d appends", n, i)
		}
	}
	res, err := l.read(0)
	recs := res.recs
	if err != nil || len(recs) != readBatch || string(recs[0].data) != `"1"` || !strings.HasPrefix(string(recs[0].frame), "id: 1\n") {
		t.Fatalf("first events read back from the file: %d, %v", len(recs), err)
	}
	err = l.flush()
	l.markComplete(streamEnd{Status: StatusCompleted})
	if err != nil {
		t.Fatal(err)
	}
	if l.window != nil {
		t.Errorf("an ended log keeps %d events in memory", len(l.window))
	}
	res, _ = l.read(5*windowSize - 1)
	if len(res.recs) != 1 || string(res.recs[0].data) != strconv.Quote(fmt.Sprint(5*windowSize)) || res.end != nil {
		t.Errorf("last event after close = %q", res.recs)
	}
	if res, _ = l.read(5 * windowSize); res.end == nil || len(res.recs) != 0 {
		t.Errorf("read past the end of an ended log = %+v, want its end", res)
	}
}

// TestJobsHoldNoFilesOpen checks that queued and finished jobs keep no file descriptors, so
// thousands of kept jobs cannot exhaust them.
func TestJobsHoldNoFilesOpen(t *testing.T) {
	td := startTestDaemon(t)
	blocker := td.submitFake(t, "blocker", 5, map[string]any{"fake": "sleep", "seconds": 60})
	waitLogLines(t, td, blocker, 1)
	base := openFiles(t)
	var ids []string
	for i := 0; i < 40; i++ {
		ids = append(ids, td.submitFake(t, fmt.Sprint("q", i), 5, map[string]any{"fake": "lines", "count": 2}))
	}
	if files := openFiles(t); len(files) > len(base) {
		t.Errorf("40 queued jobs hold %d more files: %q", len(files)-len(base), files)
	}
	postCancel(t, td, blocker, 202)
	for _, id := range ids {
		td.waitStatus(t, id, StatusCompleted)
	}
	waitFilesClosed(t, base)
}

// openFiles lists the test process's open file descriptors other than sockets, charond's among
// them. (A socket is left out: a connection the client has closed is closed on charond's side
// a moment later, by net/http.)
func openFiles(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	var files []string
	for _, e := range entries {
		// The directory being read is among the entries, and gone once read.
		if name, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && !strings.HasPrefix(name, "socket:") {
			files = append(files, name)
		}
	}
	return files
}

// waitFilesClosed waits until the test process has no more files open than it had in base:
// whatever was opened since has been closed.
func waitFilesClosed(t *testing.T, base []string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("open files back to the %d there were", len(base)), func() (bool, string) {
		files := openFiles(t)
		return len(files) <= len(base), fmt.Sprintf("%d open: %q", len(files), files)
	})
}

// TestWindowOutlivesTheJobForItsReaders checks that the subscribers following a job when it
// ends keep reading from memory, and that the window goes with the last of them.
func TestWindowOutlivesTheJobForItsReaders(t *testing.T) {
	l, _, err := openEventLog(filepath.Join(t.TempDir(), "x.log"), logStream)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	for i := 0; i < 10; i++ {
		l.appendData([]byte(`"x"`))
	}
	sub := l.subscribe()
	l.flush()
	l.markComplete(streamEnd{Status: StatusCompleted})
	if len(l.window) != 10 {
		t.Errorf("window = %d events after the end with a reader, want 10", len(l.window))
	}
	l.unsubscribe(sub)
	if l.window != nil {
		t.Errorf("window kept after the last reader left: %d events", len(l.window))
	}
	if res, err := l.read(0); err != nil || len(res.recs) != 10 {
		t.Errorf("read from the file after the window went: %d, %v", len(res.recs), err)
	}
}

// TestJournalIsCompactedWhenLarge appends many versions of one job's record: once the journal
// holds far more records than jobs, pruning rewrites it with one record a job, and a restart
// still finds the newest version.
func TestJournalIsCompactedWhenLarge(t *testing.T) {
	dir := t.TempDir()
	a := startTestDaemonIn(t, dir)
	id := a.submitFake(t, "once", 5, map[string]any{"fake": "lines", "count": 1})
	a.waitStatus(t, id, StatusCompleted)
	job := mustJob(t, a, id)
	for i := 0; i < 1100; i++ {
		job.mu.Lock()
		rec := job.recordLocked()
		job.mu.Unlock()
		if err := a.sched.store.save(rec); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.sched.store.journal.recordCount(); n < 1100 {
		t.Fatalf("journal holds %d records, want over 1100", n)
	}
	a.sched.prune()
	if n := a.sched.store.journal.recordCount(); n != 1 {
		t.Errorf("journal holds %d records after compaction, want 1", n)
	}
	a.stop(t)
	b := startTestDaemonIn(t, dir)
	b.waitStatus(t, id, StatusCompleted)
}
