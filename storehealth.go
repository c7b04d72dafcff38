package main

import (
	"fmt"
	"sync"
	"time"
)

// This file holds whether the store can be trusted with new jobs, and the probe that watches
// the data dir and takes it back into use.
//
// Any failed write (a journal append, fsync or compaction, a log file write, a work dir that
// cannot be made) marks the store unhealthy: submissions get 503 and /healthz says why. Some
// faults make no write fail: writes to a deleted file, or into a deleted directory, still
// succeed. So the journal's fsync leader checks that the journal's path still names the file
// it wrote, and the probe checks the data dir itself every storeProbeInterval. When the
// probe finds the data dir usable again, it re-creates logs/ and work/, rewrites the journal
// from memory and clears the fault.

// storeProbeInterval is how often the probe checks the data dir: often enough that a data
// dir made unusable while charond is idle shows in /healthz, and a fixed one is taken back,
// within seconds; each check costs a few system calls and one small file. Tests shorten it.
var storeProbeInterval = 2 * time.Second

// storeHealth is whether the store is usable, and if not, why.
type storeHealth struct {
	mu     sync.Mutex // guards the fields below; a leaf: nothing is locked under it
	fault  error      // the latest reason the store is unusable; nil while healthy
	faults uint64     // faults noted so far, so a recovery can tell a fault that came while it ran
}

// noteFault marks the store unhealthy for err, a failed write to the data dir. charond's
// parts that write there themselves (the runner's work dirs) call it too.
func (st *store) noteFault(err error) {
	if err == nil {
		return
	}
	h := &st.health
	h.mu.Lock()
	first := h.fault == nil
	h.fault = err
	h.faults++
	h.mu.Unlock()
	if first {
		st.log.Error("DATA DIR NOT USABLE: charond refuses new jobs until it can write there again",
			"data_dir", st.dir, "err", err)
	}
}

// faultState returns the current fault and the number of faults noted so far.
func (st *store) faultState() (error, uint64) {
	st.health.mu.Lock()
	defer st.health.mu.Unlock()
	return st.health.fault, st.health.faults
}

// clearFault marks the store healthy, unless a fault was noted after the count faults.
func (st *store) clearFault(faults uint64) bool {
	h := &st.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fault == nil || h.faults != faults {
		return false
	}
	h.fault = nil
	return true
}

// unavailable returns, while the store is unhealthy, the error that a refused submission and
// /healthz report (an errUnavailable *apiError); nil while it is healthy.
func (st *store) unavailable() error {
	fault, _ := st.faultState()
	if fault == nil {
		return nil
	}
	return apiErrorf(errUnavailable, "-data-dir %s is not usable: %v; charond accepts no new jobs until it can write there again",
		st.dir, fault)
}

// saveFailed is what a submission whose record could not be saved answers: 503 with the
// reason when the store is unhealthy, else err, an internal error.
func (st *store) saveFailed(err error) error {
	if unavailable := st.unavailable(); unavailable != nil {
		return unavailable
	}
	return err
}

// startStoreProbe starts the goroutine that probes the data dir every interval. Its caller
// owns it: stop ends it and waits for it, and must be called before the store closes, since a
// recovery rewrites the journal. stop may be called more than once.
func (s *scheduler) startStoreProbe(interval time.Duration) (stop func()) {
	return every(interval, s.probeStore)
}

// probeStore checks the data dir once. A data dir that is gone, not charond's or refuses
// writes is a fault; one that is usable while the store is unhealthy, or has lost logs/,
// work/ or the journal file, is recovered.
func (s *scheduler) probeStore() {
	st := s.store
	if err := st.checkOwnedDir(st.dir); err != nil {
		st.noteFault(err)
		return
	}
	if err := st.checkWritable(); err != nil {
		st.noteFault(err)
		return
	}
	if err := st.checkSubdirs(); err != nil {
		st.noteFault(err)
	} else if err := st.journal.check(); err != nil {
		st.noteFault(err)
	}
	fault, faults := st.faultState()
	if fault == nil {
		return
	}
	if err := s.recoverStore(); err != nil {
		st.noteFault(err)
		return
	}
	if st.clearFault(faults) {
		st.log.Info("data dir usable again: charond accepts new jobs", "data_dir", st.dir, "was", fault)
	}
}

// recoverStore re-creates what the data dir lacks, rewrites the journal from memory and takes
// the all-jobs feed back into use.
func (s *scheduler) recoverStore() error {
	st := s.store
	if err := st.makeSubdirs(); err != nil {
		return fmt.Errorf("re-create logs/ and work/: %w", err)
	}
	if err := s.compact(); err != nil {
		return err
	}
	if err := st.journal.check(); err != nil {
		return err
	}
	return st.feed.repair(s.snapshot())
}
