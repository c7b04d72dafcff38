package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// This file puts charond under load: many submissions and many stream clients at once, most of
// them leaving at random moments, and checks that the books balance afterwards.

// loadSubmission is one job document of the load test, spread over the priorities.
func loadSubmission(i int) string {
	doc, _ := json.Marshal(map[string]any{
		"name":      fmt.Sprintf("load %d", i),
		"playbook":  "- hosts: localhost\n  tasks: []\n",
		"priority":  1 + i%15,
		"variables": map[string]any{"n": i},
	})
	return string(doc)
}

// loadRun is the client side of one load run: the accepted jobs and what went wrong.
type loadRun struct {
	client *http.Client
	url    string        // the daemon's
	first  chan struct{} // closed when the first job is accepted

	mu                         sync.Mutex // guards the fields below
	ids                        []string   // of the accepted jobs
	errs                       []string   // the first few failures
	refused, streamed, aborted int
}

func (r *loadRun) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) < 20 {
		r.errs = append(r.errs, fmt.Sprintf(format, args...))
	}
}

func (r *loadRun) count(n *int) {
	r.mu.Lock()
	*n++
	r.mu.Unlock()
}

func (r *loadRun) accepted(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, id)
	if len(r.ids) == 1 {
		close(r.first)
	}
}

// pick returns a random accepted id, waiting for the first one.
func (r *loadRun) pick(ctx context.Context) (string, error) {
	select {
	case <-r.first:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[rand.IntN(len(r.ids))], nil
}

// submit starts n submissions on wg, at most inFlight at a time.
func (r *loadRun) submit(ctx context.Context, wg *sync.WaitGroup, n, inFlight int) {
	sem := make(chan struct{}, inFlight)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			status, id, err := loadSubmit(ctx, r.client, r.url, loadSubmission(i))
			switch {
			case err != nil:
				r.fail("submission %d: %v", i, err)
			case status == http.StatusCreated:
				r.accepted(id)
			case status == http.StatusTooManyRequests:
				r.count(&r.refused)
			default:
				r.fail("submission %d: status %d", i, status)
			}
		}()
	}
}

// stream starts n stream clients on wg, at most inFlight at a time, each on the log or events
// stream of a random accepted job. One in readToEnd reads to `completed`; the others leave
// after 0 to 50 ms.
func (r *loadRun) stream(ctx context.Context, wg *sync.WaitGroup, n, inFlight, readToEnd int) {
	sem := make(chan struct{}, inFlight)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			id, err := r.pick(ctx)
			if err != nil {
				r.fail("stream %d: no job to stream: %v", i, err)
				return
			}
			url := r.url + "/api/v1/jobs/" + id + "/" + []string{"logs", "events"}[rand.IntN(2)] + "/stream"
			if i%readToEnd == 0 {
				if err := loadStreamToEnd(ctx, r.client, url); err != nil {
					r.fail("stream %d of job %s: %v", i, id, err)
				}
				r.count(&r.streamed)
				return
			}
			leave := time.Duration(rand.IntN(51)) * time.Millisecond
			if err := loadStreamAndLeave(ctx, r.client, url, leave); err != nil {
				r.fail("stream %d of job %s: %v", i, id, err)
			}
			r.count(&r.aborted)
		}()
	}
}

func TestLoadSubmissionsAndStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	const (
		submissions = 1000
		streams     = 1000
		inFlight    = 100 // of each kind: enough to contend, few enough for two cores under -race
		readToEnd   = 5   // one stream client in readToEnd reads to `completed`; the others leave
		// budget bounds every request of the test. The load itself takes some 10 s under -race
		// on two idle cores; the margin is for a machine busy with other work.
		budget = 90 * time.Second
	)
	td := startTestDaemonIn(t, loadDir(t), func(d *daemon) {
		d.sched.runner.playbookCmd = "/bin/true"
		d.sched.maxQueue = 2 * submissions
		d.srv.maxStreams = 2 * streams
		d.cfg.Workers = 2
		// The test harness drops a stream whose write takes 2 s; on a machine busy with other
		// work a starved server goroutine can take that long without any client being slow.
		// This test is about clients that leave, so it keeps charond's default.
		d.srv.stream.WriteTimeout = 30 * time.Second
	})
	baseFiles := openFiles(t)
	start := time.Now()

	// A client of its own, with room for an idle connection per request in flight.
	tr := &http.Transport{MaxIdleConnsPerHost: 2 * inFlight}
	run := &loadRun{client: &http.Client{Transport: tr}, url: td.URL, first: make(chan struct{})}
	ctx := contextWithTimeout(t, budget)
	var wg sync.WaitGroup
	run.submit(ctx, &wg, submissions, inFlight)
	run.stream(ctx, &wg, streams, inFlight, readToEnd)
	wg.Wait()
	for _, e := range run.errs {
		t.Error(e)
	}
	if ctx.Err() != nil {
		t.Fatalf("submissions and streams did not finish within %v", budget)
	}
	t.Logf("%d submissions (%d accepted, %d refused) and %d streams (%d read to the end, %d left early) in %v",
		submissions, len(run.ids), run.refused, streams, run.streamed, run.aborted, time.Since(start).Round(time.Millisecond))
	if len(run.ids) == 0 {
		t.Fatal("no submission was accepted")
	}

	// Every accepted job is listed once, in a state that holds together; the stubs all end,
	// and then every job has completed.
	loadCheckList(t, td, run.ids, false)
	loadWaitIdle(t, td)
	t.Logf("all %d jobs ended %v after the start", len(run.ids), time.Since(start).Round(time.Millisecond))
	loadCheckList(t, td, run.ids, true)

	// What clients that leave could leak: a stream still counted, a subscriber still on a
	// job's log, a connection or a file still open.
	if n := td.srv.openStreams.Load(); n != 0 {
		t.Errorf("open streams = %d after every client left, want 0", n)
	}
	for _, id := range run.ids {
		job := mustJob(t, td, id)
		if n := job.logs.subscriberCount() + job.events.subscriberCount(); n != 0 {
			t.Errorf("job %s has %d subscribers after every client left, want 0", id, n)
		}
	}
	tr.CloseIdleConnections()
	waitFilesClosed(t, baseFiles)
}

// loadWaitIdle waits until no job is queued or running.
func loadWaitIdle(t *testing.T, td *testDaemon) {
	t.Helper()
	waitFor(t, "every job to end", func() (bool, string) {
		_, info := getJSON(t, td.URL+"/api/v1/info")
		return info["queued"] == 0.0 && info["running"] == 0.0, fmt.Sprint(info)
	})
}

// loadDir returns a directory for the daemon's data on tmpfs when the machine has one: the
// test is about concurrency, not durability, and a thousand jobs' fsyncs on a shared disk
// would make it slow and its timing depend on the machine's other work.
func loadDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "charon-load-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // runs after the daemon has stopped
	return dir
}

// loadSubmit posts one job and returns the status and, if accepted, the job's id.
func loadSubmit(ctx context.Context, client *http.Client, base, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/api/v1/jobs", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode != http.StatusCreated {
		return resp.StatusCode, "", nil
	}
	var job struct{ ID, Status string }
	if err := json.Unmarshal(raw, &job); err != nil || job.ID == "" {
		return 0, "", fmt.Errorf("answer %q: %v", raw, err)
	}
	if loc := resp.Header.Get("Location"); loc != "/api/v1/jobs/"+job.ID {
		return 0, "", fmt.Errorf("Location = %q for job %s", loc, job.ID)
	}
	return resp.StatusCode, job.ID, nil
}

// loadStreamAndLeave opens a stream and drops it after the given time, wherever it is then:
// before the answer, in the replay, or waiting for live events.
func loadStreamAndLeave(ctx context.Context, client *http.Client, url string, after time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, after)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil // left before the answer
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("status %d: %s", resp.StatusCode, raw)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// loadStreamToEnd reads a stream up to its `completed` event, which must say the job completed.
func loadStreamToEnd(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("status %d: %s", resp.StatusCode, raw)
	}
	r := newSSEReader(resp.Body)
	var n int         // events read so far, for the error messages
	var last sseEvent // the last event read
	for {
		ev, err := r.next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("stream ended without completed after %d events, the last %+v", n, last)
		}
		if err != nil {
			return fmt.Errorf("after %d events, the last %+v: %w", n, last, err)
		}
		n, last = n+1, ev
		if ev.Event != "completed" {
			continue
		}
		var d completedData
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
			return fmt.Errorf("completed data %q: %v", ev.Data, err)
		}
		if d.Status != StatusCompleted || d.ExitCode == nil || *d.ExitCode != 0 {
			return fmt.Errorf("completed with %s, exit code %v; want completed, 0", d.Status, d.ExitCode)
		}
		// And then the server closes the stream.
		if ev, err := r.next(); !errors.Is(err, io.EOF) {
			return fmt.Errorf("after completed: %+v, %v; want the end of the stream", ev, err)
		}
		return nil
	}
}

// loadCheckList lists every job and checks that each accepted one appears exactly once, in a
// consistent state; with done, that every one has completed.
func loadCheckList(t *testing.T, td *testDaemon, accepted []string, done bool) {
	t.Helper()
	code, list := getJSON(t, td.URL+"/api/v1/jobs?limit=5000")
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/jobs: %d %v", code, list)
	}
	raw, _ := json.Marshal(list["jobs"])
	var jobs []jobView
	if err := json.Unmarshal(raw, &jobs); err != nil {
		t.Fatal(err)
	}
	want := make(map[string]bool, len(accepted))
	for _, id := range accepted {
		want[id] = true
	}
	seen := make(map[string]bool, len(jobs))
	counts := map[Status]int{}
	for _, j := range jobs {
		if seen[j.ID] {
			t.Errorf("job %s is listed twice", j.ID)
		}
		seen[j.ID] = true
		if !want[j.ID] {
			t.Errorf("job %s is listed but was never accepted", j.ID)
		}
		counts[j.Status]++
		if problem := loadStateProblem(j, done); problem != "" {
			t.Errorf("job %s: %s: %+v", j.ID, problem, j)
		}
	}
	for _, id := range accepted {
		if !seen[id] {
			t.Errorf("accepted job %s is not listed", id)
		}
	}
	if len(jobs) != len(accepted) {
		t.Errorf("listed %d jobs, want the %d accepted", len(jobs), len(accepted))
	}
	t.Logf("listed %d jobs: %v", len(jobs), counts)
}

// loadStateProblem says what is inconsistent in a listed job, or "".
func loadStateProblem(j jobView, done bool) string {
	switch {
	case !validStatus(j.Status):
		return "unknown status"
	case done && j.Status != StatusCompleted:
		return "not completed after every job ended"
	case j.Status.Final() && j.FinishedAt == nil:
		return "final without finished_at"
	case j.Status.Final() && j.QueuePosition != 0:
		return "final with a queue_position"
	case j.Status == StatusCompleted && (j.ExitCode == nil || *j.ExitCode != 0 || j.StartedAt == nil):
		return "completed without exit code 0 and started_at"
	case j.Status == StatusQueued && j.QueuePosition < 1:
		return "queued without a queue_position"
	case j.Status == StatusQueued && (j.StartedAt != nil || j.FinishedAt != nil):
		return "queued with started_at or finished_at"
	case j.Status == StatusRunning && (j.StartedAt == nil || j.FinishedAt != nil || j.QueuePosition != 0):
		return "running without started_at, or with finished_at or a queue_position"
	}
	return ""
}
