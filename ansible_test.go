package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// These tests run the real ansible-playbook. Without it they skip, saying why, unless
// CHARON_REQUIRE_ANSIBLE=1 (as CI sets it), when they fail instead.
func requireAnsible(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		if os.Getenv("CHARON_REQUIRE_ANSIBLE") == "1" {
			t.Fatalf("ansible-playbook is required (CHARON_REQUIRE_ANSIBLE=1) but not found: %v", err)
		}
		t.Skip("ansible-playbook not found; install ansible-core to run the end-to-end tests")
	}
}

// TestAnsibleSimpleJob submits examples/streaming_demo/simple_job.yaml as the README's curl command does and
// reads both streams: the playbook's messages must arrive while it runs, not all at the end.
func TestAnsibleSimpleJob(t *testing.T) {
	requireAnsible(t)
	td := startTestDaemon(t, withRealAnsible)
	doc, err := os.ReadFile("examples/streaming_demo/simple_job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	job := td.submit(t, "application/x-yaml", string(doc), 201)
	id := job["id"].(string)
	if job["status"] != "queued" || job["name"] != "Simple Ansible Task" || job["priority"] != float64(5) || job["timeout"] != float64(60) {
		t.Errorf("submitted job = %v", job)
	}
	_, logs := openStream(t, td.URL+"/api/v1/jobs/"+id+"/logs/stream", nil)
	_, events := openStream(t, td.URL+"/api/v1/jobs/"+id+"/events/stream", nil)

	all := collectCompleted(t, logs)
	lines := logLines(t, all, 1)
	text := strings.Join(lines, "\n")
	for _, want := range []string{"Hello from Charon Ansible job!", "Job is running...", "Job completed successfully!", "ok=4"} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %q:\n%s", want, text)
		}
	}
	// The playbook pauses three seconds between "Job is running..." and the last message: a
	// client that streams live sees them that far apart; one fed at the end sees them together.
	running, finished := receivedAt(all, "Job is running..."), receivedAt(all, "Job completed successfully!")
	if gap := finished.Sub(running); gap < 2*time.Second {
		t.Errorf("messages 3 s apart in the playbook reached the client %v apart: output is not streamed live", gap)
	}
	if last := all[len(all)-1]; !strings.Contains(last.Data, `"status":"completed"`) || !strings.Contains(last.Data, `"exit_code":0`) {
		t.Errorf("completed event = %s", last.Data)
	}
	var statuses, types []string
	for _, ev := range collectCompleted(t, events) {
		if ev.Event == "job_event" {
			var d struct{ Type, Status string }
			if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
				t.Fatalf("job_event data is not JSON: %v: %q", err, ev.Data)
			}
			types = append(types, d.Type)
			if d.Type == "status_changed" {
				statuses = append(statuses, d.Status)
			}
		}
	}
	if got := strings.Join(statuses, ","); got != "queued,running,completed" {
		t.Errorf("statuses = %s, want queued,running,completed", got)
	}
	// simple_job.yaml's four debug/pause tasks on localhost: four results, and a recap of ok=4.
	if got := strings.Count(strings.Join(types, ","), "runner_on_ok"); got != 4 {
		t.Errorf("runner_on_ok events = %d, want 4; types %v", got, types)
	}
	_, final := getJSON(t, td.URL+"/api/v1/jobs/"+id)
	summary, _ := json.Marshal(final["summary"])
	if want := `{"failed_tasks":[],"hosts":{"localhost":{"changed":0,"failed":0,"ignored":0,"ok":4,"rescued":0,"skipped":0,"unreachable":0}}}`; string(summary) != want {
		t.Errorf("summary = %s, want %s", summary, want)
	}
}

// submitPlaybook queues a job that runs the embedded playbook on localhost.
func (td *testDaemon) submitPlaybook(t *testing.T, name, playbook string) string {
	t.Helper()
	doc, _ := json.Marshal(map[string]any{"name": name, "playbook": playbook})
	return td.submit(t, "application/json", string(doc), 201)["id"].(string)
}

// receivedAt is when the client read the first log event whose data holds s.
func receivedAt(events []sseEvent, s string) time.Time {
	for _, ev := range events {
		if ev.Event == "log" && strings.Contains(ev.Data, s) {
			return ev.At
		}
	}
	return time.Time{}
}

func TestAnsibleFailedHost(t *testing.T) {
	requireAnsible(t)
	td := startTestDaemon(t, withRealAnsible)
	playbook := "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - fail:\n        msg: boom\n"
	id := td.submitPlaybook(t, "fails", playbook)
	job := td.waitStatus(t, id, StatusFailed)
	if job["exit_code"] != float64(2) || job["message"] != "ansible-playbook exited with code 2: one or more hosts failed" {
		t.Errorf("job = %v", job)
	}
}

// TestAnsibleCancelDuringTask cancels a playbook in the middle of a long task: SIGTERM to the
// process group must end it at once (SIGINT would not while a task runs).
func TestAnsibleCancelDuringTask(t *testing.T) {
	requireAnsible(t)
	td := startTestDaemon(t, withRealAnsible)
	playbook := "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: sleeping\n    - command: sleep 60\n"
	id := td.submitPlaybook(t, "long", playbook)
	waitLogContains(t, td, id, "TASK [command]")
	start := time.Now()
	postCancel(t, td, id, 202)
	td.waitStatus(t, id, StatusCancelled)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancel took %v", d)
	}
}

// TestAnsibleLeavesNoOrphan runs a playbook that leaves a background sleep behind; it must not
// outlive the job.
func TestAnsibleLeavesNoOrphan(t *testing.T) {
	requireAnsible(t)
	td := startTestDaemon(t, withRealAnsible)
	playbook := `- hosts: localhost
  gather_facts: false
  tasks:
    - shell: "nohup sleep 300 >/dev/null 2>&1 & echo $!"
      register: bg
    - debug:
        msg: "background pid {{ bg.stdout }}"
`
	id := td.submitPlaybook(t, "orphan", playbook)
	td.waitStatus(t, id, StatusCompleted)
	text := get(t, td.URL+"/api/v1/jobs/"+id+"/logs")
	m := regexp.MustCompile(`background pid (\d+)`).FindSubmatch(text)
	if m == nil {
		t.Fatalf("no pid in log:\n%s", text)
	}
	waitProcessGone(t, parsePID(t, string(m[1])))
}

// waitLogContains waits until the job's log holds s.
func waitLogContains(t *testing.T, td *testDaemon, id, s string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the log of job %s to show %q", id, s), func() (bool, string) {
		text := get(t, td.URL+"/api/v1/jobs/"+id+"/logs")
		return bytes.Contains(text, []byte(s)), string(text)
	})
}
