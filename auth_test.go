package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func withToken(token string) testOption { return func(d *daemon) { d.srv.token = token } }

func TestTokenGuardsEveryAPIRoute(t *testing.T) {
	td := startTestDaemon(t, withToken("s3cret-token"))
	// A finished job to ask about, submitted with the token.
	job := td.sched
	spec := &JobSpec{Name: "x", Playbook: "- hosts: all\n", Inventory: []string{"localhost"}, Variables: map[string]any{"fake": "lines", "count": 1}, Priority: 5, Timeout: time.Minute}
	j, _, err := job.submit(spec)
	if err != nil {
		t.Fatal(err)
	}
	id := j.ID
	good := map[string]string{"Authorization": "Bearer s3cret-token"}
	routes := []struct{ method, path string }{
		{"GET", "/api/v1/jobs"}, {"POST", "/api/v1/jobs"}, {"GET", "/api/v1/info"},
		{"GET", "/api/v1/jobs/" + id}, {"DELETE", "/api/v1/jobs/" + id}, {"GET", "/api/v1/jobs/" + id + "/logs"},
		{"GET", "/api/v1/jobs/" + id + "/events"}, {"POST", "/api/v1/jobs/" + id + "/cancel"},
		{"GET", "/api/v1/jobs/" + id + "/logs/stream"}, {"GET", "/api/v1/jobs/" + id + "/events/stream"},
		{"POST", "/api/v1/jobs/" + id + "/relaunch"}, {"GET", "/api/v1/events/stream"},
		{"GET", "/api/v1/jobs/" + id + "/logs/lines"}, {"GET", "/api/v1/jobs/" + id + "/logs/search?q=x"}, {"GET", "/metrics"},
		{"GET", "/api/v1/nope"},
	}
	for _, rt := range routes {
		for name, h := range map[string]map[string]string{
			"no token":    nil,
			"wrong token": {"Authorization": "Bearer s3cret-tokeN"},
			"basic auth":  {"Authorization": "Basic czNjcmV0LXRva2Vu"},
			"empty":       {"Authorization": "Bearer "},
		} {
			resp, body := do(t, rt.method, td.URL+rt.path, h, "")
			if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="charond"` || !bytes.Contains(body, []byte(`"error"`)) {
				t.Errorf("%s %s with %s: %d %q %s, want 401 with WWW-Authenticate: Bearer", rt.method, rt.path, name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
			}
		}
	}
	td.waitStatus2(t, id, good)
	for _, rt := range []string{"/api/v1/jobs", "/api/v1/jobs/" + id, "/api/v1/info"} {
		if resp, body := do(t, "GET", td.URL+rt, good, ""); resp.StatusCode != 200 {
			t.Errorf("GET %s with the token: %d %s", rt, resp.StatusCode, body)
		}
	}
	for _, open := range []string{"/healthz", "/readyz"} {
		if resp, _ := do(t, "GET", td.URL+open, nil, ""); resp.StatusCode != 200 {
			t.Errorf("%s without a token: %d, want 200", open, resp.StatusCode)
		}
	}
	// EventSource cannot send headers: the stream routes, and only they, take ?access_token=.
	for _, path := range []string{"/logs/stream", "/events/stream"} {
		if resp, body := do(t, "GET", td.URL+"/api/v1/jobs/"+id+path+"?access_token=s3cret-token", nil, ""); resp.StatusCode != 200 || !bytes.Contains(body, []byte("event: completed")) {
			t.Errorf("%s with access_token: %d", path, resp.StatusCode)
		}
		if resp, _ := do(t, "GET", td.URL+"/api/v1/jobs/"+id+path+"?access_token=wrong", nil, ""); resp.StatusCode != 401 {
			t.Errorf("%s with a wrong access_token: %d, want 401", path, resp.StatusCode)
		}
	}
	if resp, _ := do(t, "GET", td.URL+"/api/v1/jobs/"+id+"?access_token=s3cret-token", nil, ""); resp.StatusCode != 401 {
		t.Errorf("access_token on a non-stream route: %d, want 401", resp.StatusCode)
	}
}

// waitStatus2 waits for a job to end, asking with headers.
func (td *testDaemon) waitStatus2(t *testing.T, id string, headers map[string]string) {
	t.Helper()
	waitFor(t, "job "+id+" to complete", func() (bool, string) {
		_, body := do(t, "GET", td.URL+"/api/v1/jobs/"+id, headers, "")
		return bytes.Contains(body, []byte(`"status":"completed"`)), string(body)
	})
}

func TestRefusesNetworkAddressWithoutToken(t *testing.T) {
	t.Setenv("CHARON_TOKEN", "")
	t.Setenv("CHARON_TOKEN_FILE", "")
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0"} {
		err := run([]string{"-addr", addr, "-data-dir", t.TempDir(), "-playbook-dir", t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "without a token") || !strings.Contains(err.Error(), "-insecure-no-auth") || strings.Contains(err.Error(), "\n") {
			t.Errorf("run on %s without a token: %v, want one line refusing and naming the way out", addr, err)
		}
	}
	for addr, want := range map[string]bool{"127.0.0.1:8080": true, "localhost:80": true, "[::1]:1": true, "127.9.9.9:1": true, "0.0.0.0:1": false, ":1": false, "host:1": false} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestLoadToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("  from-file\n"), 0o600)
	if tok, err := loadToken("", file); err != nil || tok != "from-file" {
		t.Errorf("token from file = %q, %v", tok, err)
	}
	if _, err := loadToken("a", file); err == nil {
		t.Error("both -token and -token-file accepted")
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	if _, err := loadToken("", empty); err == nil {
		t.Error("an empty token file accepted")
	}
}

// TestTLS serves HTTPS with a certificate made for the test.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := makeCert(t, dir)
	addr := serveDaemon(t, dir, "-tls-cert", certFile, "-tls-key", keyFile)

	// A Transport with its own TLS config speaks HTTP/2 only when told to try.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Errorf("HTTPS healthz: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	if got, want := resp.Proto, "HTTP/2.0"; got != want {
		t.Errorf("HTTPS healthz protocol = %s, want %s", got, want)
	}
	if _, err := parseFlags([]string{"-tls-cert", certFile}, func(string) string { return "" }, &bytes.Buffer{}); err == nil {
		t.Error("-tls-cert without -tls-key accepted")
	}
}

// serveDaemon runs charond, started and stopped by its own start and stop, on a loopback port
// with a stub runner and the given extra flags, until the test ends. It returns the address.
func serveDaemon(t *testing.T, dir string, flags ...string) string {
	t.Helper()
	args := append([]string{"-addr", "127.0.0.1:0", "-data-dir", filepath.Join(dir, "data"), "-playbook-dir", dir,
		"-ansible-playbook", "/bin/true"}, flags...)
	cfg, err := parseFlags(args, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(cfg, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return d.addr
}

func makeCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "charond test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestCORSNeverAllowsCredentials checks preflights pass without a token and that no answer
// ever allows credentials, with '*' or with a listed origin.
func TestCORSNeverAllowsCredentials(t *testing.T) {
	for _, origins := range [][]string{{"*"}, {"http://app.test"}} {
		td := startTestDaemon(t, withToken("tok"), func(d *daemon) { d.srv.corsOrigins = origins })
		preflight, _ := do(t, "OPTIONS", td.URL+"/api/v1/jobs", map[string]string{
			"Origin": "http://app.test", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}, "")
		hdr := preflight.Header
		if preflight.StatusCode != 204 || hdr.Get("Access-Control-Allow-Origin") == "" || !strings.Contains(hdr.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Errorf("%v: preflight %d %v", origins, preflight.StatusCode, hdr)
		}
		read, _ := do(t, "GET", td.URL+"/api/v1/jobs", map[string]string{"Origin": "http://app.test", "Authorization": "Bearer tok"}, "")
		for _, h := range []http.Header{hdr, read.Header} {
			if h.Get("Access-Control-Allow-Credentials") != "" {
				t.Errorf("%v: credentials allowed: %v", origins, h)
			}
		}
	}
}

// TestJobEnvironmentIsAllowListed checks that charond's own secrets never reach a playbook.
func TestJobEnvironmentIsAllowListed(t *testing.T) {
	t.Setenv("CHARON_TOKEN", "token-that-must-not-leak")
	t.Setenv("UNRELATED_SECRET", "nope")
	t.Setenv("ANSIBLE_STRATEGY", "linear")
	t.Setenv("LC_ALL", "C.UTF-8")
	t.Setenv("TMPDIR", os.TempDir())
	td := startTestDaemon(t)
	id := td.submitFake(t, "env", 5, map[string]any{"fake": "envdump"})
	td.waitStatus(t, id, StatusCompleted)
	text := get(t, td.URL+"/api/v1/jobs/"+id+"/logs")
	names := map[string]bool{}
	for _, name := range strings.Fields(string(text)) {
		names[name] = true
	}
	for _, want := range []string{"PATH", "TMPDIR", "ANSIBLE_STRATEGY", "LC_ALL", "PYTHONUNBUFFERED", "CHARON_JOB_ID", "CHARON_EVENTS_FD"} {
		if !names[want] {
			t.Errorf("job environment lacks %s: %v", want, names)
		}
	}
	for _, banned := range []string{"CHARON_TOKEN", "UNRELATED_SECRET"} {
		if names[banned] {
			t.Errorf("job environment holds %s", banned)
		}
	}
}

// TestHostileFieldsStayData submits a job whose every field looks like an option or shell
// text: the command line must stay exactly -i INVENTORY -e @VARS PLAYBOOK, and the values
// must reach the inventory and variables files as plain data.
func TestHostileFieldsStayData(t *testing.T) {
	td := startTestDaemon(t)
	doc, _ := json.Marshal(map[string]any{
		"name":     "--become; rm -rf / `id` $(id)",
		"playbook": "- hosts: all\n",
		// Host names that look like shell text are refused (TestHostNamesAreData); these are
		// names still, of the odd kinds Ansible accepts.
		"inventory": []string{"web-1.example.com", "db_2", "fe80::1"},
		"variables": map[string]any{"fake": "report", "x": "--extra-vars=@/etc/shadow", "y": "$(reboot)"},
	})
	id := td.submit(t, "application/json", string(doc), 201)["id"].(string)
	td.waitStatus(t, id, StatusCompleted)
	text := get(t, td.URL+"/api/v1/jobs/"+id+"/logs")
	var args []string
	for _, l := range strings.Split(string(text), "\n") {
		if a, ok := strings.CutPrefix(l, "args="); ok {
			args = strings.Fields(a)
		}
	}
	if len(args) != 5 || args[0] != "-i" || !strings.HasSuffix(args[1], "/inventory.json") || args[2] != "-e" ||
		!strings.HasPrefix(args[3], "@") || !strings.HasSuffix(args[4], "/playbook.yml") {
		t.Errorf("command line = %q, want -i INVENTORY -e @VARS PLAYBOOK", args)
	}
}

// TestSecretsStayOutOfCharondLog runs a job whose secret variable appears in its failure: the
// daemon's own log must never hold the value.
func TestSecretsStayOutOfCharondLog(t *testing.T) {
	var buf syncBuffer
	td := startTestDaemon(t, func(d *daemon) {
		l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		d.log, d.sched.log, d.srv.log, d.srv.stream.Log = l, l, l, l
	})
	doc, _ := json.Marshal(map[string]any{"name": "leaky", "playbook": "- hosts: all\n",
		"variables": map[string]any{"fake": "exit", "code": 2, "api_token": "tok-LEAK-123"}})
	id := td.submit(t, "application/json", string(doc), 201)["id"].(string)
	job := td.waitStatus(t, id, StatusFailed)
	if job["variables"].(map[string]any)["api_token"] != "********" {
		t.Errorf("variables = %v", job["variables"])
	}
	td.stop(t)
	if strings.Contains(buf.String(), "tok-LEAK-123") {
		t.Errorf("charond's log holds the secret:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "job ended") {
		t.Errorf("the log buffer caught nothing: %q", buf.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestQueueAndStreamLimits(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) { d.sched.maxQueue = 2; d.srv.maxStreams = 1 })
	running := td.submitFake(t, "running", 5, map[string]any{"fake": "sleep", "seconds": 60})
	waitLogLines(t, td, running, 1)
	td.submitFake(t, "q1", 5, map[string]any{"fake": "lines"})
	td.submitFake(t, "q2", 5, map[string]any{"fake": "lines"})
	resp, body := do(t, "POST", td.URL+"/api/v1/jobs", contentType("application/json"), `{"name":"q3","playbook":"- hosts: all\n"}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !bytes.Contains(body, []byte("-max-queue")) {
		t.Errorf("submission beyond -max-queue: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	first, _ := openStream(t, td.URL+"/api/v1/jobs/"+running+"/logs/stream", nil)
	if first.StatusCode != 200 {
		t.Fatalf("first stream: %d", first.StatusCode)
	}
	resp, msg := do(t, "GET", td.URL+"/api/v1/jobs/"+running+"/events/stream", nil, "")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !bytes.Contains(msg, []byte("-max-streams")) {
		t.Errorf("stream beyond -max-streams: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), msg)
	}
}

// TestServerLimits runs the real HTTP server: a client that never finishes its headers is cut
// off after -read-header-timeout, an idle keep-alive connection after -idle-timeout, and a
// header block over -max-header-bytes is refused.
func TestServerLimits(t *testing.T) {
	dir := t.TempDir()
	addr := serveDaemon(t, dir, "-read-header-timeout", "300ms", "-idle-timeout", "300ms", "-max-header-bytes", "4096")

	closedWithin := func(conn net.Conn, d time.Duration) bool {
		conn.SetReadDeadline(time.Now().Add(d))
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				var ne net.Error
				return !(errors.As(err, &ne) && ne.Timeout())
			}
		}
	}
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")) // and never the blank line
	if !closedWithin(slow, 3*time.Second) {
		t.Error("a client that never finished its headers was not cut off")
	}

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	if !closedWithin(idle, 3*time.Second) {
		t.Error("an idle keep-alive connection was not closed")
	}

	resp, _ := do(t, "GET", "http://"+addr+"/healthz", map[string]string{"X-Big": strings.Repeat("a", 16<<10)}, "")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 16 KiB header: %d, want 431", resp.StatusCode)
	}
}
