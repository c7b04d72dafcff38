package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// This file is the fake ansible-playbook. charond runs this very program as its runner (with
// CHARONBENCH_RUNNER=1 in the environment, let through by -env-allow), and the latency baseline
// starts it directly. charond calls `ansible-playbook -i INVENTORY -e @VARS PLAYBOOK`; the
// job's variables say what to do.

// runnerEnv, set to 1, makes this program act as ansible-playbook.
const runnerEnv = "CHARONBENCH_RUNNER"

// runnerVars are the job variables the fake runner reads. With no mode it exits 0 at once,
// like /bin/true.
type runnerVars struct {
	// Mode is "lines" (print on a schedule), "sleep" (hold the worker), or empty (exit 0).
	Mode string `json:"charonbench,omitempty"`
	// Steps is the schedule of "lines": each [rate in lines/s, seconds], one after another.
	Steps [][2]float64 `json:"steps,omitempty"`
	// Gate is a file whose appearance starts the schedule, so that every subscriber is
	// connected before the first timed line. "ready" is printed before waiting for it.
	Gate string `json:"gate,omitempty"`
	// GateTimeout bounds the wait for Gate, in seconds (default 300).
	GateTimeout float64 `json:"gate_timeout,omitempty"`
	// Seconds is how long "sleep" sleeps (at most an hour).
	Seconds float64 `json:"seconds,omitempty"`
}

// runnerMain acts as ansible-playbook and returns the exit code.
func runnerMain(args []string) int {
	if len(args) == 1 && args[0] == "--version" {
		fmt.Println("ansible-playbook [core 0.0-charonbench]")
		return 0
	}
	v, err := readRunnerVars(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "charonbench runner:", err)
		return 5 // ansible-playbook's "bad options"
	}
	switch v.Mode {
	case "":
		return 0
	case "sleep":
		fmt.Println("started")
		time.Sleep(min(time.Duration(v.Seconds*float64(time.Second)), time.Hour))
		return 0
	case "lines":
		return printSchedule(v)
	}
	fmt.Fprintf(os.Stderr, "charonbench runner: unknown mode %q\n", v.Mode)
	return 5
}

// readRunnerVars finds `-e @FILE` among the arguments and decodes the file.
func readRunnerVars(args []string) (runnerVars, error) {
	var v runnerVars
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-e" && strings.HasPrefix(args[i+1], "@") {
			raw, err := os.ReadFile(args[i+1][1:])
			if err != nil {
				return v, err
			}
			return v, json.Unmarshal(raw, &v)
		}
	}
	return v, fmt.Errorf("no -e @FILE among the arguments %q", args)
}

// gatePoll is how often the runner looks for the gate file: small against the 10 ms between
// lines at 100 lines/s, and two stat calls a millisecond cost nothing.
const gatePoll = 500 * time.Microsecond

// printSchedule prints "ready", waits for the gate, then prints "cb SEQ UNIXNANO" lines at each
// step's rate, each written with one write(2) just after its time is taken. A runner that
// falls behind its schedule (starved of CPU) catches up without sleeping.
func printSchedule(v runnerVars) int {
	os.Stdout.WriteString("ready\n")
	if v.Gate != "" {
		timeout := time.Duration(v.GateTimeout * float64(time.Second))
		if timeout <= 0 {
			timeout = 300 * time.Second
		}
		deadline := time.Now().Add(timeout)
		for {
			if _, err := os.Stat(v.Gate); err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "charonbench runner: gate %s did not appear within %s\n", v.Gate, timeout)
				return 1
			}
			time.Sleep(gatePoll)
		}
	}
	buf := make([]byte, 0, 64)
	seq := 0
	start := time.Now()
	var offset time.Duration // the start of the current step, from start
	for _, step := range v.Steps {
		rate, secs := step[0], step[1]
		if rate <= 0 || secs <= 0 {
			continue
		}
		n := int(rate * secs)
		for i := 0; i < n; i++ {
			due := start.Add(offset + time.Duration(float64(i)/rate*float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait)
			}
			seq++
			buf = append(buf[:0], benchLinePrefix...)
			buf = strconv.AppendInt(buf, int64(seq), 10)
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, time.Now().UnixNano(), 10)
			buf = append(buf, '\n')
			if _, err := os.Stdout.Write(buf); err != nil {
				return 1
			}
		}
		offset += time.Duration(secs * float64(time.Second))
	}
	return 0
}

// scheduleLines is how many lines a schedule prints after "ready".
func scheduleLines(steps [][2]float64) int {
	n := 0
	for _, s := range steps {
		if s[0] > 0 && s[1] > 0 {
			n += int(s[0] * s[1])
		}
	}
	return n
}
