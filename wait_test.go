package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// This file is how the tests wait: one polling helper, and the processes the tests start or
// look for, which they wait on through it.

const (
	// waitTimeout bounds every wait of the tests. What they wait for takes milliseconds, or a
	// few seconds with the real ansible-playbook; the bound is far above that so that a machine
	// busy with other work does not fail a test, and it still ends a test that hangs.
	waitTimeout = 30 * time.Second
	// waitPoll is how long a wait sleeps between two looks: short against what it waits for,
	// long enough that the looks (HTTP requests, /proc reads) do not load the machine.
	waitPoll = 10 * time.Millisecond
)

// waitFor calls cond until it reports done, and fails the test if that has not happened within
// waitTimeout. what names what is awaited, and cond's state says how things stood at its last
// look; the failure shows both.
func waitFor(t testing.TB, what string, cond func() (done bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		done, state := cond()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s; last seen: %s", waitTimeout, what, state)
		}
		time.Sleep(waitPoll)
	}
}

// parsePID parses the pid a process reported, and fails the test unless it is one a test may
// wait on: 0 (what a failed parse gives) would make waitProcessGone pass at once, and 1 is init.
func parsePID(t testing.TB, s string) int {
	t.Helper()
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 1 {
		t.Fatalf("pid %q: want a number above 1 (%v)", s, err)
	}
	return pid
}

// processState returns the state letter /proc gives pid ("R", "S", "Z" for a zombie...) and
// its stat line, or "" when there is no such process.
func processState(pid int) (string, string) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", ""
	}
	// The command name, in parentheses, may hold spaces: the state follows its closing one.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) == 0 {
		return "", string(stat)
	}
	return fields[0], string(stat)
}

// running reports whether pid is a live process: neither gone nor a zombie.
func running(pid int) bool {
	state, _ := processState(pid)
	return state != "" && state != "Z"
}

// waitProcessGone waits until pid no longer runs: it is reaped, or a zombie waiting for its
// parent (init, once orphaned) to reap it.
func waitProcessGone(t testing.TB, pid int) {
	t.Helper()
	if pid <= 1 {
		t.Fatalf("waitProcessGone(%d): not a pid a test may wait on", pid)
	}
	waitFor(t, fmt.Sprintf("process %d to be gone", pid), func() (bool, string) {
		_, stat := processState(pid)
		return !running(pid), stat
	})
}

// child is a process the test started, reaped as soon as it exits.
type child struct {
	cmd    *exec.Cmd
	reaped chan struct{} // closed once it has exited and been reaped; cmd.ProcessState is set then
}

// startChild starts cmd and reaps it once it exits, so that it never lingers as a zombie of the
// test. The test's end kills it, if it still runs.
func startChild(t testing.TB, cmd *exec.Cmd) *child {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, reaped: make(chan struct{})}
	go func() { cmd.Wait(); close(c.reaped) }() // ends when the process does, at the latest at the kill below
	t.Cleanup(func() { cmd.Process.Kill(); <-c.reaped })
	return c
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// waitExit waits until the child has exited and been reaped, and returns how it ended.
func (c *child) waitExit(t testing.TB) syscall.WaitStatus {
	t.Helper()
	waitFor(t, fmt.Sprintf("process %d (%s) to exit", c.pid(), c.cmd), func() (bool, string) {
		select {
		case <-c.reaped:
			return true, ""
		default:
			_, stat := processState(c.pid())
			return false, stat
		}
	})
	return c.cmd.ProcessState.Sys().(syscall.WaitStatus)
}
