package main

import "container/heap"

// jobQueue is the queue of waiting jobs: a container/heap ordered by priority, highest first,
// and by submission order among equal priorities. It is not safe for concurrent use; the
// scheduler guards it with its mutex.
type jobQueue struct {
	items []*Job
	index map[*Job]int // each queued job's position in items, kept by Swap
}

func newJobQueue() *jobQueue {
	return &jobQueue{index: make(map[*Job]int)}
}

// runsBefore reports whether a should run before b.
func runsBefore(a, b *Job) bool {
	if a.Spec.Priority != b.Spec.Priority {
		return a.Spec.Priority > b.Spec.Priority
	}
	return a.seq < b.seq
}

// heap.Interface, on the slice of items.
func (q *jobQueue) Len() int           { return len(q.items) }
func (q *jobQueue) Less(i, j int) bool { return runsBefore(q.items[i], q.items[j]) }
func (q *jobQueue) Swap(i, j int) {
	q.items[i], q.items[j] = q.items[j], q.items[i]
	q.index[q.items[i]] = i
	q.index[q.items[j]] = j
}

func (q *jobQueue) Push(x any) {
	job := x.(*Job)
	q.index[job] = len(q.items)
	q.items = append(q.items, job)
}

func (q *jobQueue) Pop() any {
	last := len(q.items) - 1
	job := q.items[last]
	q.items[last] = nil // let the job be collected once it ends
	q.items = q.items[:last]
	delete(q.index, job)
	return job
}

// add queues a job.
func (q *jobQueue) add(job *Job) { heap.Push(q, job) }

// next removes and returns the job that runs next, or nil when the queue is empty.
func (q *jobQueue) next() *Job {
	if len(q.items) == 0 {
		return nil
	}
	return heap.Pop(q).(*Job)
}

// nextRunnable removes and returns the job that runs first among those runnable says may
// start now, or nil when none may. Jobs passed over keep their places.
func (q *jobQueue) nextRunnable(runnable func(*Job) bool) *Job {
	var passed []*Job
	defer func() {
		for _, job := range passed {
			heap.Push(q, job)
		}
	}()
	for len(q.items) > 0 {
		job := heap.Pop(q).(*Job)
		if runnable(job) {
			return job
		}
		passed = append(passed, job)
	}
	return nil
}

// remove takes a job out of the queue and reports whether it was there.
func (q *jobQueue) remove(job *Job) bool {
	i, ok := q.index[job]
	if !ok {
		return false
	}
	heap.Remove(q, i)
	return true
}

// position is the job's 1-based place in line (1 runs next), or 0 if it is not queued. It
// counts the jobs that run before it, which is exact whatever the heap's internal order.
func (q *jobQueue) position(job *Job) int {
	if _, ok := q.index[job]; !ok {
		return 0
	}
	pos := 1
	for _, other := range q.items {
		if other != job && runsBefore(other, job) {
			pos++
		}
	}
	return pos
}
