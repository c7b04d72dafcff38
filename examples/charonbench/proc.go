package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// This file reads what Linux says about processes in /proc: CPU time and memory.

// clockTicks is the kernel's USER_HZ, the unit of /proc's CPU times. It is 100 on every Linux
// architecture Go supports (sysconf is out of reach without cgo).
const clockTicks = 100

// procCPU returns the CPU time (user + system) the process has used, not counting its
// children: charond's runners are separate processes.
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(raw)
}

// parseStatCPU reads utime and stime, fields 14 and 15 of /proc/PID/stat. The command name
// (field 2) may hold spaces and parentheses, so fields are counted from its closing one.
func parseStatCPU(raw []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat %q", raw)
	}
	fields := strings.Fields(string(raw[i+1:])) // fields[0] is field 3, the state
	if len(fields) < 13 {
		return 0, fmt.Errorf("short stat %q", raw)
	}
	utime, err1 := strconv.ParseUint(fields[11], 10, 64)
	stime, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed stat times %q %q", fields[11], fields[12])
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// procMem returns the process's resident set size and its peak (VmRSS and VmHWM), in bytes.
func procMem(pid int) (rss, peak int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return rss, peak, sc.Err()
}

// systemCPU returns the machine's busy and total CPU time so far, from the first line of
// /proc/stat, in clock ticks.
func systemCPU() (busy, total uint64, err error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return 0, 0, err
	}
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat line %q", line)
	}
	for i, f := range fields[1:] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0, err
		}
		total += n
		if i != 3 && i != 4 { // idle and iowait
			busy += n
		}
	}
	return busy, total, nil
}

// cpuMeter measures the CPU use of charond, of this program (the clients), and of the whole
// machine between two moments.
type cpuMeter struct {
	pid         int
	charond     time.Duration
	self        time.Duration
	busy, total uint64
	at          time.Time
}

func newCPUMeter(pid int) *cpuMeter {
	m := &cpuMeter{pid: pid}
	m.sample()
	return m
}

func (m *cpuMeter) sample() {
	m.charond, _ = procCPU(m.pid)
	m.self, _ = procCPU(os.Getpid())
	m.busy, m.total, _ = systemCPU()
	m.at = time.Now()
}

// cpuUse is CPU use over an interval: seconds of CPU, and the share of one core (100% is one
// core busy all along); machine is the share of every core.
type cpuUse struct {
	Seconds        float64 `json:"charond_cpu_s"`
	CharondPercent float64 `json:"charond_cpu_pct"`
	ClientSeconds  float64 `json:"client_cpu_s"`
	ClientPercent  float64 `json:"client_cpu_pct"`
	MachinePercent float64 `json:"machine_busy_pct"`
	Wall           float64 `json:"wall_s"`
}

// since returns the use from m's last sample to now, and moves m to now.
func (m *cpuMeter) since() cpuUse {
	prev := *m
	m.sample()
	wall := m.at.Sub(prev.at).Seconds()
	u := cpuUse{
		Seconds:       (m.charond - prev.charond).Seconds(),
		ClientSeconds: (m.self - prev.self).Seconds(),
		Wall:          wall,
	}
	if wall > 0 {
		u.CharondPercent = 100 * u.Seconds / wall
		u.ClientPercent = 100 * u.ClientSeconds / wall
	}
	if dt := m.total - prev.total; dt > 0 {
		u.MachinePercent = 100 * float64(m.busy-prev.busy) / float64(dt)
	}
	return u
}

// threadStates summarizes the states of a process's threads over a period, sampled: R is
// running or waiting for a CPU, D is uninterruptible sleep (waiting for the disk, such as an
// fsync). A process that accepts slowly with few R and many D threads is waiting for its disk,
// not its CPU.
type threadStates struct {
	Samples       int     `json:"samples"`
	AvgRunning    float64 `json:"avg_running"`   // threads in R per sample
	AvgDiskWait   float64 `json:"avg_disk_wait"` // threads in D per sample
	DiskWaitShare float64 `json:"disk_wait_share"`
}

func (s threadStates) String() string {
	return fmt.Sprintf("%d samples: on average %.2f running or runnable, %.2f in disk wait; ≥ 1 in disk wait in %.0f%% of samples",
		s.Samples, s.AvgRunning, s.AvgDiskWait, 100*s.DiskWaitShare)
}

// threadSampler samples a process's thread states until stopped.
type threadSampler struct {
	stopc chan struct{}
	done  chan threadStates
}

// threadSampleEvery is the sampling interval: a few threads' stat files 50 times a second is
// negligible load, and a phase of several seconds gets hundreds of samples.
const threadSampleEvery = 20 * time.Millisecond

func startThreadSampler(pid int) *threadSampler {
	t := &threadSampler{stopc: make(chan struct{}), done: make(chan threadStates, 1)}
	go func() {
		// Ends when stop is called, or after an hour whatever happens.
		var s threadStates
		var running, disk, withDisk int
		tick := time.NewTicker(threadSampleEvery)
		defer tick.Stop()
		limit := time.After(time.Hour)
		for {
			select {
			case <-t.stopc:
			case <-limit:
			case <-tick.C:
				r, d, err := threadStateCounts(pid)
				if err == nil {
					s.Samples++
					running += r
					disk += d
					if d > 0 {
						withDisk++
					}
				}
				continue
			}
			break
		}
		if s.Samples > 0 {
			n := float64(s.Samples)
			s.AvgRunning, s.AvgDiskWait, s.DiskWaitShare = float64(running)/n, float64(disk)/n, float64(withDisk)/n
		}
		t.done <- s
	}()
	return t
}

func (t *threadSampler) stop() threadStates {
	close(t.stopc)
	return <-t.done
}

// threadStateCounts counts the process's threads in state R and in state D.
func threadStateCounts(pid int) (running, disk int, err error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, task := range tasks {
		raw, err := os.ReadFile(dir + "/" + task.Name() + "/stat")
		if err != nil {
			continue // the thread ended
		}
		i := bytes.LastIndexByte(raw, ')')
		if i < 0 || i+2 >= len(raw) {
			continue
		}
		switch raw[i+2] {
		case 'R':
			running++
		case 'D':
			disk++
		}
	}
	return running, disk, nil
}

// procFDs returns how many file descriptors the process has open, and its soft limit.
func procFDs(pid int) (open, limit int, err error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, 0, err
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return len(fds), 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				limit, _ = strconv.Atoi(f[0])
			}
		}
	}
	return len(fds), limit, nil
}
