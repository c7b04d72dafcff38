package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
)

// This file is the queue benchmark: many submissions at once behind one busy worker, how fast
// charond accepts them, and whether it then starts them in strict priority order, FIFO among
// equal priorities.

type queueFigures struct {
	Benchmark          string         `json:"benchmark"`
	Jobs               int            `json:"jobs"`
	Concurrency        int            `json:"concurrency"`
	Accepted           int            `json:"accepted"`
	Refused            map[string]int `json:"refused,omitempty"` // by status or error
	FirstRefusal       string         `json:"first_refusal,omitempty"`
	SubmitS            float64        `json:"submit_s"`
	AcceptedPerS       float64        `json:"accepted_per_s"`
	TargetAcceptedPerS float64        `json:"target_accepted_per_s"`
	SubmitLatency      summary        `json:"submit_latency"`
	SubmitCPU          cpuUse         `json:"submit_cpu"`
	SubmitThreads      threadStates   `json:"submit_threads"`
	FDsAfterSubmit     int            `json:"charond_fds_after_submit"`
	FDsAtEnd           int            `json:"charond_fds_at_end"`
	FDLimit            int            `json:"charond_fd_limit"`
	DrainS             float64        `json:"drain_s"`
	Ended              int            `json:"ended"` // accepted jobs that ended within the drain timeout
	DispatchedPerS     float64        `json:"dispatched_per_s"`
	Drained            bool           `json:"drained"`
	Statuses           map[string]int `json:"statuses"`           // of the accepted jobs, at the end
	Failures           map[string]int `json:"failures,omitempty"` // messages of failed jobs
	Order              orderReport    `json:"order"`
	MeetsTargets       bool           `json:"meets_targets"`
}

// submission is one POST of the benchmark, as the client saw it.
type submission struct {
	prio           int
	sent, answered time.Time
	id             string
	refusal        string // empty when accepted
}

func runQueue(ctx context.Context, args []string, out io.Writer) (any, error) {
	fs := newFlagSet("queue")
	n := fs.Int("jobs", 10000, "Jobs to submit.")
	conc := fs.Int("concurrency", 64, "Submissions in flight at once.")
	seed := fs.Uint64("seed", 1, "Seed of the random priorities (1..15).")
	drainTimeout := fs.Duration("drain-timeout", 45*time.Second,
		"How long to wait for every job to end after the blocker is cancelled (at most 1h). Jobs still queued then are checked to "+
			"be behind every job that started, and left queued when charond stops. Dispatch runs one process per job, a few "+
			"dozen jobs a second: give 15m to see all 10,000 end.")
	if err := parseSubcommand(fs, args); err != nil {
		return nil, err
	}
	if *n < 1 || *n > 19000 || *conc < 1 || *conc > 1000 || *drainTimeout <= 0 || *drainTimeout > time.Hour {
		return nil, errors.New("need 1 ≤ -jobs ≤ 19000 (charond runs with -max-queue 20000), 1 ≤ -concurrency ≤ 1000 and 0 < -drain-timeout ≤ 1h")
	}
	root, cleanup, err := makeTempRoot("queue")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	opt, err := fakeRunnerSetup()
	if err != nil {
		return nil, err
	}
	// The fake runner exits 0 at once for every job but the blocker: the stub, like /bin/true.
	opt.flags = append(opt.flags, "-max-queue", "20000", "-workers", "1")
	opt.apiConns = *conc
	d, err := startDaemon(ctx, root, opt)
	if err != nil {
		return nil, err
	}
	defer d.stop()

	// The blocker holds the single worker for the whole submission phase, so every job is
	// queued before the first is dispatched and the order is the queue's alone.
	blocker, err := d.submitJSON(ctx, benchJob("queue blocker", 15, runnerVars{Mode: "sleep", Seconds: 3600}))
	if err != nil {
		return nil, fmt.Errorf("submit the blocker: %w", err)
	}
	if _, err := d.waitJob(ctx, blocker.ID, time.Minute, 10*time.Millisecond, func(v jobView) bool { return v.Status != "queued" }); err != nil {
		return nil, err
	}

	rng := rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15))
	subs := make([]submission, *n)
	for i := range subs {
		subs[i].prio = 1 + rng.IntN(15)
	}
	progress("submitting %d jobs, %d in flight, behind blocker %s", *n, *conc, blocker.ID)
	meter := newCPUMeter(d.pid)
	threads := startThreadSampler(d.pid)
	start := time.Now()
	submitAll(ctx, d, subs, *conc)
	f := queueFigures{Benchmark: "queue", Jobs: *n, Concurrency: *conc, TargetAcceptedPerS: 2000, Refused: map[string]int{}}
	f.SubmitCPU = meter.since()
	f.SubmitThreads = threads.stop()
	f.FDsAfterSubmit, f.FDLimit, _ = procFDs(d.pid)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	last := start
	var lat []time.Duration
	for _, s := range subs {
		last = maxTime(last, s.answered)
		lat = append(lat, s.answered.Sub(s.sent))
		if s.refusal == "" {
			f.Accepted++
			continue
		}
		f.Refused[s.refusal]++
	}
	f.SubmitS = last.Sub(start).Seconds()
	f.AcceptedPerS = float64(f.Accepted) / f.SubmitS
	f.SubmitLatency = summarize(lat)
	progress("accepted %d of %d in %.2f s: %.0f jobs/s", f.Accepted, *n, f.SubmitS, f.AcceptedPerS)
	for _, s := range subs {
		if s.refusal != "" {
			f.FirstRefusal = s.refusal
			break
		}
	}

	if err := d.cancel(ctx, blocker.ID); err != nil {
		return nil, fmt.Errorf("cancel the blocker: %w", err)
	}
	drainStart := time.Now()
	f.Drained, err = waitDrained(ctx, d, *drainTimeout)
	if err != nil {
		return nil, err
	}
	f.DrainS = time.Since(drainStart).Seconds()
	f.FDsAtEnd, _, _ = procFDs(d.pid)

	views, err := d.list(ctx, 2*(*n)+10)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	byID := make(map[string]jobView, len(views))
	for _, v := range views {
		byID[v.ID] = v
	}
	f.Statuses = map[string]int{}
	f.Failures = map[string]int{}
	var started, waiting []dispatched
	for i, s := range subs {
		if s.refusal != "" {
			continue
		}
		v, ok := byID[s.id]
		if !ok {
			f.Statuses["missing from the list"]++
			continue
		}
		f.Statuses[v.Status]++
		if v.Status == "failed" {
			f.Failures[trim(v.Message, 200)]++
		}
		j := dispatched{index: i, prio: v.Priority, created: v.CreatedAt, sent: s.sent, answered: s.answered}
		if v.StartedAt == nil {
			waiting = append(waiting, j)
			continue
		}
		j.started = *v.StartedAt
		started = append(started, j)
	}
	f.Ended = f.Accepted - f.Statuses["queued"] - f.Statuses["running"] - f.Statuses["missing from the list"]
	f.DispatchedPerS = float64(f.Ended) / f.DrainS
	f.Order = checkDispatchOrder(started, waiting)
	f.MeetsTargets = f.AcceptedPerS >= f.TargetAcceptedPerS && f.Order.OK && f.Accepted == *n && f.Drained && f.Statuses["completed"] == *n
	printQueue(out, f)
	return f, nil
}

// submitAll posts every submission, conc at a time, recording each as the client saw it.
func submitAll(ctx context.Context, d *daemon, subs []submission, conc int) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			// Ends when next is closed, below.
			defer wg.Done()
			for i := range next {
				s := &subs[i]
				body := benchJob("queue "+strconv.Itoa(i), s.prio, runnerVars{})
				s.sent = time.Now()
				v, err := d.submitJSON(ctx, body)
				s.answered = time.Now()
				var ae *apiError
				switch {
				case err == nil:
					s.id = v.ID
				case errors.As(err, &ae):
					s.refusal = fmt.Sprintf("HTTP %d: %s", ae.status, trim(ae.body, 160))
				default:
					s.refusal = trim(err.Error(), 160)
				}
			}
		}()
	}
	for i := range subs {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// waitDrained polls /api/v1/info until nothing is queued or running, or timeout passes.
func waitDrained(ctx context.Context, d *daemon, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	lastReport := time.Now()
	for {
		inf, err := d.info(ctx)
		if err != nil {
			return false, fmt.Errorf("info: %w", err)
		}
		if inf.Queued == 0 && inf.Running == 0 {
			return true, nil
		}
		if time.Since(lastReport) >= 5*time.Second {
			progress("  draining: %d queued, %d running", inf.Queued, inf.Running)
			lastReport = time.Now()
		}
		if time.Now().After(deadline) {
			progress("  still %d queued and %d running after %s: checking what ran", inf.Queued, inf.Running, timeout)
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// dispatched is a job that started: its priority and times from charond, and when the client
// sent it and saw it accepted.
type dispatched struct {
	index          int // submission order of the client
	prio           int
	created        time.Time
	started        time.Time
	sent, answered time.Time
}

// orderReport says whether jobs started in strict priority order, FIFO among equals.
type orderReport struct {
	Started int `json:"started"`
	// PriorityInversions counts jobs that started right after a job of lower priority.
	PriorityInversions int `json:"priority_inversions"`
	// CreatedInversions counts jobs that started after a job of the same priority created later
	// (by charond's created_at); MaxCreatedInversion is the largest such gap. charond takes
	// created_at and its submission sequence number one after the other, not atomically, so
	// concurrent submissions can invert by a few microseconds without any FIFO violation:
	// only inversions above createdTie count against the order.
	CreatedInversions     int     `json:"fifo_inversions_created_at"`
	CreatedBeyondTie      int     `json:"fifo_inversions_created_at_beyond_tie"`
	MaxCreatedInversionMS float64 `json:"max_created_at_inversion_ms"`
	// DefiniteFIFO counts jobs that started after a job of the same priority whose POST was
	// sent after this job's POST was answered: unambiguous FIFO violations whatever charond's
	// clock says.
	DefiniteFIFO int `json:"fifo_violations_definite"`
	// Waiting counts the jobs not started when checked; OutOfTurn those of them that should
	// have started before some job that did (a higher priority, or the same priority and
	// created earlier).
	Waiting   int    `json:"waiting"`
	OutOfTurn int    `json:"waiting_out_of_turn"`
	OK        bool   `json:"ok"`
	First     string `json:"first_violation,omitempty"`
}

// createdTie is the largest created_at inversion between concurrent submissions that is not
// counted as a FIFO violation (see orderReport).
const createdTie = time.Millisecond

// checkDispatchOrder checks start order: sorted by started_at, priorities must not increase,
// and within a priority jobs must start in the order they were created. Jobs still waiting
// must come after every job that started.
func checkDispatchOrder(ds, waiting []dispatched) orderReport {
	r := orderReport{Started: len(ds), Waiting: len(waiting)}
	ds = slices.Clone(ds)
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].started.Before(ds[j].started) })
	type seen struct{ created, sent time.Time }
	latest := map[int]*seen{} // per priority: the latest created_at and sent among jobs started so far
	note := func(msg string) {
		if r.First == "" {
			r.First = msg
		}
	}
	for i, d := range ds {
		if i > 0 && d.prio > ds[i-1].prio {
			r.PriorityInversions++
			note(fmt.Sprintf("job #%d (priority %d) started at %s, after job #%d of lower priority %d",
				d.index, d.prio, d.started.Format(time.RFC3339Nano), ds[i-1].index, ds[i-1].prio))
		}
		l := latest[d.prio]
		if l == nil {
			latest[d.prio] = &seen{created: d.created, sent: d.sent}
			continue
		}
		if gap := l.created.Sub(d.created); gap > 0 {
			r.CreatedInversions++
			r.MaxCreatedInversionMS = max(r.MaxCreatedInversionMS, ms(gap))
			if gap > createdTie {
				r.CreatedBeyondTie++
				note(fmt.Sprintf("job #%d (priority %d, created %s) started after a job of its priority created later (%s)",
					d.index, d.prio, d.created.Format(time.RFC3339Nano), l.created.Format(time.RFC3339Nano)))
			}
		}
		if d.answered.Before(l.sent) {
			r.DefiniteFIFO++
			note(fmt.Sprintf("job #%d (priority %d) was accepted before another job of its priority was sent, yet started after it", d.index, d.prio))
		}
		l.created, l.sent = maxTime(l.created, d.created), maxTime(l.sent, d.sent)
	}
	lowest := 0 // the lowest priority that started
	if len(ds) > 0 {
		lowest = ds[len(ds)-1].prio
		for _, d := range ds {
			lowest = min(lowest, d.prio)
		}
	}
	for _, w := range waiting {
		l := latest[w.prio]
		switch {
		case len(ds) > 0 && w.prio > lowest:
			r.OutOfTurn++
			note(fmt.Sprintf("job #%d (priority %d) still waits, though a job of priority %d started", w.index, w.prio, lowest))
		case l != nil && l.created.Sub(w.created) > createdTie:
			r.OutOfTurn++
			note(fmt.Sprintf("job #%d (priority %d) still waits, though a later job of its priority started", w.index, w.prio))
		}
	}
	r.OK = r.PriorityInversions == 0 && r.CreatedBeyondTie == 0 && r.DefiniteFIFO == 0 && r.OutOfTurn == 0
	return r
}

func printQueue(out io.Writer, f queueFigures) {
	fmt.Fprintf(out, "\ncharonbench queue: %d submissions, %d in flight, random priorities 1..15, one worker held by a blocker\n\n", f.Jobs, f.Concurrency)
	fmt.Fprintf(out, "accepted %d of %d in %.2f s: %.0f jobs/s (target ≥ %.0f/s: %s)\n", f.Accepted, f.Jobs, f.SubmitS, f.AcceptedPerS,
		f.TargetAcceptedPerS, verdict(f.AcceptedPerS >= f.TargetAcceptedPerS))
	fmt.Fprintf(out, "POST latency: p50 %s, p99 %s, max %s; charond CPU %.0f%% of a core, client %.0f%%, machine %.0f%% busy\n",
		fmtMS(f.SubmitLatency.P50), fmtMS(f.SubmitLatency.P99), fmtMS(f.SubmitLatency.Max), f.SubmitCPU.CharondPercent, f.SubmitCPU.ClientPercent, f.SubmitCPU.MachinePercent)
	fmt.Fprintf(out, "charond's threads while accepting (%s)\n", f.SubmitThreads)
	fmt.Fprintf(out, "charond's open file descriptors: %d after the submissions, %d once the jobs ended (its limit: %d)\n",
		f.FDsAfterSubmit, f.FDsAtEnd, f.FDLimit)
	if len(f.Refused) > 0 {
		fmt.Fprintf(out, "REFUSED %d submissions:\n", f.Jobs-f.Accepted)
		for k, v := range f.Refused {
			fmt.Fprintf(out, "  %5d × %s\n", v, k)
		}
	}
	drained := "all ended"
	if !f.Drained {
		drained = fmt.Sprintf("NOT all ended within -drain-timeout: %d of %d", f.Ended, f.Accepted)
	}
	fmt.Fprintf(out, "after the blocker was cancelled: %s in %.1f s (%.1f jobs/s dispatched and run)\n", drained, f.DrainS, f.DispatchedPerS)
	fmt.Fprintf(out, "final statuses: %v\n", f.Statuses)
	for msg, n := range f.Failures {
		fmt.Fprintf(out, "  %5d failed: %s\n", n, msg)
	}
	o := f.Order
	fmt.Fprintf(out, "dispatch order of %d started jobs: %d priority inversions, %d FIFO inversions by created_at (%d beyond %s; largest %s), %d definite FIFO violations",
		o.Started, o.PriorityInversions, o.CreatedInversions, o.CreatedBeyondTie, createdTie, fmtMS(o.MaxCreatedInversionMS), o.DefiniteFIFO)
	if o.Waiting > 0 {
		fmt.Fprintf(out, "; %d still waiting, %d of them out of turn", o.Waiting, o.OutOfTurn)
	}
	fmt.Fprintf(out, ": %s\n", verdict(o.OK))
	if o.First != "" {
		fmt.Fprintf(out, "  first: %s\n", o.First)
	}
	fmt.Fprintln(out)
}
