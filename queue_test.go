package main

import (
	"fmt"
	"math/rand"
	"sort"
	"testing"
)

// queueJob makes a job with just what the queue looks at: its priority and submission order.
func queueJob(seq uint64, priority int) *Job {
	return &Job{ID: fmt.Sprintf("job-%d", seq), seq: seq, Spec: &JobSpec{Priority: priority}}
}

// queueTrueOrder is the order the jobs must run in: priority highest first, then submission order.
func queueTrueOrder(jobs []*Job) []*Job {
	out := append([]*Job(nil), jobs...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Spec.Priority != out[j].Spec.Priority {
			return out[i].Spec.Priority > out[j].Spec.Priority
		}
		return out[i].seq < out[j].seq
	})
	return out
}

// queueRandomJobs makes n jobs with priorities drawn from 1..maxPrio, submitted in seq order.
func queueRandomJobs(rng *rand.Rand, n, maxPrio int) []*Job {
	jobs := make([]*Job, n)
	for i := range jobs {
		jobs[i] = queueJob(uint64(i+1), 1+rng.Intn(maxPrio))
	}
	return jobs
}

// queueDrain empties the queue and returns the jobs in the order next gave them.
func queueDrain(q *jobQueue) []*Job {
	var out []*Job
	for job := q.next(); job != nil; job = q.next() {
		out = append(out, job)
	}
	return out
}

func queueIDs(jobs []*Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = fmt.Sprintf("%s(p%d)", j.ID, j.Spec.Priority)
	}
	return out
}

func queueSameJobs(a, b []*Job) bool {
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

// queueCheck checks that position() of every queued job is its 1-based index in the true order
// of the jobs in want, and that the queue's index map agrees with its items.
func queueCheck(t *testing.T, q *jobQueue, want []*Job) {
	t.Helper()
	if got, want := q.Len(), len(want); got != want {
		t.Fatalf("Len() = %d, want %d", got, want)
	}
	if got, want := len(q.index), len(want); got != want {
		t.Fatalf("len(index) = %d, want %d", got, want)
	}
	for i, job := range q.items {
		if got, ok := q.index[job]; !ok || got != i {
			t.Fatalf("index[%s] = %d, %v; want %d", job.ID, got, ok, i)
		}
	}
	for i, job := range queueTrueOrder(want) {
		if got, want := q.position(job), i+1; got != want {
			t.Fatalf("position(%s p%d) = %d, want %d", job.ID, job.Spec.Priority, got, want)
		}
	}
}

func TestJobQueueNextOnEmpty(t *testing.T) {
	q := newJobQueue()
	if got := q.next(); got != nil {
		t.Errorf("next() on a new queue = %s, want nil", got.ID)
	}
	q.add(queueJob(1, 5))
	q.next()
	if got := q.next(); got != nil {
		t.Errorf("next() on a drained queue = %s, want nil", got.ID)
	}
	if got, want := q.Len(), 0; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
}

func TestJobQueueOrder(t *testing.T) {
	tests := []struct {
		name       string
		priorities []int // in submission order
		want       []int // seqs (1-based submission index) in run order
	}{
		{name: "one job", priorities: []int{5}, want: []int{1}},
		{name: "higher priority first", priorities: []int{1, 15, 5, 10}, want: []int{2, 4, 3, 1}},
		{name: "equal priorities FIFO", priorities: []int{5, 5, 5, 5}, want: []int{1, 2, 3, 4}},
		{name: "issue example", priorities: []int{1, 15, 5, 10, 5}, want: []int{2, 4, 3, 5, 1}},
		{name: "ascending", priorities: []int{1, 2, 3, 4, 5}, want: []int{5, 4, 3, 2, 1}},
		{name: "descending", priorities: []int{15, 10, 5, 1}, want: []int{1, 2, 3, 4}},
		{name: "ties among others", priorities: []int{10, 1, 10, 1, 10}, want: []int{1, 3, 5, 2, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newJobQueue()
			jobs := make([]*Job, len(tt.priorities))
			for i, p := range tt.priorities {
				jobs[i] = queueJob(uint64(i+1), p)
				q.add(jobs[i])
			}
			queueCheck(t, q, jobs)
			var got []int
			for _, job := range queueDrain(q) {
				got = append(got, int(job.seq))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("run order = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestJobQueueRandomOrder adds jobs in random order (seq still says who was submitted first)
// and checks that next returns them in the true order, for few and many distinct priorities.
func TestJobQueueRandomOrder(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	tests := []struct {
		name    string
		n       int
		maxPrio int
	}{
		{name: "all equal", n: 200, maxPrio: 1},
		{name: "two priorities", n: 200, maxPrio: 2},
		{name: "full range", n: 500, maxPrio: 15},
		{name: "small", n: 3, maxPrio: 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for round := 0; round < 20; round++ {
				jobs := queueRandomJobs(rng, tt.n, tt.maxPrio)
				q := newJobQueue()
				for _, i := range rng.Perm(len(jobs)) {
					q.add(jobs[i])
				}
				queueCheck(t, q, jobs)
				got, want := queueDrain(q), queueTrueOrder(jobs)
				if !queueSameJobs(got, want) {
					t.Fatalf("round %d: run order\n%v\nwant\n%v", round, queueIDs(got), queueIDs(want))
				}
			}
		})
	}
}

// TestJobQueueRemove removes jobs from anywhere in the queue, as cancel does, interleaved with
// adds and nexts, and checks after every step that the rest keeps its true order.
func TestJobQueueRemove(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for round := 0; round < 50; round++ {
		q := newJobQueue()
		var queued []*Job
		var seq uint64
		for step := 0; step < 120; step++ {
			switch op := rng.Intn(4); {
			case op <= 1 || len(queued) == 0: // add
				seq++
				job := queueJob(seq, 1+rng.Intn(4))
				q.add(job)
				queued = append(queued, job)
			case op == 2: // remove a random queued job, often from the middle
				i := rng.Intn(len(queued))
				job := queued[i]
				if !q.remove(job) {
					t.Fatalf("round %d step %d: remove(%s) = false, want true", round, step, job.ID)
				}
				if q.remove(job) {
					t.Fatalf("round %d step %d: second remove(%s) = true, want false", round, step, job.ID)
				}
				if got := q.position(job); got != 0 {
					t.Fatalf("round %d step %d: position of removed %s = %d, want 0", round, step, job.ID, got)
				}
				queued = append(queued[:i], queued[i+1:]...)
			default: // next
				want := queueTrueOrder(queued)[0]
				if got := q.next(); got != want {
					t.Fatalf("round %d step %d: next() = %s, want %s", round, step, got.ID, want.ID)
				}
				if got := q.position(want); got != 0 {
					t.Fatalf("round %d step %d: position of started %s = %d, want 0", round, step, want.ID, got)
				}
				queued = queueWithout(queued, want)
			}
			queueCheck(t, q, queued)
		}
		if got, want := queueDrain(q), queueTrueOrder(queued); !queueSameJobs(got, want) {
			t.Fatalf("round %d: final order\n%v\nwant\n%v", round, queueIDs(got), queueIDs(want))
		}
	}
}

// queueWithout returns all minus job, keeping the order.
func queueWithout(all []*Job, job *Job) []*Job {
	out := make([]*Job, 0, len(all))
	for _, j := range all {
		if j != job {
			out = append(out, j)
		}
	}
	return out
}

func TestJobQueueRemoveMiddle(t *testing.T) {
	q := newJobQueue()
	var jobs []*Job
	for i, p := range []int{5, 10, 5, 15, 1, 10, 5} {
		job := queueJob(uint64(i+1), p)
		jobs = append(jobs, job)
		q.add(job)
	}
	// Remove the second 10 (seq 6) and the first 5 (seq 1): both sit mid-queue.
	for _, j := range []*Job{jobs[5], jobs[0]} {
		if !q.remove(j) {
			t.Fatalf("remove(%s) = false, want true", j.ID)
		}
	}
	if q.remove(queueJob(99, 5)) {
		t.Errorf("remove of a job never queued = true, want false")
	}
	rest := []*Job{jobs[1], jobs[2], jobs[3], jobs[4], jobs[6]}
	queueCheck(t, q, rest)
	got, want := queueDrain(q), []*Job{jobs[3], jobs[1], jobs[2], jobs[6], jobs[4]}
	if !queueSameJobs(got, want) {
		t.Errorf("order after removes = %v, want %v", queueIDs(got), queueIDs(want))
	}
}
