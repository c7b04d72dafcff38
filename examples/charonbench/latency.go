package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file is the latency benchmark: from the runner writing a line to an SSE client reading
// it, through charond and, at the same time, through the baseline fan-out.

// latencyLevel is one load: this many subscribers on each side, the runner at this rate.
type latencyLevel struct {
	Subs int `json:"subscribers"`
	Rate int `json:"lines_per_s"`
}

// parseLevels reads "SUBSxRATE,..." such as "1x100,100x100,1000x20".
func parseLevels(s string) ([]latencyLevel, error) {
	var out []latencyLevel
	for _, part := range strings.Split(s, ",") {
		subs, rate, ok := strings.Cut(strings.TrimSpace(part), "x")
		n, err1 := strconv.Atoi(subs)
		r, err2 := strconv.Atoi(rate)
		if !ok || err1 != nil || err2 != nil || n < 1 || r < 1 || n > 20000 || r > 10000 {
			return nil, fmt.Errorf("level %q: want SUBSCRIBERSxLINES_PER_S, such as 100x100 (at most 20000x10000)", part)
		}
		out = append(out, latencyLevel{Subs: n, Rate: r})
	}
	return out, nil
}

// latencySide is one fan-out's figures at one level.
type latencySide struct {
	Latency      summary `json:"latency"`
	Received     int64   `json:"lines_received"` // timed lines received by all clients, warm-up included
	Expected     int64   `json:"lines_expected"`
	StreamErrors int     `json:"stream_errors"` // clients whose stream failed before its end
	IDProblems   int     `json:"id_problems"`   // clients with a gap or a repeat
	Dropped      int     `json:"dropped,omitempty"`
}

// latencyLevelFigures is one level's result.
type latencyLevelFigures struct {
	latencyLevel
	DurationS float64     `json:"duration_s"`
	Charond   latencySide `json:"charond"`
	Baseline  latencySide `json:"baseline"`
	RatioP99  float64     `json:"ratio_p99"` // charond p99 / baseline p99
	CPU       cpuUse      `json:"cpu"`
	// BaselineCPUPercent is the baseline process's CPU, as a share of one core.
	BaselineCPUPercent float64 `json:"baseline_cpu_pct"`
}

type latencyFigures struct {
	Benchmark          string                `json:"benchmark"`
	Levels             []latencyLevelFigures `json:"levels"`
	TargetP99OneSubMS  float64               `json:"target_p99_one_subscriber_ms"`
	TargetRatioP99     float64               `json:"target_ratio_p99"`
	MeetsTargets       bool                  `json:"meets_targets"`
	ExactlyOnceEveryOK bool                  `json:"every_stream_complete"`
}

func runLatency(ctx context.Context, args []string, out io.Writer) (any, error) {
	fs := newFlagSet("latency")
	levelsFlag := fs.String("levels", "1x100,100x100,1000x20", "Loads to measure, as SUBSCRIBERSxLINES_PER_S, comma-separated.")
	duration := fs.Duration("duration", 20*time.Second, "How long the runner prints at each level.")
	warmup := fs.Duration("warmup", time.Second, "Lines of the first part of each level are not counted (connections and caches warming up).")
	workers := fs.Int("workers", 2, "charond's -workers.")
	if err := parseSubcommand(fs, args); err != nil {
		return nil, err
	}
	levels, err := parseLevels(*levelsFlag)
	if err != nil {
		return nil, err
	}
	if *duration < time.Second || *duration > time.Hour || *warmup < 0 || *warmup >= *duration {
		return nil, errors.New("-duration must be between 1s and 1h, and -warmup shorter than it")
	}
	root, cleanup, err := makeTempRoot("latency")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	opt, err := fakeRunnerSetup()
	if err != nil {
		return nil, err
	}
	opt.flags = append(opt.flags, "-max-streams", "20000", "-max-queue", "20000", "-workers", strconv.Itoa(*workers))
	d, err := startDaemon(ctx, root, opt)
	if err != nil {
		return nil, err
	}
	defer d.stop()

	f := latencyFigures{Benchmark: "latency", TargetP99OneSubMS: 2, TargetRatioP99: 1.25, MeetsTargets: true, ExactlyOnceEveryOK: true}
	for i, lv := range levels {
		progress("level %d/%d: %d subscribers at %d lines/s for %s, charond and baseline side by side", i+1, len(levels), lv.Subs, lv.Rate, *duration)
		lf, err := runLatencyLevel(ctx, d, root, i, lv, *duration, *warmup)
		if err != nil {
			return nil, fmt.Errorf("level %dx%d: %w", lv.Subs, lv.Rate, err)
		}
		progress("  charond p50 %s p99 %s | baseline p50 %s p99 %s | p99 ratio %.2f",
			fmtMS(lf.Charond.Latency.P50), fmtMS(lf.Charond.Latency.P99), fmtMS(lf.Baseline.Latency.P50), fmtMS(lf.Baseline.Latency.P99), lf.RatioP99)
		if lf.RatioP99 > f.TargetRatioP99 || (lv.Subs == 1 && lf.Charond.Latency.P99 >= f.TargetP99OneSubMS) {
			f.MeetsTargets = false
		}
		for _, s := range []latencySide{lf.Charond, lf.Baseline} {
			if s.StreamErrors > 0 || s.IDProblems > 0 || s.Received != s.Expected {
				f.ExactlyOnceEveryOK = false
			}
		}
		f.Levels = append(f.Levels, lf)
	}
	printLatency(out, f, *duration, *warmup)
	return f, nil
}

// latencyClient is one subscriber's record of a level.
type latencyClient struct {
	// fromFirst checks ids from the first one received rather than from 1: the baseline keeps
	// no history, so a client that connects after the runner's "ready" line never sees id 1.
	fromFirst bool
	samples   []time.Duration // latencies of lines after the warm-up
	received  int64           // timed lines received
	ids       idChecker
	endID     int
	ended     bool // `completed` arrived
	err       error
}

// read reads the stream to its end, timing every runner line whose sequence number is past
// warmupSeq.
func (c *latencyClient) read(s *rawStream, warmupSeq int64) {
	for {
		ev, err := s.sse.next()
		if err != nil {
			c.err = err
			return
		}
		switch ev.Event {
		case "log":
			now := time.Now().UnixNano()
			if c.fromFirst && c.ids.seen == 0 {
				c.ids.last = ev.ID - 1
			}
			c.ids.see(ev.ID)
			if seq, ts, ok := parseBenchData(ev.Data); ok {
				c.received++
				if seq > warmupSeq {
					c.samples = append(c.samples, time.Duration(now-ts))
				}
			}
		case "completed":
			c.ended, c.endID = true, ev.ID
			return
		}
	}
}

func runLatencyLevel(ctx context.Context, d *daemon, root string, i int, lv latencyLevel, duration, warmup time.Duration) (latencyLevelFigures, error) {
	lf := latencyLevelFigures{latencyLevel: lv, DurationS: duration.Seconds()}
	gate := filepath.Join(root, fmt.Sprintf("gate-%d", i))
	vars := runnerVars{Mode: "lines", Steps: [][2]float64{{float64(lv.Rate), duration.Seconds()}}, Gate: gate, GateTimeout: 300}
	expected := int64(scheduleLines(vars.Steps))
	warmupSeq := int64(warmup.Seconds() * float64(lv.Rate))

	job, err := d.submitJSON(ctx, benchJob(fmt.Sprintf("latency %dx%d", lv.Subs, lv.Rate), 5, vars))
	if err != nil {
		return lf, fmt.Errorf("submit: %w", err)
	}
	varsPath := filepath.Join(root, fmt.Sprintf("baseline-vars-%d.json", i))
	raw, _ := json.Marshal(vars)
	if err := os.WriteFile(varsPath, raw, 0o600); err != nil {
		return lf, err
	}
	b, err := startBaselineProcess(varsPath)
	if err != nil {
		return lf, fmt.Errorf("start baseline: %w", err)
	}
	defer b.close()

	deadline := time.Now().Add(duration + 5*time.Minute)
	cs, failed, err := connectStreams(ctx, lv.Subs, d.addr, "/api/v1/jobs/"+job.ID+"/logs/stream", deadline, 64)
	defer closeStreams(cs)
	if err != nil {
		return lf, fmt.Errorf("%d of %d charond streams failed to open: %w", failed, lv.Subs, err)
	}
	bs, failed, err := connectStreams(ctx, lv.Subs, b.addr, "/stream", deadline, 64)
	defer closeStreams(bs)
	if err != nil {
		return lf, fmt.Errorf("%d of %d baseline streams failed to open: %w", failed, lv.Subs, err)
	}

	var wg sync.WaitGroup
	start := func(streams []*rawStream, fromFirst bool) []*latencyClient {
		clients := make([]*latencyClient, len(streams))
		for i, s := range streams {
			c := &latencyClient{fromFirst: fromFirst, samples: make([]time.Duration, 0, expected)}
			clients[i] = c
			wg.Add(1)
			go func() {
				// Ends at the stream's end, or when waitReaders closes the stream.
				defer wg.Done()
				c.read(s, warmupSeq)
			}()
		}
		return clients
	}
	cc, bc := start(cs, false), start(bs, true)

	// Both runners wait at the gate until every subscriber is in.
	if _, err := d.waitJob(ctx, job.ID, time.Minute, 10*time.Millisecond, func(v jobView) bool {
		return v.Status != "queued" && v.LogLines >= 1
	}); err != nil {
		return lf, fmt.Errorf("waiting for the job's runner: %w", err)
	}
	select {
	case <-b.ready:
	case <-time.After(time.Minute):
		return lf, errors.New("the baseline's runner printed nothing within a minute")
	}
	meter := newCPUMeter(d.pid)
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		return lf, err
	}
	if !waitReaders(&wg, duration+time.Minute, cs, bs) {
		progress("  some streams had not ended a minute after the runners' schedule: closed them")
	}
	lf.CPU = meter.since()
	dropped, cpu := b.endStats()
	lf.BaselineCPUPercent = 100 * cpu / lf.CPU.Wall // its whole life: it started just before
	lf.Charond = latencyResult(cc, expected)
	lf.Baseline = latencyResult(bc, expected)
	lf.Baseline.Dropped = dropped
	lf.RatioP99 = ratio(lf.Charond.Latency.P99, lf.Baseline.Latency.P99)
	return lf, nil
}

func latencyResult(clients []*latencyClient, expected int64) latencySide {
	var all []time.Duration
	side := latencySide{Expected: expected * int64(len(clients))}
	for _, c := range clients {
		all = append(all, c.samples...)
		side.Received += c.received
		if !c.ended {
			side.StreamErrors++
			continue
		}
		c.ids.finish(c.endID)
		if !c.ids.ok() {
			side.IDProblems++
		}
	}
	side.Latency = summarize(all)
	return side
}

func printLatency(out io.Writer, f latencyFigures, duration, warmup time.Duration) {
	fmt.Fprintf(out, "\ncharonbench latency: runner write → SSE client read, %s a level (first %s not counted);\n", duration, warmup)
	fmt.Fprintf(out, "charond and the baseline fan-out run at the same time, same rate, same subscriber count\n\n")
	fmt.Fprintf(out, "%-22s %11s %11s %11s   %11s %11s %11s   %9s\n", "level", "charond p50", "p99", "max", "base p50", "p99", "max", "p99 ratio")
	for _, l := range f.Levels {
		name := fmt.Sprintf("%d sub @ %d lines/s", l.Subs, l.Rate)
		fmt.Fprintf(out, "%-22s %11s %11s %11s   %11s %11s %11s   %9.2f\n", name,
			fmtMS(l.Charond.Latency.P50), fmtMS(l.Charond.Latency.P99), fmtMS(l.Charond.Latency.Max),
			fmtMS(l.Baseline.Latency.P50), fmtMS(l.Baseline.Latency.P99), fmtMS(l.Baseline.Latency.Max), l.RatioP99)
	}
	fmt.Fprintln(out)
	for _, l := range f.Levels {
		fmt.Fprintf(out, "%d sub @ %d lines/s: %d samples each side; charond CPU %.0f%%, baseline CPU %.0f%%, clients CPU %.0f%%, machine %.0f%% busy",
			l.Subs, l.Rate, l.Charond.Latency.N, l.CPU.CharondPercent, l.BaselineCPUPercent, l.CPU.ClientPercent, l.CPU.MachinePercent)
		for _, s := range []struct {
			name string
			side latencySide
		}{{"charond", l.Charond}, {"baseline", l.Baseline}} {
			if s.side.Received != s.side.Expected || s.side.StreamErrors > 0 || s.side.IDProblems > 0 || s.side.Dropped > 0 {
				fmt.Fprintf(out, "; %s: %d/%d lines, %d stream errors, %d id problems, %d dropped",
					s.name, s.side.Received, s.side.Expected, s.side.StreamErrors, s.side.IDProblems, s.side.Dropped)
			}
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintln(out)
	for _, l := range f.Levels {
		if l.Subs == 1 {
			fmt.Fprintf(out, "target charond p99 < %.0f ms at 1 subscriber: %s (%s)\n", f.TargetP99OneSubMS,
				verdict(l.Charond.Latency.P99 < f.TargetP99OneSubMS), fmtMS(l.Charond.Latency.P99))
		}
	}
	for _, l := range f.Levels {
		fmt.Fprintf(out, "target charond p99 ≤ %.2f× baseline at %d sub @ %d lines/s: %s (%.2f×)\n", f.TargetRatioP99,
			l.Subs, l.Rate, verdict(l.RatioP99 <= f.TargetRatioP99), l.RatioP99)
	}
	fmt.Fprintln(out)
}
