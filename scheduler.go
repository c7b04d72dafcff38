package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// scheduler owns every job: it queues submissions, runs them on a fixed pool of workers in
// priority order, and carries cancel and shutdown to them.
type scheduler struct {
	runner *runner
	log    *slog.Logger
	now    func() time.Time // swapped by tests

	mu      sync.Mutex // guards the fields below; taken before any Job.mu, never after
	wakeup  *sync.Cond // signalled when a job is queued or the scheduler closes
	jobs    map[string]*Job
	order   []*Job // every job in submission order, for listing
	queue   *jobQueue
	nextSeq uint64
	running int
	closed  bool // no more submissions, no more starts

	workers sync.WaitGroup
}

func newScheduler(r *runner, log *slog.Logger) *scheduler {
	s := &scheduler{
		runner: r,
		log:    log,
		now:    time.Now,
		jobs:   make(map[string]*Job),
		queue:  newJobQueue(),
	}
	s.wakeup = sync.NewCond(&s.mu)
	return s
}

// start launches n workers. They end when shutdown closes the scheduler.
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

// submit queues a new job for the spec. It returns the job's state as it was queued, before
// any worker could start it.
func (s *scheduler) submit(spec *JobSpec) (*Job, jobState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, jobState{}, apiErrorf(errUnavailable, "charond is shutting down and accepts no new jobs")
	}
	s.nextSeq++
	job := &Job{
		ID:        newJobID(),
		Spec:      spec,
		CreatedAt: s.now().UTC(),
		seq:       s.nextSeq,
		logs:      newEventLog("log"),
		events:    newEventLog("job_event"),
		status:    StatusQueued,
	}
	s.jobs[job.ID] = job
	s.order = append(s.order, job)
	s.queue.add(job)
	job.mu.Lock()
	job.emitStatusLocked(s.now(), fmt.Sprintf("Job queued with priority %d", spec.Priority))
	job.mu.Unlock()
	s.wakeup.Signal()
	return job, s.stateLocked(job), nil
}

// next blocks until a job can start and marks it running, or returns nil once the scheduler
// is closed. The returned context ends when the job is cancelled or times out; its cause is a
// *stopReason saying which. The caller calls release when the run is over.
func (s *scheduler) next() (job *Job, ctx context.Context, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.queue.Len() == 0 && !s.closed {
		s.wakeup.Wait()
	}
	if s.closed {
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
	job.emitStatusLocked(job.startedAt, "Job started")
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
	var sink lineSink = func(stream string, lines [][]byte) { job.appendLines(s.now().UTC(), stream, lines) }
	res := s.runner.run(ctx, job, sink)
	status, code, message := outcome(ctx, res)
	job.finish(s.now().UTC(), status, code, message)

	s.mu.Lock()
	s.running--
	s.mu.Unlock()
	s.log.Info("job ended", "job", job.ID, "name", job.Spec.Name, "status", status, "message", message)
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
	code := res.exitCode
	if code == 0 {
		return StatusCompleted, &code, "Job finished successfully"
	}
	return StatusFailed, &code, exitMessage(code)
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
	QueuePosition int // 1-based while queued, else 0
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
	s.mu.Lock()
	defer s.mu.Unlock()
	job, ok := s.jobs[id]
	if !ok {
		return nil, errJobNotFound(id)
	}
	return job, s.stopLocked(job, &stopReason{status: StatusCancelled, message: "Job cancelled", queuedMessage: "Job cancelled before it started"})
}

// stopLocked cancels one job for the given reason; s.mu is held.
func (s *scheduler) stopLocked(job *Job, reason *stopReason) error {
	if s.queue.remove(job) {
		job.finish(s.now().UTC(), reason.status, nil, reason.queuedMessage)
		return nil
	}
	job.mu.Lock()
	defer job.mu.Unlock()
	switch {
	case job.status == StatusRunning:
		job.cancelRun(reason)
		return nil
	case job.status.Final():
		return apiErrorf(errConflict, "job %s has already ended (%s)", job.ID, job.status)
	}
	return apiErrorf(errConflict, "job %s cannot be cancelled while %s", job.ID, job.status)
}

// shutdown stops taking jobs, cancels every queued and running job, and waits for the workers
// to finish, or for ctx to end.
func (s *scheduler) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	reason := &stopReason{
		status:        StatusCancelled,
		message:       "Job cancelled: charond is shutting down",
		queuedMessage: "Job cancelled before it started: charond is shutting down",
	}
	for _, job := range s.order {
		if st := job.Status(); st == StatusQueued || st == StatusRunning {
			_ = s.stopLocked(job, reason)
		}
	}
	s.wakeup.Broadcast()
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.workers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jobs still running at shutdown: %w", ctx.Err())
	}
}

// statusEvent is the payload of a status_changed event on the events stream.
type statusEvent struct {
	Type      string    `json:"type"`
	JobID     string    `json:"job_id"`
	Status    Status    `json:"status"`
	Message   string    `json:"message"`
	Timestamp time.Time `json:"timestamp"`
}

// emitStatusLocked records the job's current status on its events stream; j.mu is held, which
// keeps the events in the order of the transitions.
func (j *Job) emitStatusLocked(at time.Time, message string) {
	j.message = message
	payload, err := json.Marshal(statusEvent{Type: "status_changed", JobID: j.ID, Status: j.status, Message: message, Timestamp: at.UTC()})
	if err != nil {
		panic("encoding a status event cannot fail: " + err.Error())
	}
	j.events.appendData(payload)
}

// appendLines records a batch of output lines on the job's log stream.
func (j *Job) appendLines(at time.Time, stream string, lines [][]byte) {
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
	j.logs.appendData(payloads...)
}

// finish moves the job to its final status and closes both streams, which sends `completed`
// to every client once it has everything before it.
func (j *Job) finish(at time.Time, status Status, exitCode *int, message string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.status.Final() {
		return
	}
	j.status = status
	j.finishedAt = at
	j.exitCode = exitCode
	j.emitStatusLocked(at, message)
	end := streamEnd{Status: status, ExitCode: exitCode}
	j.logs.close(end)
	j.events.close(end)
}
