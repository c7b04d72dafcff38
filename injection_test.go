package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// This file checks that nothing in a job becomes code charond did not mean to run: host names
// stay names, variables stay text Ansible never templates, -playbooks-only keeps a submitter
// to the playbooks on disk, and YAML cannot expand a small body into a huge job.

func TestHostNamesAreData(t *testing.T) {
	f := newPlaybookFixture(t)
	parse := func(host string) error {
		doc, _ := json.Marshal(map[string]any{"name": "h", "playbook": "site.yml", "inventory": []string{"web1", host}})
		_, err := parseJobSpec(doc, true, f.limits())
		return err
	}
	for _, host := range []string{
		"{{ lookup('pipe', 'id') }}", "{{7*7}}", "web{% if true %}1{% endif %}", "db{# comment #}",
		"all", "ungrouped", "ALL",
		"host$(id)", "web;reboot", "a`id`", "a|b", "a>b", "a'b", `a"b`, `a\b`,
		"web*", "web?", "!db1", "web&prod", "~web.*", "web{1,2}", "a/b", "a@b", "a=b",
	} {
		err := parse(host)
		if err == nil {
			t.Errorf("host %q accepted", host)
			continue
		}
		if status, msg := httpStatus(err); status != http.StatusBadRequest || !strings.Contains(msg, "inventory[1]:") {
			t.Errorf("host %q: %d %q, want 400 naming inventory[1]", host, status, msg)
		}
	}
	for _, host := range []string{"web-1.example.com", "db_2", "10.0.0.7", "fe80::1", "web1:2222", "münchen.example", "localhost"} {
		if err := parse(host); err != nil {
			t.Errorf("host %q refused: %v", host, err)
		}
	}
}

// TestVarsFileIsUnsafe reads the vars file charond writes: every string, nested keys included,
// is tagged !unsafe; other scalars keep their types; -allow-jinja-in-vars writes plain JSON.
func TestVarsFileIsUnsafe(t *testing.T) {
	vars := map[string]any{
		"x":    "{{ lookup('pipe', 'id') }}",
		"n":    map[string]any{"{{ k }}": "{% v %}"},
		"l":    []any{"a", 2, 2.5, true, nil},
		"port": 8080,
	}
	r := &runner{}
	raw, err := r.varsFile(vars)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("vars file is not YAML: %v\n%s", err, raw)
	}
	var strs, tagged int
	var walk func(n *yaml.Node, topKey bool)
	walk = func(n *yaml.Node, topKey bool) {
		if n.Kind == yaml.ScalarNode && n.Tag != "!!int" && n.Tag != "!!float" && n.Tag != "!!bool" && n.Tag != "!!null" && !topKey {
			strs++
			if n.Tag == "!unsafe" {
				tagged++
			} else {
				t.Errorf("string %q is tagged %s, want !unsafe", n.Value, n.Tag)
			}
		}
		for i, c := range n.Content {
			walk(c, n == doc.Content[0] && i%2 == 0)
		}
	}
	walk(doc.Content[0], false)
	if strs != 4 || tagged != 4 {
		t.Errorf("%d strings, %d tagged !unsafe, want 4 and 4:\n%s", strs, tagged, raw)
	}
	var back map[string]any
	if err := yaml.Unmarshal(raw, &back); err != nil || back["port"] != 8080 || back["x"] != vars["x"] {
		t.Errorf("vars read back as %v (%v)", back, err)
	}
	r.templateVars = true
	if raw, _ := r.varsFile(vars); !json.Valid(raw) {
		t.Errorf("with -allow-jinja-in-vars the vars file is not JSON: %s", raw)
	}
}

// TestAnsibleDoesNotTemplateVariables runs a trusted playbook from -playbook-dir that only
// prints variables, with values a script might forward from a branch name: no lookup may run
// on the controller, and the log shows the text as given. With -allow-jinja-in-vars it runs.
func TestAnsibleDoesNotTemplateVariables(t *testing.T) {
	requireAnsible(t)
	for _, jinja := range []bool{false, true} {
		t.Run(fmt.Sprintf("allow-jinja-in-vars=%v", jinja), func(t *testing.T) {
			td := startTestDaemon(t, withRealAnsible, func(d *daemon) { d.sched.runner.templateVars = jinja })
			marker := filepath.Join(t.TempDir(), "pwned")
			playbook := filepath.Join(td.srv.limits.PlaybookDir, "print.yml")
			os.WriteFile(playbook, []byte("- hosts: all\n  gather_facts: false\n  tasks:\n"+
				"    - debug:\n        msg: \"branch={{ branch }} nested={{ meta.title }} item={{ items[0] }}\"\n"), 0o644)
			lookup := "{{ lookup('pipe', 'touch " + marker + "') }}"
			doc, _ := json.Marshal(map[string]any{"name": "print", "playbook": "print.yml",
				"variables": map[string]any{"branch": lookup, "meta": map[string]any{"title": lookup}, "items": []any{lookup}}})
			id := td.submit(t, "application/json", string(doc), 201)["id"].(string)
			td.waitStatus(t, id, StatusCompleted)
			_, err := os.Stat(marker)
			log := get(t, td.URL+"/api/v1/jobs/"+id+"/logs")
			if jinja {
				if err != nil {
					t.Errorf("with -allow-jinja-in-vars the lookup did not run: %v\n%s", err, log)
				}
				return
			}
			if err == nil {
				t.Errorf("a variable's lookup ran on the controller:\n%s", log)
			}
			if !strings.Contains(string(log), "branch={{ lookup('pipe', 'touch") || !strings.Contains(string(log), "nested={{ lookup(") {
				t.Errorf("the log does not show the variables as text:\n%s", log)
			}
		})
	}
}

func TestPlaybooksOnlyMode(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) {
		d.srv.limits.PlaybooksOnly = true
		d.srv.limits.AllowVars = []string{"ansible_user", "ansible_port"}
	})
	os.WriteFile(filepath.Join(td.srv.limits.PlaybookDir, "site.yml"), []byte("- hosts: all\n  tasks: []\n"), 0o644)
	job := func(playbook string, vars map[string]any) string {
		doc, _ := json.Marshal(map[string]any{"name": "p", "playbook": playbook, "variables": vars})
		return string(doc)
	}
	refused := map[string]string{
		"embedded playbook":          job("- hosts: localhost\n  tasks: []\n", map[string]any{"fake": "lines"}),
		"python interpreter":         job("site.yml", map[string]any{"ansible_python_interpreter": "/tmp/evil.sh"}),
		"ssh ProxyCommand":           job("site.yml", map[string]any{"ansible_ssh_common_args": "-o ProxyCommand=id"}),
		"shell executable":           job("site.yml", map[string]any{"ansible_shell_executable": "/tmp/evil.sh"}),
		"become exe":                 job("site.yml", map[string]any{"ansible_become_exe": "/tmp/evil.sh"}),
		"connection":                 job("site.yml", map[string]any{"ansible_connection": "local"}),
		"a connection plugin option": job("site.yml", map[string]any{"ansible_paramiko_proxy_command": "id"}),
		"another case":               job("site.yml", map[string]any{"Ansible_Shell_Executable": "/tmp/evil.sh"}),
	}
	for name, body := range refused {
		t.Run(name, func(t *testing.T) {
			resp, msg := do(t, "POST", td.URL+"/api/v1/jobs", map[string]string{"Content-Type": "application/json"}, body)
			if resp.StatusCode != http.StatusForbidden || !bytes.Contains(msg, []byte("-playbooks-only")) {
				t.Errorf("%d %s, want 403 naming -playbooks-only", resp.StatusCode, msg)
			}
		})
	}
	for _, vars := range []map[string]any{{"fake": "lines", "count": 1}, {"fake": "lines", "ansible_user": "deploy", "ansible_port": 2222}} {
		if resp, msg := do(t, "POST", td.URL+"/api/v1/jobs", map[string]string{"Content-Type": "application/json"}, job("site.yml", vars)); resp.StatusCode != http.StatusCreated {
			t.Errorf("a playbook from -playbook-dir with %v: %d %s, want 201", vars, resp.StatusCode, msg)
		}
	}
	for _, args := range [][]string{{"-playbooks-only", "-allow-jinja-in-vars"}, {"-allow-vars", "ansible_user"}} {
		if _, err := parseFlags(args, func(string) string { return "" }, &strings.Builder{}); err == nil {
			t.Errorf("flags %q accepted", args)
		}
	}
}

// TestExpansionBombs submits small bodies that YAML would make enormous or endlessly deep.
func TestExpansionBombs(t *testing.T) {
	td := startTestDaemon(t)
	var laughs strings.Builder
	laughs.WriteString("name: bomb\nplaybook: |\n  - hosts: localhost\n    tasks: []\nvariables:\n  a0: &a0 " + strings.Repeat("x", 1000) + "\n")
	for i := 1; i < 200; i++ {
		fmt.Fprintf(&laughs, "  a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1)
	}
	deep := "name: deep\nplaybook: |\n  - hosts: localhost\n    tasks: []\nvariables:\n  v: " + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + "\n"
	cycle := "name: c\nplaybook: |\n  - hosts: localhost\n    tasks: []\nvariables:\n  v: &v [*v]\n"
	// What yaml.v3's own alias limit lets through: 100 KB named once, used a hundred times.
	wide := "name: wide\nplaybook: |\n  - hosts: localhost\n    tasks: []\nvariables:\n  a: &a " + strings.Repeat("x", 100<<10) +
		"\n  b: [" + strings.TrimSuffix(strings.Repeat("*a, ", 100), ", ") + "]\n"
	for name, body := range map[string]string{"nested aliases": laughs.String(), "one alias many times": wide, "deep": deep, "cycle": cycle} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			resp, msg := do(t, "POST", td.URL+"/api/v1/jobs", map[string]string{"Content-Type": "application/x-yaml"}, body)
			if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(msg, []byte("variables:")) {
				t.Errorf("%d %s, want 400 naming variables", resp.StatusCode, msg)
			}
			t.Logf("refused in %v: %s", time.Since(start), msg)
		})
	}
	// At the limits, a job is accepted and survives a restart: its record reads back.
	// variables, then 99 lists, then the number: 100 levels, as JSON allows.
	nested := strings.Repeat("[", maxDocumentDepth-2) + "1" + strings.Repeat("]", maxDocumentDepth-2)
	big := strings.Repeat("y", 900<<10)
	id := td.submit(t, "application/x-yaml", "name: edge\nplaybook: |\n  - hosts: localhost\n    tasks: []\n"+
		"variables: {fake: lines, count: 1, nested: "+nested+", big: "+big+"}\n", 201)["id"].(string)
	td.waitStatus(t, id, StatusCompleted)
	td.stop(t)
	again := startTestDaemonIn(t, td.dir)
	if _, err := again.sched.get(id); err != nil {
		t.Errorf("the job at the limits did not survive a restart: %v", err)
	}
}

// TestPlaybookSwappedWhileQueued replaces a queued job's playbook with a symlink to a file
// outside -playbook-dir: the job must fail at start, not run the outside file.
func TestPlaybookSwappedWhileQueued(t *testing.T) {
	td := startTestDaemon(t)
	dir := td.srv.limits.PlaybookDir
	site := filepath.Join(dir, "site.yml")
	os.WriteFile(site, []byte("- hosts: all\n  tasks: []\n"), 0o644)
	outside := filepath.Join(t.TempDir(), "evil.yml")
	os.WriteFile(outside, []byte("- hosts: all\n  tasks: []\n"), 0o644)

	blocker, release := apiBlockWorker(t, td)
	doc, _ := json.Marshal(map[string]any{"name": "swap", "playbook": "site.yml", "variables": map[string]any{"fake": "report"}})
	id := td.submit(t, "application/json", string(doc), 201)["id"].(string)
	os.Remove(site)
	if err := os.Symlink(outside, site); err != nil {
		t.Fatal(err)
	}
	release()
	td.waitStatus(t, blocker, StatusCompleted)
	job := td.waitStatus(t, id, StatusFailed)
	if msg, _ := job["message"].(string); !strings.Contains(msg, "outside the playbook directory") {
		t.Errorf("message = %q, want it to say the playbook now lies outside", msg)
	}
	if n := job["log_lines"].(float64); n != 0 {
		t.Errorf("the job ran anyway: %v log lines", n)
	}
}

// TestSecretsAreMaskedByKeyAndDropped checks masking at any depth, that short values do not
// garble free text, and that the journal forgets secret values once the job has ended.
func TestSecretsAreMaskedByKeyAndDropped(t *testing.T) {
	vars := map[string]any{
		"db":             map[string]any{"host": "db1", "password": "s3cr3t-pw"},
		"users":          []any{map[string]any{"name": "bob", "api_token": "tok-abcdef"}},
		"admin_password": "localhost",
		"pin_secret":     "1",
		"flag_key":       true,
	}
	shown := maskVariables(vars)
	want := `{"admin_password":"********","db":{"host":"db1","password":"********"},"flag_key":"********","pin_secret":"********","users":[{"api_token":"********","name":"bob"}]}`
	if got, _ := json.Marshal(shown); string(got) != want {
		t.Errorf("shown variables = %s, want %s", got, want)
	}
	r := newRedactor(vars, "localhost")
	text := "ok=1 changed=true on localhost: login with s3cr3t-pw and tok-abcdef"
	if got, want := r.apply(text), "ok=1 changed=true on localhost: login with ******** and ********"; got != want {
		t.Errorf("redacted = %q, want %q", got, want)
	}
	ev := eventFields{Host: "localhost", Task: "use s3cr3t-pw", Msg: "1 failed"}
	ev.redact(r)
	if ev.Host != "localhost" || ev.Task != "use ********" || ev.Msg != "1 failed" {
		t.Errorf("redacted event = %+v", ev)
	}

	td := startTestDaemon(t)
	vars["fake"], vars["count"] = "lines", 1
	id := td.submitFake(t, "secret", 5, vars)
	td.waitStatus(t, id, StatusCompleted)
	got := td.getJob(t, id)["variables"].(map[string]any)
	if db := got["db"].(map[string]any); db["password"] != masked || db["host"] != "db1" {
		t.Errorf("job JSON shows db = %v", db)
	}
	var journal []byte
	waitFor(t, "the journal to drop the secrets", func() (bool, string) {
		var err error
		if journal, err = os.ReadFile(filepath.Join(td.dir, "data", "jobs.journal")); err != nil {
			t.Fatal(err)
		}
		return !strings.Contains(string(journal), "s3cr3t-pw") && !strings.Contains(string(journal), "tok-abcdef"), string(journal)
	})
	if !strings.Contains(string(journal), `"password":"********"`) {
		t.Errorf("the journal lost the secret's name:\n%s", journal)
	}
}

// TestQueuedJobIsCheckedAgainAtStart loads a job that an older charond accepted with a host
// name today's rules refuse: it is kept, and fails when it would start instead of running.
func TestQueuedJobIsCheckedAgainAtStart(t *testing.T) {
	dir := t.TempDir()
	first := startTestDaemonIn(t, dir)
	first.stop(t)
	id := newJobID()
	appendRecord(t, dir, jobRecord{ID: id, Version: 1, Seq: 1, CreatedAt: time.Now(), JobSpec: JobSpec{Name: "old", Playbook: "- hosts: all\n  tasks: []\n", Inventory: []string{"web$(id)"}, Variables: map[string]any{"fake": "report"}, Priority: 5, Timeout: time.Minute}, jobState: jobState{Status: StatusQueued}})
	td := startTestDaemonIn(t, dir)
	job := td.waitStatus(t, id, StatusFailed)
	if msg, _ := job["message"].(string); !strings.Contains(msg, "refusing to start") || !strings.Contains(msg, "inventory[0]") {
		t.Errorf("message = %q, want the host name refused at start", msg)
	}
	if n := job["log_lines"].(float64); n != 0 {
		t.Errorf("the job ran anyway: %v log lines", n)
	}
}

// TestPlaybookMayNotLieInTheDataDir names, as a playbook, files that charond keeps in its data
// dir (which lies inside -playbook-dir by default): a job's vars file holds what a submitter
// chose, and must never run as a playbook.
func TestPlaybookMayNotLieInTheDataDir(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) {
		// The playbook dir holds the data dir, as with the defaults (. and ./charon-data).
		d.srv.limits.PlaybookDir = filepath.Dir(d.srv.limits.DataDir)
		d.sched.runner.playbookDir = d.srv.limits.PlaybookDir
	})
	id := td.submitFake(t, "done", 5, map[string]any{"fake": "lines", "count": 1})
	td.waitStatus(t, id, StatusCompleted)
	for _, p := range []string{"data/jobs.journal", "data/logs/" + id + ".log", filepath.Join(td.srv.limits.DataDir, "jobs.journal")} {
		doc, _ := json.Marshal(map[string]any{"name": "p", "playbook": p})
		resp, msg := do(t, "POST", td.URL+"/api/v1/jobs", map[string]string{"Content-Type": "application/json"}, string(doc))
		if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(msg, []byte("-data-dir")) {
			t.Errorf("playbook %s: %d %s, want 400 naming -data-dir", p, resp.StatusCode, msg)
		}
	}
	r := td.sched.runner
	if err := r.checkStillAllowed(&JobSpec{Playbook: "x", PlaybookPath: filepath.Join(r.dataDir, "jobs.journal")}); err == nil {
		t.Error("a job whose playbook lies in the data dir would start")
	}
}

// TestDamagedInventoryRecordFailsItsJobOnly loads a queued job whose stored inventory is not
// the shape charond writes: the job fails saying why, charond neither crashes nor counts it
// as a fault of its data dir.
func TestDamagedInventoryRecordFailsItsJobOnly(t *testing.T) {
	dir := t.TempDir()
	first := startTestDaemonIn(t, dir)
	first.stop(t)
	id := newJobID()
	appendRecord(t, dir, jobRecord{ID: id, Version: 1, Seq: 1, CreatedAt: time.Now(),
		JobSpec: JobSpec{Name: "damaged", Playbook: "- hosts: all\n  tasks: []\n", Priority: 5, Timeout: time.Minute,
			InventoryGroups: map[string]any{"web": "not a group"}, Variables: map[string]any{"fake": "report"}},
		jobState: jobState{Status: StatusQueued}})
	td := startTestDaemonIn(t, dir)
	job := td.waitStatus(t, id, StatusFailed)
	if msg, _ := job["message"].(string); !strings.Contains(msg, "encode inventory") {
		t.Errorf("message = %q, want it to say the inventory could not be written", msg)
	}
	if err := td.sched.store.unavailable(); err != nil {
		t.Errorf("a damaged record marked the data dir unhealthy: %v", err)
	}
}
