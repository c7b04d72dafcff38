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
	// run runs a job's playbook: runner.run, or a stand-in in the scheduler's own tests.
	run func(ctx context.Context, job *Job, hooks runHooks) runResult

	retention time.Duration // finished jobs older than this are pruned
	maxJobs   int           // beyond this many jobs, the oldest finished ones are pruned
	maxQueue  int           // submissions beyond this many queued jobs are refused

	lastSeq atomic.Uint64 // submission order; assigned before a job is saved

	hooks   *webhooks // where ended jobs are announced; nil: no -webhook
	metrics *metrics  // what /metrics reports

	// mu guards the fields below.
	//
	// The lock order of all of charond, written here once: journal.compactMu, scheduler.mu,
	// Job.mu, eventLog.writeMu, eventLog.mu, storeHealth.mu. A lock may be taken while holding
	// only locks before it. journal.mu stands apart: it is taken with no other lock held and
	// takes none under it. No lock is held across a network write or a wait for
	// a process, and only eventLog.writeMu (a job's own log file) and journal.mu (a write, and
	// a compaction's final swap) across disk I/O.
	mu       sync.Mutex
	wakeup   *sync.Cond // signalled when a job is queued or starts are stopped
	jobs     map[string]*Job
	order    []*Job // every job in submission order, for listing
	queue    *jobQueue
	holders  map[string]*Job // each concurrency key held, and the running job that holds it
	running  int
	started  int  // workers launched
	closed   bool // no more submissions
	stopping bool // no more starts: workers return
	// hooksLive is set once the webhooks send (startWebhooks), with publicURL, charond's
	// address as their receivers reach it, for links to jobs.
	hooksLive bool
	publicURL string

	workers sync.WaitGroup
}

func newScheduler(r *runner, st *store, log *slog.Logger) *scheduler {
	s := &scheduler{
		runner:    r,
		run:       r.run,
		store:     st,
		log:       log,
		now:       time.Now,
		retention: 30 * 24 * time.Hour,
		maxJobs:   10000,
		maxQueue:  1000,
		jobs:      make(map[string]*Job),
		queue:     newJobQueue(),
		holders:   make(map[string]*Job),
		metrics:   newMetrics(),
	}
	s.wakeup = sync.NewCond(&s.mu)
	return s
}

// isClosed reports whether the scheduler takes no more submissions: charond is shutting down.
func (s *scheduler) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// startedWorkers is how many workers start has launched.
func (s *scheduler) startedWorkers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// start launches n workers. They end when shutdown stops the scheduler.
func (s *scheduler) start(n int) {
	s.mu.Lock()
	s.started += n
	s.mu.Unlock()
	for i := 0; i < n; i++ {
		s.workers.Add(1)
		go func() {
			defer s.workers.Done()
			for {
				job, started, ctx, release := s.next()
				if job == nil {
					return
				}
				s.execute(ctx, job, started)
				release()
			}
		}()
	}
}

// submit creates a job for the spec, saves it, and queues it. It returns the job's state as
// it was queued, before any worker could start it. The job is on disk before it is answered.
func (s *scheduler) submit(spec *JobSpec) (*Job, jobStatus, error) {
	s.mu.Lock()
	closed, queued := s.closed, s.queue.Len()
	s.mu.Unlock()
	if closed {
		return nil, jobStatus{}, apiErrorf(errUnavailable, "charond is shutting down and accepts no new jobs")
	}
	if err := s.store.unavailable(); err != nil {
		return nil, jobStatus{}, err
	}
	// Checked before the job is saved, so concurrent submissions may pass it together and
	// exceed the limit by a few; the limit is there to bound memory, not to count exactly.
	if queued >= s.maxQueue {
		return nil, jobStatus{}, apiErrorf(errTooMany, "the queue is full (%d jobs waiting, -max-queue): try again later", queued)
	}
	job, err := s.newJob(spec)
	if err != nil {
		return nil, jobStatus{}, fmt.Errorf("create job: %w", err)
	}
	accepted := job.queue()
	// The job is in memory before its record is saved, as every change is, so that a
	// compaction meanwhile writes it too; it is queued only once saved.
	s.mu.Lock()
	s.addLocked(job)
	s.mu.Unlock()
	if err := s.store.commit(job, accepted); err != nil {
		s.mu.Lock()
		s.forgetLocked(job)
		s.mu.Unlock()
		return nil, jobStatus{}, s.store.saveFailed(fmt.Errorf("save job: %w", err))
	}
	// The "queued" event can be rebuilt from the saved record, so it is published now and
	// written with the job's first other event: accepting a job creates no file.
	job.events.appendDeferred(job.queuedEvent())

	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue.add(job)
	s.wakeup.Signal()
	return job, s.stateLocked(job), nil
}

// relaunch submits a new job that runs the ended job id again (see Job.relaunchSpec),
// held to the rules a submission meets today.
func (s *scheduler) relaunch(id string, failedOnly bool, lim specLimits) (*Job, jobStatus, error) {
	orig, err := s.get(id)
	if err != nil {
		return nil, jobStatus{}, err
	}
	spec, err := orig.relaunchSpec(failedOnly)
	if err != nil {
		return nil, jobStatus{}, err
	}
	if err := admitRelaunch(spec, lim); err != nil {
		return nil, jobStatus{}, err
	}
	return s.submit(spec)
}

// newJob builds a job and opens its logs (files are created by their first write).
func (s *scheduler) newJob(spec *JobSpec) (*Job, error) {
	job := &Job{ID: newJobID(), Spec: spec, CreatedAt: s.now().UTC(), seq: s.lastSeq.Add(1)}
	var err error
	job.logs, job.events, err = s.store.openLogs(job.ID)
	return job, err
}

func (s *scheduler) addLocked(job *Job) {
	s.jobs[job.ID] = job
	s.order = append(s.order, job)
}

// next blocks until a job can start and marks it running, or returns nil once the scheduler
// stops. The job is the first by priority among those whose concurrency key is free, and
// takes its key. started is the change that marking made, for execute to commit outside s.mu.
// The returned context ends when the job is cancelled or times out; its cause is a
// *stopReason saying which. The caller calls release when the run is over.
func (s *scheduler) next() (job *Job, started change, ctx context.Context, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.stopping {
		if job = s.queue.nextRunnable(s.keyFreeLocked); job != nil {
			break
		}
		s.wakeup.Wait()
	}
	if s.stopping {
		return nil, change{}, nil, nil
	}
	if key := job.Spec.Concurrency; key != "" {
		s.holders[key] = job
	}
	s.running++
	ctx, cancel := context.WithCancelCause(context.Background())
	timeout := &stopReason{status: StatusTimedOut, message: fmt.Sprintf("Job timed out after %s", job.Spec.Timeout)}
	ctx, stopTimer := context.WithTimeoutCause(ctx, job.Spec.Timeout, timeout)

	started = job.start(s.now().UTC(), func(reason *stopReason) { cancel(reason) })
	return job, started, ctx, func() { stopTimer(); cancel(nil) }
}

// keyFreeLocked reports whether no running job holds the job's concurrency key; s.mu is held.
func (s *scheduler) keyFreeLocked(job *Job) bool {
	return job.Spec.Concurrency == "" || s.holders[job.Spec.Concurrency] == nil
}

// stopReason is the cause of a run's context ending: cancel, timeout or shutdown.
type stopReason struct {
	status        Status
	message       string // for a running job
	queuedMessage string // for a job that had not started
}

func (r *stopReason) Error() string { return r.message }

// execute commits the start of a job that next marked running, runs it, then records how
// it ended.
func (s *scheduler) execute(ctx context.Context, job *Job, started change) {
	if err := s.store.commit(job, started); err != nil {
		s.log.Error("save job start", "job", job.ID, "err", err)
	}
	s.metrics.queueWait.observe(started.record.StartedAt.Sub(job.CreatedAt).Seconds())
	launched := func(pgid int, command []string) {
		if err := s.store.commit(job, job.launched(pgid, command)); err != nil {
			s.log.Error("save job process group", "job", job.ID, "err", err)
		}
	}
	events := newRunEvents(job, s.now, s.log)
	events.counted = s.metrics.taskEvents
	active, stopWatch := watchIdle(job, job.Spec.IdleTimeout)
	lines := func(stream string, lines [][]byte) {
		read := time.Now() // the lines were read off the pipe just now
		active()
		events.noteOutput(lines)
		if err := job.appendLines(s.now().UTC(), stream, lines); err != nil {
			job.cancelRun(&stopReason{status: StatusFailed, message: "Job failed: cannot store its output: " + err.Error()})
			return
		}
		s.metrics.lineLatency.observeN(time.Since(read).Seconds(), len(lines))
		s.metrics.logLines.add(len(lines))
	}
	pluginLine := func(line []byte) {
		active()
		events.pluginLine(line)
	}
	res := s.run(ctx, job, runHooks{lines: lines, events: pluginLine, started: launched})
	stopWatch()
	events.warnIfMissing()
	status, code, message := outcome(ctx, res)
	s.finish(job, status, code, message)

	s.mu.Lock()
	s.running--
	if key := job.Spec.Concurrency; key != "" && s.holders[key] == job {
		delete(s.holders, key)
		// Every idle worker looks again: the job that waited for the key may start now.
		s.wakeup.Broadcast()
	}
	s.mu.Unlock()
	s.log.Info("job ended", "job", job.ID, "name", job.Spec.Name, "status", status, "message", message)
	s.pruneIfFull()
}

// watchIdle stops the job's run, as timed out, once it has printed nothing and reported no
// task event for limit; active notes that it did. The watch is a goroutine of its own, owned
// by the run: stop ends it and waits for it. A limit of 0 watches nothing.
func watchIdle(job *Job, limit time.Duration) (active, stop func()) {
	if limit <= 0 {
		return func() {}, func() {}
	}
	var last atomic.Int64 // when the run was last active, in Unix nanoseconds
	last.Store(time.Now().UnixNano())
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		// Four looks a limit: an idle run is stopped at most a quarter of the limit late.
		tick := time.NewTicker(max(limit/4, 10*time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				if idle := now.Sub(time.Unix(0, last.Load())); idle >= limit {
					job.cancel(&stopReason{status: StatusTimedOut,
						message: fmt.Sprintf("Job timed out: idle for %s, with no output and no task event (idle_timeout %s)", idle.Round(time.Millisecond), limit)})
					return
				}
			}
		}
	}()
	return func() { last.Store(time.Now().UnixNano()) }, func() { close(done); <-ended }
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
	if !job.beginEnding() {
		return
	}
	at := s.now().UTC()
	if err := job.events.appendData(statusPayload(job.ID, status, message, at)); err != nil {
		s.log.Error("record final status event", "job", job.ID, "err", err)
	}
	// The logs reach the disk before the record that says the job has ended. That is I/O, so
	// it is done first, outside the job's lock; end then completes the streams and the status
	// in one step.
	for _, l := range []*eventLog{job.logs, job.events} {
		if err := l.flush(); err != nil {
			s.log.Error("flush job log", "job", job.ID, "err", err)
		}
	}
	ended := job.end(status, at, exitCode, message, s.hooks != nil)
	if err := s.store.commit(job, ended); err != nil {
		s.log.Error("save finished job", "job", job.ID, "err", err)
	}
	s.metrics.jobEnded(ended.record.jobState)
	s.notifyEnded(ended.record)
	if hasSecrets(job.Spec.Variables) || hasSecrets(job.Spec.InventoryGroups) {
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

// jobStatus is a job's state at one moment, with its place in the queue.
type jobStatus struct {
	jobState
	// QueuePosition is the job's place in line by priority, 1-based while queued, else 0. A
	// job waiting for its concurrency key keeps it, while jobs behind it may start first.
	QueuePosition int
	WaitingFor    string // while queued: the id of the running job that holds its concurrency key
}

// state returns the job's current state, its queue position included.
func (s *scheduler) state(job *Job) jobStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stateLocked(job)
}

func (s *scheduler) stateLocked(job *Job) jobStatus {
	st := jobStatus{jobState: job.state(), QueuePosition: s.queue.position(job)}
	if holder := s.holders[job.Spec.Concurrency]; st.QueuePosition > 0 && holder != nil {
		st.WaitingFor = holder.ID
	}
	return st
}

// view is the job as the API shows it now.
func (s *scheduler) view(job *Job, full bool) jobView {
	return job.view(s.state(job), full)
}

// kept is how many jobs the scheduler keeps, in every status.
func (s *scheduler) kept() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}

// subscribers is how many clients follow a job's log or events, or the all-jobs feed.
func (s *scheduler) subscribers() int {
	s.mu.Lock()
	jobs := append([]*Job(nil), s.order...)
	s.mu.Unlock()
	n := s.store.feed.log.subscriberCount()
	for _, job := range jobs {
		n += job.logs.subscriberCount() + job.events.subscriberCount()
	}
	return n
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

	status, cancelled := job.cancel(reason)
	switch {
	case cancelled:
		return job, nil
	case status.Final():
		return nil, apiErrorf(errConflict, "job %s has already ended (%s)", job.ID, status)
	}
	return nil, apiErrorf(errConflict, "job %s cannot be cancelled while %s", job.ID, status)
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
	if err := s.store.commit(job, job.deletion()); err != nil {
		return fmt.Errorf("delete job %s: %w", job.ID, err)
	}
	job.logs.close()
	job.events.close()
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
		job.cancel(reason)
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
	if s.hooks != nil {
		s.hooks.close() // before the store: a delivery that ends now still records it
	}
	s.mu.Lock()
	jobs := append([]*Job(nil), s.order...)
	s.mu.Unlock()
	for _, job := range jobs {
		job.logs.close()
		job.events.close()
	}
	s.store.close()
}

// statusEvent is the payload of a status_changed event on the events stream.
type statusEvent struct {
	Type      string    `json:"type"`
	JobID     string    `json:"job_id"`
	Status    Status    `json:"status"`
	Message   string    `json:"message"`
	Timestamp time.Time `json:"timestamp"`
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
