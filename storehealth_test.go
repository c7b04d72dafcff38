package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// quickJob is a job document the fake runner finishes at once.
const quickJob = `{"name":"quick","playbook":"- hosts: localhost\n  tasks: []\n","variables":{"fake":"lines","count":1}}`

// postJob submits quickJob and returns the status and the decoded answer.
func postJob(t *testing.T, td *testDaemon) (int, map[string]any) {
	t.Helper()
	return doJSON(t, "POST", td.URL+"/api/v1/jobs", contentType("application/json"), quickJob)
}

// wantRefused checks that a submission gets 503 with a message naming the data dir and want.
func wantRefused(t *testing.T, td *testDaemon, want string) {
	t.Helper()
	code, body := postJob(t, td)
	msg, _ := body["error"].(string)
	if code != http.StatusServiceUnavailable || len(body) != 1 {
		t.Fatalf("submission: %d %v, want 503 {\"error\": ...}", code, body)
	}
	if !strings.Contains(msg, "-data-dir "+td.sched.store.dir) || !strings.Contains(msg, want) {
		t.Errorf("refusal %q does not name the data dir and %q", msg, want)
	}
}

// wantHealth checks /healthz: 200 {"status":"ok"} when healthy, else 503
// {"status":"unhealthy","error":...} with want in the error.
func wantHealth(t *testing.T, td *testDaemon, healthy bool, want string) {
	t.Helper()
	code, body := getJSON(t, td.URL+"/healthz")
	if healthy {
		if code != http.StatusOK || body["status"] != "ok" || len(body) != 1 {
			t.Fatalf("/healthz = %d %v, want 200 {\"status\":\"ok\"}", code, body)
		}
		return
	}
	msg, _ := body["error"].(string)
	if code != http.StatusServiceUnavailable || body["status"] != "unhealthy" || !strings.Contains(msg, want) {
		t.Fatalf("/healthz = %d %v, want 503 unhealthy with an error saying %q", code, body, want)
	}
}

// acceptJob submits quickJob, which must be accepted, and waits for it to complete.
func acceptJob(t *testing.T, td *testDaemon) string {
	t.Helper()
	code, body := postJob(t, td)
	if code != http.StatusCreated {
		t.Fatalf("submission: %d %v, want 201", code, body)
	}
	id := body["id"].(string)
	td.waitStatus(t, id, StatusCompleted)
	return id
}

// wantJobsAfterRestart stops the daemon, starts another on its directories, and checks that
// it has exactly the jobs given, all completed.
func wantJobsAfterRestart(t *testing.T, td *testDaemon, ids ...string) {
	t.Helper()
	td.stop(t)
	b := startTestDaemonIn(t, td.dir)
	for _, id := range ids {
		b.waitStatus(t, id, StatusCompleted)
	}
	if got := len(b.sched.list("", 1000)); got != len(ids) {
		t.Errorf("%d jobs after the restart, want %d", got, len(ids))
	}
}

// TestStoreFaultRefusesJobsUntilRecovered injects each kind of write fault into the journal:
// submissions get 503 naming the data dir and the fault, /healthz says unhealthy, the probe
// keeps it so while the fault lasts and recovers once it is gone, and a restart finds every
// job that was accepted.
func TestStoreFaultRefusesJobsUntilRecovered(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject func(fs *faults)
		want   string
	}{
		{"disk full", func(fs *faults) { fs.writeErr = syscall.ENOSPC }, "no space left on device"},
		{"short write", func(fs *faults) { fs.short = true }, "short write"},
		{"fsync error", func(fs *faults) { fs.syncErr = syscall.EIO }, "input/output error"},
		{"read-only", func(fs *faults) { fs.writeErr, fs.truncErr, fs.openErr = syscall.EROFS, syscall.EROFS, syscall.EROFS }, "read-only file system"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &faults{}
			td := startTestDaemonIn(t, t.TempDir(), withFaults(t, fs))
			before := acceptJob(t, td)
			lastEvent := feedSettled(t, td, 3) // queued, running, completed
			wantHealth(t, td, true, "")

			fs.set(tc.inject)
			wantRefused(t, td, tc.want)
			wantHealth(t, td, false, tc.want)
			td.sched.probeStore()
			wantHealth(t, td, false, "")
			wantRefused(t, td, "")

			fs.clear()
			td.sched.probeStore()
			wantHealth(t, td, true, "")
			after := acceptJob(t, td)
			wantFeedGoesOn(t, td, lastEvent, after)
			wantJobsAfterRestart(t, td, before, after)
		})
	}
}

// TestLostDataDirIsNoticedAndRecovered deletes or replaces the data dir of a running charond.
// Writes through the journal's open descriptor still succeed, so only the check that the
// journal's path still names the file written, and the probe, can notice. Once a data dir is
// back, the probe re-creates what charond needs and rewrites the journal from memory.
func TestLostDataDirIsNoticedAndRecovered(t *testing.T) {
	for _, tc := range []struct {
		name       string
		lose       func(t *testing.T, data string)
		submitNext bool   // submit before the probe runs, else probe first (charond idle)
		whileGone  string // what the probe reports until the test makes a data dir again
	}{
		{"deleted", removeAll, true, "no such file or directory"},
		{"deleted while idle", removeAll, false, "no such file or directory"},
		{"replaced", func(t *testing.T, data string) {
			if err := os.Rename(data, data+".old"); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(data, 0o700); err != nil {
				t.Fatal(err)
			}
		}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			td := startTestDaemonIn(t, t.TempDir())
			data := td.sched.store.dir
			before := acceptJob(t, td)
			lastEvent := feedSettled(t, td, 3) // queued, running, completed

			tc.lose(t, data)
			if tc.submitNext {
				wantRefused(t, td, "")
				wantHealth(t, td, false, "")
			}
			if tc.whileGone != "" {
				td.sched.probeStore()
				wantHealth(t, td, false, tc.whileGone)
				wantRefused(t, td, tc.whileGone)
				// charond does not make a missing data dir itself: it may be a volume that is
				// not mounted. The operator does.
				if err := os.Mkdir(data, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			td.sched.probeStore()
			wantHealth(t, td, true, "")
			for _, sub := range []string{"logs", "work", "jobs.journal"} {
				if _, err := os.Lstat(filepath.Join(data, sub)); err != nil {
					t.Errorf("not re-created: %v", err)
				}
			}
			after := acceptJob(t, td)
			wantFeedGoesOn(t, td, lastEvent, after)
			wantJobsAfterRestart(t, td, before, after)
		})
	}
}

// feedSettled waits until the all-jobs feed holds n events, the changes so far, and returns n.
func feedSettled(t *testing.T, td *testDaemon, n int) int {
	t.Helper()
	waitFor(t, fmt.Sprintf("the feed to hold %d events", n), func() (bool, string) {
		_, last := td.sched.store.feed.kept()
		return last == n, fmt.Sprintf("%d events", last)
	})
	return n
}

// wantFeedGoesOn checks that the all-jobs feed, taken back into use, numbers on after
// lastEvent, the last id before the fault: the job accepted since is announced after it.
func wantFeedGoesOn(t *testing.T, td *testDaemon, lastEvent int, id string) {
	t.Helper()
	_, events := openStream(t, td.URL+"/api/v1/events/stream", map[string]string{"Last-Event-ID": strconv.Itoa(lastEvent)})
	for got := range events {
		if got.Event != "job_event" {
			continue
		}
		if d := sseData(t, got); got.ID != strconv.Itoa(lastEvent+1) || d["job_id"] != id || d["status"] != "queued" {
			t.Errorf("after the recovery the feed goes on with %s %v, want id %d: job %s queued", got.ID, d, lastEvent+1, id)
		}
		break
	}
	f := td.sched.store.feed.log
	f.mu.Lock()
	path := f.path
	f.mu.Unlock()
	if raw, err := os.ReadFile(path); err != nil || !strings.Contains(string(raw), `"job_id":"`+id+`","status":"queued"`) {
		t.Errorf("the feed's file %s does not hold the announcement (%v):\n%s", path, err, raw)
	}
}

func removeAll(t *testing.T, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
}

// TestReadOnlyDataDir makes the data dir read-only with a read-only bind mount of it onto
// itself, which stops root too (chmod does not). The journal's descriptor, opened before, can
// still write; the probe's new file cannot, and that is what marks the store unhealthy.
func TestReadOnlyDataDir(t *testing.T) {
	td := startTestDaemonIn(t, t.TempDir())
	data := td.sched.store.dir
	before := acceptJob(t, td)
	if err := syscall.Mount(data, data, "", syscall.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind-mount the data dir (%v): this test needs root and mount(2)", err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := syscall.Unmount(data, 0); err != nil {
				t.Fatal(err)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount) // before the daemon stops: cleanups run last first
	if err := syscall.Mount("", data, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Skipf("cannot remount the bind mount read-only (%v)", err)
	}
	td.sched.probeStore()
	wantHealth(t, td, false, "read-only file system")
	wantRefused(t, td, "read-only file system")

	unmount()
	td.sched.probeStore()
	wantHealth(t, td, true, "")
	after := acceptJob(t, td)
	wantJobsAfterRestart(t, td, before, after)
}

// TestStoreProbeRunsUntilStopped runs the probe goroutine as start does: it notices a
// deleted data dir and recovers once it is back, by itself, and it ends when stopped.
func TestStoreProbeRunsUntilStopped(t *testing.T) {
	td := startTestDaemonIn(t, t.TempDir())
	data := td.sched.store.dir
	stop := td.sched.startStoreProbe(10 * time.Millisecond)
	t.Cleanup(stop) // runs before the daemon stops
	removeAll(t, data)
	waitFor(t, "/healthz to say unhealthy", func() (bool, string) {
		code, body := getJSON(t, td.URL+"/healthz")
		return code == http.StatusServiceUnavailable, fmt.Sprint(code, body)
	})
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/healthz to say ok", func() (bool, string) {
		code, body := getJSON(t, td.URL+"/healthz")
		return code == http.StatusOK, fmt.Sprint(code, body)
	})
	stop()
	stop() // a second stop is harmless
	removeAll(t, filepath.Join(data, "work"))
	time.Sleep(50 * time.Millisecond)
	wantHealth(t, td, true, "") // nothing probes any more
	if err := os.Mkdir(filepath.Join(data, "work"), 0o700); err != nil {
		t.Fatal(err)
	}
}

// TestFullTmpfsLosesNoAcknowledgedJob runs charond on a tiny tmpfs and fills it: journal
// appends fail part-way (tmpfs takes the bytes that fit in the last page), submissions are
// refused, and once space is freed every job that was answered 201, before the disk filled
// and after, is there after a restart.
func TestFullTmpfsLosesNoAcknowledgedJob(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", data, "tmpfs", 0, "size=512k,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): this test needs root and mount(2)", err)
	}
	t.Cleanup(func() { syscall.Unmount(data, syscall.MNT_DETACH) }) // after the daemons stop

	td := startTestDaemonIn(t, dir)
	// The worker is held, so the jobs stay queued and nothing but the journal is written.
	blocker := td.submitFake(t, "blocker", 15, map[string]any{"fake": "sleep", "seconds": 60})
	waitLogLines(t, td, blocker, 1)
	filler := filepath.Join(data, "filler")
	fillDisk(t, filler)

	var accepted []string
	for refused := false; !refused; {
		code, body := postJob(t, td)
		switch {
		case code == http.StatusCreated:
			accepted = append(accepted, body["id"].(string))
		case code == http.StatusServiceUnavailable && strings.Contains(body["error"].(string), "no space left on device"):
			refused = true
		default:
			t.Fatalf("submission on a full disk: %d %v", code, body)
		}
		if len(accepted) > 2000 {
			t.Fatal("the disk never filled")
		}
	}
	// Before anything rewrites it, the journal must end with a whole record.
	raw, err := os.ReadFile(filepath.Join(data, "jobs.journal"))
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.SplitAfter(string(raw), "\n") {
		if line != "" && (!strings.HasSuffix(line, "\n") || !json.Valid([]byte(line))) {
			t.Fatalf("the failed append left a torn record, line %d: %.80q", i+1, line)
		}
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	td.sched.probeStore()
	wantHealth(t, td, true, "")
	code, body := postJob(t, td)
	if code != http.StatusCreated {
		t.Fatalf("submission after space was freed: %d %v", code, body)
	}
	accepted = append(accepted, body["id"].(string))
	t.Logf("%d jobs accepted on the nearly full disk", len(accepted)-1)

	td.stop(t)
	b := startTestDaemonIn(t, dir)
	for _, id := range accepted {
		if code, job := getJSON(t, b.URL+"/api/v1/jobs/"+id); code != http.StatusOK {
			t.Errorf("job %s, answered 201, is lost after the restart: %d %v", id, code, job)
		}
	}
}

// fillDisk writes to path until the file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}
