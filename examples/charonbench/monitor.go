package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// This file watches a fan-out run while it goes (deliveries, CPU, memory, whether each step
// kept up) and prints the fan-out report.

// monitorEvery is the monitor's sampling interval: fine enough to place 5-second steps, and
// summing 10,000 counters four times a second costs nothing.
const monitorEvery = 250 * time.Millisecond

// stepCheck is the verdict on one step, taken maxLag after its last line was due.
type stepCheck struct {
	done   bool
	keptUp bool
	behind int64 // lines of the step the slowest subscriber lacked
}

// monitor samples a run from the gate until stop is closed. Its results are written by its
// goroutine only and read after done is closed.
type monitor struct {
	pid     int
	subs    []*fanSub
	seqEnds []int64         // the last sequence number of each step
	ends    []time.Duration // the end of each step, from the gate
	maxLag  time.Duration
	onLag   func() // called once, at the first step that falls behind; nil: never
	stop    chan struct{}
	done    chan struct{}

	ticks     []tick
	checked   []stepCheck
	maxRSSMB  float64
	cancelled bool
}

func (m *monitor) run(gateAt time.Time) {
	defer close(m.done)
	t := time.NewTicker(monitorEvery)
	defer t.Stop()
	m.sample(gateAt)
	for {
		select {
		case <-m.stop:
			m.sample(gateAt)
			return
		case <-t.C:
		}
		m.sample(gateAt)
		m.check(gateAt)
	}
}

func (m *monitor) sample(gateAt time.Time) {
	tk := tick{T: time.Since(gateAt).Seconds()}
	for _, c := range m.subs {
		tk.Delivered += c.delivered.Load()
	}
	cpu, _ := procCPU(m.pid)
	self, _ := procCPU(os.Getpid())
	tk.CharondCPU, tk.ClientCPU = cpu.Seconds(), self.Seconds()
	tk.busy, tk.total, _ = systemCPU()
	if rss, _, err := procMem(m.pid); err == nil {
		tk.RSSMB = float64(rss) / (1 << 20)
		m.maxRSSMB = max(m.maxRSSMB, tk.RSSMB)
	}
	m.ticks = append(m.ticks, tk)
}

// check judges every step whose deadline (its end plus maxLag) has passed: it kept up if the
// slowest subscriber has its last line.
func (m *monitor) check(gateAt time.Time) {
	elapsed := time.Since(gateAt)
	for k := range m.checked {
		if m.checked[k].done {
			continue
		}
		if m.cancelled || elapsed < m.ends[k]+m.maxLag {
			return
		}
		slowest := m.seqEnds[len(m.seqEnds)-1]
		for _, c := range m.subs {
			slowest = min(slowest, c.lastSeq.Load())
		}
		chk := stepCheck{done: true, keptUp: slowest >= m.seqEnds[k]}
		if !chk.keptUp {
			chk.behind = m.seqEnds[k] - slowest
		}
		m.checked[k] = chk
		if !chk.keptUp && m.onLag != nil {
			m.cancelled = true
			m.onLag()
		}
	}
}

// at returns the first sample taken at or after offset from the gate, or the last one.
func (m *monitor) at(offset time.Duration) tick {
	for _, tk := range m.ticks {
		if tk.T >= offset.Seconds() {
			return tk
		}
	}
	if len(m.ticks) == 0 {
		return tick{}
	}
	return m.ticks[len(m.ticks)-1]
}

func printFanout(out io.Writer, f fanoutFigures, cpuProfile bool) {
	r := f.Main
	fmt.Fprintf(out, "\ncharonbench fanout: %d subscribers (raw TCP) of one job", r.Subscribers)
	if len(r.Steps) == 1 {
		fmt.Fprintf(out, " printing %.0f lines/s for %.0f s", r.Steps[0].Rate, r.Steps[0].Seconds)
	}
	fmt.Fprintf(out, "\n\nconnected %d subscribers in %.1f s (%d failed); charond then had %d fds open\n",
		r.Subscribers-r.ConnectFailures, r.ConnectS, r.ConnectFailures, r.CharondFDs)
	fmt.Fprintf(out, "delivered %d of %d lines (job %s)\n", r.Deliveries, r.Expected, r.JobStatus)
	fmt.Fprintf(out, "exactly once: %d of %d subscribers got ids 1..N each once and `completed`; %d with gaps, %d with repeats, %d short, %d not ended\n",
		r.SubsOK, r.Subscribers, r.SubsGaps, r.SubsRepeats, r.SubsShort, r.SubsNotEnded)
	if r.firstBad != "" {
		fmt.Fprintf(out, "  first problem: %s\n", r.firstBad)
	}
	if len(r.Steps) == 1 {
		s := r.Steps[0]
		fmt.Fprintf(out, "latency runner → client (bucket upper bounds): p50 ≤ %s, p99 ≤ %s, max ≤ %s\n", fmtMS(s.P50MS), fmtMS(s.P99MS), fmtMS(s.MaxMS))
		switch {
		case s.KeptUp:
			fmt.Fprintf(out, "every subscriber had the last line within -max-lag of its due time\n")
		case s.Behind > 0:
			fmt.Fprintf(out, "-max-lag after the last line was due, the slowest subscriber still lacked %d lines\n", s.Behind)
		}
	}
	fmt.Fprintf(out, "charond CPU %.2f s over %.1f s (%.0f%% of a core): %.3f ms per 1,000 deliveries\n",
		r.CPU.Seconds, r.CPU.Wall, r.CPU.CharondPercent, r.CPUMSPer1000)
	fmt.Fprintf(out, "clients' CPU (this program) %.2f s (%.0f%%): %.3f ms per 1,000 deliveries; machine %.0f%% busy\n",
		r.CPU.ClientSeconds, r.CPU.ClientPercent, r.ClientCPUMSPer1000, r.CPU.MachinePercent)
	fmt.Fprintf(out, "charond peak RSS %.0f MiB (VmHWM; largest VmRSS seen %.0f MiB in the run, %.0f MiB while the job printed): target < %.0f MiB %s\n",
		r.PeakRSSMB, r.PeakRSSPolledMB, r.RSSWhileRunningMB, f.TargetRSSMB, verdict(r.PeakRSSMB < f.TargetRSSMB))
	if cpuProfile {
		printTimeline(out, "main run", r)
	}
	if c := f.Ceiling; c != nil {
		cr := c.Run
		fmt.Fprintf(out, "\nceiling: %d subscribers, %.0f s a step; a step falls behind if %.1f s after its last line was due some subscriber lacks a line of it\n\n",
			cr.Subscribers-cr.ConnectFailures, cr.Steps[0].Seconds, c.MaxLagS)
		fmt.Fprintf(out, "%8s %14s %14s %11s %11s %11s %9s %9s %8s %11s  %s\n", "lines/s", "deliveries/s", "asked", "p50 ≤", "p99 ≤", "max ≤",
			"charond", "clients", "machine", "runner lag", "verdict")
		for _, s := range cr.Steps {
			if !s.Ran {
				fmt.Fprintf(out, "%8.0f %14s\n", s.Rate, "not run")
				continue
			}
			v := "kept up"
			if !s.KeptUp {
				v = fmt.Sprintf("FELL BEHIND (slowest subscriber %d lines short)", s.Behind)
			}
			fmt.Fprintf(out, "%8.0f %14.0f %14.0f %11s %11s %11s %8.0f%% %8.0f%% %7.0f%% %11s  %s\n", s.Rate, s.DeliveriesPerS,
				s.Rate*float64(cr.Subscribers-cr.ConnectFailures), fmtMS(s.P50MS), fmtMS(s.P99MS), fmtMS(s.MaxMS),
				s.CPU.CharondPercent, s.CPU.ClientPercent, s.CPU.MachinePercent, lagText(s.RunnerLagMS), v)
		}
		fmt.Fprintln(out)
		if c.FellBehindAtRate > 0 {
			fmt.Fprintf(out, "delivery fell behind at %.0f lines/s: %.0f deliveries/s achieved during that step; last rate kept up: %.0f lines/s (%.0f deliveries/s)\n",
				c.FellBehindAtRate, c.FellBehindDPS, c.LastKeptUpRate, c.LastKeptUpDPS)
		} else {
			fmt.Fprintf(out, "delivery kept up at every rate tried, up to %.0f lines/s (%.0f deliveries/s)\n", c.LastKeptUpRate, c.LastKeptUpDPS)
		}
		fmt.Fprintf(out, "exactly once in the ceiling run: %d with gaps, %d with repeats, %d not ended\n", cr.SubsGaps, cr.SubsRepeats, cr.SubsNotEnded)
		if cpuProfile {
			printTimeline(out, "ceiling run", cr)
		}
	}
	fmt.Fprintln(out)
}

func lagText(v float64) string {
	if v < 0 {
		return "?"
	}
	return fmtMS(v)
}

// printTimeline prints the monitor's samples a second at a time, then which process the CPU
// went to when the machine was busiest.
func printTimeline(out io.Writer, name string, r fanoutRun) {
	if len(r.Timeline) < 2 {
		return
	}
	cores := float64(runtime.NumCPU())
	fmt.Fprintf(out, "\nCPU timeline, %s (charond has no pprof endpoint: this is /proc; 100%% = one core, the machine has %.0f;\n", name, cores)
	fmt.Fprintf(out, "\"others\" is every other process on the machine, other benchmarks and tests included)\n")
	fmt.Fprintf(out, "%6s %14s %9s %9s %9s %9s %9s\n", "t (s)", "deliveries/s", "charond", "clients", "others", "machine", "RSS MiB")
	prev := r.Timeline[0]
	var sat []string
	for i, tk := range r.Timeline[1:] {
		if last := i == len(r.Timeline)-2; tk.T-prev.T < 1 && !last {
			continue // a row a second
		}
		dt := tk.T - prev.T
		if dt <= 0 {
			continue
		}
		mach := 0.0
		if tk.total > prev.total {
			mach = 100 * float64(tk.busy-prev.busy) / float64(tk.total-prev.total)
		}
		ch, cl := 100*(tk.CharondCPU-prev.CharondCPU)/dt, 100*(tk.ClientCPU-prev.ClientCPU)/dt
		others := max(mach*cores-ch-cl, 0)
		fmt.Fprintf(out, "%6.1f %14.0f %8.0f%% %8.0f%% %8.0f%% %8.0f%% %9.0f\n", tk.T, float64(tk.Delivered-prev.Delivered)/dt, ch, cl, others, mach, tk.RSSMB)
		if mach >= 90 {
			who := "charond"
			switch {
			case others > ch && others > cl:
				who = "others"
			case cl > ch:
				who = "clients"
			}
			sat = append(sat, fmt.Sprintf("%.0fs:%s", tk.T, who))
		}
		prev = tk
	}
	if len(sat) == 0 {
		fmt.Fprintln(out, "the machine never reached 90% busy in a second: no CPU saturation")
		return
	}
	fmt.Fprintf(out, "seconds with the machine ≥ 90%% busy, and who used most of it: %s\n", strings.Join(sat, " "))
}
