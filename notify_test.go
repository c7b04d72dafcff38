package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const hookSecret = "a-webhook-secret-of-some-length"

// receiver is a webhook receiver written the way the README tells one to: it checks the
// signature over the raw body before it trusts anything in it.
type receiver struct {
	mu     sync.Mutex
	status int                          // what it answers; 0: 200
	got    map[string][]webhookDocument // deliveries by X-Charon-Delivery, duplicates kept
	bad    []string                     // what failed verification
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	mac := hmac.New(sha256.New, []byte(hookSecret))
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if status := rc.status; status != 0 {
		w.WriteHeader(status)
		return
	}
	if !hmac.Equal([]byte(r.Header.Get("X-Charon-Signature-256")), []byte(want)) {
		rc.bad = append(rc.bad, "signature "+r.Header.Get("X-Charon-Signature-256"))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var doc webhookDocument
	if err := json.Unmarshal(body, &doc); err != nil || r.Header.Get("X-Charon-Event") != "job_ended" || doc.ID != r.Header.Get("X-Charon-Delivery") {
		rc.bad = append(rc.bad, fmt.Sprintf("%v %q %v", err, body, r.Header))
	}
	if rc.got == nil {
		rc.got = map[string][]webhookDocument{}
	}
	rc.got[doc.ID] = append(rc.got[doc.ID], doc)
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) deliveries(id string) []webhookDocument {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]webhookDocument(nil), rc.got[id]...)
}

func (rc *receiver) answer(status int) {
	rc.mu.Lock()
	rc.status = status
	rc.mu.Unlock()
}

// startHookedDaemon starts a daemon in dir that posts its webhooks to url.
func startHookedDaemon(t *testing.T, dir, url string) *testDaemon {
	t.Helper()
	d, err := tryStartDaemon(t, dir, slog.New(slog.NewTextHandler(io.Discard, nil)),
		[]string{"-webhook", url, "-webhook-secret", hookSecret, "-public-url", "https://charon.example.com/"})
	if err != nil {
		t.Fatal(err)
	}
	td := &testDaemon{daemon: d, URL: "http://" + d.addr, dir: dir}
	t.Cleanup(func() { td.stop(t) })
	return td
}

// waitDelivered waits for the job's webhooks to be recorded as delivered.
func waitDelivered(t *testing.T, td *testDaemon, id string) {
	t.Helper()
	job := mustJob(t, td, id)
	waitFor(t, "job "+id+"'s webhooks recorded as delivered", func() (bool, string) {
		st := job.state()
		return st.Status.Final() && !st.WebhookPending, fmt.Sprintf("%s, pending %v", st.Status, st.WebhookPending)
	})
}

// TestWebhookOnJobEnd sends a signed document when a job ends, and records the delivery.
func TestWebhookOnJobEnd(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	td := startHookedDaemon(t, t.TempDir(), srv.URL+"/hook")
	id := td.submitFake(t, "hooked", 7, map[string]any{"fake": "exit", "code": 2, "api_password": "hunter2hunter2"})
	td.waitStatus(t, id, StatusFailed)
	waitDelivered(t, td, id)
	got := rc.deliveries(id)
	if len(got) != 1 || len(rc.bad) != 0 {
		t.Fatalf("deliveries %+v, refused %v; want one, verified", got, rc.bad)
	}
	doc := got[0]
	if doc.Event != "job_ended" || doc.Name != "hooked" || doc.Status != StatusFailed || doc.ExitCode == nil || *doc.ExitCode != 2 ||
		doc.Priority != 7 || doc.StartedAt == nil || doc.FinishedAt.Before(*doc.StartedAt) || doc.Duration < 0 ||
		doc.URL != "https://charon.example.com/api/v1/jobs/"+id || !strings.Contains(doc.Message, "code 2") {
		t.Errorf("document = %+v", doc)
	}
}

// TestWebhookSurvivesRestart ends a job while its receiver is down, and stops charond before
// a retry gets through: the next start delivers it, once the receiver is back.
func TestWebhookSurvivesRestart(t *testing.T) {
	rc := &receiver{status: http.StatusServiceUnavailable}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	dir := t.TempDir()
	td := startHookedDaemon(t, dir, srv.URL)
	id := td.submitFake(t, "down", 5, map[string]any{"fake": "lines", "count": 1})
	td.waitStatus(t, id, StatusCompleted)
	if st := mustJob(t, td, id).state(); !st.WebhookPending {
		t.Fatal("the job's webhook is not pending while its receiver is down")
	}
	td.stop(t)

	rc.answer(0)
	td = startHookedDaemon(t, dir, srv.URL)
	waitDelivered(t, td, id)
	if got := rc.deliveries(id); len(got) != 1 || got[0].Status != StatusCompleted {
		t.Errorf("deliveries after the restart: %+v, want the job's, once", got)
	}
	td.stop(t)
	td = startHookedDaemon(t, dir, srv.URL) // delivered: not sent again
	time.Sleep(200 * time.Millisecond)
	if got := rc.deliveries(id); len(got) != 1 {
		t.Errorf("after a restart the delivered webhook was sent again: %d deliveries", len(got))
	}
}

// TestWebhookSettings refuses webhook flags that cannot sign or reach anything.
func TestWebhookSettings(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte(hookSecret+"\n"), 0o600)
	openFile := filepath.Join(dir, "open")
	os.WriteFile(openFile, []byte(hookSecret), 0o644)
	for _, tc := range []struct {
		flags []string
		want  string // in the error; "" starts
	}{
		{[]string{"-webhook", "http://127.0.0.1:1/h", "-webhook-secret-file", secretFile}, ""},
		{[]string{"-webhook", "http://127.0.0.1:1/h"}, "-webhook-secret: required with -webhook"},
		{[]string{"-webhook", "http://127.0.0.1:1/h", "-webhook-secret", "short"}, "too short"},
		{[]string{"-webhook-secret", hookSecret}, "no -webhook"},
		{[]string{"-webhook", "ftp://example.com/h", "-webhook-secret", hookSecret}, "-webhook"},
		{[]string{"-webhook", "http://u:p@example.com/h", "-webhook-secret", hookSecret}, "-webhook"},
		{[]string{"-webhook", "http://127.0.0.1:1/h", "-webhook-secret-file", openFile}, "mode 0644"},
		{[]string{"-public-url", "charon.example.com"}, "-public-url"},
		{[]string{"-public-url", "https://charon.example.com/?x=1"}, "no query"},
	} {
		tmp := t.TempDir()
		cfg, err := parseFlags(append([]string{"-playbook-dir", tmp, "-data-dir", filepath.Join(tmp, "data")}, tc.flags...),
			func(string) string { return "" }, io.Discard)
		if err == nil {
			var d *daemon
			if d, err = newDaemon(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
				d.sched.close()
			}
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v, want a start", tc.flags, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: err %v, want it to say %q", tc.flags, err, tc.want)
		}
	}
}

// TestWebhookHangingReceiverSlowsNothing ends jobs while their receiver hangs: they end and
// the next ones run as if there were no webhook, and charond still stops at once, leaving the
// deliveries due for its next start.
func TestWebhookHangingReceiverSlowsNothing(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	td := startHookedDaemon(t, t.TempDir(), srv.URL)
	var ids []string
	for i := 0; i < 6; i++ { // more than the four deliveries a target may have in flight
		id := td.submitFake(t, "hung", 5, map[string]any{"fake": "lines", "count": 1})
		td.waitStatus(t, id, StatusCompleted)
		ids = append(ids, id)
	}
	stopped := make(chan struct{})
	go func() { td.stop(t); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second): // the attempt timeout: stop must not wait for it
		t.Fatal("charond did not stop while its webhook receiver hung")
	}
	for _, id := range ids {
		if !mustJob(t, td, id).state().WebhookPending {
			t.Errorf("job %s: its webhook is not left due after a stop cut it short", id)
		}
	}
}

// TestDeliveredAfterDeletion records no delivery for a job deleted meanwhile: the record that
// says so would come after the deletion and bring the job back at the next start.
func TestDeliveredAfterDeletion(t *testing.T) {
	job := &Job{ID: "00000000-0000-0000-0000-000000000001", Spec: &JobSpec{Name: "x", Playbook: "p", Priority: 5, Timeout: time.Minute}}
	job.st.Status, job.st.WebhookPending = StatusCompleted, true
	if _, ok := job.delivered(); !ok {
		t.Fatal("a due delivery of a kept job is not recorded")
	}
	if _, ok := job.delivered(); ok {
		t.Error("a delivery was recorded twice")
	}
	job.st.WebhookPending = true
	job.deletion()
	if _, ok := job.delivered(); ok {
		t.Error("a delivery was recorded for a deleted job")
	}
}
