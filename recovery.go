package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"
)

// This file holds what charond does at start with the jobs it finds on disk: queued ones go
// back in the queue, interrupted ones fail, and what they left running is killed.

// restore loads the jobs read from the store: queued ones go back into the queue in their
// order; ones that were running when charond stopped have their leftover processes killed
// and become failed. The journal is compacted first, which also opens it for appends.
func (s *scheduler) restore(records []jobRecord) error {
	var interrupted []*Job
	for _, rec := range records {
		job, err := s.reopen(rec)
		if err != nil {
			s.log.Warn("skipping a job whose logs cannot be opened", "job", rec.ID, "err", err)
			continue
		}
		s.mu.Lock()
		s.addLocked(job)
		if rec.Status == StatusQueued {
			s.queue.add(job)
		}
		s.mu.Unlock()
		if rec.Seq > s.lastSeq.Load() {
			s.lastSeq.Store(rec.Seq)
		}
		if rec.Status == StatusRunning {
			interrupted = append(interrupted, job)
		}
	}
	if err := s.compact(); err != nil {
		return err
	}
	if err := s.store.feed.reconcile(records); err != nil {
		return fmt.Errorf("bring the all-jobs feed up to date: %w", err)
	}
	for _, job := range interrupted {
		killLeftovers(job.state().PGID, job.ID, s.log)
		s.finish(job, StatusFailed, nil, "interrupted: charond stopped while the job was running")
	}
	return nil
}

// reopen rebuilds a job from its record and opens its logs. Logs of ended jobs are marked
// complete.
func (s *scheduler) reopen(rec jobRecord) (*Job, error) {
	job := jobFromRecord(rec)
	var err error
	if job.logs, job.events, err = s.store.openLogs(rec.ID); err != nil {
		return nil, err
	}
	if rec.Status.Final() {
		job.secretsMasked = hasSecrets(rec.Variables) || hasSecrets(rec.InventoryGroups)
		end := streamEnd{Status: rec.Status, ExitCode: rec.ExitCode}
		job.logs.markEnded(end)
		job.events.markEnded(end)
	}
	if job.events.length() == 0 {
		// A job that never started has not written its "queued" event yet.
		job.events.appendDeferred(job.queuedEvent())
	}
	return job, nil
}

// killLeftovers kills what an interrupted job left running: first the process group it ran in,
// if that still belongs to the job (one of its processes carries the job's CHARON_JOB_ID, which
// guards against a group id reused since by an unrelated process), then every process that
// carries the marker wherever it went, a new session included (a daemon that called setsid, an
// Ansible async task). A job cgroup the crashed charond left is swept before this runs, when
// the runner's containment starts (see containment.adopt).
func killLeftovers(pgid int, jobID string, log *slog.Logger) {
	if pgid > 0 && groupBelongsToJob(pgid, jobID) {
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err == nil {
			log.Warn("killed processes left running by an interrupted job", "job", jobID, "pgid", pgid)
		}
	}
	if n := killMarked(jobID, markerScanTimeout); n > 0 {
		log.Warn("killed processes left running by an interrupted job, found by their environment marker", "job", jobID, "signalled", n)
	}
}

// groupBelongsToJob reports whether any live process in the group has the job's marker, as an
// exact entry of its environment.
func groupBelongsToJob(pgid int, jobID string) bool {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	marker := []byte(jobMarker + jobID)
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if g, err := syscall.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		if processHasMarker(pid, marker) {
			return true
		}
	}
	return false
}
