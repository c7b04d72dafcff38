package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
)

// Status is where a job is in its life: queued → running → one of the final states.
type Status string

const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusCompleted Status = "completed"
	StatusFailed    Status = "failed"
	StatusTimedOut  Status = "timed_out"
	StatusCancelled Status = "cancelled"
)

// allStatuses lists every status, for validating ?status= filters.
var allStatuses = []Status{StatusQueued, StatusRunning, StatusCompleted, StatusFailed, StatusTimedOut, StatusCancelled}

// Final reports whether a job in this status will never change again.
func (s Status) Final() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusTimedOut || s == StatusCancelled
}

// Priorities: 1 (low) to 15 (critical), 5 (normal) by default; higher runs first.
const (
	minPriority     = 1
	maxPriority     = 15
	defaultPriority = 5
)

// JobSpec is what a client submits, validated (see submission.go).
type JobSpec struct {
	Name        string
	Description string
	// Playbook is the embedded playbook text, or the path as the client gave it.
	Playbook string
	// PlaybookPath is the resolved absolute path of an external playbook; empty when embedded.
	PlaybookPath string
	Inventory    []string
	Variables    map[string]any
	Priority     int
	Timeout      time.Duration
}

// Embedded reports whether the playbook text was sent inline rather than named by path.
func (s *JobSpec) Embedded() bool { return s.PlaybookPath == "" }

// Job is one submitted playbook run. Its spec, id and creation time never change; the rest is
// guarded by mu. The two logs carry the job's output lines and its status events.
type Job struct {
	ID        string
	Spec      *JobSpec
	CreatedAt time.Time
	seq       uint64 // submission order, for FIFO among equal priorities

	logs   *eventLog
	events *eventLog

	mu         sync.Mutex // guards the fields below; taken before its logs' eventLog.mu, never after
	status     Status
	startedAt  time.Time
	finishedAt time.Time
	exitCode   *int
	message    string
	cancelRun  func(*stopReason) // set when the job starts: ends its run for that reason
	pgid       int               // the process group of its run, once started
	version    uint64            // of its stored record; each save is a new version
	summary    *jobSummary       // from the callback plugin's events; nil until the first
	ending     bool              // finish has begun: its streams are closing, its status follows
}

// newJobID returns a random id in the 8-4-4-4-12 hex form of a UUID, as the README's examples show.
func newJobID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Status returns the job's current status.
func (j *Job) Status() Status {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.status
}

// exitMessage explains an ansible-playbook exit code in the words of its documentation
// (measured with ansible-core 2.14: 1 for a missing playbook, 2 when a host failed, 4 when a
// host was unreachable or the playbook did not parse).
func exitMessage(code int) string {
	meaning := map[int]string{
		1:   "an error occurred (for example a missing playbook or a bad option)",
		2:   "one or more hosts failed",
		3:   "one or more hosts were unreachable",
		4:   "a host was unreachable or the playbook could not be parsed",
		5:   "bad or incomplete options",
		99:  "the run was interrupted",
		250: "an unexpected error occurred",
	}[code]
	if meaning == "" {
		meaning = "unexpected exit status"
	}
	return fmt.Sprintf("ansible-playbook exited with code %d: %s", code, meaning)
}
