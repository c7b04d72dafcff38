package main

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestReadBuildInfo(t *testing.T) {
	stamped := func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261202051747-8d3177681a65+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "8d3177681a65ae41f9a6599727e1620c6a38f3c9"},
				{Key: "vcs.time", Value: "2026-12-02T05:17:47Z"}, {Key: "vcs.modified", Value: "true"}}}, true
	}
	devel := func() (*debug.BuildInfo, bool) { return &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true }
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	for _, tc := range []struct {
		name     string
		override string
		read     func() (*debug.BuildInfo, bool)
		want     string
	}{
		{"stamped", "", stamped, "0.0.0-20261202051747-8d3177681a65+dirty (rev 8d3177681a65, 2026-12-02T05:17:47Z, modified, go1.26.8)"},
		{"release", "1.2.0", stamped, "1.2.0 (rev 8d3177681a65, 2026-12-02T05:17:47Z, modified, go1.26.8)"},
		{"no vcs", "", devel, "devel"},
		{"no build info", "", none, "devel"},
		{"no build info, release", "1.2.0", none, "1.2.0"},
	} {
		if got := readBuildInfo(tc.override, tc.read).String(); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestVersionFromTheToolchain builds charond as an operator would, from this checkout, and
// checks that -version and /api/v1/info report the revision the toolchain stamped, and the
// version -ldflags -X sets for a release.
func TestVersionFromTheToolchain(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: not building charond")
	}
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): the toolchain stamps no revision", err)
	}
	bin := filepath.Join(t.TempDir(), "charond")
	build := exec.Command("go", "build", "-buildvcs=true", "-ldflags", "-X main.version=9.8.7", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-version").CombinedOutput()
	want := "charond 9.8.7 (rev " + strings.TrimSpace(string(rev))[:12] + ", "
	if err != nil || !strings.HasPrefix(string(out), want) {
		t.Errorf("-version printed %q (%v), want it to start %q", out, err, want)
	}
	if code, info := getJSON(t, startTestDaemon(t).URL+"/api/v1/info"); code != http.StatusOK || info["version"] != thisBuild.Version || info["build"] == nil {
		t.Errorf("/api/v1/info: %d version %v build %v", code, info["version"], info["build"])
	}
}

// TestReadyz is 200 only when charond can take and run jobs, and 503 saying why otherwise:
// ansible-playbook missing, the store failing, shutting down.
func TestReadyz(t *testing.T) {
	td := startTestDaemon(t)
	if code, body := getJSON(t, td.URL+"/readyz"); code != http.StatusOK || body["status"] != "ready" {
		t.Errorf("/readyz = %d %v, want 200 ready", code, body)
	}
	wantNotReady := func(t *testing.T, url, want string) {
		t.Helper()
		code, body := getJSON(t, url+"/readyz")
		if msg, _ := body["error"].(string); code != http.StatusServiceUnavailable || body["status"] != "not ready" || !strings.Contains(msg, want) {
			t.Errorf("/readyz = %d %v, want 503 saying %q", code, body, want)
		}
	}

	t.Run("no ansible-playbook", func(t *testing.T) {
		d, err := tryStartDaemon(t, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)), []string{"-ansible-playbook", "/nonexistent/ansible-playbook"})
		if err != nil {
			t.Fatal(err)
		}
		defer d.stop()
		wantNotReady(t, "http://"+d.addr, "ansible-playbook cannot run")
	})
	t.Run("store fault", func(t *testing.T) {
		td := startTestDaemon(t)
		td.sched.store.noteFault(errors.New("no space left on device"))
		wantNotReady(t, td.URL, "no space left on device")
	})
	t.Run("shutting down", func(t *testing.T) {
		d, err := tryStartDaemon(t, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)), []string{"-drain-timeout", "30s"})
		if err != nil {
			t.Fatal(err)
		}
		td := &testDaemon{daemon: d, URL: "http://" + d.addr}
		gate := filepath.Join(t.TempDir(), "gate")
		id := td.submitFake(t, "draining", 5, map[string]any{"fake": "gate", "count": 1, "gate": gate})
		waitLogLines(t, td, id, 1)
		stopped := make(chan error, 1)
		go func() { stopped <- d.stop() }()
		waitFor(t, "the scheduler to close", func() (bool, string) { return d.sched.isClosed(), "" })
		wantNotReady(t, td.URL, "shutting down")
		if err := os.WriteFile(gate, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-stopped:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("charond did not stop once its job ended")
		}
	})
}
