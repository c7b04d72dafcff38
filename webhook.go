package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file is charond's webhook delivery engine. When a job ends, the caller hands it the
// job's JSON document, and it POSTs the document, signed, to every configured target,
// retrying with back-off until the target accepts it or the attempts run out. Each target has
// its own queue and its own few workers, so a target that is slow, down or hanging delays
// only itself, and deliver never waits for any of them.
//
// Delivery is at least once. A delivery is done once every target has accepted it or been
// given up on; the caller records that, and after a restart sends again what close cut short.
// Every attempt, and every resend, carries the same X-Charon-Delivery (the job's id), by which
// a receiver drops duplicates.

// webhookConfig is what charond's operator configures.
type webhookConfig struct {
	URLs       []string      // targets, each validated by checkWebhookURL
	Secret     []byte        // HMAC-SHA256 key; required (non-empty) when URLs is non-empty
	Attempts   int           // tries per delivery before giving up; 0 means the default, 6
	Timeout    time.Duration // per attempt, the whole request and response; 0: default 10s
	Backoff    time.Duration // delay before the first retry, doubling each time; 0: default 2s
	MaxBackoff time.Duration // cap on the delay; 0: default 5m
}

// The defaults of what webhookConfig leaves at zero.
const (
	// Six attempts with the default back-off wait 2+4+8+16+32 s, about a minute between the
	// first and the last: enough to ride out a receiver's restart or deploy, short enough that
	// a receiver gone for good is given up on, and logged, while its operator still looks.
	defaultWebhookAttempts = 6
	// A receiver should acknowledge a webhook at once and do its work later. Ten seconds
	// allows for a slow network and a cold start, and bounds how long a hanging receiver
	// holds one of its workers.
	defaultWebhookTimeout = 10 * time.Second
	// Two seconds gives a receiver that dropped a request time to recover before the retry,
	// without delaying the retry of a one-off network error by much.
	defaultWebhookBackoff = 2 * time.Second
	// Five minutes caps the doubling and a receiver's Retry-After, so a delivery is never
	// parked for longer than an operator would wait to see it arrive.
	defaultWebhookMaxBackoff = 5 * time.Minute
)

const (
	// webhookWorkers is how many deliveries to one target may be in flight at once: enough
	// that a burst of job ends is not sent one by one, few enough that a slow receiver is not
	// flooded, and a hanging one holds only this many goroutines and connections.
	webhookWorkers = 4
	// webhookDrainLimit is how much of a response's body is read and discarded, so that its
	// connection can carry the next request. An acknowledgement is far smaller; a receiver
	// that sends more has its connection closed instead of read to the end.
	webhookDrainLimit = 64 << 10
)

// checkWebhookURL checks one -webhook value: an absolute http or https URL with a host, and
// neither user info nor a fragment.
func checkWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the url.Error quotes raw, which may hold a password
		}
		return fmt.Errorf("-webhook %q: not a URL: %v", redactURL(raw), err)
	}
	switch {
	case u.User != nil:
		return fmt.Errorf("-webhook %q: has user info: credentials in a URL leak into logs; the receiver authenticates charond by the X-Charon-Signature-256 header (-webhook-secret)", redactURL(raw))
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("-webhook %q: want an absolute http:// or https:// URL", raw)
	case u.Hostname() == "":
		return fmt.Errorf("-webhook %q: has no host", raw)
	case strings.Contains(raw, "#"):
		// Checked in raw: url.Parse leaves Fragment empty for a bare trailing '#'.
		return fmt.Errorf("-webhook %q: has a fragment (#...), which is never sent to the receiver", raw)
	}
	return nil
}

// redactURL is raw as an error may quote it: with any user info masked, since errors are
// logged. A token often stands where the user name does, so the whole user info goes.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err == nil {
		if u.User == nil {
			return raw
		}
		u.User = url.User("xxxxx")
		return u.String()
	}
	if _, rest, ok := strings.Cut(raw, "://"); ok {
		if i := strings.LastIndex(rest, "@"); i >= 0 {
			return raw[:len(raw)-len(rest)] + "xxxxx" + rest[i:]
		}
	}
	return raw
}

// shownURL is a target's URL as logs show it: without its query, which may hold a secret.
func shownURL(raw string) string {
	if base, _, ok := strings.Cut(raw, "?"); ok {
		return base + "?(query hidden)"
	}
	return raw
}

// signature returns "sha256=" + lowercase hex HMAC-SHA256 of body under secret (GitHub's
// X-Hub-Signature-256 convention).
func signature(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// webhooks is the delivery engine.
//
// Goroutines: deliver starts, per target, up to webhookWorkers workers (serve) when it queues
// a delivery there, and one goroutine to call done when there are no targets. A worker ends
// by itself when its target's queue is empty, or when close cancels ctx; every one is counted
// in running, which close waits on. Nothing else starts a goroutine.
type webhooks struct {
	cfg     webhookConfig // with the defaults applied
	client  *http.Client
	log     *slog.Logger
	done    func(jobID string)
	targets []*webhookTarget // fixed at creation
	// outcome, when set before the first deliver, hears how each delivery to a target ended:
	// "delivered" or "given_up". It must not block.
	outcome func(string)

	// ctx ends at close; every request and every back-off wait is under it.
	ctx     context.Context
	cancel  context.CancelFunc
	running sync.WaitGroup // every goroutine the engine started

	// mu guards the fields below and each target's queue and workers. It takes no other lock
	// under it and is held across no request, wait or call of done, so deliver may be called
	// holding any of charond's locks.
	mu     sync.Mutex
	closed bool
	queued int // (delivery, target) pairs neither accepted nor given up on
}

// webhookTarget is one receiver and its queue.
type webhookTarget struct {
	url     string
	shown   string             // url as logs show it: its query, which may carry a receiver's token, left out
	queue   []*webhookDelivery // waiting for a worker; guarded by webhooks.mu
	workers int                // serving queue, at most webhookWorkers; guarded by webhooks.mu
}

// webhookDelivery is what one deliver call sends to every target.
type webhookDelivery struct {
	jobID     string
	body      []byte
	signature string
	unsettled int // targets that neither accepted it nor gave up on it; guarded by webhooks.mu
}

// newWebhooks validates cfg and returns the engine. log is where outcomes are logged. done(jobID)
// is called exactly once per deliver call, from an engine goroutine, when every target has
// either accepted that delivery or it was given up on after the last attempt; it is not called
// for a delivery cut short by close (that delivery stays pending in the caller's journal and is
// sent again after a restart). done must not wait for the caller of close: close waits for it.
func newWebhooks(cfg webhookConfig, log *slog.Logger, done func(jobID string)) (*webhooks, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if done == nil {
		done = func(string) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &webhooks{cfg: cfg, client: newWebhookClient(), log: log, done: done, ctx: ctx, cancel: cancel}
	for _, u := range cfg.URLs {
		w.targets = append(w.targets, &webhookTarget{url: u, shown: shownURL(u)})
	}
	return w, nil
}

// withDefaults checks cfg and returns it with its zero fields set to their defaults.
func (cfg webhookConfig) withDefaults() (webhookConfig, error) {
	seen := make(map[string]bool)
	for _, u := range cfg.URLs {
		if err := checkWebhookURL(u); err != nil {
			return cfg, err
		}
		if seen[u] {
			return cfg, fmt.Errorf("-webhook %q: given twice: the receiver would get every delivery twice", u)
		}
		seen[u] = true
	}
	if len(cfg.URLs) > 0 && len(cfg.Secret) == 0 {
		return cfg, errors.New("-webhook-secret: required with -webhook: receivers check each delivery's X-Charon-Signature-256 with it")
	}
	if cfg.Attempts < 0 || cfg.Timeout < 0 || cfg.Backoff < 0 || cfg.MaxBackoff < 0 {
		return cfg, fmt.Errorf("webhook attempts, timeout and back-off must not be negative (0 means the default); got %d, %s, %s, %s",
			cfg.Attempts, cfg.Timeout, cfg.Backoff, cfg.MaxBackoff)
	}
	setDefault(&cfg.Attempts, defaultWebhookAttempts)
	setDefault(&cfg.Timeout, defaultWebhookTimeout)
	setDefault(&cfg.Backoff, defaultWebhookBackoff)
	setDefault(&cfg.MaxBackoff, defaultWebhookMaxBackoff)
	return cfg, nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// newWebhookClient returns the client every attempt is made with. It takes its proxy from the
// environment, as the default client does, and follows no redirect: a target is what the
// operator configured, and a redirect answers the signed body with somewhere else.
func newWebhookClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// As many idle connections per receiver as it may have requests in flight, so that a
	// burst of deliveries reuses them rather than opening new ones.
	tr.MaxIdleConnsPerHost = webhookWorkers
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// deliver queues body (a JSON document) for every target and returns at once: it never blocks
// on the network, a slow target, or another delivery. It keeps a copy of body. With no targets
// it calls done(jobID) on a goroutine of its own, as it would after a delivery, never inline,
// so that the caller may hold locks done takes. After close it does nothing.
func (w *webhooks) deliver(jobID string, body []byte) {
	d := &webhookDelivery{jobID: jobID, body: bytes.Clone(body), signature: signature(w.cfg.Secret, body), unsettled: len(w.targets)}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	if len(w.targets) == 0 {
		w.running.Add(1)
		go func() { // ends when done returns
			defer w.running.Done()
			w.done(jobID)
		}()
		return
	}
	w.queued += len(w.targets)
	for _, t := range w.targets {
		t.queue = append(t.queue, d)
		if t.workers < webhookWorkers {
			t.workers++
			w.running.Add(1)
			go w.serve(t)
		}
	}
}

// serve sends t's queued deliveries, one at a time, until the queue is empty or close is
// called; then it ends.
func (w *webhooks) serve(t *webhookTarget) {
	defer w.running.Done()
	for {
		d := w.next(t)
		if d == nil {
			return
		}
		if w.send(t, d) {
			w.settle(d)
		}
	}
}

// next takes the first delivery of t's queue, or returns nil, and counts the worker out, when
// there is none or the engine is closed. Both happen under mu, so that deliver, which starts
// a worker when fewer than webhookWorkers serve t, never queues behind one that is leaving.
func (w *webhooks) next(t *webhookTarget) *webhookDelivery {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(t.queue) == 0 || w.ctx.Err() != nil {
		t.workers--
		return nil
	}
	d := t.queue[0]
	t.queue[0] = nil // so the body is freed once every target is done with it
	t.queue = t.queue[1:]
	return d
}

// settle records that one target is done with d, and calls done once all of them are.
func (w *webhooks) settle(d *webhookDelivery) {
	w.mu.Lock()
	w.queued--
	d.unsettled--
	last := d.unsettled == 0
	w.mu.Unlock()
	if last {
		w.done(d.jobID)
	}
}

// close stops every delivery in progress (cancels in-flight requests and back-off waits), and
// returns once every goroutine the engine started has ended. deliver after close is a no-op;
// calling close again does nothing more.
func (w *webhooks) close() {
	w.mu.Lock()
	w.closed = true // no goroutine starts after this: running.Wait below cannot miss one
	w.mu.Unlock()
	w.cancel()
	w.running.Wait()
	w.client.CloseIdleConnections()
}

// pending is how many (job, target) deliveries are queued or in flight, for tests and metrics.
// After close it is how many close cut short.
func (w *webhooks) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queued
}

// send makes up to cfg.Attempts attempts to deliver d to target, and reports whether d is
// settled there: accepted, or given up on. false means close cut it short.
func (w *webhooks) send(t *webhookTarget, d *webhookDelivery) bool {
	target := t.shown
	for attempt := 1; ; attempt++ {
		err := w.attempt(t.url, d)
		switch {
		case err == nil:
			// A first-time success is routine; one after failures says a receiver recovered.
			level := slog.LevelDebug
			if attempt > 1 {
				level = slog.LevelInfo
			}
			w.log.Log(context.Background(), level, "webhook delivered", "job", d.jobID, "target", target, "attempts", attempt)
			w.noteOutcome("delivered")
			return true
		case w.ctx.Err() != nil:
			return false
		case !retryable(err) || attempt >= w.cfg.Attempts:
			w.log.Warn("webhook delivery given up", "job", d.jobID, "target", target, "attempts", attempt, "err", err)
			w.noteOutcome("given_up")
			return true
		}
		delay := w.cfg.retryDelay(attempt, err)
		w.log.Debug("webhook attempt failed; retrying", "job", d.jobID, "target", target, "attempt", attempt, "retry_in", delay, "err", err)
		if !w.sleep(delay) {
			return false
		}
	}
}

func (w *webhooks) noteOutcome(outcome string) {
	if w.outcome != nil {
		w.outcome(outcome)
	}
}

// attempt POSTs d to target once, and returns nil if the target accepted it (any 2xx).
func (w *webhooks) attempt(target string, d *webhookDelivery) error {
	// The timeout covers the whole exchange, reading the response's body included.
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(d.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "charond/"+thisBuild.Version)
	req.Header.Set("X-Charon-Event", "job_ended")
	req.Header.Set("X-Charon-Delivery", d.jobID)
	req.Header.Set("X-Charon-Signature-256", d.signature)
	resp, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it names the target, which is logged beside it
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("no answer within %s: %w", w.cfg.Timeout, err)
		}
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, webhookDrainLimit))
	return responseError(resp, w.cfg.MaxBackoff)
}

// statusError is an answer other than 2xx.
type statusError struct {
	code       int
	location   string        // a redirect's Location
	retryAfter time.Duration // a 429's or 503's Retry-After, at most MaxBackoff; 0 if none
}

func (e *statusError) Error() string {
	msg := fmt.Sprintf("answered %d %s", e.code, http.StatusText(e.code))
	if e.code >= 300 && e.code < 400 {
		msg += fmt.Sprintf(" (Location %q): charond follows no redirects; give -webhook the final URL", e.location)
	}
	return msg
}

// responseError returns nil for a 2xx response, and otherwise a *statusError describing it.
func responseError(resp *http.Response, maxDelay time.Duration) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	e := &statusError{code: resp.StatusCode}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		e.retryAfter = retryAfter(resp.Header.Get("Retry-After"), maxDelay)
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		e.location = resp.Header.Get("Location")
	}
	return e
}

// retryAfter is the delay a Retry-After header asks for, at most maxDelay, or 0. Only whole
// seconds are honoured; an HTTP date is not, and the back-off applies instead.
func retryAfter(h string, maxDelay time.Duration) time.Duration {
	n, err := strconv.ParseInt(strings.TrimSpace(h), 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	if n >= int64(maxDelay/time.Second) { // compared before multiplying, which could overflow
		return maxDelay
	}
	return time.Duration(n) * time.Second
}

// retryable reports whether another attempt may succeed after err: after a network error or a
// timeout, or an answer that the receiver is busy or broken (408, 429, 5xx). Not after another
// answer: a 4xx is the receiver's refusal and a redirect points elsewhere, and a retry would
// only be answered the same.
func retryable(err error) bool {
	var se *statusError
	if !errors.As(err, &se) {
		return true
	}
	return se.code == http.StatusRequestTimeout || se.code == http.StatusTooManyRequests || se.code >= 500
}

// retryDelay is how long to wait after the failed'th attempt failed with err: Backoff doubled
// for each earlier failure, or the receiver's Retry-After if that is longer, at most MaxBackoff.
func (cfg webhookConfig) retryDelay(failed int, err error) time.Duration {
	d := cfg.Backoff
	for i := 1; i < failed && d < cfg.MaxBackoff; i++ {
		if d > cfg.MaxBackoff/2 {
			d = cfg.MaxBackoff // rather than doubling past it, which could overflow
		} else {
			d *= 2
		}
	}
	var se *statusError
	if errors.As(err, &se) && se.retryAfter > d {
		d = se.retryAfter
	}
	return min(d, cfg.MaxBackoff)
}

// sleep waits for d, and reports false if close ended the wait first.
func (w *webhooks) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.ctx.Done():
		return false
	}
}
