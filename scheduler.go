package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// scheduler owns every job: it queues submissions, runs them on a fixed pool of workers in
// priority order, carries cancel and shutdown to them, and keeps them in the store.
type scheduler struct {
	runner *runner
	store  *store
	log    *slog.Logger
	now    func() time.Time // swapped by tests

	retention time.Duration // finished jobs older than this are pruned
	maxJobs   int           // beyond this many jobs, the oldest finished ones are pruned
	maxQueue  int           // submissions beyond this many queued jobs are refused

	lastSeq atomic.Uint64 // submission order; assigned before a job is saved

	mu       sync.Mutex // guards the fields below; taken before any Job.mu, never after
	wakeup   *sync.Cond // signalled when a job is queued or starts are stopped
	jobs     map[string]*Job
	order    []*Job // every job in submission order, for listing
	queue    *jobQueue
	running  int
	closed   bool // no more submissions
	stopping bool // no more starts: workers return

	workers sync.WaitGroup
}

func newScheduler(r *runner, st *store, log *slog.Logger) *scheduler {
	s := &scheduler{
		runner:    r,
		store:     st,
		log:       log,
		now:       time.Now,
		retention: 30 * 24 * time.Hour,
		maxJobs:   10000,
		maxQueue:  1000,
		jobs:      make(map[string]*Job),
		queue:     newJobQueue(),
	}
	s.wakeup = sync.NewCond(&s.mu)
	return s
}

// start launches n workers. They end when shutdown stops the scheduler.
func (s *scheduler) start(n int) {
	for i := 0; i < n; i++ {
		s.workers.Add(1)
		go func() {
			defer s.workers.Done()
			for {
				job, ctx, release := s.next()
				if job == nil {
					return
				}
				s.execute(ctx, job)
				release()
			}
		}()
	}
}

// submit creates a job for the spec, saves it, and queues it. It returns the job's state as
// it was queued, before any worker could start it. The job is on disk before it is answered.
func (s *scheduler) submit(spec *JobSpec) (*Job, jobState, error) {
	s.mu.Lock()
	closed, queued := s.closed, s.queue.Len()
	s.mu.Unlock()
	if closed {
		return nil, jobState{}, apiErrorf(errUnavailable, "charond is shutting down and accepts no new jobs")
	}
	if err := s.store.unavailable(); err != nil {
		return nil, jobState{}, err
	}
	// Checked before the job is saved, so concurrent submissions may pass it together and
	// exceed the limit by a few; the limit is there to bound memory, not to count exactly.
	if queued >= s.maxQueue {
		return nil, jobState{}, apiErrorf(errTooMany, "the queue is full (%d jobs waiting, -max-queue): try again later", queued)
	}
	job, err := s.newJob(spec)
	if err != nil {
		return nil, jobState{}, fmt.Errorf("create job: %w", err)
	}
	job.mu.Lock()
	job.status = StatusQueued
	job.message = queuedMessage(spec.Priority)
	rec := job.recordLocked()
	job.mu.Unlock()
	// The job is in memory before its record is saved, as every change is, so that a
	// compaction meanwhile writes it too; it is queued only once saved.
	s.mu.Lock()
	s.addLocked(job)
	s.mu.Unlock()
	if err := s.store.save(rec); err != nil {
		s.mu.Lock()
		s.forgetLocked(job)
		s.mu.Unlock()
		return nil, jobState{}, s.store.saveFailed(fmt.Errorf("save job: %w", err))
	}
	// The "queued" event can be rebuilt from the saved record, so it is published now and
	// written with the job's first other event: accepting a job creates no file.
	job.events.appendDeferred(queuedEvent(job))

	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue.add(job)
	s.wakeup.Signal()
	return job, s.stateLocked(job), nil
}

// newJob builds a job and opens its logs (files are created by their first write).
func (s *scheduler) newJob(spec *JobSpec) (*Job, error) {
	job := &Job{ID: newJobID(), Spec: spec, CreatedAt: s.now().UTC(), seq: s.lastSeq.Add(1)}
	var err error
	job.logs, job.events, err = s.store.openLogs(job.ID)
	return job, err
}

// queuedEvent is a job's first event. It is built from what the job's record holds, so that a
// restart rebuilds it exactly.
func queuedEvent(job *Job) []byte {
	return statusPayload(job.ID, StatusQueued, queuedMessage(job.Spec.Priority), job.CreatedAt)
}

func queuedMessage(priority int) string { return fmt.Sprintf("Job queued with priority %d", priority) }

func (s *scheduler) addLocked(job *Job) {
	s.jobs[job.ID] = job
	s.order = append(s.order, job)
}

// persist appends a status event, if any, to the job's events and saves its record.
func (s *scheduler) persist(job *Job, rec jobRecord, event []byte) error {
	if event != nil {
		if err := job.events.appendData(event); err != nil {
			return err
		}
	}
	return s.store.save(rec)
}

// next blocks until a job can start and marks it running, or returns nil once the scheduler
// stops. The returned context ends when the job is cancelled or times out; its cause is a
// *stopReason saying which. The caller calls release when the run is over.
func (s *scheduler) next() (job *Job, ctx context.Context, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.queue.Len() == 0 && !s.stopping {
		s.wakeup.Wait()
	}
	if s.stopping {
		return nil, nil, nil
	}
	job = s.queue.next()
	s.running++
	ctx, cancel := context.WithCancelCause(context.Background())
	timeout := &stopReason{status: StatusTimedOut, message: fmt.Sprintf("Job timed out after %s", job.Spec.Timeout)}
	ctx, stopTimer := context.WithTimeoutCause(ctx, job.Spec.Timeout, timeout)

	job.mu.Lock()
	job.status = StatusRunning
	job.startedAt = s.now().UTC()
	job.cancelRun = func(reason *stopReason) { cancel(reason) }
	job.mu.Unlock()
	return job, ctx, func() { stopTimer(); cancel(nil) }
}

// stopReason is the cause of a run's context ending: cancel, timeout or shutdown.
type stopReason struct {
	status        Status
	message       string // for a running job
	queuedMessage string // for a job that had not started
}

func (r *stopReason) Error() string { return r.message }

// execute runs a job that next marked running, then records how it ended.
func (s *scheduler) execute(ctx context.Context, job *Job) {
	job.mu.Lock()
	ev := job.statusEventLocked(job.startedAt, "Job started")
	rec := job.recordLocked()
	job.mu.Unlock()
	if err := s.persist(job, rec, ev); err != nil {
		s.log.Error("save job start", "job", job.ID, "err", err)
	}

	started := func(pgid int) {
		// Saved so that a charond restarted after a crash can kill what this job left running.
		job.mu.Lock()
		job.pgid = pgid
		rec := job.recordLocked()
		job.mu.Unlock()
		if err := s.store.save(rec); err != nil {
			s.log.Error("save job process group", "job", job.ID, "err", err)
		}
	}
	events := newRunEvents(job, s.now, s.log)
	lines := func(stream string, lines [][]byte) {
		events.noteOutput(lines)
		if err := job.appendLines(s.now().UTC(), stream, lines); err != nil {
			job.cancelRun(&stopReason{status: StatusFailed, message: "Job failed: cannot store its output: " + err.Error()})
		}
	}
	res := s.runner.run(ctx, job, runHooks{lines: lines, events: events.pluginLine, started: started})
	events.warnIfMissing()
	status, code, message := outcome(ctx, res)
	s.finish(job, status, code, message)

	s.mu.Lock()
	s.running--
	s.mu.Unlock()
	s.log.Info("job ended", "job", job.ID, "name", job.Spec.Name, "status", status, "message", message)
	s.pruneIfFull()
}

// outcome decides a run's final status, exit code and message.
func outcome(ctx context.Context, res runResult) (Status, *int, string) {
	if res.startErr != nil {
		return StatusFailed, nil, res.startErr.Error()
	}
	if res.killed {
		var reason *stopReason
		if errors.As(context.Cause(ctx), &reason) {
			return reason.status, nil, reason.message
		}
		return StatusCancelled, nil, "Job cancelled"
	}
	if res.signal != 0 {
		// No exit code: the process never exited. SIGKILL from outside charond is most often
		// the kernel's out-of-memory killer; SIGSEGV or SIGABRT, a crash of Python itself.
		return StatusFailed, nil, fmt.Sprintf("ansible-playbook was killed by signal %d (%s)", int(res.signal), res.signal)
	}
	code := res.exitCode
	if code == 0 {
		return StatusCompleted, &code, "Job finished successfully"
	}
	return StatusFailed, &code, exitMessage(code)
}

// finish moves a job to its final status and ends its streams in one step (which sends
// `completed` to every client once it has everything before it), then saves its record. It
// does nothing to a job that has ended or is ending.
func (s *scheduler) finish(job *Job, status Status, exitCode *int, message string) {
	at := s.now().UTC()
	job.mu.Lock()
	if job.status.Final() || job.ending {
		job.mu.Unlock()
		return
	}
	job.ending = true
	job.mu.Unlock()

	if err := job.events.appendData(statusPayload(job.ID, status, message, at)); err != nil {
		s.log.Error("record final status event", "job", job.ID, "err", err)
	}
	// The logs reach the disk before the record that says the job has ended. That is I/O, so
	// it is done first, outside the job's lock...
	for _, l := range []*eventLog{job.logs, job.events} {
		if err := l.flush(); err != nil {
			s.log.Error("flush job log", "job", job.ID, "err", err)
		}
	}
	// ...and the streams end in the same step as the status turns final: whoever sees the
	// job ended finds its streams complete, and a client sent `completed` finds it ended.
	end := streamEnd{Status: status, ExitCode: exitCode}
	job.mu.Lock()
	job.status, job.finishedAt, job.exitCode, job.message = status, at, exitCode, message
	job.logs.markComplete(end)
	job.events.markComplete(end)
	rec := job.recordLocked()
	job.mu.Unlock()
	if err := s.store.save(rec); err != nil {
		s.log.Error("save finished job", "job", job.ID, "err", err)
	}
	if hasSecrets(job.Spec.Variables) {
		// The journal still holds the records written while the job was queued and running,
		// secrets in clear; rewriting it leaves only the ended record, which masks them.
		if err := s.compact(); err != nil {
			s.log.Error("compact journal to drop an ended job's secrets", "job", job.ID, "err", err)
		}
	}
}

// get returns the job with that id.
func (s *scheduler) get(id string) (*Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	job, ok := s.jobs[id]
	if !ok {
		return nil, errJobNotFound(id)
	}
	return job, nil
}

// list returns up to limit jobs, newest first, optionally only those in one status.
func (s *scheduler) list(status Status, limit int) []*Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Job
	for i := len(s.order) - 1; i >= 0 && len(out) < limit; i-- {
		job := s.order[i]
		if status == "" || job.Status() == status {
			out = append(out, job)
		}
	}
	return out
}

// jobState is a job's changing fields at one moment.
type jobState struct {
	Status        Status
	StartedAt     time.Time
	FinishedAt    time.Time
	ExitCode      *int
	Message       string
	QueuePosition int         // 1-based while queued, else 0
	Summary       *jobSummary // a copy
}

// state returns the job's current state, its queue position included.
func (s *scheduler) state(job *Job) jobState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stateLocked(job)
}

func (s *scheduler) stateLocked(job *Job) jobState {
	job.mu.Lock()
	defer job.mu.Unlock()
	return jobState{
		Status:        job.status,
		StartedAt:     job.startedAt,
		FinishedAt:    job.finishedAt,
		ExitCode:      job.exitCode,
		Message:       job.message,
		QueuePosition: s.queue.position(job),
		Summary:       job.summary.clone(),
	}
}

// counts returns how many jobs wait and how many run.
func (s *scheduler) counts() (queued, running int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queue.Len(), s.running
}

// cancel ends a job: a queued one leaves the queue at once; a running one gets its process
// group signalled and ends cancelled when the process is gone.
func (s *scheduler) cancel(id string) (*Job, error) {
	reason := &stopReason{status: StatusCancelled, message: "Job cancelled", queuedMessage: "Job cancelled before it started"}
	s.mu.Lock()
	job, ok := s.jobs[id]
	if !ok {
		s.mu.Unlock()
		return nil, errJobNotFound(id)
	}
	if s.queue.remove(job) {
		s.mu.Unlock()
		s.finish(job, reason.status, nil, reason.queuedMessage)
		return job, nil
	}
	s.mu.Unlock()

	job.mu.Lock()
	defer job.mu.Unlock()
	switch {
	case job.status == StatusRunning:
		job.cancelRun(reason)
		return job, nil
	case job.status.Final():
		return nil, apiErrorf(errConflict, "job %s has already ended (%s)", job.ID, job.status)
	}
	return nil, apiErrorf(errConflict, "job %s cannot be cancelled while %s", job.ID, job.status)
}

// remove deletes a finished job with its logs.
func (s *scheduler) remove(id string) error {
	s.mu.Lock()
	job, ok := s.jobs[id]
	if !ok {
		s.mu.Unlock()
		return errJobNotFound(id)
	}
	if st := job.Status(); !st.Final() {
		s.mu.Unlock()
		return apiErrorf(errConflict, "job %s is %s: cancel it first, then delete it", id, st)
	}
	s.forgetLocked(job)
	s.mu.Unlock()
	return s.erase(job)
}

// forgetLocked takes a job out of the scheduler's memory.
func (s *scheduler) forgetLocked(job *Job) {
	delete(s.jobs, job.ID)
	for i, j := range s.order {
		if j == job {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
}

// erase deletes a forgotten job from the store: its record, then its logs.
func (s *scheduler) erase(job *Job) error {
	job.mu.Lock()
	rec := job.recordLocked()
	job.mu.Unlock()
	rec.Deleted = true
	if err := s.store.save(rec); err != nil {
		return fmt.Errorf("delete job %s: %w", job.ID, err)
	}
	job.logs.release()
	job.events.release()
	return s.store.removeLogs(job.ID)
}

// shutdown stops taking jobs and starting them. With drain > 0 it first lets running jobs
// finish for up to that long; then it cancels what still runs and waits for the workers, or
// for ctx to end. Queued jobs stay queued, on disk, for the next start.
func (s *scheduler) shutdown(ctx context.Context, drain time.Duration) error {
	s.mu.Lock()
	s.closed, s.stopping = true, true
	s.wakeup.Broadcast()
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.workers.Wait()
		close(done)
	}()
	if drain > 0 {
		timer := time.NewTimer(drain)
		defer timer.Stop()
		select {
		case <-done:
			return nil
		case <-timer.C:
			s.log.Info("drain timeout reached: cancelling running jobs")
		case <-ctx.Done():
			return fmt.Errorf("jobs still running at shutdown: %w", ctx.Err())
		}
	}
	reason := &stopReason{status: StatusCancelled, message: "Job cancelled: charond is shutting down"}
	s.mu.Lock()
	for _, job := range s.order {
		job.mu.Lock()
		if job.status == StatusRunning {
			job.cancelRun(reason)
		}
		job.mu.Unlock()
	}
	s.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jobs still running at shutdown: %w", ctx.Err())
	}
}

// close releases the store's files once the workers are gone.
func (s *scheduler) close() {
	s.runner.contain.close() // kills what outlived the shutdown timeout; removes charond's cgroup
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, job := range s.order {
		job.logs.release()
		job.events.release()
	}
	s.store.journal.close()
}

// statusEvent is the payload of a status_changed event on the events stream.
type statusEvent struct {
	Type      string    `json:"type"`
	JobID     string    `json:"job_id"`
	Status    Status    `json:"status"`
	Message   string    `json:"message"`
	Timestamp time.Time `json:"timestamp"`
}

// statusEventLocked sets the job's message and returns the status_changed event for its
// current status; j.mu is held.
func (j *Job) statusEventLocked(at time.Time, message string) []byte {
	j.message = message
	return statusPayload(j.ID, j.status, message, at)
}

// statusPayload encodes a status_changed event.
func statusPayload(jobID string, status Status, message string, at time.Time) []byte {
	payload, err := json.Marshal(statusEvent{Type: "status_changed", JobID: jobID, Status: status, Message: message, Timestamp: at.UTC()})
	if err != nil {
		panic("encoding a status event cannot fail: " + err.Error())
	}
	return payload
}

// appendLines records a batch of output lines on the job's log stream.
func (j *Job) appendLines(at time.Time, stream string, lines [][]byte) error {
	size := 0
	for _, l := range lines {
		size += len(l) + 96
	}
	buf := make([]byte, 0, size)
	payloads := make([][]byte, len(lines))
	for i, l := range lines {
		start := len(buf)
		buf = appendLogPayload(buf, l, at, stream)
		payloads[i] = buf[start:]
	}
	return j.logs.appendData(payloads...)
}
