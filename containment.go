package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// This file keeps every process a job starts where charond can find it again, so that none
// outlives its job: not one that left the process group and the session (`setsid`, `nohup &`),
// nor an Ansible async task, whose async_wrapper daemonizes with a double fork and setsid.
//
// Where cgroup v2 is usable, each run gets a cgroup of its own, which its processes cannot leave
// (short of being root and moving themselves out). Ending the run writes cgroup.kill, which kills
// everything in it however detached. Elsewhere, every process of a run carries
// CHARON_JOB_ID=<id> in its environment (see runner.command), and ending the run kills each
// process that carries it, found by a scan of /proc.

// cgroupDrainTimeout bounds the wait for a killed cgroup to empty. SIGKILL takes effect within
// milliseconds; only a process stuck in the kernel (a hung NFS read, say) takes longer, and no
// worker is held for it: its cgroup stays, and the next start of charond sweeps it.
var cgroupDrainTimeout = 5 * time.Second

// markerScanTimeout bounds the rescans of /proc in the fallback. Each scan kills what it finds;
// a process that forked while it was being killed shows up in the next one.
var markerScanTimeout = 5 * time.Second

// Names of the two mechanisms, as the start log and /api/v1/info report them.
const (
	containCgroup = "cgroup2"
	containMarker = "environment-marker"
)

// containment is how charond finds every process of a job, for all the runs of one daemon.
type containment struct {
	// dir is the cgroup v2 subtree charond owns for its data dir, <mount><own cgroup>/charond-<hash>;
	// each running job has a cgroup job-<id> in it. Empty when cgroup v2 is not usable, and then
	// the marker scan is used; tests empty it (see withMarkerContainment) to force that fallback.
	dir string
	// reason says why cgroup v2 is not used, when dir is empty.
	reason string
	// noCloneInto is set once the kernel refused to start a process straight into a cgroup
	// (clone3 with CLONE_INTO_CGROUP, Linux 5.7): later runs are moved in right after they start.
	// Tests set it to exercise that path.
	noCloneInto atomic.Bool
	log         *slog.Logger
}

// containmentInfo says which mechanism is in force, for the start log and /api/v1/info.
type containmentInfo struct {
	Mechanism string `json:"mechanism"`        // containCgroup or containMarker
	Cgroup    string `json:"cgroup,omitempty"` // the subtree, with cgroup2
	Reason    string `json:"reason,omitempty"` // why not cgroup2, with the marker
}

// newContainment sets up cgroup v2 containment under charond's own cgroup if the machine allows
// it, after killing what an earlier charond on the same data dir left in it, and logs which
// mechanism is in force and why. It always returns a usable containment.
func newContainment(dataDir string, log *slog.Logger) *containment {
	c := &containment{log: log}
	dir, err := cgroupSubtree(dataDir)
	if err == nil {
		err = c.adopt(dir)
	}
	if err != nil {
		c.reason = err.Error()
		log.Info("job containment", "containment", containMarker, "reason", c.reason)
	} else {
		c.dir = dir
		log.Info("job containment", "containment", containCgroup, "path", dir)
	}
	return c
}

// info reports the mechanism in force.
func (c *containment) info() containmentInfo {
	if c == nil {
		return containmentInfo{Mechanism: containMarker, Reason: "no containment configured"}
	}
	if c.dir == "" {
		return containmentInfo{Mechanism: containMarker, Reason: c.reason}
	}
	return containmentInfo{Mechanism: containCgroup, Cgroup: c.dir}
}

// cgroupSubtree is where charond's cgroups for dataDir go: a child of charond's own cgroup v2.
//
// Its name is stable per data dir, not per process, so that a restarted charond finds the job
// cgroups a crashed one left with nothing more than its data dir (a job's record keeps only its
// process group). A data dir serves one charond at a time, so nothing else uses the subtree:
// at start every job cgroup in it is a leftover, whatever its job's recorded status, and two
// daemons with different data dirs on one host (or many in one test process) get different
// subtrees and never touch each other's jobs. A per-pid name would instead leave a subtree
// behind at every crash and need a scan of its siblings, which cannot tell a dead daemon's
// subtree from a live one's. A leftover a crashed charond left in another cgroup (it was
// started from another unit, say) is still found by its environment marker at restart.
func cgroupSubtree(dataDir string) (string, error) {
	procCgroup, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read charond's cgroup: %w", err)
	}
	own, ok := unifiedCgroupPath(string(procCgroup))
	if !ok {
		return "", errors.New("charond is in no cgroup v2 hierarchy (no 0:: line in /proc/self/cgroup)")
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	base, err := cgroup2Dir(string(mountinfo), own)
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(dataDir); err == nil {
		dataDir = real
	}
	sum := sha256.Sum256([]byte(dataDir))
	return filepath.Join(base, "charond-"+hex.EncodeToString(sum[:8])), nil
}

// unifiedCgroupPath finds the cgroup v2 line, "0::/path", in the text of /proc/self/cgroup.
func unifiedCgroupPath(procCgroup string) (string, bool) {
	for _, line := range strings.Split(procCgroup, "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok && strings.HasPrefix(path, "/") {
			return path, true
		}
	}
	return "", false
}

// cgroup2Dir finds, in the text of /proc/self/mountinfo, the directory of the cgroup own (a
// path in the cgroup v2 hierarchy): under /sys/fs/cgroup on a unified host, under
// /sys/fs/cgroup/unified on a hybrid one. A mount of part of the hierarchy (its root field is
// not "/", as in a container) counts only if own lies inside it.
func cgroup2Dir(mountinfo, own string) (string, error) {
	mounted := false
	for _, line := range strings.Split(mountinfo, "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
		pre, post, ok := strings.Cut(line, " - ")
		fields, fstype := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(fstype) == 0 || fstype[0] != "cgroup2" {
			continue
		}
		mounted = true
		root, point := unescapeMountField(fields[3]), unescapeMountField(fields[4])
		if root == "/" {
			return filepath.Join(point, own), nil
		}
		if rest, ok := strings.CutPrefix(own, root); ok && (rest == "" || strings.HasPrefix(rest, "/")) {
			return filepath.Join(point, rest), nil
		}
	}
	if mounted {
		return "", fmt.Errorf("charond's cgroup %s is outside every cgroup2 mount", own)
	}
	return "", errors.New("no cgroup2 file system is mounted (cgroup v1 only)")
}

// unescapeMountField undoes mountinfo's octal escapes (\040 for a space, and so on).
func unescapeMountField(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// adopt makes dir charond's subtree: it kills and removes what an earlier charond on this data
// dir left there (no job of this one runs yet), creates it, and checks that it can kill and
// create cgroups in it.
func (c *containment) adopt(dir string) error {
	c.sweep(dir)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cannot create cgroup %s: %w", dir, err)
	}
	err := checkCgroup(dir)
	if err != nil {
		os.Remove(dir)
	}
	return err
}

// checkCgroup checks that dir has a writable cgroup.kill (Linux 5.14) and takes children.
func checkCgroup(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err != nil {
		return fmt.Errorf("cgroup %s has no cgroup.kill (it needs Linux 5.14): %w", dir, err)
	}
	// Whatever the sweep could not remove is a leftover too: writing cgroup.kill kills it.
	if err := writeCgroupFile(dir, "cgroup.kill", "1"); err != nil {
		return err
	}
	probe := filepath.Join(dir, "probe")
	if err := os.Mkdir(probe, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cannot create cgroups in %s: %w", dir, err)
	}
	return os.Remove(probe)
}

// sweep kills and removes every cgroup left in charond's subtree by an earlier charond.
func (c *containment) sweep(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sub := filepath.Join(dir, e.Name())
		if had, err := killCgroup(sub); had || err != nil {
			c.log.Warn("killed processes left running by an earlier charond", "job", strings.TrimPrefix(e.Name(), "job-"), "cgroup", sub, "err", err)
		}
		if err := removeCgroup(sub); err != nil {
			c.log.Warn("cannot remove a cgroup left by an earlier charond", "cgroup", sub, "err", err)
		}
	}
}

// close kills whatever still runs in charond's subtree (only a job that outlived the shutdown
// timeout can) and removes it. It is called once the workers are gone.
func (c *containment) close() {
	if c == nil || c.dir == "" {
		return
	}
	if had, err := killCgroup(c.dir); had || err != nil {
		c.log.Warn("killed job processes still running at shutdown", "cgroup", c.dir, "err", err)
	}
	if err := removeCgroup(c.dir); err != nil {
		c.log.Warn("cannot remove charond's cgroup", "cgroup", c.dir, "err", err)
	}
}

// jobScope is one run's processes, as charond finds them again: its cgroup, or its marker.
type jobScope struct {
	c     *containment
	jobID string
	// cgroup is the run's cgroup, to remove at the end; empty when it has none.
	cgroup string
	// contained says the child was put in the cgroup; sealed, that it started there, so nothing
	// it forked can be outside. A child moved in after it started may have forked first, and a
	// child in no cgroup is found by its marker only: unless sealed, the marker scan runs too.
	contained, sealed bool
}

// enter creates the run's cgroup, if cgroup v2 is in force.
func (c *containment) enter(jobID string) *jobScope {
	s := &jobScope{c: c, jobID: jobID}
	if c == nil || c.dir == "" || jobID == "" || strings.ContainsAny(jobID, "/\x00") {
		return s
	}
	dir := filepath.Join(c.dir, "job-"+jobID)
	if err := os.Mkdir(dir, 0o755); err != nil {
		c.log.Warn("cannot create the job's cgroup: its processes will be found by their environment marker", "job", jobID, "err", err)
		return s
	}
	s.cgroup = dir
	return s
}

// start starts cmd in the run's cgroup: atomically where the kernel can (CLONE_INTO_CGROUP),
// else by moving it in right after it started. It returns the command it started, which is a
// copy of cmd when it started with CLONE_INTO_CGROUP.
func (s *jobScope) start(cmd *exec.Cmd) (*exec.Cmd, error) {
	if s.cgroup == "" || cmd.Err != nil {
		return cmd, cmd.Start()
	}
	if !s.c.noCloneInto.Load() {
		into, err := startInto(cmd, s.cgroup)
		if err == nil {
			s.contained, s.sealed = true, true
			return into, nil
		}
		if !cgroupStartRefused(err) {
			return into, err
		}
		if errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.E2BIG) || errors.Is(err, syscall.EINVAL) {
			// The kernel (or a seccomp filter, as in some containers) has no clone3 or no
			// CLONE_INTO_CGROUP: it will not have them on the next run either.
			s.c.noCloneInto.Store(true)
			s.c.log.Info("cannot start jobs straight into their cgroup: moving them in right after they start", "err", err)
		}
	}
	if err := cmd.Start(); err != nil {
		return cmd, err
	}
	if err := writeCgroupFile(s.cgroup, "cgroup.procs", strconv.Itoa(cmd.Process.Pid)); err != nil {
		s.c.log.Warn("cannot move the job into its cgroup: its processes will be found by their environment marker", "job", s.jobID, "err", err)
	} else {
		s.contained = true
	}
	return cmd, nil
}

// errNoCgroupFD says a run's cgroup could not be opened to start the run in it.
var errNoCgroupFD = errors.New("cannot open the job's cgroup")

// startInto starts a copy of cmd inside the cgroup dir; cmd itself stays unstarted, since an
// exec.Cmd cannot be started twice.
func startInto(cmd *exec.Cmd, dir string) (*exec.Cmd, error) {
	fd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return cmd, fmt.Errorf("%w %s: %v", errNoCgroupFD, dir, err)
	}
	defer syscall.Close(fd)
	attr := syscall.SysProcAttr{}
	if cmd.SysProcAttr != nil {
		attr = *cmd.SysProcAttr
	}
	attr.UseCgroupFD, attr.CgroupFD = true, fd
	into := &exec.Cmd{Path: cmd.Path, Args: cmd.Args, Env: cmd.Env, Dir: cmd.Dir, Stdin: cmd.Stdin,
		Stdout: cmd.Stdout, Stderr: cmd.Stderr, ExtraFiles: cmd.ExtraFiles, SysProcAttr: &attr}
	return into, into.Start()
}

// cgroupStartRefused reports whether starting into a cgroup failed for a reason that starting
// without one may not share: the cgroup would not open, the kernel has no clone3 or
// CLONE_INTO_CGROUP (ENOSYS, E2BIG, EINVAL), the cgroup takes no processes (EBUSY, EOPNOTSUPP),
// or charond may not use it (EPERM, EACCES; these may also come from running the playbook
// command, and then the plain start fails the same way).
func cgroupStartRefused(err error) bool {
	if errors.Is(err, errNoCgroupFD) {
		return true
	}
	for _, errno := range []syscall.Errno{syscall.ENOSYS, syscall.E2BIG, syscall.EINVAL, syscall.EBUSY,
		syscall.EOPNOTSUPP, syscall.EPERM, syscall.EACCES} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// kill kills all of the run's processes now, without waiting: the leader included, whatever its
// process group. It is for the end of a cancel's grace.
func (s *jobScope) kill() {
	if s.contained {
		_ = writeCgroupFile(s.cgroup, "cgroup.kill", "1")
	}
	if !s.sealed {
		killMarkedOnce(s.jobID)
	}
}

// killAll kills whatever is left of the run once its leader has exited, and waits (bounded)
// until nothing is.
func (s *jobScope) killAll() {
	if s.contained {
		if _, err := killCgroup(s.cgroup); err != nil {
			s.c.log.Warn("job processes survive cgroup.kill", "job", s.jobID, "err", err)
		}
	}
	if !s.sealed {
		killMarked(s.jobID, markerScanTimeout)
	}
}

// remove removes the run's cgroup. One that still holds a process stays for the next start.
func (s *jobScope) remove() {
	if s.cgroup == "" {
		return
	}
	if err := removeCgroup(s.cgroup); err != nil {
		s.c.log.Warn("cannot remove the job's cgroup: the next start of charond will", "job", s.jobID, "err", err)
	}
}

// killCgroup kills every process in the cgroup dir and its descendants, and waits until it is
// empty. It reports whether there was anything to kill.
func killCgroup(dir string) (bool, error) {
	if !cgroupPopulated(dir) {
		return false, nil
	}
	if err := writeCgroupFile(dir, "cgroup.kill", "1"); err != nil {
		return true, err
	}
	deadline := time.Now().Add(cgroupDrainTimeout)
	for pause := 100 * time.Microsecond; cgroupPopulated(dir); pause = min(2*pause, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			return true, fmt.Errorf("cgroup %s still has processes %v after cgroup.kill", dir, cgroupDrainTimeout)
		}
		time.Sleep(pause)
	}
	return true, nil
}

// cgroupPopulated reports whether the cgroup dir or a descendant holds a live process, as its
// cgroup.events says ("populated 1"). A cgroup that is gone holds none.
func cgroupPopulated(dir string) bool {
	events, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(events), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return v != "0"
		}
	}
	return false
}

// removeCgroup removes the cgroup dir with the cgroups a job may have made in it, deepest first.
func removeCgroup(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroup(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOENT) {
		return &fs.PathError{Op: "rmdir", Path: dir, Err: err}
	}
	return nil
}

// writeCgroupFile writes one value to a cgroup interface file, which must exist.
func writeCgroupFile(dir, name, value string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// killMarked SIGKILLs every process whose environment carries the job's marker, whatever its
// process group or session, and scans again until a scan finds none or timeout passes: a
// process that forked while being killed leaves a child with the marker too. It returns how
// many signals it sent.
func killMarked(jobID string, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	total := 0
	for pause := 100 * time.Microsecond; ; pause = min(2*pause, 50*time.Millisecond) {
		n := killMarkedOnce(jobID)
		total += n
		if n == 0 || time.Now().After(deadline) {
			return total
		}
		time.Sleep(pause)
	}
}

// killMarkedOnce SIGKILLs each process that carries the job's marker now, never charond itself.
// A zombie has no environment left to read, so a killed process stops counting once it died.
func killMarkedOnce(jobID string) int {
	if jobID == "" {
		return 0
	}
	marker := []byte(jobMarker + jobID)
	self := os.Getpid()
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid <= 0 || pid == self || !processHasMarker(pid, marker) {
			continue
		}
		// A pidfd, where the kernel has them, pins the process: read again through it, the
		// environment is that process's, and the signal cannot reach another that took its pid.
		proc, err := os.FindProcess(pid)
		if err != nil {
			continue
		}
		if processHasMarker(pid, marker) && proc.Signal(syscall.SIGKILL) == nil {
			n++
		}
		proc.Release()
	}
	return n
}

// jobMarker starts the environment entry that marks a job's processes; runner.command sets it.
const jobMarker = "CHARON_JOB_ID="

// processHasMarker reports whether the process's environment has exactly the entry marker.
// Processes charond may not inspect (another user's, without root) have none that it can see.
func processHasMarker(pid int, marker []byte) bool {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	return err == nil && hasEnvEntry(env, marker)
}

// hasEnvEntry reports whether env, NUL-separated NAME=value entries as in /proc/PID/environ,
// holds entry exactly: not as the end of a longer name, nor the start of a longer value.
func hasEnvEntry(env, entry []byte) bool {
	for len(env) > 0 {
		kv := env
		if i := bytes.IndexByte(env, 0); i >= 0 {
			kv, env = env[:i], env[i+1:]
		} else {
			env = nil
		}
		if bytes.Equal(kv, entry) {
			return true
		}
	}
	return false
}
