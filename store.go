package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// The store keeps every job under -data-dir, with nothing but the standard library:
//
//	jobs.journal   one JSON record a line, appended at every state change of a job
//	logs/ID.log    the job's output lines, one JSON payload a line (see eventLog)
//	logs/ID.events the job's events, likewise
//	logs/feed.N.events the all-jobs feed: every job's status changes (see feed.go)
//	work/ID/       a running job's work dir, removed when the job ends and at start
//
// Why a journal rather than a file per job: a state change is one append, and concurrent
// changes share one fsync (group commit). Measured on this project's machines, a file per job
// (write, fsync, rename, fsync of the directory) costs about 1 ms a change, one after another;
// an append and fsync costs about 0.4 ms, shared by everyone waiting. Each record carries the
// job's version, and on load the highest version of each job wins, so the order in which
// concurrent appends land does not matter. A record is only appended after the change is made
// in memory, so a compaction (a fresh journal written from memory: temp file, fsync, rename,
// fsync of the directory) never loses a change. Compaction runs at start, which also drops a
// torn or corrupt record left by a crash, and whenever the journal holds many more records
// than there are jobs.
//
// What the store writes is only acknowledged if it would load back: a record is decoded and
// checked before it is appended (see checkRecord), and a failed write never leaves a torn
// record in the journal (see journal). Any failed write marks the store unhealthy, and
// charond refuses new jobs until its probe finds the data dir usable again (see
// storehealth.go). The data dir and everything in it must belong to charond's user (see
// datadir.go).

// store is the on-disk home of jobs: the journal and the log files.
type store struct {
	dir     string // absolute, symlinks resolved
	uid     int    // charond's effective user, who must own the data dir and all in it
	log     *slog.Logger
	journal *journal
	feed    *feed
	health  storeHealth
}

func (st *store) logPath(id string, kind streamKind) string {
	return filepath.Join(st.dir, "logs", id+"."+kind.file)
}

// openStore opens the data dir, creating what is missing, checks that no other user could
// have put anything in it, and reads every job record. Work dirs left by a crash are
// removed. The journal is opened for appends by the first compaction.
func openStore(dir string, log *slog.Logger) (*store, []jobRecord, error) {
	st := &store{uid: os.Geteuid(), log: log}
	real, err := st.prepareDataDir(dir)
	if err != nil {
		return nil, nil, err
	}
	st.dir = real
	if err := st.checkContents(); err != nil {
		return nil, nil, err
	}
	if err := removeContents(filepath.Join(real, "work")); err != nil {
		return nil, nil, fmt.Errorf("remove work dirs left by a crash: %w", err)
	}
	path := filepath.Join(real, "jobs.journal")
	records, err := readJournal(path, log)
	if err != nil {
		return nil, nil, err
	}
	st.journal = newJournal(path)
	if st.feed, err = openFeed(filepath.Join(real, "logs"), log); err != nil {
		return nil, nil, fmt.Errorf("open the all-jobs feed: %w", err)
	}
	st.feed.log.onFault = st.noteFault
	return st, records, nil
}

// removeContents deletes everything inside dir.
func removeContents(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// readJournal reads the journal and returns the newest version of every job not deleted, in
// submission order. Records that do not decode, such as a last line torn by a crash, and
// records that charond could not have written (see checkRecord) are logged and skipped.
func readJournal(path string, log *slog.Logger) ([]jobRecord, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	newest := map[string]jobRecord{}
	r := bufio.NewReader(f)
	for lineNo := 1; ; lineNo++ {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			var rec jobRecord
			jerr := json.Unmarshal(line, &rec)
			if jerr == nil {
				jerr = checkRecord(&rec)
			}
			if jerr != nil {
				log.Warn("skipping a damaged journal record", "file", path, "line", lineNo, "bytes", len(line), "err", jerr)
			} else if rec.Version > newest[rec.ID].Version {
				newest[rec.ID] = rec
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
	}
	var out []jobRecord
	for _, rec := range newest {
		if !rec.Deleted {
			out = append(out, rec)
		}
	}
	sortRecords(out)
	return out, nil
}

// sortRecords puts records in submission order.
func sortRecords(recs []jobRecord) {
	sort.Slice(recs, func(a, b int) bool { return recs[a].Seq < recs[b].Seq })
}

// save appends a record and returns once it is on disk. The record is first decoded back and
// checked as a load would, so that what is acknowledged is what a restart finds. A failed
// write marks the store unhealthy.
func (st *store) save(rec jobRecord) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode job %s: %w", rec.ID, err)
	}
	var back jobRecord
	if err := json.Unmarshal(line, &back); err != nil {
		return fmt.Errorf("job %s: its record would not load back: %w", rec.ID, err)
	}
	if err := checkRecord(&back); err != nil {
		return fmt.Errorf("job %s: its record would not load back: %w", rec.ID, err)
	}
	if err := st.journal.append(append(line, '\n')); err != nil {
		st.noteFault(err)
		return err
	}
	return nil
}

// commit writes what a change of a job leaves to write: its event on the job's events stream,
// if any, then its record, acknowledged once on disk, then, for a change of status, the
// announcement on the all-jobs feed. It is the one way a change of a job reaches the store.
func (st *store) commit(job *Job, c change) error {
	if c.event != nil {
		if err := job.events.appendData(c.event); err != nil {
			return err
		}
	}
	if err := st.save(c.record); err != nil {
		return err
	}
	if c.announce {
		// The change is saved: a feed that cannot take it marks the store unhealthy (its
		// onFault), and the recovery announces it (see feed.repair). The change itself stands.
		if err := st.feed.announce(c.record); err != nil {
			st.log.Error("announce a status change", "job", c.record.ID, "err", err)
		}
	}
	return nil
}

// recordCount is the number of records in the journal file.
func (st *store) recordCount() int { return st.journal.recordCount() }

// close closes the journal and the feed; saves fail afterwards.
func (st *store) close() error { return errors.Join(st.journal.close(), st.feed.close()) }

// compact rewrites the journal with the records snapshot returns; see journal.compact.
func (st *store) compact(snapshot func() []jobRecord) error {
	if err := st.journal.compact(snapshot); err != nil {
		st.noteFault(err)
		return err
	}
	return nil
}

// openLogs opens (or creates) a job's two log files, reporting torn last lines.
func (st *store) openLogs(id string) (logs, events *eventLog, err error) {
	if !validJobID(id) {
		return nil, nil, fmt.Errorf("%q is not a job id: it must not become a file name", id)
	}
	logs, torn, err := openEventLog(st.logPath(id, logStream), logStream)
	if err != nil {
		return nil, nil, err
	}
	logs.onFault = st.noteFault
	if torn > 0 {
		st.log.Warn("cut a torn last line from a job's log", "job", id, "bytes", torn)
	}
	events, torn, err = openEventLog(st.logPath(id, eventsStream), eventsStream)
	if err != nil {
		logs.close()
		return nil, nil, err
	}
	events.onFault = st.noteFault
	if torn > 0 {
		st.log.Warn("cut a torn last line from a job's events", "job", id, "bytes", torn)
	}
	return logs, events, nil
}

// removeLogs deletes a job's log files.
func (st *store) removeLogs(id string) error {
	if !validJobID(id) {
		return fmt.Errorf("%q is not a job id: it must not become a file name", id)
	}
	return errors.Join(removeIfExists(st.logPath(id, logStream)), removeIfExists(st.logPath(id, eventsStream)))
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
