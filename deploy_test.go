package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool returns the path of a command a deployment test checks with, or skips (fails
// under CI's CHARON_REQUIRE_ANSIBLE=1, whose machines install it from Debian).
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CHARON_REQUIRE_ANSIBLE") == "1" {
		t.Fatalf("%s is required (apt-get install %s)", name, pkg)
	}
	t.Skipf("%s not found; apt-get install %s to run this test", name, pkg)
	return ""
}

// TestSystemdUnit checks deploy/charond.service with systemd's own systemd-analyze verify,
// which must find nothing to say. Only the binary's path is changed, to a charond just built:
// verify checks that ExecStart's program exists.
func TestSystemdUnit(t *testing.T) {
	analyze := needTool(t, "systemd-analyze", "systemd")
	unit, err := os.ReadFile("deploy/charond.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "charond")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const installed = "/usr/local/bin/charond"
	if !strings.Contains(string(unit), "ExecStart="+installed+" ") {
		t.Fatalf("the unit does not start %s", installed)
	}
	path := filepath.Join(dir, "charond.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), installed, bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, want := range []string{"StateDirectory=charon", "Delegate=yes", "KillMode=mixed", "NoNewPrivileges=yes",
		"ProtectSystem=strict", "PrivateTmp=yes", "LoadCredential=token:", "CHARON_TOKEN_FILE=%d/token"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	// The flags are charond's, and the stop timeout covers the drain and the kill grace.
	var args []string
	var stopTimeout time.Duration
	for _, line := range strings.Split(string(unit), "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecStart="+installed); ok {
			args = strings.Fields(rest)
		}
		if v, ok := strings.CutPrefix(line, "TimeoutStopSec="); ok {
			stopTimeout, _ = time.ParseDuration(strings.Replace(v, "min", "m", 1))
		}
	}
	cfg, err := parseFlags(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("ExecStart's flags %q: %v", args, err)
	}
	if need := cfg.DrainTimeout + cfg.KillGrace + 3*time.Second; stopTimeout < need {
		t.Errorf("TimeoutStopSec %v is shorter than -drain-timeout + -kill-grace + charond's 3 s: %v", stopTimeout, need)
	}
	// How exposed the service is, by systemd's own measure, for the README.
	if out, err := exec.Command(analyze, "security", "--offline=yes", path).CombinedOutput(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Logf("systemd-analyze security: %s", lines[len(lines)-1])
	}
}
