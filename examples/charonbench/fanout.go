package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// This file is the fan-out benchmark: thousands of raw-TCP subscribers on one job, checking
// exactly-once delivery and measuring charond's CPU and memory; with -ceiling, the rate at
// which delivery falls behind.

type fanoutFigures struct {
	Benchmark   string          `json:"benchmark"`
	Main        fanoutRun       `json:"main"`
	Ceiling     *ceilingFigures `json:"ceiling,omitempty"`
	TargetRSSMB float64         `json:"target_peak_rss_mib"`
	MeetsTarget bool            `json:"meets_targets"`
}

// fanoutRun is one job's run with its subscribers.
type fanoutRun struct {
	Subscribers     int           `json:"subscribers"`
	ConnectS        float64       `json:"connect_s"`
	ConnectFailures int           `json:"connect_failures"`
	CharondFDs      int           `json:"charond_fds_connected"` // charond's open fds with every subscriber connected
	Steps           []stepFigures `json:"steps"`
	Deliveries      int64         `json:"deliveries"`
	Expected        int64         `json:"deliveries_expected"`
	// Exactly-once: subscribers whose ids were 1..N each once, ending with `completed`.
	SubsOK             int     `json:"subscribers_exact"`
	SubsGaps           int     `json:"subscribers_with_gaps"`
	SubsRepeats        int     `json:"subscribers_with_repeats"`
	SubsNotEnded       int     `json:"subscribers_not_ended"`
	SubsShort          int     `json:"subscribers_short"` // ended, ids in order, but fewer lines than printed
	CPU                cpuUse  `json:"cpu"`
	CPUMSPer1000       float64 `json:"charond_cpu_ms_per_1000_deliveries"`
	ClientCPUMSPer1000 float64 `json:"client_cpu_ms_per_1000_deliveries"`
	PeakRSSMB          float64 `json:"charond_peak_rss_mib"`           // VmHWM: the process's lifetime peak
	PeakRSSPolledMB    float64 `json:"charond_peak_rss_polled_mib"`    // the largest VmRSS seen during this run
	RSSWhileRunningMB  float64 `json:"charond_rss_while_printing_mib"` // the largest VmRSS seen before the schedule's end
	Cancelled          bool    `json:"cancelled_for_lag,omitempty"`
	JobStatus          string  `json:"job_status"`
	Timeline           []tick  `json:"timeline,omitempty"`
	firstBad           string  // the first problem a subscriber saw, for the report
}

// stepFigures is one rate step of a run.
type stepFigures struct {
	Rate           float64 `json:"lines_per_s"`
	Seconds        float64 `json:"seconds"`
	Lines          int64   `json:"lines"`
	Ran            bool    `json:"ran"`
	KeptUp         bool    `json:"kept_up"`
	Behind         int64   `json:"slowest_lines_behind"` // at the check, lines of the step the slowest subscriber lacked
	DeliveriesPerS float64 `json:"deliveries_per_s"`     // during the step
	P50MS          float64 `json:"p50_ms"`               // latency, upper bounds of histogram buckets
	P99MS          float64 `json:"p99_ms"`
	MaxMS          float64 `json:"max_ms"`
	RunnerLagMS    float64 `json:"runner_lag_ms"` // how late the runner wrote the step's last line (-1: unknown)
	CPU            cpuUse  `json:"cpu"`
}

// tick is one sample of the monitor.
type tick struct {
	T          float64 `json:"t_s"` // since the gate opened
	Delivered  int64   `json:"delivered"`
	CharondCPU float64 `json:"charond_cpu_s"`
	ClientCPU  float64 `json:"client_cpu_s"`
	busy       uint64
	total      uint64
	RSSMB      float64 `json:"charond_rss_mib"`
}

type ceilingFigures struct {
	Run              fanoutRun `json:"run"`
	MaxLagS          float64   `json:"max_lag_s"`
	LastKeptUpRate   float64   `json:"last_kept_up_lines_per_s"`
	LastKeptUpDPS    float64   `json:"last_kept_up_deliveries_per_s"`
	FellBehindAtRate float64   `json:"fell_behind_at_lines_per_s"` // 0: never, within the rates tried
	FellBehindDPS    float64   `json:"fell_behind_deliveries_per_s"`
}

func runFanout(ctx context.Context, args []string, out io.Writer) (any, error) {
	fs := newFlagSet("fanout")
	subs := fs.Int("subscribers", 10000, "Concurrent SSE subscribers of the job.")
	rate := fs.Int("rate", 10, "Lines per second the job prints in the main run.")
	duration := fs.Duration("duration", 30*time.Second, "How long the job prints in the main run.")
	ceiling := fs.Bool("ceiling", false, "After the main run, raise the rate step by step (-rates, -step each) until delivery falls behind (-max-lag).")
	ratesFlag := fs.String("rates", "10,20,50,100,200,500,1000", "With -ceiling: the rates to step through, lines/s.")
	step := fs.Duration("step", 5*time.Second, "With -ceiling: how long each rate lasts.")
	maxLag := fs.Duration("max-lag", 2*time.Second, "A step falls behind when, this long after its last line was due, some subscriber still lacks a line of it: the main run reports it, -ceiling stops there.")
	cpuProfile := fs.Bool("cpuprofile", false, "Print a timeline of charond's and the clients' CPU, and which one saturates (charond has no pprof endpoint; this is what /proc shows).")
	dialConc := fs.Int("dial-concurrency", 200, "Subscribers connecting at once.")
	if err := parseSubcommand(fs, args); err != nil {
		return nil, err
	}
	if *subs < 1 || *subs > 18000 || *rate < 1 || *duration < time.Second || *duration > time.Hour || *step < time.Second || *maxLag <= 0 {
		return nil, errors.New("need 1 ≤ -subscribers ≤ 18000 (the fd limit), -rate ≥ 1, 1s ≤ -duration ≤ 1h, -step ≥ 1s, -max-lag > 0")
	}
	var rates []float64
	for _, r := range strings.Split(*ratesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n < 1 || n > 100000 {
			return nil, fmt.Errorf("-rates: %q is not a rate from 1 to 100000", r)
		}
		rates = append(rates, float64(n))
	}

	root, cleanup, err := makeTempRoot("fanout")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	opt, err := fakeRunnerSetup()
	if err != nil {
		return nil, err
	}
	opt.flags = append(opt.flags, "-max-streams", "20000", "-max-queue", "20000", "-workers", "2")
	d, err := startDaemon(ctx, root, opt)
	if err != nil {
		return nil, err
	}
	defer d.stop()

	f := fanoutFigures{Benchmark: "fanout", TargetRSSMB: 1024}
	progress("main run: %d subscribers, %d lines/s for %s", *subs, *rate, *duration)
	f.Main, err = fanoutJob(ctx, d, root, "main", fanoutConfig{subs: *subs, steps: [][2]float64{{float64(*rate), duration.Seconds()}},
		dialConc: *dialConc, maxLag: *maxLag, timeline: *cpuProfile})
	if err != nil {
		return nil, err
	}
	exact := f.Main.SubsOK == *subs && f.Main.ConnectFailures == 0
	f.MeetsTarget = f.Main.PeakRSSMB < f.TargetRSSMB && exact
	if *ceiling {
		var steps [][2]float64
		for _, r := range rates {
			steps = append(steps, [2]float64{r, step.Seconds()})
		}
		progress("ceiling: %d subscribers, rates %s lines/s, %s each, until a line is more than %s late", *subs, *ratesFlag, *step, *maxLag)
		run, err := fanoutJob(ctx, d, root, "ceiling", fanoutConfig{subs: *subs, steps: steps, dialConc: *dialConc,
			maxLag: *maxLag, stopOnLag: true, timeline: *cpuProfile})
		if err != nil {
			return nil, err
		}
		c := &ceilingFigures{Run: run, MaxLagS: maxLag.Seconds()}
		for _, s := range run.Steps {
			if !s.Ran {
				break
			}
			if s.KeptUp {
				c.LastKeptUpRate, c.LastKeptUpDPS = s.Rate, s.DeliveriesPerS
				continue
			}
			c.FellBehindAtRate, c.FellBehindDPS = s.Rate, s.DeliveriesPerS
			break
		}
		f.Ceiling = c
	}
	printFanout(out, f, *cpuProfile)
	return f, nil
}

// fanoutConfig is one job's run.
type fanoutConfig struct {
	subs      int
	steps     [][2]float64 // the runner's schedule: [lines/s, seconds] each
	dialConc  int
	maxLag    time.Duration
	stopOnLag bool // cancel the job at the first step that falls behind
	timeline  bool // keep the monitor's samples in the result
}

// fanSub is one subscriber. Its reader goroutine owns everything but the atomics, which the
// monitor reads while it runs.
type fanSub struct {
	delivered atomic.Int64 // runner lines received
	lastSeq   atomic.Int64 // the runner's sequence number of the newest line received
	ids       idChecker
	hist      []latencyHist // per step
	endID     int
	endStatus string
	ended     bool
	err       error
	written   []int64 // subscriber 0 only: each line's write time by sequence number, the runner's timeline
}

// read reads the stream to its end. ends[k] is the last sequence number of step k.
func (c *fanSub) read(s *rawStream, ends []int64) {
	k := 0
	for {
		ev, err := s.sse.next()
		if err != nil {
			c.err = err
			return
		}
		switch ev.Event {
		case "log":
			now := time.Now().UnixNano()
			c.ids.see(ev.ID)
			seq, ts, ok := parseBenchData(ev.Data)
			if !ok {
				continue // "ready"
			}
			for k < len(ends)-1 && seq > ends[k] {
				k++
			}
			c.hist[k].add(time.Duration(now - ts))
			c.delivered.Add(1)
			c.lastSeq.Store(seq)
			if c.written != nil && seq <= int64(len(c.written)) {
				c.written[seq-1] = ts
			}
		case "completed":
			var end struct {
				Status string `json:"status"`
			}
			json.Unmarshal(ev.Data, &end)
			c.ended, c.endID, c.endStatus = true, ev.ID, end.Status
			return
		}
	}
}

// fanoutJob submits one job for the schedule, connects the subscribers, opens the gate, and
// watches until every subscriber has the whole stream.
func fanoutJob(ctx context.Context, d *daemon, root, name string, cfg fanoutConfig) (fanoutRun, error) {
	run := fanoutRun{Subscribers: cfg.subs}
	gate := filepath.Join(root, "gate-"+name)
	vars := runnerVars{Mode: "lines", Steps: cfg.steps, Gate: gate, GateTimeout: 600}
	var ends, starts []time.Duration // each step's end and start, from the gate
	var seqEnds []int64
	var total int64
	var at time.Duration
	for _, s := range cfg.steps {
		total += int64(s[0] * s[1])
		seqEnds = append(seqEnds, total)
		starts = append(starts, at)
		at += time.Duration(s[1] * float64(time.Second))
		ends = append(ends, at)
	}
	job, err := d.submitJSON(ctx, benchJob("fanout "+name, 5, vars))
	if err != nil {
		return run, fmt.Errorf("submit: %w", err)
	}

	t0 := time.Now()
	deadline := t0.Add(at + 10*time.Minute)
	streams, failed, err := connectStreams(ctx, cfg.subs, d.addr, "/api/v1/jobs/"+job.ID+"/logs/stream", deadline, cfg.dialConc)
	defer closeStreams(streams)
	run.ConnectS, run.ConnectFailures = time.Since(t0).Seconds(), failed
	if ctx.Err() != nil {
		return run, ctx.Err()
	}
	if failed > 0 {
		progress("  %d of %d subscribers failed to connect; first error: %v", failed, cfg.subs, err)
	}
	run.CharondFDs, _, _ = procFDs(d.pid)
	progress("  %d subscribers connected in %.1f s; charond has %d fds open", cfg.subs-failed, run.ConnectS, run.CharondFDs)
	subs := make([]*fanSub, 0, cfg.subs)
	var wg sync.WaitGroup
	for _, s := range streams {
		if s == nil {
			continue
		}
		c := &fanSub{hist: make([]latencyHist, len(cfg.steps))}
		if len(subs) == 0 {
			c.written = make([]int64, total)
		}
		subs = append(subs, c)
		wg.Add(1)
		go func() {
			// Ends at the stream's end, or when waitReaders closes the stream.
			defer wg.Done()
			c.read(s, seqEnds)
		}()
	}
	if _, err := d.waitJob(ctx, job.ID, time.Minute, 20*time.Millisecond, func(v jobView) bool {
		return v.Status != "queued" && v.LogLines >= 1
	}); err != nil {
		return run, fmt.Errorf("waiting for the job's runner: %w", err)
	}

	mon := &monitor{pid: d.pid, subs: subs, seqEnds: seqEnds, ends: ends, maxLag: cfg.maxLag,
		stop: make(chan struct{}), done: make(chan struct{}), checked: make([]stepCheck, len(cfg.steps))}
	if cfg.stopOnLag {
		mon.onLag = func() {
			var ae *apiError
			err := d.cancel(context.Background(), job.ID)
			if err != nil && !(errors.As(err, &ae) && ae.status == http.StatusConflict) { // 409: it had already ended
				progress("  cancel job %s: %v", job.ID, err)
			}
		}
	}
	meter := newCPUMeter(d.pid)
	gateAt := time.Now()
	if err := writeGate(gate); err != nil {
		return run, err
	}
	go mon.run(gateAt) // ends when stop is closed, below
	finished := waitReaders(&wg, at+5*time.Minute, streams)
	close(mon.stop)
	<-mon.done
	run.CPU = meter.since()
	if !finished {
		progress("  some subscribers had not ended 5 minutes after the schedule: closed them")
	}
	if v, err := d.job(ctx, job.ID); err == nil {
		run.JobStatus = v.Status
	}
	if _, peak, err := procMem(d.pid); err == nil {
		run.PeakRSSMB = float64(peak) / (1 << 20)
	}
	run.PeakRSSPolledMB = mon.maxRSSMB
	for _, tk := range mon.ticks {
		if tk.T <= at.Seconds() {
			run.RSSWhileRunningMB = max(run.RSSWhileRunningMB, tk.RSSMB)
		}
	}
	run.Cancelled = mon.cancelled
	if cfg.timeline {
		run.Timeline = mon.ticks
	}
	summarizeFanout(&run, subs, cfg, total, mon, gateAt, starts, ends)
	return run, nil
}

// summarizeFanout fills run from the subscribers' records and the monitor's samples.
func summarizeFanout(run *fanoutRun, subs []*fanSub, cfg fanoutConfig, total int64, mon *monitor, gateAt time.Time, starts, ends []time.Duration) {
	run.Expected = total * int64(cfg.subs)
	for _, c := range subs {
		n := c.delivered.Load()
		run.Deliveries += n
		switch {
		case !c.ended:
			run.SubsNotEnded++
			if run.firstBad == "" {
				run.firstBad = fmt.Sprintf("a subscriber's stream failed before `completed`: %v", c.err)
			}
			continue
		}
		c.ids.finish(c.endID)
		switch {
		case c.ids.repeats > 0:
			run.SubsRepeats++
		case c.ids.gaps > 0:
			run.SubsGaps++
		case n != total && c.endStatus == "completed":
			run.SubsShort++
		case c.endStatus == "completed":
			run.SubsOK++
		}
		if !c.ids.ok() && run.firstBad == "" {
			run.firstBad = "a subscriber's " + c.ids.String()
		}
	}
	if run.Deliveries > 0 {
		run.CPUMSPer1000 = 1000 * run.CPU.Seconds / (float64(run.Deliveries) / 1000)
		run.ClientCPUMSPer1000 = 1000 * run.CPU.ClientSeconds / (float64(run.Deliveries) / 1000)
	}
	var written []int64
	if len(subs) > 0 {
		written = subs[0].written
	}
	for k, s := range cfg.steps {
		sf := stepFigures{Rate: s[0], Seconds: s[1], Lines: int64(s[0] * s[1]), RunnerLagMS: -1}
		chk := mon.checked[k]
		sf.Ran, sf.KeptUp, sf.Behind = chk.done, chk.keptUp, chk.behind
		if !chk.done {
			// The run ended (all delivered) before the monitor's check came due: judge now.
			sf.Ran = !mon.cancelled || k == 0 || mon.checked[k-1].keptUp
			minSeq := total
			for _, c := range subs {
				minSeq = min(minSeq, c.lastSeq.Load())
			}
			sf.KeptUp = sf.Ran && minSeq >= mon.seqEnds[k]
		}
		var h latencyHist
		for _, c := range subs {
			h.merge(&c.hist[k])
		}
		sf.P50MS, sf.P99MS, sf.MaxMS = ms(h.quantile(50)), ms(h.quantile(99)), ms(h.maxBound())
		from, to := mon.at(starts[k]), mon.at(ends[k])
		if dt := to.T - from.T; dt > 0 {
			sf.DeliveriesPerS = float64(to.Delivered-from.Delivered) / dt
			sf.CPU = cpuUse{Seconds: to.CharondCPU - from.CharondCPU, ClientSeconds: to.ClientCPU - from.ClientCPU, Wall: dt,
				CharondPercent: 100 * (to.CharondCPU - from.CharondCPU) / dt, ClientPercent: 100 * (to.ClientCPU - from.ClientCPU) / dt}
			if to.total > from.total {
				sf.CPU.MachinePercent = 100 * float64(to.busy-from.busy) / float64(to.total-from.total)
			}
		}
		if last := mon.seqEnds[k]; written != nil && last >= 1 && written[last-1] != 0 {
			due := gateAt.Add(ends[k] - time.Duration(float64(time.Second)/s[0]))
			sf.RunnerLagMS = ms(time.Unix(0, written[last-1]).Sub(due))
		}
		run.Steps = append(run.Steps, sf)
	}
}

// writeGate creates the gate file that starts the runner's schedule.
func writeGate(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("open the gate: %w", err)
	}
	return f.Close()
}
