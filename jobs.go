package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
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

// JobSpec is what a client submits, validated (see submission.go). It never changes once
// the job exists. Its JSON is how the journal stores it (see jobRecord).
type JobSpec struct {
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
	// Playbook is the embedded playbook text, or the path as the client gave it.
	Playbook string `json:"playbook,omitempty"`
	// PlaybookPath is the resolved absolute path of an external playbook; empty when embedded.
	PlaybookPath string   `json:"playbook_path,omitempty"`
	Inventory    []string `json:"inventory,omitempty"` // a list of host names, or:
	// InventoryGroups is a mapping inventory, as parseInventoryGroups leaves it.
	InventoryGroups map[string]any `json:"inventory_groups,omitempty"`
	// InventoryPath is the resolved path of an inventory file or directory.
	InventoryPath string         `json:"inventory_path,omitempty"`
	Variables     map[string]any `json:"variables,omitempty"`
	Priority      int            `json:"priority,omitempty"`
	Timeout       time.Duration  `json:"timeout_ns,omitempty"`
	// IdleTimeout stops a run that prints nothing and reports no task event for this long; 0: never.
	IdleTimeout time.Duration `json:"idle_timeout_ns,omitempty"`
	// Launch options: each is one ansible-playbook option (see args); zero means not given.
	Limit       string   `json:"limit,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	SkipTags    []string `json:"skip_tags,omitempty"`
	Check       bool     `json:"check,omitempty"`
	Diff        bool     `json:"diff,omitempty"`
	Verbosity   int      `json:"verbosity,omitempty"`
	Forks       int      `json:"forks,omitempty"`
	StartAtTask string   `json:"start_at_task,omitempty"`
	// Concurrency is a key no two running jobs share; empty: none.
	Concurrency string `json:"concurrency,omitempty"`
	// RelaunchOf is the id of the job this one relaunches; empty for a submission.
	RelaunchOf string `json:"relaunch_of,omitempty"`
}

// Embedded reports whether the playbook text was sent inline rather than named by path.
func (s *JobSpec) Embedded() bool { return s.PlaybookPath == "" }

// args is the part of ansible-playbook's argument list that this spec chooses, given the
// files the runner wrote; the runner adds charond's own options and the playbook's absolute
// path. A field that is an option of ansible-playbook becomes it here, and only here; no field
// is ever command-line text of its own. Values are joined to their option with '=', so none
// can be read as an option of its own.
func (s *JobSpec) args(inventory, vars string) []string {
	args := []string{"-i", inventory, "-e", "@" + vars}
	if s.Limit != "" {
		args = append(args, "--limit="+s.Limit)
	}
	if len(s.Tags) > 0 {
		args = append(args, "--tags="+strings.Join(s.Tags, ","))
	}
	if len(s.SkipTags) > 0 {
		args = append(args, "--skip-tags="+strings.Join(s.SkipTags, ","))
	}
	if s.Check {
		args = append(args, "--check")
	}
	if s.Diff {
		args = append(args, "--diff")
	}
	if s.Verbosity > 0 {
		args = append(args, "-"+strings.Repeat("v", s.Verbosity))
	}
	if s.Forks > 0 {
		args = append(args, "--forks="+strconv.Itoa(s.Forks))
	}
	if s.StartAtTask != "" {
		args = append(args, "--start-at-task="+s.StartAtTask)
	}
	return args
}

// jobState is what changes in a job's life. Its JSON is how the journal stores it.
type jobState struct {
	Status     Status      `json:"status,omitempty"`
	StartedAt  time.Time   `json:"started_at"`
	FinishedAt time.Time   `json:"finished_at"`
	ExitCode   *int        `json:"exit_code,omitempty"` // nil until it ends, and for a run killed by a signal
	Message    string      `json:"message,omitempty"`
	PGID       int         `json:"pgid,omitempty"`    // the process group of its run, once started
	Command    []string    `json:"command,omitempty"` // what its run executed: the program's path, then its arguments
	Summary    *jobSummary `json:"summary,omitempty"` // from the callback plugin's events; nil until the first
	// Artifacts is what the playbook published with set_stats, secrets masked; nil if nothing.
	// It is replaced whole, never changed in place, so a copy of the state may share it.
	Artifacts map[string]any `json:"artifacts,omitempty"`
	// WebhookPending says the job has ended and its webhooks are still to be delivered.
	WebhookPending bool `json:"webhook_pending,omitempty"`
}

// Job is one submitted playbook run. Its id, spec, creation time and seq never change; its
// state changes only through the transitions below, each of which returns the change to
// commit (store.commit). The two logs carry the job's output lines and its events.
type Job struct {
	ID        string
	Spec      *JobSpec
	CreatedAt time.Time
	seq       uint64 // submission order, for FIFO among equal priorities

	logs   *eventLog
	events *eventLog

	mu        sync.Mutex // guards the fields below; lock order: see scheduler.mu
	st        jobState
	version   uint64            // of its record; each change is a new version
	cancelRun func(*stopReason) // set when the job starts: ends its run for that reason
	ending    bool              // end has begun: its streams are closing, its status follows
	// secretsMasked says the spec was loaded from an ended job's record, which keeps secret
	// values masked: the job cannot be relaunched, since what it ran with is gone.
	secretsMasked bool
	deleted       bool // its deletion is the last version of its record: no change may follow
}

// stream is the job's log of that kind.
func (j *Job) stream(kind streamKind) *eventLog {
	if kind == eventsStream {
		return j.events
	}
	return j.logs
}

// change is what a transition leaves to write: an event for the job's events stream, if any,
// then the new version of its record; announce says the status changed, for the all-jobs feed.
type change struct {
	event    []byte
	record   jobRecord
	announce bool
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

// jobFromRecord is the inverse of recordLocked: the job a record describes, without its logs.
func jobFromRecord(rec jobRecord) *Job {
	spec := rec.JobSpec
	if spec.Variables == nil {
		spec.Variables = map[string]any{}
	}
	return &Job{ID: rec.ID, Spec: &spec, CreatedAt: rec.CreatedAt, seq: rec.Seq, st: rec.jobState, version: rec.Version}
}

// recordLocked is the job's record at its current version; j.mu is held. Once the job has
// ended, its secret variables are masked (see storedVariablesLocked).
func (j *Job) recordLocked() jobRecord {
	spec := *j.Spec
	spec.Variables = j.storedVariablesLocked()
	if j.st.Status.Final() && spec.InventoryGroups != nil {
		spec.InventoryGroups = maskValue(spec.InventoryGroups).(map[string]any)
	}
	st := j.st
	st.Summary = st.Summary.clone()
	return jobRecord{ID: j.ID, Version: j.version, Seq: j.seq, CreatedAt: j.CreatedAt, JobSpec: spec, jobState: st}
}

// record is the job's record at its current version, for a compaction: it changes nothing.
func (j *Job) record() jobRecord {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.recordLocked()
}

// changedLocked makes a new version of the record and returns it with event; j.mu is held.
func (j *Job) changedLocked(event []byte) change {
	j.version++
	return change{event: event, record: j.recordLocked()}
}

// statusChangedLocked is changedLocked for a change of status, which the feed announces.
func (j *Job) statusChangedLocked(event []byte) change {
	c := j.changedLocked(event)
	c.announce = true
	return c
}

// Status returns the job's current status.
func (j *Job) Status() Status {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.st.Status
}

// state returns a copy of the job's state, safe to read without the lock.
func (j *Job) state() jobState {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := j.st
	st.Summary = st.Summary.clone()
	return st
}

// queue marks a new job queued. Its "queued" event is not part of the change: it can be
// rebuilt from the record, so it is published once the record is saved (see submit).
func (j *Job) queue() change {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.st.Status, j.st.Message = StatusQueued, queuedMessage(j.Spec.Priority)
	return j.statusChangedLocked(nil)
}

// queuedEvent is a job's first event. It is built from what the job's record holds, so that a
// restart rebuilds it exactly.
func (j *Job) queuedEvent() []byte {
	return statusPayload(j.ID, StatusQueued, queuedMessage(j.Spec.Priority), j.CreatedAt)
}

func queuedMessage(priority int) string { return fmt.Sprintf("Job queued with priority %d", priority) }

// start marks the job running from at; cancel ends its run, for a reason.
func (j *Job) start(at time.Time, cancel func(*stopReason)) change {
	j.mu.Lock()
	defer j.mu.Unlock()
	const message = "Job started"
	j.st.Status, j.st.StartedAt, j.st.Message = StatusRunning, at, message
	j.cancelRun = cancel
	return j.statusChangedLocked(statusPayload(j.ID, StatusRunning, message, at))
}

// launched records the process group its run started in, so that a charond restarted after a
// crash can kill what the run left behind, and the command it executed, so that what ran is
// never a guess.
func (j *Job) launched(pgid int, command []string) change {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.st.PGID, j.st.Command = pgid, command
	return j.changedLocked(nil)
}

// noteTaskEvent folds a task event into the job's summary. It commits nothing: the summary
// is saved with the job's next record, its final one at the latest.
func (j *Job) noteTaskEvent(ev *pluginEvent) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.st.Summary == nil {
		j.st.Summary = &jobSummary{Hosts: map[string]hostCounts{}, FailedTasks: []failedTask{}}
	}
	j.st.Summary.add(ev)
	if ev.Event == "playbook_on_stats" && ev.Artifacts != nil {
		j.st.Artifacts = ev.Artifacts
	}
}

// cancel ends the job's run for reason if it is running. It returns the job's status, so the
// caller can say why it did nothing.
func (j *Job) cancel(reason *stopReason) (Status, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.st.Status != StatusRunning {
		return j.st.Status, false
	}
	j.cancelRun(reason)
	return j.st.Status, true
}

// beginEnding claims the job's end, once: it reports false if the job has ended or another
// caller is ending it.
func (j *Job) beginEnding() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.st.Status.Final() || j.ending {
		return false
	}
	j.ending = true
	return true
}

// end makes the job final and its streams complete in one step, so that whoever sees one sees
// the other. Its final event and the flush of its logs come before (see scheduler.finish).
// notify marks its webhooks due, in the same record.
func (j *Job) end(status Status, at time.Time, exitCode *int, message string, notify bool) change {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.st.Status, j.st.FinishedAt, j.st.ExitCode, j.st.Message = status, at, exitCode, message
	j.st.WebhookPending = notify
	done := streamEnd{Status: status, ExitCode: exitCode}
	j.logs.markComplete(done)
	j.events.markComplete(done)
	return j.statusChangedLocked(nil)
}

// relaunchSpec is the spec of a new job that runs this one again: the same spec, variables
// included, on all its hosts or, with failedOnly, only on those that failed or were
// unreachable. The new limit names those hosts alone: they ran, so they are inside the
// original's own limit already.
func (j *Job) relaunchSpec(failedOnly bool) (*JobSpec, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch {
	case !j.st.Status.Final():
		return nil, apiErrorf(errConflict, "job %s is %s: it can be relaunched once it has ended", j.ID, j.st.Status)
	case j.secretsMasked:
		return nil, apiErrorf(errConflict, "job %s cannot be relaunched: charond keeps an ended job's secret variables only until it restarts, "+
			"and it has restarted since; submit the job again", j.ID)
	}
	spec := *j.Spec // the spec never changes, so the copy may share its maps and lists
	spec.RelaunchOf = j.ID
	if failedOnly {
		hosts, err := j.failedHostsLocked()
		if err != nil {
			return nil, err
		}
		spec.Limit = strings.Join(hosts, ",")
	}
	return &spec, nil
}

// failedHostsLocked lists, sorted, the hosts that failed or were unreachable in the job's
// recap; j.mu is held. Each must be a host name that a limit names as itself alone.
func (j *Job) failedHostsLocked() ([]string, error) {
	if j.st.Summary == nil || len(j.st.Summary.Hosts) == 0 {
		return nil, apiErrorf(errConflict, "job %s has no host recap (its run ended before Ansible summed up its hosts), "+
			"so charond cannot tell which hosts failed: relaunch it on all hosts", j.ID)
	}
	var hosts []string
	for host, c := range j.st.Summary.Hosts {
		if c.Failed > 0 || c.Unreachable > 0 {
			if err := checkHost("summary.hosts", host); err != nil {
				return nil, apiErrorf(errConflict, "job %s cannot be relaunched on its failed hosts: %v", j.ID, err)
			}
			hosts = append(hosts, host)
		}
	}
	if len(hosts) == 0 {
		return nil, apiErrorf(errConflict, "no host failed or was unreachable in job %s (%s): there is nothing to relaunch with hosts \"failed\"", j.ID, j.st.Status)
	}
	sort.Strings(hosts)
	return hosts, nil
}

// delivered clears the job's due webhooks. It reports false, and changes nothing, if none
// were due or the job has been deleted.
func (j *Job) delivered() (change, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.deleted || !j.st.WebhookPending {
		return change{}, false
	}
	j.st.WebhookPending = false
	return j.changedLocked(nil), true
}

// deletion is the record that deletes the job from the journal.
func (j *Job) deletion() change {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.deleted = true
	c := j.changedLocked(nil)
	c.record.Deleted = true
	return c
}

// jobView is a job as the API shows it.
type jobView struct {
	ID            string         `json:"id"`
	Name          string         `json:"name"`
	Description   string         `json:"description"`
	Status        Status         `json:"status"`
	Priority      int            `json:"priority"`
	Timeout       float64        `json:"timeout"`      // seconds
	IdleTimeout   float64        `json:"idle_timeout"` // seconds; 0: off
	Playbook      string         `json:"playbook,omitempty"`
	Inventory     any            `json:"inventory"` // as given: host names, groups (vars masked) or a path
	Variables     map[string]any `json:"variables,omitempty"`
	CreatedAt     time.Time      `json:"created_at"`
	StartedAt     *time.Time     `json:"started_at"`
	FinishedAt    *time.Time     `json:"finished_at"`
	ExitCode      *int           `json:"exit_code"`
	Message       string         `json:"message"`
	QueuePosition int            `json:"queue_position,omitempty"`
	LogLines      int            `json:"log_lines"`
	Summary       *jobSummary    `json:"summary"`
	Limit         string         `json:"limit"`
	Tags          []string       `json:"tags"`
	SkipTags      []string       `json:"skip_tags"`
	Check         bool           `json:"check"`
	Diff          bool           `json:"diff"`
	Verbosity     int            `json:"verbosity"`
	Forks         int            `json:"forks"` // 0: Ansible's default
	StartAtTask   string         `json:"start_at_task"`
	Command       []string       `json:"command"` // null until the run has started
	Artifacts     map[string]any `json:"artifacts"`
	Concurrency   string         `json:"concurrency"`
	WaitingFor    *string        `json:"waiting_for"` // the running job that holds its concurrency key
	RelaunchOf    *string        `json:"relaunch_of"`
}

// view is the job as the API shows it, in state st; full adds the playbook and the variables,
// masked, which lists leave out.
func (j *Job) view(st jobStatus, full bool) jobView {
	v := jobView{
		ID:            j.ID,
		Name:          j.Spec.Name,
		Description:   j.Spec.Description,
		Status:        st.Status,
		Priority:      j.Spec.Priority,
		Timeout:       j.Spec.Timeout.Seconds(),
		IdleTimeout:   j.Spec.IdleTimeout.Seconds(),
		Inventory:     j.Spec.inventoryView(),
		CreatedAt:     j.CreatedAt,
		StartedAt:     timeOrNull(st.StartedAt),
		FinishedAt:    timeOrNull(st.FinishedAt),
		ExitCode:      st.ExitCode,
		Message:       st.Message,
		QueuePosition: st.QueuePosition,
		LogLines:      j.logs.length(),
		Summary:       st.Summary,
		Limit:         j.Spec.Limit,
		Tags:          nonNil(j.Spec.Tags),
		SkipTags:      nonNil(j.Spec.SkipTags),
		Check:         j.Spec.Check,
		Diff:          j.Spec.Diff,
		Verbosity:     j.Spec.Verbosity,
		Forks:         j.Spec.Forks,
		StartAtTask:   j.Spec.StartAtTask,
		Command:       st.Command,
		Artifacts:     st.Artifacts,
		Concurrency:   j.Spec.Concurrency,
		WaitingFor:    stringOrNull(st.WaitingFor),
		RelaunchOf:    stringOrNull(j.Spec.RelaunchOf),
	}
	if full {
		v.Playbook = j.Spec.Playbook
		v.Variables = maskVariables(j.Spec.Variables)
	}
	return v
}

// inventoryView is the inventory as a job shows it, in the shape it was given, secret vars masked.
func (s *JobSpec) inventoryView() any {
	switch {
	case s.InventoryGroups != nil:
		return maskValue(s.InventoryGroups)
	case s.InventoryPath != "":
		return s.InventoryPath
	}
	return s.Inventory
}

// hostNames are the host names the job names itself: in a list or a mapping inventory.
func (s *JobSpec) hostNames() []string {
	return append(append([]string{}, s.Inventory...), inventoryHosts(s.InventoryGroups)...)
}

// nonNil shows an absent list as [] rather than null.
func nonNil(list []string) []string {
	if list == nil {
		return []string{}
	}
	return list
}

func stringOrNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func timeOrNull(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
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
