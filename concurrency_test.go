package main

import (
	"net/http"
	"strings"
	"testing"
)

// TestConcurrencyKeyRunsJobsOneAtATime has two workers and three jobs: two with one key, one
// with another. The two with one key run one after the other, the second waiting for the
// first while keeping its place in line; the third runs beside them, on the worker the
// waiting job cannot use.
func TestConcurrencyKeyRunsJobsOneAtATime(t *testing.T) {
	runs := &fakeRuns{finish: map[string]chan int{"first": make(chan int), "second": make(chan int), "other": make(chan int)}}
	s := newTestScheduler(t, runs)
	s.start(2)
	keyed := func(name, key string, priority int) *Job {
		spec := schedSpec(name, priority)
		spec.Concurrency = key
		job, _, err := s.submit(spec)
		if err != nil {
			t.Fatal(err)
		}
		return job
	}
	first := keyed("first", "deploy-web", 5)
	waitJobStatus(t, first, StatusRunning)
	second := keyed("second", "deploy-web", 15) // higher priority: it would run first if it could
	other := keyed("other", "backup", 1)
	waitJobStatus(t, other, StatusRunning)

	st := s.state(second)
	if st.Status != StatusQueued || st.WaitingFor != first.ID || st.QueuePosition != 1 {
		t.Errorf("second job: %s, waiting for %q at position %d; want queued, waiting for %s, at 1", st.Status, st.WaitingFor, st.QueuePosition, first.ID)
	}
	if v := s.view(second, false); v.WaitingFor == nil || *v.WaitingFor != first.ID || v.Concurrency != "deploy-web" {
		t.Errorf("second job's view: waiting_for %v, concurrency %q", v.WaitingFor, v.Concurrency)
	}
	if v := s.view(other, false); v.WaitingFor != nil {
		t.Errorf("running job's view: waiting_for %v, want null", *v.WaitingFor)
	}

	runs.finish["first"] <- 0
	waitJobStatus(t, second, StatusRunning)
	if other.Status() != StatusRunning {
		t.Errorf("the job with another key is %s, want still running beside them", other.Status())
	}
	if a, b := s.state(first), s.state(second); b.StartedAt.Before(a.FinishedAt) {
		t.Errorf("second started at %v, before first ended at %v", b.StartedAt, a.FinishedAt)
	}
	if st := s.state(second); st.WaitingFor != "" {
		t.Errorf("running second job still waits for %q", st.WaitingFor)
	}
	runs.finish["second"] <- 0
	runs.finish["other"] <- 0
	waitJobStatus(t, second, StatusCompleted)
	waitJobStatus(t, other, StatusCompleted)
	if got, want := runs.order(), []string{"first", "other", "second"}; !equalStrings(got, want) {
		t.Errorf("runs started in order %v, want %v", got, want)
	}
}

// TestWaitingJobDoesNotIdleAWorker puts a job waiting for its key first in line: a job behind
// it, with no key, takes the free worker rather than the worker waiting.
func TestWaitingJobDoesNotIdleAWorker(t *testing.T) {
	runs := &fakeRuns{finish: map[string]chan int{"holder": make(chan int), "waiter": make(chan int, 1), "free": make(chan int, 1)}}
	s := newTestScheduler(t, runs)
	s.start(2)
	holderSpec := schedSpec("holder", 5)
	holderSpec.Concurrency = "k"
	holder, _, _ := s.submit(holderSpec)
	waitJobStatus(t, holder, StatusRunning)
	waiterSpec := schedSpec("waiter", 15)
	waiterSpec.Concurrency = "k"
	waiter, _, _ := s.submit(waiterSpec)
	free, _, _ := s.submit(schedSpec("free", 1))
	waitJobStatus(t, free, StatusRunning)
	if st := s.state(waiter); st.Status != StatusQueued || st.QueuePosition != 1 || st.WaitingFor != holder.ID {
		t.Errorf("waiter: %+v", st)
	}
	runs.finish["free"] <- 0
	runs.finish["waiter"] <- 0
	runs.finish["holder"] <- 0
	waitJobStatus(t, waiter, StatusCompleted)
}

// TestConcurrencyField submits jobs with and without a key through the API.
func TestConcurrencyField(t *testing.T) {
	td := startTestDaemon(t)
	for _, tc := range []struct {
		key  string
		want string // in the error; "" for accepted
	}{
		{`"deploy-web"`, ""},
		{`"site/eu-1:db.main_2"`, ""},
		{`""`, "concurrency: \"\" is not a key"},
		{`"-x"`, "starting with a letter or digit"},
		{`"has space"`, "is not a key"},
		{`"{{ x }}"`, "is not a key"},
		{`7`, "concurrency: must be a string"},
		{`"` + strings.Repeat("k", 65) + `"`, "concurrency: is 65 bytes long"},
	} {
		body := `{"name": "k", "playbook": "- hosts: localhost\n  tasks: []\n", "variables": {"fake": "lines", "count": 1}, "concurrency": ` + tc.key + `}`
		resp, raw := do(t, "POST", td.URL+"/api/v1/jobs", contentType("application/json"), body)
		if tc.want == "" {
			if resp.StatusCode != http.StatusCreated {
				t.Errorf("concurrency %s: %d %s, want 201", tc.key, resp.StatusCode, raw)
			}
			continue
		}
		wantError(t, resp, raw, http.StatusBadRequest, tc.want)
	}
	id := td.submitFake(t, "plain", 5, map[string]any{"fake": "lines", "count": 1})
	job := td.waitStatus(t, id, StatusCompleted)
	if job["concurrency"] != "" || job["waiting_for"] != nil {
		t.Errorf("a job without a key shows concurrency %v, waiting_for %v", job["concurrency"], job["waiting_for"])
	}
}
