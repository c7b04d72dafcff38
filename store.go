package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// The store keeps every job under -data-dir, with nothing but the standard library:
//
//	jobs.journal   one JSON record a line, appended at every state change of a job
//	logs/ID.log    the job's output lines, one JSON payload a line (see eventLog)
//	logs/ID.events the job's events, likewise
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

// jobRecord is a job as the journal stores it.
type jobRecord struct {
	ID           string         `json:"id"`
	Version      uint64         `json:"version"`
	Deleted      bool           `json:"deleted,omitempty"`
	Seq          uint64         `json:"seq,omitempty"`
	Name         string         `json:"name,omitempty"`
	Description  string         `json:"description,omitempty"`
	Playbook     string         `json:"playbook,omitempty"`
	PlaybookPath string         `json:"playbook_path,omitempty"`
	Inventory    []string       `json:"inventory,omitempty"`
	Variables    map[string]any `json:"variables,omitempty"`
	Priority     int            `json:"priority,omitempty"`
	Timeout      time.Duration  `json:"timeout_ns,omitempty"`
	CreatedAt    time.Time      `json:"created_at"`
	Status       Status         `json:"status,omitempty"`
	StartedAt    time.Time      `json:"started_at"`
	FinishedAt   time.Time      `json:"finished_at"`
	ExitCode     *int           `json:"exit_code,omitempty"`
	Message      string         `json:"message,omitempty"`
	PGID         int            `json:"pgid,omitempty"`
	Summary      *jobSummary    `json:"summary,omitempty"`
}

// recordLocked returns the job's state as a new version of its record; j.mu is held.
func (j *Job) recordLocked() jobRecord {
	j.version++
	s := j.Spec
	return jobRecord{
		ID: j.ID, Version: j.version, Seq: j.seq,
		Name: s.Name, Description: s.Description, Playbook: s.Playbook, PlaybookPath: s.PlaybookPath,
		Inventory: s.Inventory, Variables: s.Variables, Priority: s.Priority, Timeout: s.Timeout,
		CreatedAt: j.CreatedAt, Status: j.status, StartedAt: j.startedAt, FinishedAt: j.finishedAt,
		ExitCode: j.exitCode, Message: j.message, PGID: j.pgid, Summary: j.summary.clone(),
	}
}

// store is the on-disk home of jobs: the journal and the log files.
type store struct {
	dir     string
	log     *slog.Logger
	journal *journal
}

func (st *store) logPath(id, kind string) string { return filepath.Join(st.dir, "logs", id+"."+kind) }

// openStore opens the data dir, creating what is missing, and reads every job record. Work
// dirs left by a crash are removed.
func openStore(dir string, log *slog.Logger) (*store, []jobRecord, error) {
	for _, sub := range []string{"logs", "work"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, nil, err
		}
	}
	if err := removeContents(filepath.Join(dir, "work")); err != nil {
		return nil, nil, fmt.Errorf("remove work dirs left by a crash: %w", err)
	}
	path := filepath.Join(dir, "jobs.journal")
	records, err := readJournal(path, log)
	if err != nil {
		return nil, nil, err
	}
	j := &journal{path: path}
	j.cond = sync.NewCond(&j.mu)
	st := &store{dir: dir, log: log, journal: j}
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
// submission order. Records that do not decode, such as a last line torn by a crash, are
// logged and skipped.
func readJournal(path string, log *slog.Logger) ([]jobRecord, error) {
	f, err := os.Open(path)
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
			if jerr := json.Unmarshal(line, &rec); jerr != nil || rec.ID == "" {
				log.Warn("skipping a damaged journal record", "file", path, "line", lineNo, "bytes", len(line))
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

// save appends a record and returns once it is on disk.
func (st *store) save(rec jobRecord) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode job %s: %w", rec.ID, err)
	}
	return st.journal.append(append(line, '\n'))
}

// openLogs opens (or creates) a job's two log files, reporting torn last lines.
func (st *store) openLogs(id string) (logs, events *eventLog, err error) {
	logs, torn, err := openEventLog(st.logPath(id, "log"), "log")
	if err != nil {
		return nil, nil, err
	}
	if torn > 0 {
		st.log.Warn("cut a torn last line from a job's log", "job", id, "bytes", torn)
	}
	events, torn, err = openEventLog(st.logPath(id, "events"), "job_event")
	if err != nil {
		logs.release()
		return nil, nil, err
	}
	if torn > 0 {
		st.log.Warn("cut a torn last line from a job's events", "job", id, "bytes", torn)
	}
	return logs, events, nil
}

// removeLogs deletes a job's log files.
func (st *store) removeLogs(id string) error {
	return errors.Join(removeIfExists(st.logPath(id, "log")), removeIfExists(st.logPath(id, "events")))
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// journal is the append-only file of job records, with group commit.
type journal struct {
	path string

	mu      sync.Mutex // guards the fields below; held across appends (not across fsync)
	cond    *sync.Cond // signalled when an fsync ends
	f       *os.File   // nil until the first compaction opens it
	gen     int        // increases with each compaction: older appends are then durable
	written int64      // bytes appended to the current file
	synced  int64      // bytes of the current file known to be on disk
	syncing bool       // an fsync is under way, outside the lock
	records int        // records in the current file
}

// append writes one record and waits until it is on disk. Appenders that arrive while an
// fsync is under way share the next one.
func (j *journal) append(line []byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return errors.New("journal is not open")
	}
	if _, err := j.f.Write(line); err != nil {
		return fmt.Errorf("append to %s: %w", j.path, err)
	}
	j.written += int64(len(line))
	j.records++
	gen, end := j.gen, j.written
	for j.gen == gen && j.synced < end {
		if j.syncing {
			j.cond.Wait()
			continue
		}
		j.syncing = true
		f, target := j.f, j.written
		j.mu.Unlock()
		err := f.Sync()
		j.mu.Lock()
		j.syncing = false
		j.cond.Broadcast()
		if err != nil {
			return fmt.Errorf("sync %s: %w", j.path, err)
		}
		if j.f == f && target > j.synced {
			j.synced = target
		}
	}
	return nil
}

// recordCount is the number of records in the journal file.
func (j *journal) recordCount() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.records
}

// compact replaces the journal with the records that snapshot returns, durably. snapshot runs
// with appends held off, so every change appended later lands in the new file.
func (j *journal) compact(snapshot func() []jobRecord) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.syncing {
		j.cond.Wait()
	}
	var buf bytes.Buffer
	recs := snapshot()
	for _, rec := range recs {
		line, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("encode job %s: %w", rec.ID, err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	if err := writeFileDurably(j.path, buf.Bytes()); err != nil {
		return err
	}
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.gen, j.records = f, j.gen+1, len(recs)
	j.written, j.synced = int64(buf.Len()), int64(buf.Len())
	j.cond.Broadcast()
	return nil
}

// close closes the journal file; appends fail afterwards.
func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.syncing {
		j.cond.Wait()
	}
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

// writeFileDurably replaces path with data so that a crash leaves either the old file or the
// new one: a temp file, fsync, rename, then fsync of the directory to make the rename durable.
func writeFileDurably(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
