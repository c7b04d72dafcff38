package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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

// TestNginxProxy puts a real nginx, configured with deploy/nginx.conf, in front of charond on
// loopback: a stream's lines come through as they are produced, not at the end; a reconnect
// resumes; the page loads; and what the page does, a submission and a cancel sent as a
// browser sends them, works through the proxy. Only the addresses are changed.
func TestNginxProxy(t *testing.T) {
	td := startTestDaemon(t)
	proxy := startNginx(t, td)

	// A stream through the proxy: the first lines arrive while the job waits at its gate.
	id, open := gatedJob(t, td, 3)
	_, events := openStream(t, proxy+"/api/v1/jobs/"+id+"/logs/stream", nil)
	var got []string
	waitFor(t, "the lines printed so far, through nginx, before the job goes on", func() (bool, string) {
		for len(got) < 3 {
			select {
			case ev := <-events:
				if ev.Event == "log" {
					got = append(got, ev.ID)
				}
			default:
				return false, strings.Join(got, ",")
			}
		}
		return true, ""
	})
	open()
	rest := collect(t, events)
	if last := rest[len(rest)-1]; last.Event != "completed" || last.ID != "6" {
		t.Errorf("the stream through nginx ended with %+v, want completed at 6", last)
	}
	// A reconnect through the proxy resumes after Last-Event-ID.
	_, events = openStream(t, proxy+"/api/v1/jobs/"+id+"/logs/stream", map[string]string{"Last-Event-ID": "4"})
	if lines := logLines(t, collectCompleted(t, events)[1:], 5); strings.Join(lines, ",") != "line 5,line 6" {
		t.Errorf("resumed through nginx: %v, want lines 5 and 6", lines)
	}

	// The page, and its actions, as a browser on the proxy's origin sends them.
	if resp, body := do(t, "GET", proxy+"/", nil, ""); resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("the page through nginx: %d %s %.200s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	browser := map[string]string{"Origin": proxy, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/x-yaml"}
	resp, body := do(t, "POST", proxy+"/api/v1/jobs", browser,
		"name: through nginx\nplaybook: |\n  - hosts: localhost\n    tasks: []\nvariables: {fake: sleep, seconds: 60}\n")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("a submission through nginx: %d %s", resp.StatusCode, body)
	}
	var job struct{ ID string }
	json.Unmarshal(body, &job)
	waitLogLines(t, td, job.ID, 1)
	if resp, body := do(t, "POST", proxy+"/api/v1/jobs/"+job.ID+"/cancel", browser, ""); resp.StatusCode != http.StatusAccepted {
		t.Errorf("a cancel through nginx: %d %s", resp.StatusCode, body)
	}
	td.waitStatus(t, job.ID, StatusCancelled)
}

// startNginx runs a real nginx on loopback with deploy/nginx.conf in front of td, only the
// addresses changed, and returns its URL. It is stopped when the test ends.
func startNginx(t *testing.T, td *testDaemon) string {
	t.Helper()
	nginx := needTool(t, "nginx", "nginx")
	conf, err := os.ReadFile("deploy/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	server := strings.NewReplacer("server 127.0.0.1:8080;", "server "+td.addr+";", "listen 80;", "listen 127.0.0.1:"+port+";").Replace(string(conf))
	if server == string(conf) {
		t.Fatal("deploy/nginx.conf no longer has the addresses the test replaces")
	}
	dir := t.TempDir()
	for _, sub := range []string{"logs", "tmp"} {
		os.Mkdir(filepath.Join(dir, sub), 0o755)
	}
	// The http block around it, as nginx.conf has on Debian, with every file in the test's dir.
	main := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    include %[1]s/charon.conf;
}
`, dir)
	os.WriteFile(filepath.Join(dir, "charon.conf"), []byte(server), 0o644)
	os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644)
	if out, err := exec.Command(nginx, "-t", "-p", dir, "-c", filepath.Join(dir, "nginx.conf")).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off; master_process off;")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	proxy := "http://127.0.0.1:" + port
	waitFor(t, "nginx to listen", func() (bool, string) {
		resp, err := http.Get(proxy + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return proxy
}

// freePort is a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// TestDashboardThroughNginx drives the page in Chromium through nginx, configured as the
// README says: a submission from its editor and a cancel and relaunch from a job's page work
// through the proxy, the page's Origin matching the Host nginx passes on.
func TestDashboardThroughNginx(t *testing.T) {
	e := findE2E(t)
	td := dashboardDaemon(t)
	proxy := startNginx(t, td)
	e.run(t, "submit", e2eTimeout, map[string]string{"CHARON_URL": proxy})
	id := td.submitFake(t, "cancel me through nginx", 5, map[string]any{"fake": "sleep", "seconds": 60})
	td.waitStatus(t, id, StatusRunning)
	e.run(t, "actions", e2eTimeout, map[string]string{"CHARON_URL": proxy, "CHARON_JOB_ID": id})
}
