package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// feedEvents reads n events of the all-jobs stream after its connected notice, checking that
// their ids count up by one from first.
func feedEvents(t *testing.T, events <-chan sseEvent, first, n int) []map[string]any {
	t.Helper()
	var out []map[string]any
	waitFor(t, fmt.Sprintf("%d events of the all-jobs stream", n), func() (bool, string) {
		for len(out) < n {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("the all-jobs stream ended after %d of %d events", len(out), n)
				}
				if ev.Event == "connected" && ev.ID == "" {
					continue
				}
				want := first + len(out)
				if ev.Event != "job_event" || ev.ID != strconv.Itoa(want) {
					t.Fatalf("event %+v, want job_event with id %d", ev, want)
				}
				d := sseData(t, ev)
				d["id"] = ev.ID
				out = append(out, d)
			default:
				return false, fmt.Sprintf("%d events", len(out))
			}
		}
		return true, ""
	})
	return out
}

// statusesOf lists "job:status" for each event, with the job's name standing for its id.
func statusesOf(events []map[string]any) []string {
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = fmt.Sprintf("%v:%v", ev["name"], ev["status"])
	}
	return out
}

// TestFeedAcrossRestart follows the all-jobs stream through a restart: a client that read
// part of it resumes from the restarted charond with Last-Event-ID and gets exactly what it
// missed, then the new changes, numbered on from where the first charond stopped.
func TestFeedAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	td := startTestDaemonIn(t, dir)
	for _, name := range []string{"one", "two"} {
		id := td.submitFake(t, name, 5, map[string]any{"fake": "lines", "count": 1})
		td.waitStatus(t, id, StatusCompleted)
	}
	failing := td.submitFake(t, "three", 7, map[string]any{"fake": "exit", "code": 2})
	td.waitStatus(t, failing, StatusFailed)
	_, events := openStream(t, td.URL+"/api/v1/events/stream", nil)
	before := feedEvents(t, events, 1, 9)
	want := []string{"one:queued", "one:running", "one:completed", "two:queued", "two:running", "two:completed",
		"three:queued", "three:running", "three:failed"}
	if got := statusesOf(before); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("all-jobs stream = %v, want %v", got, want)
	}
	end := before[8]
	if end["job_id"] != failing || end["priority"] != float64(7) || end["exit_code"] != float64(2) ||
		end["type"] != "status_changed" || !strings.Contains(end["message"].(string), "code 2") {
		t.Errorf("final event = %v, want the failed job's id, priority, exit code and message", end)
	}
	if _, ok := end["summary"]; !ok {
		t.Errorf("final event = %v, want a summary field (null without task events)", end)
	}
	if _, ok := before[1]["summary"]; ok {
		t.Errorf("running event = %v carries a summary", before[1])
	}
	td.stop(t)

	td = startTestDaemonIn(t, dir)
	id := td.submitFake(t, "four", 5, map[string]any{"fake": "lines", "count": 1})
	td.waitStatus(t, id, StatusCompleted)
	// The client had read up to id 4: it gets 5..9 from before the restart, then 10..12.
	_, events = openStream(t, td.URL+"/api/v1/events/stream", map[string]string{"Last-Event-ID": "4"})
	after := feedEvents(t, events, 5, 8)
	want = append(want[4:], "four:queued", "four:running", "four:completed")
	if got := statusesOf(after); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("resumed all-jobs stream = %v, want %v", got, want)
	}
	for i, ev := range after[:5] {
		if fmt.Sprint(ev) != fmt.Sprint(before[4+i]) {
			t.Errorf("event %v after the restart is %v, want it as before: %v", ev["id"], ev, before[4+i])
		}
	}
	select {
	case ev := <-events:
		t.Errorf("an event beyond the last change: %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
	// Where to follow from without replaying: the id of the last change, in the info and
	// beside a list of jobs.
	for _, path := range []string{"/api/v1/info", "/api/v1/jobs"} {
		if _, got := getJSON(t, td.URL+path); got["last_event_id"] != float64(12) {
			t.Errorf("%s: last_event_id %v, want 12", path, got["last_event_id"])
		}
	}
}

// TestFeedIsLive sees a change on the all-jobs stream while the job runs, and the stream end
// (without `completed`: it never completes) when charond shuts down.
func TestFeedIsLive(t *testing.T) {
	td := startTestDaemon(t)
	resp, events := openStream(t, td.URL+"/api/v1/events/stream", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /api/v1/events/stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	id, open := gatedJob(t, td, 1)
	got := feedEvents(t, events, 1, 2)
	if got[0]["job_id"] != id || got[1]["status"] != "running" {
		t.Fatalf("live events = %v, want queued then running of %s", got, id)
	}
	open()
	td.waitStatus(t, id, StatusCompleted)
	if got := feedEvents(t, events, 3, 1); got[0]["status"] != "completed" {
		t.Fatalf("third event = %v, want completed", got[0])
	}
	td.stop(t)
	for ev := range events {
		t.Errorf("after shutdown the stream sent %+v, want it to end", ev)
	}
}

// TestFeedCatchesUpAfterACrash drops the feed's last event, as a crash between saving a
// job's record and announcing it would: the next start announces the job's status again.
func TestFeedCatchesUpAfterACrash(t *testing.T) {
	dir := t.TempDir()
	td := startTestDaemonIn(t, dir)
	id := td.submitFake(t, "crashy", 5, map[string]any{"fake": "lines", "count": 1})
	td.waitStatus(t, id, StatusCompleted)
	td.stop(t)
	path := feedPath(filepath.Join(dir, "data", "logs"), 0)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("feed file holds %d lines, want 3:\n%s", len(lines), data)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines[:2], "")), 0o600); err != nil {
		t.Fatal(err)
	}

	td = startTestDaemonIn(t, dir)
	_, events := openStream(t, td.URL+"/api/v1/events/stream", map[string]string{"Last-Event-ID": "2"})
	if got := feedEvents(t, events, 3, 1); got[0]["job_id"] != id || got[0]["status"] != "completed" {
		t.Errorf("after the crash the feed says %v, want the job's completion", got[0])
	}
	td.stop(t)
	td = startTestDaemonIn(t, dir) // nothing more is missing: no event is added
	if first, last := td.sched.store.feed.kept(); first != 1 || last != 3 {
		t.Errorf("after a clean restart the feed holds ids %d..%d, want 1..3", first, last)
	}
}

// feedTestRecord is a record of a job in status st, as the feed announces it.
func feedTestRecord(n int, st Status) jobRecord {
	at := time.Date(2026, 1, 1, 0, 0, n, 0, time.UTC)
	rec := jobRecord{ID: fmt.Sprintf("00000000-0000-0000-0000-%012d", n), Version: 1, Seq: uint64(n), CreatedAt: at,
		JobSpec: JobSpec{Name: fmt.Sprintf("job %d", n), Playbook: "x.yml", Priority: 5, Timeout: time.Hour}}
	rec.Status, rec.Message = st, "because"
	if st.Final() {
		rec.StartedAt, rec.FinishedAt = at, at
	}
	return rec
}

// TestFeedTrimKeepsIds trims the feed to what it keeps, by count and by age: ids of the kept
// events stay as they were, a reader that asks for trimmed ones gets what is kept, and a
// reopened feed numbers on.
func TestFeedTrimKeepsIds(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	f, err := openFeed(dir, logger)
	if err != nil {
		t.Fatal(err)
	}
	f.keep = 8
	for n := 1; n <= 20; n++ {
		if err := f.announce(feedTestRecord(n, StatusQueued)); err != nil {
			t.Fatal(err)
		}
	}
	// A trim happens once more than 10 (8 + a quarter) are held, and keeps 8: at 11, 14, 17
	// and 20.
	first, last := f.kept()
	if first != 13 || last != 20 {
		t.Fatalf("feed holds %d..%d, want 13..20", first, last)
	}
	res, err := f.log.read(0) // a client that asks for everything gets what is kept
	if err != nil {
		t.Fatal(err)
	}
	if len(res.recs) != 8 || !strings.HasPrefix(string(res.recs[0].frame), "id: 13\n") || !strings.Contains(string(res.recs[0].data), `"job 13"`) {
		t.Fatalf("read(0) = %d records, the first %q; want 13..20", len(res.recs), res.recs[0].frame)
	}
	// Only the window serves it so far; a fresh log reads the file.
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	if f, err = openFeed(dir, logger); err != nil {
		t.Fatal(err)
	}
	if first, last := f.kept(); first != 13 || last != 20 {
		t.Fatalf("reopened feed holds %d..%d, want 13..20", first, last)
	}
	res, err = f.log.read(14)
	if err != nil || len(res.recs) != 6 || !strings.HasPrefix(string(res.recs[0].frame), "id: 15\n") || !strings.Contains(string(res.recs[0].data), `"job 15"`) {
		t.Fatalf("read(14) from the file = %d records, err %v; want 15..20", len(res.recs), err)
	}
	if err := f.trimBefore(feedTestRecord(17, StatusQueued).CreatedAt); err != nil {
		t.Fatal(err)
	}
	if first, last := f.kept(); first != 17 || last != 20 {
		t.Fatalf("after trimming what is older than job 17 the feed holds %d..%d, want 17..20", first, last)
	}
	if err := f.announce(feedTestRecord(21, StatusQueued)); err != nil {
		t.Fatal(err)
	}
	if first, last := f.kept(); first != 17 || last != 21 {
		t.Fatalf("feed holds %d..%d, want 17..21", first, last)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "feed.16.events" {
		t.Errorf("the feed's dir holds %v, want only feed.16.events", entries)
	}
	f.close()
}

// TestOpenFeedAfterACrashInATrim opens a feed dir as a crash in the middle of a trim leaves
// it: the old file, the new one and a half-written copy. The newest whole file wins.
func TestOpenFeedAfterACrashInATrim(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, ids ...int) {
		var b strings.Builder
		for _, n := range ids {
			b.Write(feedPayload(feedTestRecord(n, StatusQueued)))
			b.WriteByte('\n')
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("feed.0.events", 1, 2, 3, 4)
	write("feed.2.events", 3, 4)
	write("feed.3.events.tmp", 4)
	f, err := openFeed(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	if first, last := f.kept(); first != 3 || last != 4 {
		t.Errorf("feed holds %d..%d, want 3..4", first, last)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "feed.2.events" {
		t.Errorf("the feed's dir holds %v, want only feed.2.events", entries)
	}
	if err := os.WriteFile(filepath.Join(dir, "feed.x.events"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openFeed(dir, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "feed.x.events") {
		t.Errorf("a planted feed.x.events: err %v, want it named", err)
	}
}

// TestFeedReadersDuringTrims reads the feed from its file while it is appended to and trimmed
// under the readers: each reader sees ids that only go up, one by one but where a trim moved
// its start, and never an error.
func TestFeedReadersDuringTrims(t *testing.T) {
	f, err := openFeed(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	// Readers read the file itself, as readers behind the window do: the window would hide a
	// trim from them.
	f.keep = 300
	const total = 3000
	done := make(chan struct{})
	errs := make(chan error, 4)
	for r := 0; r < 4; r++ {
		go func() {
			after := 0
			for {
				first, last := f.kept()
				if after < first-1 {
					after = first - 1 // trimmed under us: what is kept is what there is
				}
				if after >= last {
					select {
					case <-done:
						errs <- nil
						return
					default:
						continue
					}
				}
				recs, err := f.log.readBack(after, 50) // as a reader behind the window does
				if errors.Is(err, os.ErrNotExist) {
					continue // the trim moved the file: look again, as read does
				}
				if err != nil {
					errs <- err
					return
				}
				for i, rec := range recs {
					var id int
					fmt.Sscanf(string(rec.frame), "id: %d\n", &id)
					// A trim between kept and readBack moves the first id on; within a batch, ids
					// are consecutive.
					if id <= after || i > 0 && id != after+1 {
						errs <- fmt.Errorf("after id %d the file gave %d", after, id)
						return
					}
					after = id
				}
			}
		}()
	}
	for n := 1; n <= total; n++ {
		if err := f.announce(feedTestRecord(n, StatusQueued)); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	for r := 0; r < 4; r++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if first, last := f.kept(); last != total || last-first+1 > 300+75 {
		t.Errorf("feed holds %d..%d after %d events, want at most 375 ending at %d", first, last, total, total)
	}
}

// TestFeedRepair takes a feed back into use after its writes failed: a torn write is cut
// off, a lost file is written anew from memory, and the ids go on as they were.
func TestFeedRepair(t *testing.T) {
	dir := t.TempDir()
	f, err := openFeed(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	var recs []jobRecord
	for n := 1; n <= 3; n++ {
		recs = append(recs, feedTestRecord(n, StatusQueued))
		f.announce(recs[n-1])
	}
	// A write that failed half-way: a torn line, and the log refusing appends.
	torn, _ := os.OpenFile(feedPath(dir, 0), os.O_WRONLY|os.O_APPEND, 0)
	torn.WriteString(`{"type":"status_cha`)
	torn.Close()
	f.log.mu.Lock()
	f.log.failure = errors.New("no space left on device")
	f.log.mu.Unlock()
	if err := f.announce(feedTestRecord(4, StatusQueued)); err == nil {
		t.Fatal("a failed feed took an append")
	}
	recs = append(recs, feedTestRecord(4, StatusQueued)) // saved, but never announced
	if err := f.repair(recs); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(feedPath(dir, 0))
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) != 4 || !strings.Contains(lines[3], `"job 4"`) || strings.Contains(string(raw), `"status_cha{`) {
		t.Fatalf("repaired feed file:\n%s\nwant 4 whole lines, the missed job last", raw)
	}

	// The file is lost, as with logs/ deleted: it is written anew from memory, ids kept.
	os.Remove(feedPath(dir, 0))
	if err := f.repair(recs); err != nil {
		t.Fatal(err)
	}
	f.announce(feedTestRecord(5, StatusQueued))
	res, err := f.log.read(0)
	if err != nil || len(res.recs) != 5 || !strings.HasPrefix(string(res.recs[4].frame), "id: 5\n") {
		t.Fatalf("after the file was lost the feed reads %d events (%v), want 1..5", len(res.recs), err)
	}
	if raw, err := os.ReadFile(feedPath(dir, 0)); err != nil || strings.Count(string(raw), "\n") != 5 {
		t.Errorf("the rewritten feed file: %v\n%s", err, raw)
	}
}
