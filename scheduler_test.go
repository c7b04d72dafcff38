package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// These tests exercise the scheduler on its own: a real store in a temporary dir, but no HTTP
// server and no process. A stand-in run reports what it was asked to run and ends as the test
// says, so that a failure here names the scheduler.

// fakeRuns stands in for runner.run: each run records its job and waits for the test to end
// it, or for its context (cancel, timeout, shutdown).
type fakeRuns struct {
	mu      sync.Mutex
	started []string            // job names, in the order their runs began
	finish  map[string]chan int // by job name: send an exit code to end its run
}

func (f *fakeRuns) run(ctx context.Context, job *Job, hooks runHooks) runResult {
	f.mu.Lock()
	f.started = append(f.started, job.Spec.Name)
	done := f.finish[job.Spec.Name]
	f.mu.Unlock()
	hooks.started(4242, []string{"/bin/fake", job.Spec.Name})
	hooks.lines("stdout", [][]byte{[]byte("running " + job.Spec.Name)})
	select {
	case code := <-done:
		return runResult{exitCode: code}
	case <-ctx.Done():
		return runResult{killed: true}
	}
}

func (f *fakeRuns) order() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.started...)
}

// newTestScheduler is a scheduler over a fresh store, with one worker and fake runs.
func newTestScheduler(t *testing.T, runs *fakeRuns) *scheduler {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, records, err := openStore(filepath.Join(t.TempDir(), "data"), logger)
	if err != nil {
		t.Fatal(err)
	}
	s := newScheduler(&runner{}, st, logger)
	s.run = runs.run
	if err := s.restore(records); err != nil { // opens the journal
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.shutdown(ctx, 0); err != nil {
			t.Error(err)
		}
		s.close()
	})
	return s
}

func schedSpec(name string, priority int) *JobSpec {
	return &JobSpec{Name: name, Playbook: "- hosts: all\n", Inventory: []string{"localhost"},
		Variables: map[string]any{}, Priority: priority, Timeout: time.Minute}
}

func waitJobStatus(t *testing.T, job *Job, want Status) {
	t.Helper()
	waitFor(t, "job "+job.Spec.Name+" to be "+string(want), func() (bool, string) {
		got := job.Status()
		return got == want, string(got)
	})
}

func TestSchedulerRunsByPriorityThenOrder(t *testing.T) {
	runs := &fakeRuns{finish: map[string]chan int{}}
	for _, n := range []string{"blocker", "low", "high-1", "high-2", "normal"} {
		runs.finish[n] = make(chan int, 1)
	}
	s := newTestScheduler(t, runs)
	s.start(1)
	blocker, _, err := s.submit(schedSpec("blocker", 15))
	if err != nil {
		t.Fatal(err)
	}
	waitJobStatus(t, blocker, StatusRunning)
	var queued []*Job
	for _, sp := range []*JobSpec{schedSpec("low", 1), schedSpec("high-1", 10), schedSpec("high-2", 10), schedSpec("normal", 5)} {
		job, st, err := s.submit(sp)
		if err != nil {
			t.Fatal(err)
		}
		if st.Status != StatusQueued || st.QueuePosition == 0 {
			t.Errorf("%s submitted as %+v, want queued with a position", sp.Name, st)
		}
		queued = append(queued, job)
	}
	if got := s.state(queued[1]).QueuePosition; got != 1 {
		t.Errorf("high-1 is at position %d, want 1", got)
	}
	for _, n := range []string{"blocker", "high-1", "high-2", "normal", "low"} {
		runs.finish[n] <- 0
	}
	for _, job := range queued {
		waitJobStatus(t, job, StatusCompleted)
	}
	if got, want := runs.order(), []string{"blocker", "high-1", "high-2", "normal", "low"}; !equalStrings(got, want) {
		t.Errorf("runs started in order %v, want %v", got, want)
	}
	st := s.state(queued[0])
	if st.ExitCode == nil || *st.ExitCode != 0 || st.PGID != 4242 || st.Message != "Job finished successfully" {
		t.Errorf("ended state = %+v", st.jobState)
	}
}

func TestSchedulerCancelsQueuedAndRunning(t *testing.T) {
	runs := &fakeRuns{finish: map[string]chan int{"running": make(chan int)}}
	s := newTestScheduler(t, runs)
	s.start(1)
	running, _, _ := s.submit(schedSpec("running", 5))
	waitJobStatus(t, running, StatusRunning)
	queued, _, _ := s.submit(schedSpec("queued", 5))

	if _, err := s.cancel(queued.ID); err != nil {
		t.Fatal(err)
	}
	if st := s.state(queued); st.Status != StatusCancelled || st.Message != "Job cancelled before it started" || !st.StartedAt.IsZero() {
		t.Errorf("cancelled queued job: %+v", st.jobState)
	}
	if _, err := s.cancel(running.ID); err != nil {
		t.Fatal(err)
	}
	waitJobStatus(t, running, StatusCancelled)
	if _, err := s.cancel(running.ID); err == nil {
		t.Error("cancelling an ended job succeeded")
	}
	if got := runs.order(); !equalStrings(got, []string{"running"}) {
		t.Errorf("runs = %v: the cancelled queued job ran", got)
	}
	// Its streams ended with it: every reader gets `completed` now.
	for _, l := range []*eventLog{running.logs, running.events} {
		if res, err := l.read(l.length()); err != nil || res.end == nil || res.end.Status != StatusCancelled {
			t.Errorf("stream of the cancelled job: end %+v, %v", res.end, err)
		}
	}
}

func TestSchedulerRefusesWhenFullOrStopping(t *testing.T) {
	runs := &fakeRuns{finish: map[string]chan int{}}
	s := newTestScheduler(t, runs)
	s.maxQueue = 2
	for i := 0; i < 2; i++ {
		if _, _, err := s.submit(schedSpec("q", 5)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.submit(schedSpec("one too many", 5)); err == nil {
		t.Error("a submission beyond -max-queue was accepted")
	} else if status, _ := httpStatus(err); status != 429 {
		t.Errorf("full queue: %d, want 429", status)
	}
	if err := s.shutdown(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.submit(schedSpec("late", 5)); err == nil {
		t.Error("a submission during shutdown was accepted")
	} else if status, _ := httpStatus(err); status != 503 {
		t.Errorf("shutting down: %d, want 503", status)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
