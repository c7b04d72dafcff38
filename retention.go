package main

// This file holds the scheduler's housekeeping: deleting jobs past -retention or beyond
// -max-jobs, and compacting the journal.

// prune deletes finished jobs that are older than the retention, then the oldest finished
// jobs while there are more than maxJobs.
func (s *scheduler) prune() {
	cutoff := s.now().Add(-s.retention)
	s.mu.Lock()
	var doomed []*Job
	excess := len(s.order) - s.maxJobs
	for _, job := range s.order {
		st := job.state()
		if st.Status.Final() && (excess > 0 || st.FinishedAt.Before(cutoff)) {
			doomed = append(doomed, job)
			excess--
		}
	}
	for _, job := range doomed {
		s.forgetLocked(job)
	}
	s.mu.Unlock()
	for _, job := range doomed {
		if err := s.erase(job); err != nil {
			s.log.Error("prune job", "job", job.ID, "err", err)
		}
	}
	if len(doomed) > 0 {
		s.log.Info("pruned finished jobs", "count", len(doomed))
	}
	if err := s.store.feed.trimBefore(cutoff); err != nil {
		s.log.Error("trim the all-jobs feed to the retention", "err", err)
	}
	s.compactIfLarge()
}

// pruneIfFull prunes when there are more jobs than -max-jobs allows.
func (s *scheduler) pruneIfFull() {
	s.mu.Lock()
	full := len(s.order) > s.maxJobs
	s.mu.Unlock()
	if full {
		s.prune()
	}
}

// compactIfLarge rewrites the journal once it holds many more records than there are jobs.
func (s *scheduler) compactIfLarge() {
	s.mu.Lock()
	n := len(s.order)
	s.mu.Unlock()
	if s.store.recordCount() > 4*n+1000 {
		if err := s.compact(); err != nil {
			s.log.Error("compact journal", "err", err)
		}
	}
}

// compact rewrites the journal from the jobs in memory. A failure marks the store unhealthy.
func (s *scheduler) compact() error {
	return s.store.compact(s.snapshot)
}

// snapshot returns the record of every job in memory, as it is: a compaction makes no new
// version of any.
func (s *scheduler) snapshot() []jobRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	recs := make([]jobRecord, 0, len(s.order))
	for _, job := range s.order {
		recs = append(recs, job.record())
	}
	return recs
}
