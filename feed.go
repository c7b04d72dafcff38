package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The feed is the all-jobs stream, GET /api/v1/events/stream: every status change of every
// job, in the order charond made them, numbered by one sequence that never repeats or goes
// back, across restarts too. It is an eventLog like a job's own streams, so it has their
// guarantees (a line is on disk before any client sees it; slow clients read the file, not
// memory), with two differences: it never ends, and it drops its oldest events (see trim),
// keeping the ids of the others. Its file is logs/feed.<base>.events, where base is the id
// before the file's first event, so the numbering survives a trim and a restart.
//
// A status change reaches the feed after the job's record is saved (see store.commit). A
// crash between the two leaves the feed one change short; at start, every job whose record
// says more than the feed does has its current status announced (see reconcile), so a client
// that resumes learns where each job stands.

// feedStream names the feed's events: the same event name as a job's events stream.
var feedStream = streamKind{file: "events", event: "job_event", noun: "event"}

const (
	feedPrefix = "feed."
	feedSuffix = ".events"
	// feedKeepPerJob sets how many events the feed keeps: this many for each job -max-jobs
	// keeps. A job makes three status changes (queued, running, its end), so the feed holds
	// every kept job's changes with room for relaunches and cancels; at about 350 bytes an
	// event, the default -max-jobs of 10,000 keeps 40,000 events, 14 MB.
	feedKeepPerJob = 4
)

// feed is the all-jobs stream and what it keeps.
type feed struct {
	log *eventLog
	dir string // where its file lives: the data dir's logs/
	// keep is how many of the newest events are kept at most; 0 keeps all. Events are trimmed
	// once a quarter more than that have built up, so a trim's copy is paid once in many.
	keep   int
	logger *slog.Logger
}

// feedPath is the feed's file when its first event is base+1.
func feedPath(dir string, base int) string {
	return filepath.Join(dir, feedPrefix+strconv.Itoa(base)+feedSuffix)
}

// openFeed opens the feed's file in dir, the one with the highest base if a crash in the
// middle of a trim left two (the newer is the older's tail), and removes the others and any
// half-written copy.
func openFeed(dir string, logger *slog.Logger) (*feed, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	base, found := 0, []int{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, feedPrefix) {
			continue
		}
		if strings.HasSuffix(name, feedSuffix+".tmp") {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, err
			}
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, feedPrefix), feedSuffix))
		if err != nil || n < 0 || !strings.HasSuffix(name, feedSuffix) {
			return nil, fmt.Errorf("%s is not a file charond writes: remove it", filepath.Join(dir, name))
		}
		found = append(found, n)
		base = max(base, n)
	}
	for _, n := range found {
		if n != base {
			if err := os.Remove(feedPath(dir, n)); err != nil {
				return nil, err
			}
		}
	}
	l, torn, err := openEventLog(feedPath(dir, base), feedStream)
	if err != nil {
		return nil, err
	}
	if torn > 0 {
		logger.Warn("cut a torn last line from the all-jobs feed", "bytes", torn)
	}
	l.base = base
	// Open for appends now, as the journal is: the feed is written for as long as charond runs.
	l.writeMu.Lock()
	err = l.openForAppend()
	l.writeMu.Unlock()
	if err != nil {
		return nil, err
	}
	return &feed{log: l, dir: dir, logger: logger}, nil
}

// feedEvent is an event of the feed: a job's status_changed event, plus its name and priority.
type feedEvent struct {
	statusEvent
	Name     string `json:"name"`
	Priority int    `json:"priority"`
}

// feedEndEvent is the event of a job that has ended: it says how, and what happened to each host.
type feedEndEvent struct {
	feedEvent
	ExitCode *int        `json:"exit_code"`
	Summary  *jobSummary `json:"summary"`
}

// feedPayload is the feed's event for the status a record holds. It is built from the record
// alone, so that reconcile builds the same event at start.
func feedPayload(rec jobRecord) []byte {
	ev := feedEvent{
		statusEvent: statusEvent{Type: "status_changed", JobID: rec.ID, Status: rec.Status, Message: rec.Message, Timestamp: statusTime(rec).UTC()},
		Name:        rec.Name,
		Priority:    rec.Priority,
	}
	var v any = ev
	if rec.Status.Final() {
		v = feedEndEvent{feedEvent: ev, ExitCode: rec.ExitCode, Summary: rec.Summary}
	}
	payload, err := json.Marshal(v)
	if err != nil {
		panic("encoding a feed event cannot fail: " + err.Error())
	}
	return payload
}

// statusTime is when the job reached the status its record holds.
func statusTime(rec jobRecord) time.Time {
	switch {
	case rec.Status.Final():
		return rec.FinishedAt
	case rec.Status == StatusRunning:
		return rec.StartedAt
	}
	return rec.CreatedAt
}

// announce appends the status the record holds, trimming the oldest events when too many
// have built up.
func (f *feed) announce(rec jobRecord) error {
	if err := f.log.appendData(feedPayload(rec)); err != nil {
		return fmt.Errorf("announce job %s on the all-jobs feed: %w", rec.ID, err)
	}
	if first, last := f.kept(); f.keep > 0 && last-first+1 > f.keep+f.keep/4 {
		return f.trim(last - f.keep)
	}
	return nil
}

// kept is the range of ids the feed holds: first > last when it holds none.
func (f *feed) kept() (first, last int) { return f.log.idRange() }

// trim drops the events up to id through.
func (f *feed) trim(through int) error {
	if err := f.log.trim(through, feedPath(f.dir, through)); err != nil {
		return err
	}
	f.logger.Info("trimmed the all-jobs feed", "dropped_through", through)
	return nil
}

// trimBefore drops the events older than cutoff: the feed keeps no more than the jobs'
// -retention. Events are in the order they were made, so the first one at or after cutoff
// ends the search (a clock stepped back may keep a few older ones for a while).
func (f *feed) trimBefore(cutoff time.Time) error {
	first, last := f.kept()
	through := first - 1
	err := f.scan(func(id int, ev feedEvent) bool {
		if !ev.Timestamp.Before(cutoff) {
			return false
		}
		through = id
		return true
	})
	if err != nil || through < first || through > last {
		return err
	}
	return f.trim(through)
}

// scan calls fn with each kept event in order until fn returns false.
func (f *feed) scan(fn func(id int, ev feedEvent) bool) error {
	first, _ := f.kept()
	after := first - 1
	for {
		res, err := f.log.read(after)
		if err != nil || len(res.recs) == 0 {
			return err
		}
		for _, r := range res.recs {
			after++
			var ev feedEvent
			if err := json.Unmarshal(r.data, &ev); err != nil {
				return fmt.Errorf("all-jobs feed event %d: %w", after, err)
			}
			if !fn(after, ev) {
				return nil
			}
		}
	}
}

// reconcile announces the status of every job whose record says more than the feed does:
// a change saved just before a crash, which the feed missed. A job whose last change is older
// than the feed's oldest event was trimmed from the feed, not missed. recs are in submission
// order.
func (f *feed) reconcile(recs []jobRecord) error {
	said := map[string]Status{}
	var oldest time.Time
	if err := f.scan(func(_ int, ev feedEvent) bool {
		if oldest.IsZero() {
			oldest = ev.Timestamp
		}
		said[ev.JobID] = ev.Status
		return true
	}); err != nil {
		return err
	}
	missed := 0
	for _, rec := range recs {
		if said[rec.ID] == rec.Status || statusTime(rec).Before(oldest) {
			continue
		}
		if err := f.announce(rec); err != nil {
			return err
		}
		missed++
	}
	if missed > 0 {
		f.logger.Warn("announced on the all-jobs feed the status changes a crash kept from it", "jobs", missed)
	}
	return nil
}

// repair takes the feed back into use after a fault (see eventLog.repair), then announces
// what it missed meanwhile: the status of every job whose record says more. recs are every
// job's record, in submission order.
func (f *feed) repair(recs []jobRecord) error {
	if err := f.log.repair(func(base int) string { return feedPath(f.dir, base) }); err != nil {
		return fmt.Errorf("repair the all-jobs feed: %w", err)
	}
	return f.reconcile(recs)
}

// close releases the feed's file.
func (f *feed) close() error { return f.log.close() }
