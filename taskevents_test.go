package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// mixedPlaybook has one task of each kind of result, on localhost and on a host that cannot be
// reached (its name does not resolve, so ssh fails at once).
const mixedPlaybook = `- name: Mixed results
  hosts: all
  gather_facts: false
  tasks:
    - name: ok task
      debug:
        msg: hello
    - name: changed task
      command: "true"
      changed_when: true
    - name: failing but ignored
      fail:
        msg: "boom {{ db_password }}"
      ignore_errors: true
    - name: skipped task
      debug:
        msg: never
      when: false
    - name: loop task
      debug:
        msg: "item {{ item }}"
      loop: [1, 2]
    - name: secret task
      debug:
        msg: "{{ db_password }}"
      no_log: true
`

// jobEvents fetches a job's recorded events from GET /api/v1/jobs/{id}/events.
func jobEvents(t *testing.T, td *testDaemon, id string) ([]map[string]any, string) {
	t.Helper()
	raw := get(t, td.URL+"/api/v1/jobs/"+id+"/events")
	var got struct{ Events []map[string]any }
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("events are not JSON: %v: %s", err, raw)
	}
	for i, ev := range got.Events {
		if ev["id"] != float64(i+1) || ev["job_id"] != id || ev["timestamp"] == nil || ev["message"] == nil {
			t.Errorf("event %d lacks its envelope: %v", i+1, ev)
		}
	}
	return got.Events, string(raw)
}

// TestAnsibleTaskEvents runs a playbook with every kind of result on the real ansible-playbook:
// the events must come in exactly the expected sequence, and the summary must count them.
func TestAnsibleTaskEvents(t *testing.T) {
	requireAnsible(t)
	td := startTestDaemon(t, withRealAnsible)
	doc, _ := json.Marshal(map[string]any{"name": "mixed", "playbook": mixedPlaybook,
		"inventory": []string{"localhost", "unreachable.invalid"}, "variables": map[string]any{"db_password": "s3cr3t-value"}})
	id := td.submit(t, "application/json", string(doc), 201)["id"].(string)
	_, stream := openStream(t, td.URL+"/api/v1/jobs/"+id+"/events/stream", nil)
	streamed := collect(t, stream)
	job := td.waitStatus(t, id, StatusFailed) // an unreachable host makes ansible-playbook exit 4

	events, raw := jobEvents(t, td, id)
	// Hosts run in parallel, so the results of one task may come in either order: sort each
	// task's run of host results.
	var got []string
	runStart := 0
	for _, ev := range events {
		s := ev["type"].(string)
		h, ok := ev["host"].(string)
		if ok {
			s += "@" + h
		} else {
			runStart = len(got) + 1
		}
		got = append(got, s)
		if ok {
			sort.Strings(got[runStart:])
		}
	}
	want := []string{
		"status_changed", "status_changed", "playbook_on_start", "playbook_on_play_start",
		"playbook_on_task_start", "runner_on_ok@localhost", "runner_on_ok@unreachable.invalid",
		"playbook_on_task_start", "runner_on_ok@localhost", "runner_on_unreachable@unreachable.invalid",
		"playbook_on_task_start", "runner_on_failed@localhost",
		"playbook_on_task_start", "runner_on_skipped@localhost",
		"playbook_on_task_start", "runner_item_on_ok@localhost", "runner_item_on_ok@localhost", "runner_on_ok@localhost",
		"playbook_on_task_start", "runner_on_ok@localhost",
		"playbook_on_stats", "status_changed",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("event sequence:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := len(streamed) - 2; n != len(events) { // less connected and completed
		t.Errorf("the stream carried %d events, the record %d", n, len(events))
	}

	byTask := map[string]map[string]any{}
	for _, ev := range events {
		if task, _ := ev["task"].(string); task != "" && ev["host"] == "localhost" {
			byTask[task+"/"+ev["type"].(string)] = ev
		}
	}
	if ev := byTask["changed task/runner_on_ok"]; ev["changed"] != true || ev["action"] != "command" || ev["play"] != "Mixed results" {
		t.Errorf("changed result = %v", ev)
	}
	if d, ok := byTask["changed task/runner_on_ok"]["duration"].(float64); !ok || d <= 0 {
		t.Errorf("changed result has no duration: %v", byTask["changed task/runner_on_ok"])
	}
	if ev := byTask["failing but ignored/runner_on_failed"]; ev["ignore_errors"] != true || ev["msg"] != "boom ********" {
		t.Errorf("ignored failure = %v, want ignore_errors and the msg with the secret masked", ev)
	}
	secret := byTask["secret task/runner_on_ok"]
	if secret["no_log"] != true || secret["msg"] != nil || secret["item"] != nil {
		t.Errorf("no_log result = %v, want no_log and nothing of the result", secret)
	}
	if strings.Contains(raw, "s3cr3t-value") {
		t.Error("the secret variable's value appears in the events")
	}
	for _, ev := range streamed {
		if strings.Contains(ev.Data, "s3cr3t-value") {
			t.Errorf("the secret appears on the stream: %s", ev.Data)
		}
	}
	summary, _ := json.Marshal(job["summary"])
	wantSummary := `{"failed_tasks":[{"host":"unreachable.invalid",` +
		`"message":"Failed to connect to the host via ssh: ssh: Could not resolve hostname unreachable.invalid: Name or service not known",` +
		`"play":"Mixed results","task":"changed task"}],` +
		`"hosts":{"localhost":{"changed":1,"failed":0,"ignored":1,"ok":5,"rescued":0,"skipped":1,"unreachable":0},` +
		`"unreachable.invalid":{"changed":0,"failed":0,"ignored":0,"ok":1,"rescued":0,"skipped":0,"unreachable":1}}}`
	if string(summary) != wantSummary {
		t.Errorf("summary = %s\nwant      %s", summary, wantSummary)
	}
	if vars := job["variables"].(map[string]any); vars["db_password"] != "********" {
		t.Errorf("job variables show %v, want the secret masked", vars)
	}
}

// TestAnsibleFailedJobSummaryNamesTaskAndHost checks what a failed job says without its log.
func TestAnsibleFailedJobSummaryNamesTaskAndHost(t *testing.T) {
	requireAnsible(t)
	td := startTestDaemon(t, withRealAnsible)
	playbook := "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - name: Check disk\n      fail:\n        msg: not enough disk\n"
	id := td.submitPlaybook(t, "fails", playbook)
	job := td.waitStatus(t, id, StatusFailed)
	failed, _ := json.Marshal(job["summary"].(map[string]any)["failed_tasks"])
	if want := `[{"host":"localhost","message":"not enough disk","play":"localhost","task":"Check disk"}]`; string(failed) != want {
		t.Errorf("failed_tasks = %s, want %s", failed, want)
	}
}

// brokenPlugin fails as a plugin does on an Ansible whose callback API it does not fit: its
// constructor raises, so Ansible skips it with a warning and runs the playbook without it.
const brokenPlugin = `from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "charon_events"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        raise RuntimeError("this Ansible is not supported")
`

// TestAnsibleBrokenPluginStillRuns makes the callback plugin fail to load: the job must still
// run and stream its log, with one warning event saying why there are no task events.
func TestAnsibleBrokenPluginStillRuns(t *testing.T) {
	requireAnsible(t)
	saved := callbackPlugin
	callbackPlugin = []byte(brokenPlugin)
	defer func() { callbackPlugin = saved }()
	td := startTestDaemon(t, withRealAnsible)
	doc, _ := json.Marshal(map[string]any{"name": "no events", "playbook": "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: still here\n"})
	id := td.submit(t, "application/json", string(doc), 201)["id"].(string)
	td.waitStatus(t, id, StatusCompleted)
	if text := get(t, td.URL+"/api/v1/jobs/"+id+"/logs"); !strings.Contains(string(text), "still here") {
		t.Errorf("log lacks the playbook's output:\n%s", text)
	}
	events, _ := jobEvents(t, td, id)
	var warnings []string
	for _, ev := range events {
		if ev["type"] == "warning" {
			warnings = append(warnings, ev["message"].(string))
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], callbackName) {
		t.Errorf("warnings = %q, want one naming the plugin", warnings)
	}
}

// TestFakeRunnerWithoutPluginWarnsOnlyWhenPlaysRan checks the warning's condition with the
// fake runner, which never writes events: output without a play is no reason to warn.
func TestFakeRunnerWithoutPluginWarnsOnlyWhenPlaysRan(t *testing.T) {
	td := startTestDaemon(t)
	quiet := td.submitFake(t, "quiet", 5, map[string]any{"fake": "lines", "count": 2})
	td.waitStatus(t, quiet, StatusCompleted)
	events, _ := jobEvents(t, td, quiet)
	if len(events) != 3 {
		t.Errorf("events = %v, want only the three status changes", events)
	}
}

func TestRedactorAndMasking(t *testing.T) {
	vars := map[string]any{
		"db_password": "hunter2",
		"API_TOKEN":   "tok-123",
		"ssh_keys":    []any{"key-one", map[string]any{"k": "key-two"}},
		"port":        8080,
		"user":        "admin",
	}
	r := newRedactor(vars)
	got := r.apply("login admin:hunter2 with tok-123, key-one and key-two on 8080")
	if want := "login admin:******** with ********, ******** and ******** on 8080"; got != want {
		t.Errorf("redacted = %q, want %q", got, want)
	}
	shown := maskVariables(vars)
	if shown["db_password"] != masked || shown["API_TOKEN"] != masked || shown["ssh_keys"] != masked || shown["user"] != "admin" || shown["port"] != 8080 {
		t.Errorf("masked variables = %v", shown)
	}
	if vars["db_password"] != "hunter2" {
		t.Error("masking changed the job's own variables")
	}
}

func TestPluginEventHandling(t *testing.T) {
	dir := t.TempDir()
	logs, _, _ := openEventLog(filepath.Join(dir, "l"), logStream)
	events, _, _ := openEventLog(filepath.Join(dir, "e"), eventsStream)
	defer logs.close()
	defer events.close()
	job := &Job{ID: "j1", Spec: &JobSpec{Variables: map[string]any{"secret": "pa55w0rd"}}, logs: logs, events: events}
	re := newRunEvents(job, func() time.Time { return time.Unix(0, 0) }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, line := range []string{
		`{"event": "charon_callback_loaded"}`,
		`{"event": "runner_on_failed", "play": "p", "task": "t", "host": "h1", "msg": "bad pa55w0rd", "changed": false}`,
		`{"event": "runner_item_on_ok", "task": "t", "host": "h1", "item": "x", "changed": true}`,
		`{"event": "something_unknown"}`,
		`not json`,
		`{"event": "playbook_on_stats", "hosts": {"h1": {"ok": 1, "failed": 1}}, "artifacts": {"release": "1.2", "api_token": "t0k3n-value", "notes": ["built with pa55w0rd"], "nested": {"db_password": "x"}}}`,
	} {
		re.pluginLine([]byte(line))
	}
	re.sawPlay.Store(true)
	re.warnIfMissing() // the plugin spoke: no warning
	var msgs []string
	res, err := events.read(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range res.recs {
		var d map[string]any
		if err := json.Unmarshal(rec.data, &d); err != nil {
			t.Fatalf("event data is not JSON: %v: %q", err, rec.data)
		}
		msgs = append(msgs, d["type"].(string)+": "+d["message"].(string))
	}
	want := []string{
		"runner_on_failed: failed: [h1]: bad ********",
		"runner_item_on_ok: changed: [h1] (item=x)",
		"playbook_on_stats: PLAY RECAP h1: ok=1 changed=0 unreachable=0 failed=1 skipped=0 rescued=0 ignored=0",
	}
	if strings.Join(msgs, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(msgs, "\n"), strings.Join(want, "\n"))
	}
	sum, _ := json.Marshal(job.state().Summary)
	if want := `{"hosts":{"h1":{"ok":1,"changed":0,"unreachable":0,"failed":1,"skipped":0,"rescued":0,"ignored":0}},"failed_tasks":[{"host":"h1","play":"p","task":"t","message":"bad ********"}]}`; string(sum) != want {
		t.Errorf("summary = %s", sum)
	}
	// set_stats data is kept as artifacts, masked by key at any depth and by value in text.
	arts, _ := json.Marshal(job.state().Artifacts)
	if want := `{"api_token":"********","nested":{"db_password":"********"},"notes":["built with ********"],"release":"1.2"}`; string(arts) != want {
		t.Errorf("artifacts = %s, want %s", arts, want)
	}
	if last := res.recs[len(res.recs)-1]; strings.Contains(string(last.data), "t0k3n") || !strings.Contains(string(last.data), `"release":"1.2"`) {
		t.Errorf("recap event = %s, want its artifacts masked", last.data)
	}
}

// TestPluginShipsInTheWorkDir checks the run's environment enables the plugin from its work
// dir on fd 3, keeping the operator's own callback settings.
func TestPluginShipsInTheWorkDir(t *testing.T) {
	t.Setenv("ANSIBLE_CALLBACKS_ENABLED", "profile_tasks")
	env := callbackEnv("/work/x/callback_plugins")
	want := []string{
		"ANSIBLE_CALLBACK_PLUGINS=/work/x/callback_plugins:~/.ansible/plugins/callback:/usr/share/ansible/plugins/callback",
		"ANSIBLE_CALLBACKS_ENABLED=profile_tasks,charon_events",
	}
	if strings.Join(env, "\n") != strings.Join(want, "\n") {
		t.Errorf("env = %q, want %q", env, want)
	}
	r := &runner{workRoot: t.TempDir()}
	dir, err := r.prepareWorkDir(&Job{ID: "x", Spec: &JobSpec{Playbook: "- hosts: all\n", Variables: map[string]any{}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "callback_plugins", "charon_events.py"))
	if err != nil || string(got) != string(callbackPlugin) {
		t.Errorf("plugin in the work dir: %v", err)
	}
}

// TestAnsibleArtifactsTooLarge publishes more with set_stats than the plugin sends: the job
// keeps no artifacts, its recap says how large they were, and the recap itself is intact.
func TestAnsibleArtifactsTooLarge(t *testing.T) {
	requireAnsible(t)
	td := startTestDaemon(t, withRealAnsible)
	doc, _ := json.Marshal(map[string]any{"name": "big stats",
		"playbook": "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - set_stats:\n        data:\n          blob: \"{{ 'x' * 40000 }}\"\n"})
	id := td.submit(t, "application/json", string(doc), 201)["id"].(string)
	job := td.waitStatus(t, id, StatusCompleted)
	if job["artifacts"] != nil {
		t.Errorf("artifacts = %.80v, want none: they are over the plugin's 32 KiB", job["artifacts"])
	}
	if hosts := job["summary"].(map[string]any)["hosts"].(map[string]any); hosts["localhost"] == nil {
		t.Errorf("the recap was lost with the artifacts: %v", job["summary"])
	}
	_, events := getJSON(t, td.URL+"/api/v1/jobs/"+id+"/events")
	found := false
	for _, ev := range events["events"].([]any) {
		if e := ev.(map[string]any); e["type"] == "playbook_on_stats" && e["artifacts_dropped"].(float64) > 40000 {
			found = true
		}
	}
	if !found {
		t.Errorf("no recap event says how large the dropped artifacts were: %v", events)
	}
}
