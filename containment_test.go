package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// withMarkerContainment makes a test daemon find its jobs' processes by their environment
// marker, as charond does where cgroup v2 is not usable.
func withMarkerContainment(d *daemon) {
	c := d.sched.runner.contain
	c.close()
	c.dir, c.reason = "", "forced by a test"
}

// withLateCgroupPlacement makes a test daemon move each job into its cgroup right after it
// starts, as on a kernel without CLONE_INTO_CGROUP.
func withLateCgroupPlacement(d *daemon) { d.sched.runner.contain.noCloneInto.Store(true) }

// containments are the ways charond can keep track of a job's processes.
var containments = []struct {
	name   string
	opt    testOption
	cgroup bool
}{
	{"cgroup2", func(*daemon) {}, true},
	{"cgroup2 moved in after start", withLateCgroupPlacement, true},
	{"environment marker", withMarkerContainment, false},
}

// requireCgroup skips a test of cgroup containment where the daemon cannot use cgroup v2,
// unless CHARON_REQUIRE_CGROUP=1 makes that a failure.
func requireCgroup(t *testing.T, td *testDaemon) {
	t.Helper()
	info := td.sched.runner.contain.info()
	if info.Mechanism == containCgroup {
		return
	}
	if os.Getenv("CHARON_REQUIRE_CGROUP") == "1" {
		t.Fatalf("cgroup v2 containment is required (CHARON_REQUIRE_CGROUP=1) but not usable: %s", info.Reason)
	}
	t.Skipf("cgroup v2 containment is not usable here: %s", info.Reason)
}

// TestEscapedProcessDiesWithItsJob runs a job whose child starts a process in a new session,
// holding none of the job's pipes, and then ends or is cancelled: with each containment, that
// process must not outlive the job, and the job's cgroup must be gone.
func TestEscapedProcessDiesWithItsJob(t *testing.T) {
	for _, c := range containments {
		for _, cancel := range []bool{false, true} {
			name := c.name + "/completed"
			if cancel {
				name = c.name + "/cancelled"
			}
			t.Run(name, func(t *testing.T) {
				td := startTestDaemon(t, c.opt)
				if c.cgroup {
					requireCgroup(t, td)
				}
				vars := map[string]any{"fake": "escape"}
				if cancel {
					vars["seconds"] = 60
				}
				id := td.submitFake(t, "escaping", 5, vars)
				if cancel {
					waitLogLines(t, td, id, 2)
					postCancel(t, td, id, 202)
					td.waitStatus(t, id, StatusCancelled)
				} else {
					td.waitStatus(t, id, StatusCompleted)
				}
				waitProcessGone(t, loggedPID(t, td, id, "escaped "))
				if c.cgroup {
					jobCgroup := filepath.Join(td.sched.runner.contain.dir, "job-"+id)
					if _, err := os.Stat(jobCgroup); !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("job cgroup %s is still there: %v", jobCgroup, err)
					}
				}
			})
		}
	}
}

// TestCgroupCatchesProcessWithoutMarker checks what only the cgroup can do: kill a process
// that left the session and dropped its environment, marker included.
func TestCgroupCatchesProcessWithoutMarker(t *testing.T) {
	td := startTestDaemon(t)
	requireCgroup(t, td)
	id := td.submitFake(t, "escaping", 5, map[string]any{"fake": "escape", "clear_env": "yes"})
	td.waitStatus(t, id, StatusCompleted)
	waitProcessGone(t, loggedPID(t, td, id, "escaped "))
}

// TestCgroupSubtree checks the subtree's life: named by the data dir, so a restart on the same
// one finds the same subtree and another data dir gets another, and removed at shutdown.
func TestCgroupSubtree(t *testing.T) {
	dir := t.TempDir()
	a := startTestDaemonIn(t, dir)
	requireCgroup(t, a)
	other := startTestDaemon(t)
	sub := a.sched.runner.contain.dir
	if !strings.HasPrefix(filepath.Base(sub), "charond-") || sub == other.sched.runner.contain.dir {
		t.Errorf("subtrees %s and %s, want charond-<hash of the data dir>, different for different data dirs", sub, other.sched.runner.contain.dir)
	}
	if _, err := os.Stat(filepath.Join(sub, "cgroup.kill")); err != nil {
		t.Errorf("subtree: %v", err)
	}
	a.stop(t)
	if _, err := os.Stat(sub); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("subtree %s still there after shutdown: %v", sub, err)
	}
	b := startTestDaemonIn(t, dir)
	if got := b.sched.runner.contain.dir; got != sub {
		t.Errorf("subtree after a restart on the same data dir = %s, want %s", got, sub)
	}
}

// TestRestartKillsEscapedLeftovers leaves, as a crashed charond would, a running job's process
// in a session of its own while the job's recorded process group is gone: the next start must
// kill it, from its job cgroup (where it has no marker) or by its marker.
func TestRestartKillsEscapedLeftovers(t *testing.T) {
	for _, c := range []struct {
		name   string
		cgroup bool
	}{{"cgroup2", true}, {"environment marker", false}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			a := startTestDaemonIn(t, dir)
			if c.cgroup {
				requireCgroup(t, a)
			}
			sub := a.sched.runner.contain.dir
			a.stop(t)

			// A fresh id: the marker scan is host-wide, and another test process may run this test.
			id := newJobID()
			var leftover *child
			if c.cgroup {
				jobCgroup := filepath.Join(sub, "job-"+id)
				if err := os.MkdirAll(jobCgroup, 0o755); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { removeCgroup(sub) }) // after the leftover is killed, if the test failed
				leftover = startEscapedLeftover(t, []string{}, jobCgroup)
			} else {
				leftover = startEscapedLeftover(t, append(os.Environ(), jobMarker+id), "")
			}
			appendRecord(t, dir, jobRecord{ID: id, Version: 3, Seq: 99, CreatedAt: time.Now(), JobSpec: JobSpec{Name: "crashed", Playbook: "x.yml", Inventory: []string{"localhost"}, Priority: 5, Timeout: time.Minute}, jobState: jobState{Status: StatusRunning, StartedAt: time.Now(), PGID: deadGroup(t)}})

			b := startTestDaemonIn(t, dir)
			b.waitStatus(t, id, StatusFailed)
			waitProcessGone(t, leftover.pid())
			if _, err := os.Stat(filepath.Join(sub, "job-"+id)); c.cgroup && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("leftover job cgroup still there: %v", err)
			}
		})
	}
}

// TestKill9KillsEscapedProcesses kills a real charond with SIGKILL while its job runs with a
// process in a session of its own, then restarts it: both the job's leader and that process
// must be gone.
func TestKill9KillsEscapedProcesses(t *testing.T) {
	bin := buildCharond(t)
	self, _ := os.Executable()
	dir := t.TempDir()
	removeCgroupSubtreeAtEnd(t, dir)
	start := func() (*exec.Cmd, *testDaemon) {
		cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-data-dir", dir, "-playbook-dir", dir,
			"-ansible-playbook", self, "-workers", "1", "-env-allow", fakeRunnerEnv)
		cmd.Env = append(os.Environ(), "CHARON_FAKE_RUNNER=1", "GORACE=atexit_sleep_ms=0")
		return cmd, &testDaemon{URL: startProcess(t, cmd)}
	}
	cmd, a := start()
	id := a.submitFake(t, "escaping", 5, map[string]any{"fake": "escape", "seconds": 60})
	waitLogLines(t, a, id, 2)
	leader, escaped := loggedPID(t, a, id, "leader "), loggedPID(t, a, id, "escaped ")
	cmd.Process.Kill()
	cmd.Wait()

	_, b := start()
	b.waitStatus(t, id, StatusFailed)
	waitProcessGone(t, leader)
	waitProcessGone(t, escaped)
}

// removeCgroupSubtreeAtEnd removes, when the test ends, the cgroup subtree of a charond process
// on dataDir that the test killed rather than stopped. Call it before starting the process, so
// that it runs after the process is killed.
func removeCgroupSubtreeAtEnd(t *testing.T, dataDir string) {
	t.Helper()
	sub, err := cgroupSubtree(dataDir)
	if err != nil {
		return
	}
	t.Cleanup(func() {
		killCgroup(sub)
		removeCgroup(sub)
	})
}

// TestRunnerKilledBySignal checks that a runner that died of a signal says which, with no exit
// code.
func TestRunnerKilledBySignal(t *testing.T) {
	td := startTestDaemon(t)
	for _, tt := range []struct {
		sig  syscall.Signal
		want string
	}{
		{syscall.SIGKILL, "ansible-playbook was killed by signal 9 (killed)"},
		{syscall.SIGSEGV, "ansible-playbook was killed by signal 11 (segmentation fault)"},
	} {
		t.Run(tt.sig.String(), func(t *testing.T) {
			id := td.submitFake(t, "dies", 5, map[string]any{"fake": "signal", "signal": int(tt.sig)})
			job := td.waitStatus(t, id, StatusFailed)
			if got := job["message"]; got != tt.want {
				t.Errorf("message = %q, want %q", got, tt.want)
			}
			if job["exit_code"] != nil {
				t.Errorf("exit_code = %v, want null", job["exit_code"])
			}
		})
	}
}

// TestAnsibleEscapesLeaveNothing runs the real ansible-playbook with a task that leaves a
// process in a new session and an async task (async_wrapper daemonizes): once the job has
// ended, no process may carry its marker, with either containment.
func TestAnsibleEscapesLeaveNothing(t *testing.T) {
	requireAnsible(t)
	playbook := `- hosts: localhost
  gather_facts: false
  tasks:
    - shell: "setsid nohup sleep 600 >/dev/null 2>&1 &"
    - command: sleep 600
      async: 600
      poll: 0
`
	for _, c := range []struct {
		name   string
		opt    testOption
		cgroup bool
	}{{"cgroup2", func(*daemon) {}, true}, {"environment marker", withMarkerContainment, false}} {
		t.Run(c.name, func(t *testing.T) {
			td := startTestDaemon(t, withRealAnsible, c.opt)
			if c.cgroup {
				requireCgroup(t, td)
			}
			id := td.submitPlaybook(t, "escapes", playbook)
			td.waitStatus(t, id, StatusCompleted)
			waitNoMarkedProcess(t, id)
		})
	}
}

// waitNoMarkedProcess waits until no live process carries the job's marker.
func waitNoMarkedProcess(t *testing.T, jobID string) {
	t.Helper()
	waitFor(t, "the processes of job "+jobID+" to be gone", func() (bool, string) {
		pids := markedProcesses(jobID)
		var desc []string
		for _, pid := range pids {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			desc = append(desc, fmt.Sprintf("%d %q", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		}
		return len(pids) == 0, "still running: " + strings.Join(desc, "; ")
	})
}

// markedProcesses lists the live processes that carry the job's marker.
func markedProcesses(jobID string) []int {
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if pid, err := strconv.Atoi(p.Name()); err == nil && processHasMarker(pid, []byte(jobMarker+jobID)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestMarkerScanSparesOthers checks that the marker scan kills the job's process and no other:
// not one of another job, nor one whose environment only contains the marker's text.
func TestMarkerScanSparesOthers(t *testing.T) {
	id := newJobID() // a fresh one: the scan is host-wide, and another test process may run this test
	target := startMarked(t, jobMarker+id)
	spared := map[string]*child{}
	for _, entry := range []string{
		jobMarker + "some-other-job",
		jobMarker + id + "x",
		"X" + jobMarker + id,
		"FOO=" + jobMarker + id,
	} {
		spared[entry] = startMarked(t, entry)
	}
	if n := killMarked(id, 2*time.Second); n < 1 {
		t.Errorf("killMarked signalled %d processes, want the job's", n)
	}
	if ws := target.waitExit(t); ws.Signal() != syscall.SIGKILL {
		t.Errorf("the job's process ended with %v, want killed by the marker scan", target.cmd.ProcessState)
	}
	// killMarked returns once a scan finds no marked process alive: a spared one killed by
	// mistake is dead by then, if perhaps not reaped yet.
	for entry, p := range spared {
		if !running(p.pid()) {
			t.Errorf("a process with %q in its environment was killed", entry)
		}
	}
}

// startMarked starts a sleep with one extra environment entry.
func startMarked(t *testing.T, entry string) *child {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), entry}
	return startChild(t, cmd)
}

// startEscapedLeftover starts a process in a session of its own, with env, and in the cgroup
// dir if one is given, as a run's process that outlived a crashed charond would be.
func startEscapedLeftover(t *testing.T, env []string, cgroup string) *child {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if cgroup != "" {
		fd, err := syscall.Open(cgroup, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
	}
	return startChild(t, cmd)
}

// deadGroup returns the id of a process group that existed and is gone, as the recorded group
// of a job whose leader died with charond.
func deadGroup(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// loggedPID reads the pid a fake runner printed on a line starting with prefix.
func loggedPID(t *testing.T, td *testDaemon, id, prefix string) int {
	t.Helper()
	lines, _ := jobLines(t, td, id)
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			pid := parsePID(t, rest)
			t.Cleanup(func() { killIfSleep(pid) })
			return pid
		}
	}
	t.Fatalf("no line %q... in the log of job %s: %q", prefix, id, lines)
	return 0
}

// killIfSleep kills a process a failed test left behind, if the pid is still that test's
// `sleep 300` and not a process that took the pid since.
func killIfSleep(pid int) {
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && string(cmdline) == "sleep\x00300\x00" {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

func TestCgroup2Dir(t *testing.T) {
	tests := []struct {
		name, mountinfo, own, want string
	}{
		{"hybrid", "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "/", "/sys/fs/cgroup/unified"},
		{"unified", "25 31 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
			"30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
			"/system.slice/charond.service", "/sys/fs/cgroup/system.slice/charond.service"},
		{"part of the hierarchy mounted", "30 23 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n", "/docker/abc/sub", "/sys/fs/cgroup/sub"},
		{"outside the mounted part", "30 23 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n", "/docker/abcd", ""},
		{"escaped mount point", `30 23 0:26 / /mnt/cg\040two rw - cgroup2 none rw` + "\n", "/x", "/mnt/cg two/x"},
		{"cgroup v1 only", "25 31 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n", "/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cgroup2Dir(tt.mountinfo, tt.own)
			if got != tt.want || (err != nil) != (tt.want == "") {
				t.Errorf("cgroup2Dir = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestUnifiedCgroupPath(t *testing.T) {
	tests := []struct {
		name, procCgroup, want string
		ok                     bool
	}{
		{"hybrid", "9:name=systemd:/\n4:memory:/a\n0::/\n", "/", true},
		{"unified", "0::/system.slice/charond.service\n", "/system.slice/charond.service", true},
		{"v1 only", "4:memory:/a\n1:cpu:/\n", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := unifiedCgroupPath(tt.procCgroup)
			if got != tt.want || ok != tt.ok {
				t.Errorf("unifiedCgroupPath = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestHasEnvEntry(t *testing.T) {
	entry := []byte("CHARON_JOB_ID=abc")
	tests := []struct {
		name, env string
		want      bool
	}{
		{"first", "CHARON_JOB_ID=abc\x00PATH=/bin\x00", true},
		{"last, unterminated", "PATH=/bin\x00CHARON_JOB_ID=abc", true},
		{"longer id", "CHARON_JOB_ID=abcd\x00", false},
		{"shorter id", "CHARON_JOB_ID=ab\x00", false},
		{"longer name", "XCHARON_JOB_ID=abc\x00", false},
		{"inside a value", "FOO=CHARON_JOB_ID=abc\x00", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hasEnvEntry([]byte(tt.env), entry); got != tt.want {
				t.Errorf("hasEnvEntry(%q) = %v, want %v", tt.env, got, tt.want)
			}
		})
	}
}

// TestMarkerContainmentWithoutCgroup checks the fallback reports itself and never creates a
// cgroup.
func TestMarkerContainmentWithoutCgroup(t *testing.T) {
	c := &containment{reason: "forced by a test", log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if got := c.info(); got.Mechanism != containMarker || got.Reason != "forced by a test" || got.Cgroup != "" {
		t.Errorf("info = %+v", got)
	}
	if s := c.enter("some-job"); s.cgroup != "" {
		t.Errorf("a run without cgroup v2 got cgroup %s", s.cgroup)
	}
}

// TestInfoReportsContainment checks that /api/v1/info says which mechanism is in force.
func TestInfoReportsContainment(t *testing.T) {
	td := startTestDaemon(t)
	_, info := getJSON(t, td.URL+"/api/v1/info")
	c, _ := info["containment"].(map[string]any)
	want := td.sched.runner.contain.info()
	if c == nil || c["mechanism"] != want.Mechanism || c["mechanism"] == "" {
		t.Errorf("info containment = %v, want mechanism %q", info["containment"], want.Mechanism)
	}
}
