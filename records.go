package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// jobRecord is a job as the journal stores it, one JSON object a line: its id, the version of
// the record (the highest wins on load), its spec and its state. A new field of JobSpec or
// jobState is stored with nothing to add here.
type jobRecord struct {
	ID        string    `json:"id"`
	Version   uint64    `json:"version"`
	Deleted   bool      `json:"deleted,omitempty"`
	Seq       uint64    `json:"seq,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	JobSpec
	jobState
}

// clockSlack is how long before its creation a job may seem to have started or ended. The
// wall clock can be stepped back (by NTP, say) while a job waits, and a record must not be
// thrown away for that; a record off by more than a day is damaged, not late.
const clockSlack = 24 * time.Hour

// checkRecord reports what makes a record impossible, or nil. A journal holds what charond
// wrote, but a damaged or edited one may hold anything, and a record's fields reach file
// paths (the id), kill(2) (the process group) and the queue (the priority): each must be one
// charond could have written. The same check runs before a record is written, so a change is
// only acknowledged if its record would load back.
func checkRecord(rec *jobRecord) error {
	if !validJobID(rec.ID) {
		return fmt.Errorf("id %.40q is not a job id (8-4-4-4-12 lowercase hex)", rec.ID)
	}
	if rec.Version < 1 {
		return errors.New("version must be at least 1")
	}
	if rec.Deleted {
		return nil // a deletion needs nothing more than the id it deletes
	}
	final := rec.Status.Final()
	switch {
	case !knownStatus(rec.Status):
		return fmt.Errorf("status %.40q is not a job status", rec.Status)
	case rec.Seq < 1:
		return errors.New("seq must be at least 1")
	case rec.Priority < minPriority || rec.Priority > maxPriority:
		return fmt.Errorf("priority %d is not in %d..%d", rec.Priority, minPriority, maxPriority)
	case rec.Timeout <= 0:
		return fmt.Errorf("timeout %s is not positive", rec.Timeout)
	case rec.Name == "" || rec.Playbook == "":
		return errors.New("name and playbook must not be empty")
	case rec.PlaybookPath != "" && !filepath.IsAbs(rec.PlaybookPath):
		return fmt.Errorf("playbook_path %.80q is not absolute", rec.PlaybookPath)
	case rec.PGID < 0 || rec.PGID == 1:
		// kill(-1) would signal every process charond may signal.
		return fmt.Errorf("pgid %d is not a process group a job could run in", rec.PGID)
	case rec.ExitCode != nil && !final:
		return fmt.Errorf("exit_code is set on a %s job", rec.Status)
	case rec.Concurrency != "" && !concurrencyKey.MatchString(rec.Concurrency):
		return fmt.Errorf("concurrency %.80q is not a key", rec.Concurrency)
	case rec.RelaunchOf != "" && !validJobID(rec.RelaunchOf):
		return fmt.Errorf("relaunch_of %.40q is not a job id", rec.RelaunchOf)
	}
	if err := checkRecordTimes(rec, final); err != nil {
		return err
	}
	// Host names are held to the rules every charond has had (one name, not an option); those
	// of the day are applied again when a job starts (runner.checkStillAllowed), so a job an
	// older charond accepted is not lost.
	for i, host := range rec.Inventory {
		if host == "" || host[0] == '-' || strings.ContainsRune(host, ',') || strings.IndexFunc(host, isSpaceOrControl) >= 0 {
			return fmt.Errorf("inventory[%d]: %.80q is not a host name", i, host)
		}
	}
	for name := range rec.Variables {
		if !variableName.MatchString(name) {
			return fmt.Errorf("variables: %s is not a variable name", quoteField(name))
		}
	}
	return nil
}

// knownStatus reports whether st is one of allStatuses.
func knownStatus(st Status) bool {
	for _, s := range allStatuses {
		if s == st {
			return true
		}
	}
	return false
}

// checkRecordTimes checks that a record's times fit its status and one another.
func checkRecordTimes(rec *jobRecord, final bool) error {
	started, finished := !rec.StartedAt.IsZero(), !rec.FinishedAt.IsZero()
	earliest := rec.CreatedAt.Add(-clockSlack)
	switch {
	case rec.CreatedAt.IsZero():
		return errors.New("created_at is not set")
	case rec.Status == StatusQueued && (started || finished):
		return errors.New("a queued job has a start or end time")
	case rec.Status == StatusRunning && (!started || finished):
		return errors.New("a running job needs a start time and no end time")
	case final && !finished:
		return fmt.Errorf("a %s job has no end time", rec.Status)
	case started && rec.StartedAt.Before(earliest):
		return errors.New("started_at is long before created_at")
	case finished && rec.FinishedAt.Before(earliest):
		return errors.New("finished_at is long before created_at")
	case started && finished && rec.FinishedAt.Before(rec.StartedAt.Add(-clockSlack)):
		return errors.New("finished_at is long before started_at")
	}
	return nil
}

// validJobID reports whether id has the form newJobID makes: 8-4-4-4-12 lowercase hex digits.
// Only such an id may become part of a file name.
func validJobID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}
