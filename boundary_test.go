package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// This file tries charond's HTTP boundary as a hostile web page would: submitting or
// cancelling from another origin, reaching charond through a rebound DNS name, trickling
// bodies and oversized headers; and checks the token rules.

const boundaryJob = "name: web\nplaybook: |\n  - hosts: localhost\n    tasks: []\nvariables: {fake: lines, count: 1}\n"

func TestSubmissionNeedsAJobContentType(t *testing.T) {
	td := startTestDaemon(t)
	for _, ct := range []string{"", "text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"} {
		resp, body := do(t, "POST", td.URL+"/api/v1/jobs", map[string]string{"Content-Type": ct}, boundaryJob)
		if resp.StatusCode != http.StatusUnsupportedMediaType || !bytes.Contains(body, []byte("application/x-yaml")) {
			t.Errorf("Content-Type %q: %d %s, want 415 naming the accepted types", ct, resp.StatusCode, body)
		}
	}
	if n := len(td.sched.list("", 100)); n != 0 {
		t.Errorf("%d jobs were created, want none", n)
	}
}

func TestCrossSiteRequestsAreRefused(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) { d.srv.corsOrigins = []string{"http://trusted.test"} })
	yaml := map[string]string{"Content-Type": "application/x-yaml"}
	with := func(extra map[string]string) map[string]string {
		h := map[string]string{"Content-Type": "application/x-yaml"}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	refused := []struct {
		name    string
		headers map[string]string
	}{
		{"another origin", with(map[string]string{"Origin": "http://evil.test"})},
		{"another port of localhost", with(map[string]string{"Origin": "http://localhost:3000"})},
		{"a sandboxed page", with(map[string]string{"Origin": "null"})},
		{"cross-site without Origin", with(map[string]string{"Sec-Fetch-Site": "cross-site"})},
		{"same-site without Origin", with(map[string]string{"Sec-Fetch-Site": "same-site"})},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, "POST", td.URL+"/api/v1/jobs", tt.headers, boundaryJob)
			if resp.StatusCode != http.StatusForbidden || !bytes.Contains(body, []byte("refused")) {
				t.Errorf("submit: %d %s, want 403", resp.StatusCode, body)
			}
		})
	}
	if n := len(td.sched.list("", 100)); n != 0 {
		t.Fatalf("%d jobs were created by cross-site requests, want none", n)
	}

	// What curl, Python and the client send, the page's own origin, and an allowed origin.
	for _, h := range []map[string]string{yaml, with(map[string]string{"Origin": td.URL}),
		with(map[string]string{"Origin": "http://trusted.test"}), with(map[string]string{"Sec-Fetch-Site": "same-origin"})} {
		if resp, body := do(t, "POST", td.URL+"/api/v1/jobs", h, boundaryJob); resp.StatusCode != http.StatusCreated {
			t.Errorf("submit with %v: %d %s, want 201", h, resp.StatusCode, body)
		}
	}

	id, release := apiBlockWorker(t, td)
	defer release()
	evil := map[string]string{"Origin": "http://evil.test"}
	if resp, body := do(t, "POST", td.URL+"/api/v1/jobs/"+id+"/cancel", evil, ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cancel from another origin: %d %s, want 403", resp.StatusCode, body)
	}
	if resp, body := do(t, "DELETE", td.URL+"/api/v1/jobs/"+id, evil, ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("delete from another origin: %d %s, want 403", resp.StatusCode, body)
	}
	if got := td.sched.state(mustJob(t, td, id)).Status; got != StatusRunning {
		t.Errorf("the job is %s after cross-site cancel, want running", got)
	}
	// Reading stays governed by CORS: the answer is sent, without Access-Control-Allow-Origin.
	if resp, _ := do(t, "GET", td.URL+"/api/v1/jobs", evil, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("GET from another origin: %d, want 200 (CORS keeps the page from reading it)", resp.StatusCode)
	}
}

// TestBrowserCannotSubmitFromAnotherSite has headless Chromium open a page on another origin
// that tries what a hostile page would: a no-cors fetch with a type-less body, a text/plain
// one, and an HTML form posting to the cancel route. None may create or cancel a job.
func TestBrowserCannotSubmitFromAnotherSite(t *testing.T) {
	chromium := findChromium(t)
	td := startTestDaemon(t)
	id, release := apiBlockWorker(t, td)
	defer release()
	page := http.NewServeMux()
	pages := httptest.NewServer(page)
	defer pages.Close()
	page.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html>
<iframe name=sink></iframe>
<form id=f method=POST target=sink action=%q><input name=x value=y></form>
<script>
const job = %q;
Promise.allSettled([
  fetch(%q, {method: 'POST', mode: 'no-cors', body: new Blob([job])}),
  fetch(%q, {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: job}),
]).then(() => {
  document.querySelector('iframe').onload = () => console.log('form answered');
  document.getElementById('f').submit();
});
</script>`, td.URL+"/api/v1/jobs/"+id+"/cancel", boundaryJob, td.URL+"/api/v1/jobs", td.URL+"/api/v1/jobs")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--enable-logging=stderr", "--v=0", pages.URL)
	console := &consoleWatcher{want: "form answered", done: make(chan struct{})}
	cmd.Stderr, cmd.Stdout = console, console
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cancel()
	select {
	case <-console.done:
	case <-ctx.Done():
		t.Fatalf("the page never ran; browser said:\n%s", console.buf.String())
	}
	if n := len(td.sched.list("", 100)); n != 1 {
		t.Errorf("%d jobs exist, want only the test's own", n)
	}
	if got := td.sched.state(mustJob(t, td, id)).Status; got != StatusRunning {
		t.Errorf("the job is %s after the cross-site form, want running", got)
	}
}

func TestOnlyOwnHostNamesAreAnswered(t *testing.T) {
	td := startTestDaemon(t)
	port := td.URL[strings.LastIndex(td.URL, ":")+1:]
	for host, want := range map[string]int{
		"127.0.0.1:" + port:           200,
		"localhost:" + port:           200,
		"LOCALHOST.:" + port:          200,
		"[::1]:" + port:               200,
		"localhost":                   200,
		"evil.test:" + port:           421,
		"localhost.evil.test:" + port: 421,
		"127.0.0.1.nip.io:" + port:    421,
		"charon.example.com":          421,
	} {
		resp, body := do(t, "GET", td.URL+"/api/v1/jobs", map[string]string{"Host": host}, "")
		if resp.StatusCode != want {
			t.Errorf("Host %q: %d %s, want %d", host, resp.StatusCode, body, want)
		}
		if want == 421 && !bytes.Contains(body, []byte("-allowed-hosts")) {
			t.Errorf("Host %q: the refusal %s does not name -allowed-hosts", host, body)
		}
	}
	// As if listening on 127.0.0.1:8080 with -allowed-hosts charon.example.com.
	named := startTestDaemon(t, func(d *daemon) { d.srv.hosts = newHostGuard("127.0.0.1:8080", []string{"charon.example.com"}) })
	h := named.srv.routes()
	for host, want := range map[string]int{"charon.example.com": 200, "Charon.Example.com:443": 200, "localhost:1": 200, "evil.test": 421} {
		req := httptest.NewRequest("GET", "/healthz", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("with -allowed-hosts, Host %q: %d, want %d", host, rec.Code, want)
		}
	}
	// Listening on a network address, charond cannot know its names unless told.
	if g := newHostGuard("0.0.0.0:8080", nil); !g.allows("anything.test") {
		t.Error("a network listen without -allowed-hosts refused a Host")
	}
	if g := newHostGuard("0.0.0.0:8080", []string{"charon.lan"}); g.allows("anything.test") || !g.allows("charon.lan:8080") {
		t.Error("a network listen with -allowed-hosts does not keep to them")
	}
}

func TestTokenAndOriginSettings(t *testing.T) {
	long := "0123456789abcdef"
	tests := []struct {
		name string
		cfg  config
		want string // "" for accepted
	}{
		{"no token on loopback", config{Addr: "127.0.0.1:8080"}, ""},
		{"a good token", config{Addr: "0.0.0.0:8080", Token: long}, ""},
		{"a blank token", config{Addr: "0.0.0.0:8080", Token: " "}, "space"},
		{"a one-byte token", config{Addr: "0.0.0.0:8080", Token: "x"}, "at least 16"},
		{"fifteen bytes", config{Addr: "127.0.0.1:8080", Token: long[:15]}, "at least 16"},
		{"a token with a space", config{Addr: "127.0.0.1:8080", Token: "0123456789 abcdef"}, "space"},
		{"a token with a newline", config{Addr: "127.0.0.1:8080", Token: long + "\n"}, "space"},
		{"a non-ASCII token", config{Addr: "127.0.0.1:8080", Token: long + "é"}, "ASCII"},
		{"CORS for every origin without a token", config{Addr: "127.0.0.1:8080", CORSOrigins: "http://a.test, *"}, "-cors-origins *"},
		{"CORS for every origin with a token", config{Addr: "127.0.0.1:8080", CORSOrigins: "*", Token: long}, ""},
		{"listed origins without a token", config{Addr: "127.0.0.1:8080", CORSOrigins: "http://a.test"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkAuthSettings(&tt.cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error = %v, want one saying %q", err, tt.want)
			}
		})
	}
	t.Setenv("CHARON_TOKEN", "x")
	if err := run([]string{"-addr", "0.0.0.0:0", "-data-dir", t.TempDir(), "-playbook-dir", t.TempDir()}); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("charond with CHARON_TOKEN=x on 0.0.0.0: %v, want a refusal", err)
	}
}

// TestSlowBodiesAreCut opens many connections that trickle a request body in, with and without
// a token: each must be answered or closed within -read-body-timeout, not held open.
func TestSlowBodiesAreCut(t *testing.T) {
	for _, token := range []string{"", "0123456789abcdef0123"} {
		name := "no token"
		if token != "" {
			name = "token"
		}
		t.Run(name, func(t *testing.T) {
			flags := []string{"-read-body-timeout", "500ms"}
			if token != "" {
				flags = append(flags, "-token", token)
			}
			addr := serveDaemon(t, t.TempDir(), flags...)
			const conns = 40
			var wg sync.WaitGroup
			results := make(chan string, conns)
			start := time.Now()
			for i := 0; i < conns; i++ {
				path := "/api/v1/jobs"
				if i%2 == 1 {
					path = "/api/v1/jobs/x/cancel"
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					results <- trickle(addr, path)
				}()
			}
			wg.Wait()
			close(results)
			for r := range results {
				if r != "" {
					t.Error(r)
				}
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("slow bodies held their connections for %v", took)
			}
		})
	}
}

// trickle sends a POST whose body comes a byte every 100 ms, for at most 20 s, and reports ""
// once charond answers or closes the connection, or what went wrong.
func trickle(addr, path string) string {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-yaml\r\nContent-Length: 1000\r\n\r\n", path)
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		io.Copy(io.Discard, conn) // returns when charond closes the connection
	}()
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-closed:
			return ""
		case <-deadline:
			return "a connection trickling its body to " + path + " was still open after 20 s"
		case <-tick.C:
			conn.Write([]byte("x"))
		}
	}
}

// TestServerErrorsAreJSON checks the answers net/http writes itself, before any handler: an
// oversized request line or header block, and a request that does not parse.
func TestServerErrorsAreJSON(t *testing.T) {
	addr := serveDaemon(t, t.TempDir(), "-max-header-bytes", "4096")
	for name, request := range map[string]string{
		"long request line": "GET /" + strings.Repeat("a", 64<<10) + " HTTP/1.1\r\nHost: localhost\r\n\r\n",
		"large header":      "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n",
		"malformed":         "GET /healthz HTTP/1.1\r\nHost: localhost\r\nBroken header\r\n\r\n",
		"no Host":           "GET /healthz HTTP/1.1\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write([]byte(request))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct{ Error string }
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode < 400 || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(raw, &body) != nil || body.Error == "" {
				t.Errorf("answer %d %q %q, want a JSON error", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
			}
		})
	}
}

// TestStalledReaderIsDropped asks for a long log and stops reading: charond must drop the
// connection once a write has been blocked for -stream-write-timeout, not hold it for ever.
func TestStalledReaderIsDropped(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) { d.srv.stream.WriteTimeout = 300 * time.Millisecond })
	id := td.submitFake(t, "long", 5, map[string]any{"fake": "lines", "count": 150000})
	td.waitStatus(t, id, StatusCompleted)
	conn, err := net.Dial("tcp", strings.TrimPrefix(td.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/jobs/%s/logs?format=jsonl HTTP/1.1\r\nHost: localhost\r\n\r\n", id)
	time.Sleep(2 * time.Second) // the stall: the answer (about 12 MB) fills the socket buffers
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Errorf("read the whole answer (%d bytes) after stalling: charond never dropped the stalled reader", n)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the connection was still open after the stall: %v", err)
	}
	// A client that keeps reading gets it all.
	if n := bytes.Count(get(t, td.URL+"/api/v1/jobs/"+id+"/logs"), []byte("\n")); n != 150000 {
		t.Errorf("a reading client got %d lines, want 150000", n)
	}
}

func TestTokenFileMustBePrivate(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("0123456789abcdef0123\n"), 0o600)
	for mode, ok := range map[os.FileMode]bool{0o600: true, 0o400: true, 0o640: true, 0o644: false, 0o620: false, 0o602: false} {
		os.Chmod(file, mode)
		_, err := loadToken("", file)
		if ok != (err == nil) {
			t.Errorf("token file with mode %04o: %v", mode, err)
		}
		if err != nil && !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: %v does not say how to fix it", mode, err)
		}
	}
}
