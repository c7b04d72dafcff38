package main

import (
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFailedStartStartsNothing starts charond on a data dir holding a queued job, with a
// setting that only the start can find wrong. The start must fail naming the setting, before
// "charond listening" is logged and before any worker, server or background work starts:
// the job is still queued, never run, for the next start.
func TestFailedStartStartsNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name  string
		flags func(t *testing.T, dir string) []string
		want  []string // in the error
	}{
		{"missing -tls-key", func(t *testing.T, dir string) []string {
			cert, _, _ := makeCert(t, dir)
			return []string{"-tls-cert", cert, "-tls-key", filepath.Join(dir, "missing.pem")}
		}, []string{"-tls-key", "missing.pem", "no such file"}},
		{"missing -tls-cert", func(t *testing.T, dir string) []string {
			_, key, _ := makeCert(t, dir)
			return []string{"-tls-cert", filepath.Join(dir, "missing.pem"), "-tls-key", key}
		}, []string{"-tls-cert", "missing.pem", "no such file"}},
		{"key of another certificate", func(t *testing.T, dir string) []string {
			cert, _, _ := makeCert(t, dir)
			other := filepath.Join(dir, "other")
			if err := os.Mkdir(other, 0o700); err != nil {
				t.Fatal(err)
			}
			_, key, _ := makeCert(t, other)
			return []string{"-tls-cert", cert, "-tls-key", key}
		}, []string{"-tls-cert", "-tls-key", "private key does not match"}},
		{"address in use", func(t *testing.T, dir string) []string {
			return []string{"-addr", busy.Addr().String()}
		}, []string{"listen on " + busy.Addr().String(), "address already in use"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			id := queuedJobIn(t, dir)

			var log syncBuffer
			d, err := tryStartDaemon(t, dir, slog.New(slog.NewTextHandler(&log, nil)), tc.flags(t, dir))
			if err == nil {
				d.stop()
				t.Fatal("charond started")
			}
			if d != nil && (d.httpSrv != nil || d.served != nil || d.stopBackground != nil || d.sched.startedWorkers() != 0) {
				t.Error("the failed start started the server, its background work or workers")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("start error %q does not say %q", err, want)
				}
			}
			if strings.Contains(log.String(), "charond listening") {
				t.Errorf("charond logged that it listens, then failed to start:\n%s", log.String())
			}
			if got, want := restoredStatus(t, dir, id), StatusQueued; got != want {
				t.Errorf("the queued job is %s after the failed start, want %s", got, want)
			}
		})
	}
}

// queuedJobIn leaves dir/data with a job that is queued, on disk, for the next start: it
// submits the job behind one that holds the only worker, then stops the daemon.
func queuedJobIn(t *testing.T, dir string) string {
	t.Helper()
	td := startTestDaemonIn(t, dir)
	blocker := td.submitFake(t, "blocker", 5, map[string]any{"fake": "sleep", "seconds": 60})
	waitLogLines(t, td, blocker, 1)
	id := td.submitFake(t, "waiting", 5, map[string]any{"fake": "lines", "count": 1})
	td.stop(t)
	return id
}

// restoredStatus is the status the job has when a daemon restores it from dir/data. The
// daemon is made and closed, never started, so nothing runs the job.
func restoredStatus(t *testing.T, dir, id string) Status {
	t.Helper()
	cfg, err := parseFlags([]string{"-playbook-dir", filepath.Join(dir, "playbooks"), "-data-dir", filepath.Join(dir, "data")},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.sched.close()
	job, err := d.sched.get(id)
	if err != nil {
		t.Fatal(err)
	}
	return job.Status()
}
