package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// testWebhookBackoff keeps retries quick: the tests are about what is retried, not when.
	testWebhookBackoff = time.Millisecond
	// testWebhookForever is a timeout or back-off far above waitTimeout, so that in a test
	// using it only close, or the test releasing a receiver, can end the wait; an engine that
	// waited for it instead would fail the test's waitFor.
	testWebhookForever = time.Hour
	testWebhookSecret  = "secret-marker-7f3a"
)

// webhookReceiver is an httptest server that records every request it gets, and answers
// the nth (from 1) as respond says.
type webhookReceiver struct {
	srv *httptest.Server

	mu       sync.Mutex // guards the fields below
	requests []receivedWebhook
	inFlight int // requests whose handler has not returned
	maxIn    int // the most inFlight has been
}

type receivedWebhook struct {
	method string
	header http.Header
	body   []byte
}

func newWebhookReceiver(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *webhookReceiver {
	t.Helper()
	rc := &webhookReceiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		rc.mu.Lock()
		rc.requests = append(rc.requests, receivedWebhook{r.Method, r.Header.Clone(), body})
		n := len(rc.requests)
		rc.inFlight++
		rc.maxIn = max(rc.maxIn, rc.inFlight)
		rc.mu.Unlock()
		defer func() {
			rc.mu.Lock()
			rc.inFlight--
			rc.mu.Unlock()
		}()
		respond(n, w, r)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *webhookReceiver) url() string { return rc.srv.URL + "/hook" }

func (rc *webhookReceiver) received() []receivedWebhook {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]receivedWebhook(nil), rc.requests...)
}

func (rc *webhookReceiver) count() int { return len(rc.received()) }

func (rc *webhookReceiver) stuck() (inFlight, most int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.inFlight, rc.maxIn
}

// answer returns a respond func that answers every request with status.
func answer(status int) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }
}

// hang returns a respond func that answers nothing until release is closed (then 503) or
// the client gives up on the request.
func hang(release <-chan struct{}) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			w.WriteHeader(http.StatusServiceUnavailable)
		case <-r.Context().Done():
		}
	}
}

// doneCalls records the engine's calls of done.
type doneCalls struct {
	mu  sync.Mutex
	ids []string
}

func (c *doneCalls) done(jobID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids = append(c.ids, jobID)
}

func (c *doneCalls) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ids...)
}

func (c *doneCalls) count(jobID string) int {
	n := 0
	for _, id := range c.all() {
		if id == jobID {
			n++
		}
	}
	return n
}

// startWebhooks returns an engine for cfg, its done calls and its log (at Debug). The test's
// end closes it, before it closes the receivers (cleanups run last first).
func startWebhooks(t *testing.T, cfg webhookConfig) (*webhooks, *doneCalls, *syncBuffer) {
	t.Helper()
	if cfg.Secret == nil {
		cfg.Secret = []byte(testWebhookSecret)
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = testWebhookBackoff
	}
	calls := &doneCalls{}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := newWebhooks(cfg, log, calls.done)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	return w, calls, logs
}

// waitDone waits until done has been called for jobID, then closes w, so that a late extra
// call or request would have happened by the time the test counts them.
func waitDone(t *testing.T, w *webhooks, calls *doneCalls, jobID string) {
	t.Helper()
	waitFor(t, "done("+jobID+")", func() (bool, string) {
		return calls.count(jobID) > 0, fmt.Sprintf("done calls %q, pending %d", calls.all(), w.pending())
	})
	w.close()
	if got := calls.count(jobID); got != 1 {
		t.Errorf("done(%s) called %d times, want 1", jobID, got)
	}
	if got := w.pending(); got != 0 {
		t.Errorf("pending() = %d after done, want 0", got)
	}
}

// verifyWebhook checks a delivery as a receiver following the README would: recompute the
// HMAC over the raw body and compare it in constant time.
func verifyWebhook(secret []byte, req receivedWebhook) bool {
	mac := hmac.New(sha256.New, secret)
	mac.Write(req.body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(req.header.Get("X-Charon-Signature-256")), []byte(want))
}

// GitHub's documented example of X-Hub-Signature-256, whose convention signature follows.
func TestSignatureMatchesGitHubExample(t *testing.T) {
	got := signature([]byte("It's a Secret to Everybody"), []byte("Hello, World!"))
	want := "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if got != want {
		t.Errorf("signature = %s, want %s", got, want)
	}
}

func TestWebhookSignedDelivery(t *testing.T) {
	rc := newWebhookReceiver(t, answer(http.StatusNoContent))
	w, calls, logs := startWebhooks(t, webhookConfig{URLs: []string{rc.url()}})
	body := []byte(`{"id":"job-1","status":"succeeded","marker":"body-marker-91c2"}`)
	want := string(body)
	w.deliver("job-1", body)
	copy(body, "XXXX") // the engine keeps its own copy
	waitDone(t, w, calls, "job-1")

	got := rc.received()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(got))
	}
	req := got[0]
	if string(req.body) != want {
		t.Errorf("body = %s, want %s", req.body, want)
	}
	if !verifyWebhook([]byte(testWebhookSecret), req) {
		t.Errorf("signature %q does not verify", req.header.Get("X-Charon-Signature-256"))
	}
	tampered := req
	tampered.body = bytes.Replace(req.body, []byte("succeeded"), []byte("failed"), 1)
	if verifyWebhook([]byte(testWebhookSecret), tampered) {
		t.Error("a tampered body verifies: the check is vacuous")
	}
	if req.method != http.MethodPost {
		t.Errorf("method = %s, want POST", req.method)
	}
	for name, want := range map[string]string{
		"Content-Type":      "application/json",
		"User-Agent":        "charond/" + thisBuild.Version,
		"X-Charon-Event":    "job_ended",
		"X-Charon-Delivery": "job-1",
	} {
		if got := req.header.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if log := logs.String(); strings.Contains(log, testWebhookSecret) || strings.Contains(log, "body-marker") {
		t.Errorf("the log holds the secret or the body:\n%s", log)
	}
}

func TestWebhookRetriesUntilReceiverRecovers(t *testing.T) {
	const downFor = 2 // attempts answered badly before the receiver is back
	for _, tc := range []struct {
		name string
		down func(w http.ResponseWriter)
	}{
		{"503", func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) }},
		{"connection dropped", func(w http.ResponseWriter) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newWebhookReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
				if n <= downFor {
					tc.down(w)
				}
			})
			w, calls, logs := startWebhooks(t, webhookConfig{URLs: []string{rc.url()}})
			w.deliver("job-2", []byte(`{"id":"job-2"}`))
			waitDone(t, w, calls, "job-2")

			got := rc.received()
			if len(got) != downFor+1 {
				t.Fatalf("receiver got %d requests, want %d", len(got), downFor+1)
			}
			for i, req := range got {
				if id := req.header.Get("X-Charon-Delivery"); id != "job-2" {
					t.Errorf("request %d: X-Charon-Delivery = %q, want job-2", i+1, id)
				}
				if !verifyWebhook([]byte(testWebhookSecret), req) {
					t.Errorf("request %d: the signature does not verify", i+1)
				}
			}
			if log := logs.String(); strings.Contains(log, "given up") {
				t.Errorf("logged a give-up for a delivery that arrived:\n%s", log)
			}
		})
	}
}

func TestWebhookGivesUpOnRefusedConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := "http://" + ln.Addr().String() + "/hook"
	ln.Close() // nothing listens there now: every attempt is refused
	w, calls, logs := startWebhooks(t, webhookConfig{URLs: []string{target}, Attempts: 3})
	w.deliver("job-3", []byte(`{}`))
	waitDone(t, w, calls, "job-3")
	log := logs.String()
	for _, want := range []string{"level=WARN", "webhook delivery given up", "job=job-3", "target=" + target, "attempts=3"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
}

func TestWebhookHangingTargetDoesNotDelayOthers(t *testing.T) {
	release := make(chan struct{})
	hanging := newWebhookReceiver(t, hang(release))
	healthy := newWebhookReceiver(t, answer(http.StatusOK))
	w, calls, _ := startWebhooks(t, webhookConfig{
		URLs:     []string{hanging.url(), healthy.url()},
		Attempts: 2,
		Timeout:  testWebhookForever, // only the release ends a hanging request
	})
	const jobs = 10
	for i := 0; i < jobs; i++ {
		w.deliver(fmt.Sprintf("job-%d", i), []byte(`{}`))
	}
	waitFor(t, "the healthy receiver to get every delivery", func() (bool, string) {
		inFlight, _ := hanging.stuck()
		return healthy.count() == jobs && w.pending() == jobs && inFlight == webhookWorkers,
			fmt.Sprintf("healthy got %d, pending %d, hanging in flight %d", healthy.count(), w.pending(), inFlight)
	})
	if got := calls.all(); len(got) != 0 {
		t.Errorf("done called for %q while the hanging receiver holds every delivery", got)
	}
	seen := make(map[string]bool)
	for _, req := range healthy.received() {
		seen[req.header.Get("X-Charon-Delivery")] = true
	}
	if len(seen) != jobs {
		t.Errorf("the healthy receiver got %d distinct deliveries, want %d", len(seen), jobs)
	}

	close(release) // the hanging receiver now answers 503: one retry each, then give up
	waitFor(t, "done for every job", func() (bool, string) {
		return len(calls.all()) == jobs, fmt.Sprintf("done calls %q", calls.all())
	})
	w.close()
	for i := 0; i < jobs; i++ {
		if id := fmt.Sprintf("job-%d", i); calls.count(id) != 1 {
			t.Errorf("done(%s) called %d times, want 1", id, calls.count(id))
		}
	}
	if got := hanging.count(); got != 2*jobs {
		t.Errorf("the hanging receiver got %d requests, want %d (2 attempts each)", got, 2*jobs)
	}
	if _, most := hanging.stuck(); most > webhookWorkers {
		t.Errorf("%d requests in flight to one target at once, want at most %d", most, webhookWorkers)
	}
}

func TestWebhookGivesUpOnHangingTarget(t *testing.T) {
	hanging := newWebhookReceiver(t, hang(nil))
	w, calls, logs := startWebhooks(t, webhookConfig{
		URLs:     []string{hanging.url()},
		Attempts: 2,
		// Short, so the test is quick; under the race detector a local request that
		// hangs is still told apart from one answered.
		Timeout: 50 * time.Millisecond,
	})
	w.deliver("job-4", []byte(`{}`))
	waitDone(t, w, calls, "job-4")
	if got := hanging.count(); got != 2 {
		t.Errorf("the receiver got %d requests, want 2", got)
	}
	if log := logs.String(); !strings.Contains(log, "no answer within 50ms") {
		t.Errorf("the give-up does not say the receiver did not answer:\n%s", log)
	}
}

func TestWebhookStatusNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
	}{
		{"400", http.StatusBadRequest},
		{"401", http.StatusUnauthorized},
		{"404", http.StatusNotFound},
		{"410", http.StatusGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newWebhookReceiver(t, answer(tc.status))
			w, calls, logs := startWebhooks(t, webhookConfig{URLs: []string{rc.url()}})
			w.deliver("job-5", []byte(`{"marker":"body-marker-91c2"}`))
			waitDone(t, w, calls, "job-5")
			if got := rc.count(); got != 1 {
				t.Errorf("receiver got %d requests, want 1", got)
			}
			log := logs.String()
			for _, want := range []string{"level=WARN", "webhook delivery given up", "job=job-5", "target=" + rc.url(), fmt.Sprintf("answered %d", tc.status)} {
				if !strings.Contains(log, want) {
					t.Errorf("the log lacks %q:\n%s", want, log)
				}
			}
			if strings.Contains(log, testWebhookSecret) || strings.Contains(log, "body-marker") {
				t.Errorf("the log holds the secret or the body:\n%s", log)
			}
		})
	}
}

func TestWebhookGivesUpAfterAttempts(t *testing.T) {
	for _, status := range []int{http.StatusInternalServerError, http.StatusRequestTimeout, http.StatusTooManyRequests} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			rc := newWebhookReceiver(t, answer(status))
			w, calls, _ := startWebhooks(t, webhookConfig{URLs: []string{rc.url()}, Attempts: 4})
			w.deliver("job-6", []byte(`{}`))
			waitDone(t, w, calls, "job-6")
			if got := rc.count(); got != 4 {
				t.Errorf("receiver got %d requests, want 4 (Attempts)", got)
			}
		})
	}
}

func TestWebhookRedirectNotFollowed(t *testing.T) {
	elsewhere := newWebhookReceiver(t, answer(http.StatusOK))
	rc := newWebhookReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.url(), http.StatusFound)
	})
	w, calls, logs := startWebhooks(t, webhookConfig{URLs: []string{rc.url()}})
	w.deliver("job-7", []byte(`{}`))
	waitDone(t, w, calls, "job-7")
	if got := rc.count(); got != 1 {
		t.Errorf("receiver got %d requests, want 1 (a redirect is not retried)", got)
	}
	if got := elsewhere.count(); got != 0 {
		t.Errorf("the redirect's target got %d requests, want 0", got)
	}
	if log := logs.String(); !strings.Contains(log, "answered 302") || !strings.Contains(log, "given up") {
		t.Errorf("the log does not say the redirect was given up on:\n%s", log)
	}
}

// closeWebhooks closes w on another goroutine and waits for close to return.
func closeWebhooks(t *testing.T, w *webhooks) {
	t.Helper()
	closed := make(chan struct{})
	go func() { // ends when close returns: the wait below fails the test otherwise
		w.close()
		close(closed)
	}()
	waitFor(t, "close to return", func() (bool, string) {
		select {
		case <-closed:
			return true, ""
		default:
			return false, fmt.Sprintf("pending %d", w.pending())
		}
	})
}

func TestWebhookCloseCutsDeliveriesShort(t *testing.T) {
	for _, tc := range []struct {
		name    string
		respond func(int, http.ResponseWriter, *http.Request)
		cfg     webhookConfig
	}{
		{"during back-off", answer(http.StatusServiceUnavailable),
			webhookConfig{Backoff: testWebhookForever, MaxBackoff: testWebhookForever}},
		{"during a hanging request", hang(nil), webhookConfig{Timeout: testWebhookForever}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newWebhookReceiver(t, tc.respond)
			before := runtime.NumGoroutine()
			tc.cfg.URLs = []string{rc.url()}
			w, calls, _ := startWebhooks(t, tc.cfg)
			w.deliver("job-8", []byte(`{}`))
			waitFor(t, "the first attempt", func() (bool, string) {
				return rc.count() == 1, fmt.Sprintf("%d requests", rc.count())
			})
			closeWebhooks(t, w)

			w.deliver("job-9", []byte(`{}`)) // after close: nothing
			if got := calls.all(); len(got) != 0 {
				t.Errorf("done called for %q: a delivery cut short by close is not done", got)
			}
			if got := w.pending(); got != 1 {
				t.Errorf("pending() = %d after close, want 1 (the delivery cut short)", got)
			}
			if got := rc.count(); got != 1 {
				t.Errorf("receiver got %d requests, want 1", got)
			}
			// close's WaitGroup already proves the engine's goroutines ended; this also
			// catches the HTTP client's, which its idle connections would keep.
			waitFor(t, "the goroutines to end", func() (bool, string) {
				n := runtime.NumGoroutine()
				return n <= before, fmt.Sprintf("%d goroutines, %d before the engine started", n, before)
			})
		})
	}
}

func TestWebhookDeliverNeverBlocks(t *testing.T) {
	hanging := newWebhookReceiver(t, hang(nil))
	w, calls, _ := startWebhooks(t, webhookConfig{URLs: []string{hanging.url()}, Timeout: testWebhookForever})
	const jobs = 1000
	delivered := make(chan struct{})
	go func() { // ends when the delivers return: the wait below fails the test otherwise
		for i := 0; i < jobs; i++ {
			w.deliver(fmt.Sprintf("job-%d", i), []byte(`{}`))
		}
		close(delivered)
	}()
	waitFor(t, "every deliver to return", func() (bool, string) {
		select {
		case <-delivered:
			return true, ""
		default:
			return false, fmt.Sprintf("pending %d", w.pending())
		}
	})
	if got := w.pending(); got != jobs {
		t.Errorf("pending() = %d, want %d", got, jobs)
	}
	closeWebhooks(t, w)
	if got := calls.all(); len(got) != 0 {
		t.Errorf("done called %d times, want 0", len(got))
	}
	if _, most := hanging.stuck(); most > webhookWorkers {
		t.Errorf("%d requests in flight to one target at once, want at most %d", most, webhookWorkers)
	}
}

func TestWebhookWithoutTargets(t *testing.T) {
	w, calls, _ := startWebhooks(t, webhookConfig{})
	w.deliver("job-10", []byte(`{}`))
	waitDone(t, w, calls, "job-10")
	w.deliver("job-11", []byte(`{}`)) // after close: nothing
	if got := calls.count("job-11"); got != 0 {
		t.Errorf("done(job-11) called %d times after close, want 0", got)
	}
}

func TestCheckWebhookURL(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want string // in the error; "" for none
	}{
		{"http://example.com/hook", ""},
		{"https://example.com:8443/hooks/charon?team=ops", ""},
		{"http://127.0.0.1:9000", ""},
		{"https://[::1]/hook", ""},
		{"ftp://example.com/hook", "want an absolute http:// or https:// URL"},
		{"/hook", "want an absolute http:// or https:// URL"},
		{"example.com/hook", "want an absolute http:// or https:// URL"},
		{"", "want an absolute http:// or https:// URL"},
		{"http:///hook", "has no host"},
		{"http://:8080/hook", "has no host"},
		{"http:example.com", "has no host"},
		{"https://user:pass@example.com/hook", "credentials in a URL leak into logs"},
		{"https://token@example.com/hook", "credentials in a URL leak into logs"},
		{"https://example.com/hook#frag", "has a fragment"},
		{"https://example.com/hook#", "has a fragment"},
		{"http://example.com:port/hook", "not a URL"},
		{"http://us er:pa ss@exa mple.com/", "not a URL"},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			err := checkWebhookURL(tc.raw)
			if tc.want == "" {
				if err != nil {
					t.Errorf("checkWebhookURL(%q) = %v, want nil", tc.raw, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("checkWebhookURL(%q) = nil, want an error saying %q", tc.raw, tc.want)
			}
			got := err.Error()
			if !strings.Contains(got, tc.want) || !strings.HasPrefix(got, "-webhook ") {
				t.Errorf("checkWebhookURL(%q) = %q, want -webhook ... %q", tc.raw, got, tc.want)
			}
			if strings.Contains(got, "pass") || strings.Contains(got, "token") || strings.Contains(got, "pa ss") {
				t.Errorf("checkWebhookURL(%q) = %q: the error shows the credentials", tc.raw, got)
			}
		})
	}
}

func TestNewWebhooks(t *testing.T) {
	good := "https://example.com/hook"
	for _, tc := range []struct {
		name string
		cfg  webhookConfig
		want string // in the error; "" for none
	}{
		{"no targets, no secret", webhookConfig{}, ""},
		{"targets and secret", webhookConfig{URLs: []string{good, "http://other.example/hook"}, Secret: []byte("s")}, ""},
		{"missing secret", webhookConfig{URLs: []string{good}}, "-webhook-secret: required"},
		{"empty secret", webhookConfig{URLs: []string{good}, Secret: []byte{}}, "-webhook-secret: required"},
		{"bad URL", webhookConfig{URLs: []string{good, "ftp://example.com/"}, Secret: []byte("s")}, `-webhook "ftp://example.com/"`},
		{"user info", webhookConfig{URLs: []string{"https://u:p@example.com/"}, Secret: []byte("s")}, "credentials"},
		{"twice", webhookConfig{URLs: []string{good, good}, Secret: []byte("s")}, "given twice"},
		{"negative attempts", webhookConfig{Attempts: -1}, "must not be negative"},
		{"negative timeout", webhookConfig{Timeout: -time.Second}, "must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := newWebhooks(tc.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("newWebhooks = %v, want nil", err)
				}
				w.close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("newWebhooks = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestWebhookDefaults(t *testing.T) {
	w, err := newWebhooks(webhookConfig{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	got := w.cfg
	want := webhookConfig{Attempts: 6, Timeout: 10 * time.Second, Backoff: 2 * time.Second, MaxBackoff: 5 * time.Minute}
	if got.Attempts != want.Attempts || got.Timeout != want.Timeout || got.Backoff != want.Backoff || got.MaxBackoff != want.MaxBackoff {
		t.Errorf("defaults = %+v, want %+v", got, want)
	}
}

func TestWebhookRetryDelay(t *testing.T) {
	cfg := webhookConfig{Backoff: time.Second, MaxBackoff: 10 * time.Second}
	network := errors.New("connection refused")
	for _, tc := range []struct {
		name   string
		failed int
		err    error
		want   time.Duration
	}{
		{"first retry", 1, network, time.Second},
		{"doubles", 2, network, 2 * time.Second},
		{"doubles again", 4, network, 8 * time.Second},
		{"capped", 5, network, 10 * time.Second},
		{"capped without overflow", 200, network, 10 * time.Second},
		{"retry-after longer", 1, &statusError{code: 429, retryAfter: 5 * time.Second}, 5 * time.Second},
		{"retry-after shorter", 3, &statusError{code: 503, retryAfter: time.Second}, 4 * time.Second},
		{"retry-after capped", 1, &statusError{code: 503, retryAfter: 10 * time.Second}, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cfg.retryDelay(tc.failed, tc.err); got != tc.want {
				t.Errorf("retryDelay(%d, %v) = %v, want %v", tc.failed, tc.err, got, tc.want)
			}
		})
	}
}

func TestWebhookResponseError(t *testing.T) {
	const maxDelay = time.Minute
	for _, tc := range []struct {
		status     int
		retryAfter string
		wantErr    bool
		wantRetry  bool
		wantDelay  time.Duration
	}{
		{200, "", false, false, 0},
		{204, "", false, false, 0},
		{302, "", true, false, 0},
		{400, "", true, false, 0},
		{404, "", true, false, 0},
		{408, "", true, true, 0},
		{429, "7", true, true, 7 * time.Second},
		{429, "999999", true, true, maxDelay},
		{503, " 3 ", true, true, 3 * time.Second},
		{503, "Wed, 21 Oct 2015 07:28:00 GMT", true, true, 0},
		{503, "-5", true, true, 0},
		{500, "7", true, true, 0}, // Retry-After is honoured only on 429 and 503
		{502, "", true, true, 0},
	} {
		t.Run(fmt.Sprintf("%d %s", tc.status, tc.retryAfter), func(t *testing.T) {
			resp := &http.Response{StatusCode: tc.status, Header: http.Header{}}
			if tc.retryAfter != "" {
				resp.Header.Set("Retry-After", tc.retryAfter)
			}
			err := responseError(resp, maxDelay)
			if (err != nil) != tc.wantErr {
				t.Fatalf("responseError = %v, want an error: %v", err, tc.wantErr)
			}
			if err == nil {
				return
			}
			if got := retryable(err); got != tc.wantRetry {
				t.Errorf("retryable(%v) = %v, want %v", err, got, tc.wantRetry)
			}
			if got := err.(*statusError).retryAfter; got != tc.wantDelay {
				t.Errorf("retryAfter = %v, want %v", got, tc.wantDelay)
			}
		})
	}
}
