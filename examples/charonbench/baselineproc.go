package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The baseline fan-out runs in a process of its own, as charond does, so that its clients are
// woken across processes too: run in the load program, next to its clients, it would skip the
// cross-process wake-ups that charond's clients pay, and the comparison would not be fair.

// baselineEnv, set to a vars file, makes this program serve the baseline fan-out of a runner
// started with those vars. It reports on stdout: "addr HOST:PORT", then "ready" when the
// runner's first line is out, then "dropped N" and "cpu SECONDS" (its own CPU time) when the
// runner's output has ended.
const baselineEnv = "CHARONBENCH_BASELINE"

// baselineServerMain is main in the baseline's process. It serves until its standard input
// closes: the load program closes it once its clients have read everything, or is gone.
func baselineServerMain(varsPath string) int {
	b, err := startBaseline(varsPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "charonbench: baseline:", err)
		return 1
	}
	fmt.Printf("addr %s\n", b.addr)
	parentDone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(parentDone)
	}()
	select {
	case <-b.ready:
		fmt.Println("ready")
	case <-b.done:
	case <-parentDone:
	}
	select {
	case <-b.done:
		cpu, _ := procCPU(os.Getpid())
		fmt.Printf("dropped %d\ncpu %f\n", b.droppedClients(), cpu.Seconds())
	case <-parentDone:
	}
	<-parentDone
	b.close()
	return 0
}

// baselineProc is the load program's handle on a baseline process.
type baselineProc struct {
	addr    string
	pid     int
	ready   chan struct{} // closed when the baseline says its runner is ready
	done    chan struct{} // closed when the baseline process has ended
	dropped int           // read after ended
	cpu     float64       // the baseline's CPU seconds, read after ended
	ended   chan struct{} // closed when the baseline reports the end of its runner's output
	cmd     *exec.Cmd
	stdin   io.WriteCloser
}

// startBaselineProcess starts this program as a baseline server and waits for its address.
func startBaselineProcess(varsPath string) (*baselineProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), baselineEnv+"="+varsPath)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &baselineProc{pid: cmd.Process.Pid, ready: make(chan struct{}), done: make(chan struct{}),
		ended: make(chan struct{}), cmd: cmd, stdin: stdin}
	addr := make(chan string, 1)
	go func() {
		// Reads the baseline's reports until it exits, then reaps it.
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			word, rest, _ := strings.Cut(sc.Text(), " ")
			switch word {
			case "addr":
				addr <- rest
			case "ready":
				close(p.ready)
			case "dropped":
				p.dropped, _ = strconv.Atoi(rest)
			case "cpu":
				p.cpu, _ = strconv.ParseFloat(rest, 64)
				close(p.ended)
			}
		}
		cmd.Wait()
	}()
	select {
	case a := <-addr:
		p.addr = a
		return p, nil
	case <-p.done:
		return nil, errors.New("the baseline process ended before it listened")
	case <-time.After(30 * time.Second):
		p.close()
		return nil, errors.New("the baseline process did not listen within 30 s")
	}
}

// endStats returns how many clients the baseline dropped and its CPU seconds, once its
// runner's output has ended (-1 and 0 if it does not say within 10 s).
func (p *baselineProc) endStats() (dropped int, cpu float64) {
	select {
	case <-p.ended:
		return p.dropped, p.cpu
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
	return -1, 0
}

// close ends the baseline process (our child: by its PID) if it is still running.
func (p *baselineProc) close() {
	p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}
