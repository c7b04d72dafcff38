package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestImpossibleRecordsAreSkipped appends to a journal records that charond could not have
// written: each must be skipped with a warning naming the file and line, the good records
// loaded, and charond must start. A record whose id is a path must not reach the file it
// names: loading a log cuts a torn tail, so a victim with one would be truncated.
func TestImpossibleRecordsAreSkipped(t *testing.T) {
	dir := t.TempDir()
	a := startTestDaemonIn(t, dir)
	done := a.submitFake(t, "done", 5, map[string]any{"fake": "lines", "count": 1})
	a.waitStatus(t, done, StatusCompleted)
	a.stop(t)
	victim := filepath.Join(dir, "victim.log") // where data/logs/../../victim.log leads
	must(t, os.WriteFile(victim, []byte("precious"), 0o600))

	created := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	one := 1
	cases := []struct {
		name   string
		damage func(r *jobRecord)
	}{
		{"id that is a path", func(r *jobRecord) { r.ID = "../../victim" }},
		{"id in capitals", func(r *jobRecord) { r.ID = strings.ToUpper("abcdef01" + r.ID[8:]) }},
		{"id empty", func(r *jobRecord) { r.ID = "" }},
		{"id deleted that is a path", func(r *jobRecord) { r.ID, r.Deleted = "../x", true }},
		{"unknown status", func(r *jobRecord) { r.Status = "exploded" }},
		{"no status", func(r *jobRecord) { r.Status = "" }},
		{"priority 0", func(r *jobRecord) { r.Priority = 0 }},
		{"priority 16", func(r *jobRecord) { r.Priority = 16 }},
		{"version 0", func(r *jobRecord) { r.Version = 0 }},
		{"seq 0", func(r *jobRecord) { r.Seq = 0 }},
		{"timeout 0", func(r *jobRecord) { r.Timeout = 0 }},
		{"negative timeout", func(r *jobRecord) { r.Timeout = -time.Second }},
		{"no name", func(r *jobRecord) { r.Name = "" }},
		{"no playbook", func(r *jobRecord) { r.Playbook = "" }},
		{"relative playbook path", func(r *jobRecord) { r.PlaybookPath = "site.yml" }},
		{"pgid 1", func(r *jobRecord) { r.Status, r.StartedAt, r.PGID = StatusRunning, created, 1 }},
		{"negative pgid", func(r *jobRecord) { r.Status, r.StartedAt, r.PGID = StatusRunning, created, -7 }},
		{"exit code of a queued job", func(r *jobRecord) { r.ExitCode = &one }},
		{"running without a start", func(r *jobRecord) { r.Status = StatusRunning }},
		{"ended without an end", func(r *jobRecord) { r.Status, r.StartedAt = StatusCompleted, created }},
		{"queued with an end", func(r *jobRecord) { r.FinishedAt = created }},
		{"started days before created", func(r *jobRecord) { r.Status, r.StartedAt = StatusRunning, created.Add(-72*time.Hour) }},
		{"no creation time", func(r *jobRecord) { r.CreatedAt = time.Time{} }},
		{"host that is an option", func(r *jobRecord) { r.Inventory = []string{"-oProxyCommand=x"} }},
		{"host list in one entry", func(r *jobRecord) { r.Inventory = []string{"a,b"} }},
		{"variable name", func(r *jobRecord) { r.Variables = map[string]any{"a-b": 1} }},
	}
	journal := filepath.Join(dir, "data", "jobs.journal")
	first := countLines(t, journal) + 1
	wantSkipped := map[int]string{}
	for i, tc := range cases {
		rec := testRecord(100 + i)
		rec.CreatedAt = created
		tc.damage(&rec)
		appendRecord(t, dir, rec)
		wantSkipped[first+i] = tc.name
	}
	good := testRecord(999)
	good.Variables = map[string]any{"fake": "lines", "count": 1}
	appendRecord(t, dir, good)
	// A later version that is damaged does not hide the good one.
	worse := good
	worse.Version, worse.Priority = 2, 99
	appendRecord(t, dir, worse)
	wantSkipped[first+len(cases)+1] = "damaged newer version"

	var warnings bytes.Buffer
	recs, err := readJournal(journal, slog.New(slog.NewJSONHandler(&warnings, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range strings.Split(strings.TrimSpace(warnings.String()), "\n") {
		var entry struct {
			Msg, File, Err string
			Line           int
		}
		if err := json.Unmarshal([]byte(w), &entry); err != nil || entry.Msg != "skipping a damaged journal record" || entry.File != journal {
			t.Errorf("unexpected log entry %s", w)
			continue
		}
		if _, ok := wantSkipped[entry.Line]; !ok {
			t.Errorf("line %d skipped, but it is good: %s", entry.Line, entry.Err)
		}
		delete(wantSkipped, entry.Line)
	}
	for line, name := range wantSkipped {
		t.Errorf("line %d (%s) was not skipped with a warning", line, name)
	}
	if got, want := fmt.Sprint(idsOf(recs...)), fmt.Sprint([]string{done, good.ID}); got != want {
		t.Errorf("loaded %s, want %s", got, want)
	}

	b := startTestDaemonIn(t, dir)
	b.waitStatus(t, done, StatusCompleted)
	b.waitStatus(t, good.ID, StatusCompleted)
	if n := len(b.sched.list("", 100)); n != 2 {
		t.Errorf("%d jobs after the start, want 2", n)
	}
	if got, _ := os.ReadFile(victim); string(got) != "precious" {
		t.Errorf("a file outside the data dir, named by a record's id, now holds %q", got)
	}
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		n++
	}
	return n
}

// TestRecordsCharondWritesPassTheCheck checks the record of a job in each state charond puts
// it in: each must pass checkRecord, or the change would be refused at save.
func TestRecordsCharondWritesPassTheCheck(t *testing.T) {
	created := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	zero := 0
	for _, tc := range []struct {
		name   string
		change func(r *jobRecord)
	}{
		{"queued", func(r *jobRecord) {}},
		{"running", func(r *jobRecord) { r.Status, r.StartedAt, r.PGID = StatusRunning, created.Add(time.Second), 4242 }},
		{"completed", func(r *jobRecord) {
			r.Status, r.StartedAt, r.FinishedAt, r.ExitCode = StatusCompleted, created, created.Add(time.Minute), &zero
		}},
		{"cancelled before it started", func(r *jobRecord) { r.Status, r.FinishedAt = StatusCancelled, created }},
		{"clock stepped back an hour", func(r *jobRecord) {
			r.Status, r.StartedAt, r.FinishedAt = StatusTimedOut, created.Add(-time.Hour), created.Add(-time.Hour)
		}},
		{"external playbook", func(r *jobRecord) { r.PlaybookPath = "/srv/playbooks/site.yml" }},
		{"deleted", func(r *jobRecord) { *r = jobRecord{ID: r.ID, Version: 9, Deleted: true} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := testRecord(1)
			rec.CreatedAt = created
			tc.change(&rec)
			if err := checkRecord(&rec); err != nil {
				t.Error(err)
			}
		})
	}
}
