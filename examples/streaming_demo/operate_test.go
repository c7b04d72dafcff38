package main

// The client's commands for operating many jobs, against the real charond and the real
// ansible-playbook, as an operator would use them.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// postJob submits a job document as JSON and returns its id.
func postJob(t *testing.T, url string, doc map[string]any) string {
	t.Helper()
	body, _ := json.Marshal(doc)
	resp, err := http.Post(url+"/api/v1/jobs", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var job struct{ ID, Error string }
	json.NewDecoder(resp.Body).Decode(&job)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("submit: %d %s", resp.StatusCode, job.Error)
	}
	return job.ID
}

// waitUntil polls cond every 100 ms for up to limit.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", limit, what)
		}
	}
}

// TestRealWatchTwentyJobs runs `streaming_demo watch` while a script fires twenty jobs:
// every change of every job shows once, in order.
func TestRealWatchTwentyJobs(t *testing.T) {
	needAnsible(t)
	url := startCharond(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errOut := &lockedBuffer{}, &lockedBuffer{}
	getenv := func(k string) string { return map[string]string{"CHARON_URL": url}[k] }
	exited := make(chan int, 1)
	go func() { exited <- run(ctx, []string{"streaming_demo", "watch"}, out, errOut, getenv) }()
	waitUntil(t, 30*time.Second, "watch to connect", func() bool { return strings.Contains(out.String(), "Connected") })

	const jobs = 20
	var ids []string
	for i := 1; i <= jobs; i++ {
		ids = append(ids, postJob(t, url, map[string]any{
			"name":     fmt.Sprintf("fired %d", i),
			"playbook": fmt.Sprintf("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - debug: {msg: \"job %d\"}\n", i),
		}))
	}
	waitUntil(t, 3*time.Minute, "every change of the twenty jobs to show", func() bool {
		return strings.Count(out.String(), "Completed") >= jobs
	})
	cancel()
	if code := <-exited; code != exitInterrupted {
		t.Errorf("watch exited %d, want %d", code, exitInterrupted)
	}
	lines := strings.Split(out.String(), "\n")
	for i, id := range ids {
		var seen []string
		for _, line := range lines {
			if strings.Contains(line, "("+id[:8]+")") {
				seen = append(seen, line)
			}
		}
		want := []string{"Queued", "Running", "Completed"}
		ok := len(seen) == len(want)
		for j := 0; ok && j < len(want); j++ {
			ok = strings.Contains(seen[j], want[j]) && strings.Contains(seen[j], fmt.Sprintf("fired %d", i+1))
		}
		if !ok {
			t.Errorf("job %d (%s) shows %d lines, want queued, running and completed once each:\n%s", i+1, id, len(seen), strings.Join(seen, "\n"))
		}
	}
	if t.Failed() {
		t.Logf("watch printed:\n%s\n%s", out.String(), errOut.String())
	}
}

// TestRealRelaunchFailedHosts relaunches, with the client, a run in which one of three hosts
// failed: the new job runs on that host alone, and the client streams it to its end.
func TestRealRelaunchFailedHosts(t *testing.T) {
	needAnsible(t)
	url := startCharond(t, t.TempDir())
	id := postJob(t, url, map[string]any{
		"name": "three hosts",
		"inventory": map[string]any{"web": map[string]any{"hosts": map[string]any{"web1": nil, "web2": nil, "web3": nil},
			"vars": map[string]any{"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}}},
		"playbook": "- hosts: web\n  gather_facts: false\n  tasks:\n    - fail: {msg: broken}\n      when: inventory_hostname == 'web2'\n    - debug: {msg: \"fine on {{ inventory_hostname }}\"}\n",
	})
	waitUntil(t, time.Minute, "the first run to fail", func() bool {
		resp, err := http.Get(url + "/api/v1/jobs/" + id)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var job struct{ Status string }
		json.NewDecoder(resp.Body).Decode(&job)
		return job.Status == "failed"
	})

	code, out, errOut := runClient(t, url, "relaunch", id, "--failed")
	if code != exitJobFailed {
		t.Errorf("relaunch exited %d, want %d (web2 fails again); stderr %s", code, exitJobFailed, errOut)
	}
	text := out.buf.String()
	wantInOutput(t, text, "Relaunch of: "+id, "Options: --limit web2", "fatal: [web2]", "web2                       : ok=0")
	for _, other := range []string{"web1", "web3"} {
		if strings.Contains(text, other) {
			t.Errorf("the relaunch on failed hosts ran on %s:\n%s", other, text)
		}
	}
}
