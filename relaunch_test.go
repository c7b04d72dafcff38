package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// relaunch posts a relaunch of id with body (JSON, or nothing when empty).
func relaunch(t *testing.T, td *testDaemon, id, body string) (*http.Response, []byte) {
	t.Helper()
	var headers map[string]string
	if body != "" {
		headers = contentType("application/json")
	}
	return do(t, "POST", td.URL+"/api/v1/jobs/"+id+"/relaunch", headers, body)
}

// TestRelaunch relaunches an ended job: a new job with the same spec, secret variables
// included though never shown, naming the original; and refuses what cannot be relaunched.
func TestRelaunch(t *testing.T) {
	td := startTestDaemon(t)
	gated, open := gatedJob(t, td, 1)
	resp, raw := relaunch(t, td, gated, "")
	wantError(t, resp, raw, http.StatusConflict, "job "+gated+" is running: it can be relaunched once it has ended")
	open()
	td.waitStatus(t, gated, StatusCompleted)

	orig := td.submitFake(t, "orig", 9, map[string]any{"fake": "lines", "count": 2, "db_password": "s3cr3t-value"})
	td.waitStatus(t, orig, StatusCompleted)
	resp, raw = relaunch(t, td, orig, "")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("relaunch: %d %s", resp.StatusCode, raw)
	}
	var again map[string]any
	if err := json.Unmarshal(raw, &again); err != nil {
		t.Fatal(err)
	}
	id := again["id"].(string)
	if again["relaunch_of"] != orig || again["name"] != "orig" || again["priority"] != float64(9) || id == orig ||
		resp.Header.Get("Location") != "/api/v1/jobs/"+id {
		t.Errorf("relaunched job = %v, Location %q", again, resp.Header.Get("Location"))
	}
	if vars := again["variables"].(map[string]any); vars["db_password"] != masked || vars["count"] != float64(2) {
		t.Errorf("relaunched job's variables = %v, want the same, the secret masked", vars)
	}
	if job := mustJob(t, td, id); job.Spec.Variables["db_password"] != "s3cr3t-value" {
		t.Errorf("the relaunch runs with db_password %v, want the original's value", job.Spec.Variables["db_password"])
	}
	td.waitStatus(t, id, StatusCompleted)
	if got := td.getJob(t, orig)["relaunch_of"]; got != nil {
		t.Errorf("a submitted job has relaunch_of %v, want null", got)
	}

	for _, tc := range []struct {
		id, ct, body string
		status       int
		want         string
	}{
		{orig, "application/json", `{"hosts": "failed"}`, http.StatusConflict, "job " + orig + " has no host recap"},
		{orig, "application/json", `{"hosts": "some"}`, http.StatusBadRequest, `hosts: "some" is not all or failed`},
		{orig, "application/json", `{"host": "all"}`, http.StatusBadRequest, `unknown field "host"`},
		{orig, "application/json", `{"hosts": "all"} {}`, http.StatusBadRequest, "more than one JSON value"},
		{orig, "text/plain", `{"hosts": "all"}`, http.StatusUnsupportedMediaType, "send the relaunch body as application/json"},
		{"00000000-0000-0000-0000-000000000000", "", "", http.StatusNotFound, "job not found: 00000000-0000-0000-0000-000000000000"},
	} {
		headers := map[string]string{}
		if tc.ct != "" {
			headers["Content-Type"] = tc.ct
		}
		resp, raw := do(t, "POST", td.URL+"/api/v1/jobs/"+tc.id+"/relaunch", headers, tc.body)
		wantError(t, resp, raw, tc.status, tc.want)
	}
}

// TestRelaunchFailedHosts relaunches on the hosts that failed or were unreachable, from the
// original's recap, and refuses when none did.
func TestRelaunchFailedHosts(t *testing.T) {
	td := startTestDaemon(t)
	recap := func(hosts map[string]hostCounts) string {
		id := td.submitFake(t, "recap", 5, map[string]any{"fake": "lines", "count": 1})
		td.waitStatus(t, id, StatusCompleted)
		mustJob(t, td, id).noteTaskEvent(&pluginEvent{Event: "playbook_on_stats", eventFields: eventFields{Hosts: hosts}})
		return id
	}
	id := recap(map[string]hostCounts{"web1": {OK: 2}, "web2": {OK: 1, Failed: 1}, "db1": {Unreachable: 1}})
	resp, raw := relaunch(t, td, id, `{"hosts": "failed"}`)
	var again map[string]any
	if err := json.Unmarshal(raw, &again); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("relaunch on failed hosts: %d %s", resp.StatusCode, raw)
	}
	if again["limit"] != "db1,web2" || again["relaunch_of"] != id {
		t.Errorf("relaunch on failed hosts: limit %v, relaunch_of %v; want db1,web2 and %s", again["limit"], again["relaunch_of"], id)
	}
	if resp, raw := relaunch(t, td, id, `{"hosts": "all"}`); resp.StatusCode != http.StatusCreated || !strings.Contains(string(raw), `"limit":""`) {
		t.Errorf("relaunch on all hosts: %d %s, want 201 with the original's limit", resp.StatusCode, raw)
	}

	clean := recap(map[string]hostCounts{"web1": {OK: 2}, "web2": {OK: 1, Ignored: 1}})
	resp, raw = relaunch(t, td, clean, `{"hosts": "failed"}`)
	wantError(t, resp, raw, http.StatusConflict, "no host failed or was unreachable in job "+clean)

	odd := recap(map[string]hostCounts{"web*": {Failed: 1}})
	resp, raw = relaunch(t, td, odd, `{"hosts": "failed"}`)
	wantError(t, resp, raw, http.StatusConflict, `host name "web*" holds "*"`)
}

// TestRelaunchAfterRestart relaunches jobs restored from disk: one without secrets runs again;
// one with secrets cannot, since its record kept them masked.
func TestRelaunchAfterRestart(t *testing.T) {
	dir := t.TempDir()
	td := startTestDaemonIn(t, dir)
	plain := td.submitFake(t, "plain", 5, map[string]any{"fake": "lines", "count": 1})
	secret := td.submitFake(t, "secret", 5, map[string]any{"fake": "lines", "count": 1, "api_token": "t0k3n-t0k3n"})
	td.waitStatus(t, plain, StatusCompleted)
	td.waitStatus(t, secret, StatusCompleted)
	td.stop(t)

	td = startTestDaemonIn(t, dir)
	if resp, raw := relaunch(t, td, plain, ""); resp.StatusCode != http.StatusCreated {
		t.Errorf("relaunch of a restored job: %d %s", resp.StatusCode, raw)
	}
	resp, raw := relaunch(t, td, secret, "")
	wantError(t, resp, raw, http.StatusConflict, "keeps an ended job's secret variables only until it restarts")
}

// TestAnsibleRelaunchFailedHosts runs a play on three hosts, one of which fails, then
// relaunches it on its failed hosts with the real ansible-playbook: only that host runs, with
// the original's variables, secret ones included. The play publishes artifacts with
// set_stats, which the job keeps, masked.
func TestAnsibleRelaunchFailedHosts(t *testing.T) {
	requireAnsible(t)
	td := startTestDaemon(t, withRealAnsible)
	out := t.TempDir()
	hosts := map[string]any{"web1": nil, "web2": nil, "web3": nil}
	doc, _ := json.Marshal(map[string]any{
		"name": "three hosts", "limit": "web*",
		"inventory": map[string]any{"web": map[string]any{"hosts": hosts,
			"vars": map[string]any{"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}}},
		"variables": map[string]any{"out": out, "api_token": "t0k3n-for-the-run"},
		"playbook": `- hosts: web
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        content: "{{ api_token }}"
        dest: "{{ out }}/{{ inventory_hostname }}"
    - ansible.builtin.fail:
        msg: "{{ inventory_hostname }} is broken"
      when: inventory_hostname == "web2"
    - ansible.builtin.set_stats:
        data:
          release: "1.2.3"
          deploy_token: "{{ api_token }}"
      run_once: true
`})
	orig := td.submit(t, "application/json", string(doc), http.StatusCreated)["id"].(string)
	job := td.waitStatus(t, orig, StatusFailed)
	arts, _ := json.Marshal(job["artifacts"])
	if string(arts) != `{"deploy_token":"********","release":"1.2.3"}` {
		t.Errorf("artifacts = %s, want release and the token masked", arts)
	}
	for _, h := range []string{"web1", "web2", "web3"} {
		if err := os.Remove(filepath.Join(out, h)); err != nil {
			t.Fatalf("the original run did not write %s: %v", h, err)
		}
	}

	resp, raw := relaunch(t, td, orig, `{"hosts": "failed"}`)
	var again map[string]any
	if err := json.Unmarshal(raw, &again); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("relaunch: %d %s", resp.StatusCode, raw)
	}
	id := again["id"].(string)
	job = td.waitStatus(t, id, StatusFailed)
	if job["limit"] != "web2" {
		t.Errorf("relaunch limit = %v, want web2", job["limit"])
	}
	if got, err := os.ReadFile(filepath.Join(out, "web2")); err != nil || string(got) != "t0k3n-for-the-run" {
		t.Errorf("the relaunch wrote %q (%v) for web2, want the secret variable's value", got, err)
	}
	for _, h := range []string{"web1", "web3"} {
		if _, err := os.Stat(filepath.Join(out, h)); err == nil {
			t.Errorf("the relaunch on failed hosts ran on %s", h)
		}
	}
	if ran := job["summary"].(map[string]any)["hosts"].(map[string]any); len(ran) != 1 || ran["web2"] == nil {
		t.Errorf("the relaunch's recap names %v, want web2 alone", ran)
	}
}

// TestRelaunchMeetsTodaysRules relaunches, under -playbooks-only, jobs accepted before it was
// set: one with an embedded playbook, one naming a playbook file but setting an ansible_*
// variable. Each is refused as its submission would be now.
func TestRelaunchMeetsTodaysRules(t *testing.T) {
	dir := t.TempDir()
	td := startTestDaemonIn(t, dir)
	embedded := td.submitFake(t, "embedded", 5, map[string]any{"fake": "lines", "count": 1})
	os.WriteFile(filepath.Join(td.srv.limits.PlaybookDir, "site.yml"), []byte("- hosts: localhost\n  tasks: []\n"), 0o644)
	setting := td.submit(t, "application/json", `{"name": "setting", "playbook": "site.yml", "variables": {"fake": "lines", "count": 1, "ansible_python_interpreter": "/bin/sh"}}`, http.StatusCreated)["id"].(string)
	td.waitStatus(t, embedded, StatusCompleted)
	td.waitStatus(t, setting, StatusCompleted)
	td.stop(t)

	d, err := tryStartDaemon(t, dir, slog.New(slog.NewTextHandler(io.Discard, nil)), []string{"-playbooks-only"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.stop()
	strict := &testDaemon{daemon: d, URL: "http://" + d.addr}
	resp, raw := relaunch(t, strict, embedded, "")
	wantError(t, resp, raw, http.StatusForbidden, "embedded playbook, and charond now runs with -playbooks-only")
	resp, raw = relaunch(t, strict, setting, "")
	wantError(t, resp, raw, http.StatusForbidden, "ansible_python_interpreter is refused")
}
