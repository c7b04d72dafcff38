package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// These tests check the launch options a job may give (limit, tags, skip_tags, check, diff,
// verbosity, forks, start_at_task): that each reaches ansible-playbook as its option, that the
// job's JSON shows them, and that `command` shows exactly what ran.

func TestLaunchOptionsReachTheCommand(t *testing.T) {
	td := startTestDaemon(t)
	doc, _ := json.Marshal(map[string]any{
		"name": "opts", "playbook": "- hosts: all\n  tasks: []\n", "inventory": []string{"web1", "db1"},
		"variables": map[string]any{"fake": "report"},
		"limit":     "web1", "tags": []string{"deploy"}, "skip_tags": []string{"slow", "flaky"},
		"check": true, "diff": true, "verbosity": 2, "forks": 3, "start_at_task": "Deploy it",
	})
	id := td.submit(t, "application/json", string(doc), 201)["id"].(string)
	job := td.waitStatus(t, id, StatusCompleted)

	var command []string
	for _, v := range job["command"].([]any) {
		command = append(command, v.(string))
	}
	workDir := filepath.Join(td.dir, "data", "work", id)
	self, _ := os.Executable()
	want := []string{self, "-i", filepath.Join(workDir, "inventory.json"), "-e", "@" + filepath.Join(workDir, "vars.yml"),
		"--limit=web1", "--tags=deploy", "--skip-tags=slow,flaky", "--check", "--diff", "-vv", "--forks=3",
		"--start-at-task=Deploy it", filepath.Join(workDir, "playbook.yml")}
	if !reflect.DeepEqual(command, want) {
		t.Errorf("command = %q\nwant      %q", command, want)
	}
	// What the runner was given is what command says, argument for argument.
	var args string
	for _, l := range strings.Split(string(get(t, td.URL+"/api/v1/jobs/"+id+"/logs")), "\n") {
		if a, ok := strings.CutPrefix(l, "args="); ok {
			args = a
		}
	}
	if args != strings.Join(want[1:], " ") {
		t.Errorf("the runner got %q, want %q", args, strings.Join(want[1:], " "))
	}
	for field, v := range map[string]any{"limit": "web1", "check": true, "diff": true, "verbosity": 2.0, "forks": 3.0, "start_at_task": "Deploy it"} {
		if job[field] != v {
			t.Errorf("job %s = %v, want %v", field, job[field], v)
		}
	}
	if tags := job["skip_tags"].([]any); len(tags) != 2 || tags[0] != "slow" {
		t.Errorf("job skip_tags = %v", tags)
	}

	plain := td.submitFake(t, "plain", 5, map[string]any{"fake": "lines", "count": 1})
	got := td.waitStatus(t, plain, StatusCompleted)
	if tags, ok := got["tags"].([]any); !ok || len(tags) != 0 || got["limit"] != "" || got["check"] != false || got["forks"] != 0.0 {
		t.Errorf("a job without options shows tags %v, limit %v, check %v, forks %v", got["tags"], got["limit"], got["check"], got["forks"])
	}
}

// TestAnsibleLaunchOptions runs the real ansible-playbook with limit, tags, skip_tags, check,
// diff and verbosity, and reads their effect in the log.
func TestAnsibleLaunchOptions(t *testing.T) {
	requireAnsible(t)
	td := startTestDaemon(t, withRealAnsible)
	out := t.TempDir()
	created := filepath.Join(out, "created.txt")
	playbook := `- hosts: all
  gather_facts: false
  tasks:
    - name: Deploy the file
      copy:
        content: "hello\n"
        dest: ` + created + `
      tags: [deploy]
    - name: Say who runs
      debug:
        msg: "deploy ran on {{ inventory_hostname }}"
      tags: [deploy]
    - name: Slow step
      debug:
        msg: "slow step ran"
      tags: [slow]
    - name: Untagged step
      debug:
        msg: "untagged step ran"
`
	doc, _ := json.Marshal(map[string]any{
		"name": "options", "playbook": playbook, "inventory": []string{"localhost", "127.0.0.1"},
		"limit": "127.0.0.1", "tags": []string{"deploy", "slow"}, "skip_tags": []string{"slow"},
		"check": true, "diff": true, "verbosity": 1, "forks": 2,
	})
	id := td.submit(t, "application/json", string(doc), 201)["id"].(string)
	td.waitStatus(t, id, StatusCompleted)
	log := string(get(t, td.URL+"/api/v1/jobs/"+id+"/logs"))

	if _, err := os.Stat(created); err == nil {
		t.Errorf("check mode created %s", created)
	}
	for _, want := range []string{
		"deploy ran on 127.0.0.1",   // limit: the one host; tags: deploy
		"+hello",                    // diff: the content the copy would write
		"changed: [127.0.0.1] => {", // -v: a changed task shows its result
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	for _, unwanted := range []string{"deploy ran on localhost", "slow step ran", "untagged step ran"} {
		if strings.Contains(log, unwanted) {
			t.Errorf("log has %q: limit, tags or skip_tags were not applied:\n%s", unwanted, log)
		}
	}
}

func TestIdleTimeoutStopsAQuietRun(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) { d.srv.limits.DefaultIdleTimeout = 400 * time.Millisecond })
	submit := func(name string, extra map[string]any, vars map[string]any) string {
		doc := map[string]any{"name": name, "playbook": "- hosts: all\n  tasks: []\n", "variables": vars}
		for k, v := range extra {
			doc[k] = v
		}
		body, _ := json.Marshal(doc)
		return td.submit(t, "application/json", string(body), 201)["id"].(string)
	}
	quiet := submit("quiet", map[string]any{"idle_timeout": "300ms"}, map[string]any{"fake": "sleep", "seconds": 60})
	job := td.waitStatus(t, quiet, StatusTimedOut)
	if msg, _ := job["message"].(string); !strings.Contains(msg, "idle for") || !strings.Contains(msg, "idle_timeout 300ms") {
		t.Errorf("message = %q, want it to say how long the run was idle", msg)
	}
	if job["idle_timeout"] != 0.3 {
		t.Errorf("idle_timeout = %v, want 0.3", job["idle_timeout"])
	}
	// A run that keeps printing is not idle, however long it takes; the default applies.
	chatty := submit("chatty", nil, map[string]any{"fake": "lines", "count": 16, "interval_ms": 100})
	if got := td.waitStatus(t, chatty, StatusCompleted); got["idle_timeout"] != 0.4 {
		t.Errorf("default idle_timeout = %v, want 0.4 (-default-idle-timeout)", got["idle_timeout"])
	}
	// 0 turns it off.
	off := submit("off", map[string]any{"idle_timeout": 0}, map[string]any{"fake": "sleep", "seconds": 1})
	if got := td.waitStatus(t, off, StatusCompleted); got["idle_timeout"] != 0.0 {
		t.Errorf("idle_timeout 0 shows as %v", got["idle_timeout"])
	}
	for _, bad := range []string{`"idle_timeout": -1`, `"idle_timeout": "soon"`, `"idle_timeout": [1]`, `"idle_timeout": "48h"`} {
		status, raw := do(t, "POST", td.URL+"/api/v1/jobs", contentType("application/json"),
			`{"name": "x", "playbook": "- hosts: all\n", `+bad+`}`)
		if status.StatusCode != 400 || !strings.Contains(string(raw), "idle_timeout:") {
			t.Errorf("%s: %d %s, want 400 naming idle_timeout", bad, status.StatusCode, raw)
		}
	}
}

// TestAnsibleIdleTimeout stops a real playbook that pauses quietly.
func TestAnsibleIdleTimeout(t *testing.T) {
	requireAnsible(t)
	td := startTestDaemon(t, withRealAnsible)
	doc, _ := json.Marshal(map[string]any{"name": "idle", "idle_timeout": 3,
		"playbook": "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - pause:\n        seconds: 60\n"})
	id := td.submit(t, "application/json", string(doc), 201)["id"].(string)
	job := td.waitStatus(t, id, StatusTimedOut)
	if msg, _ := job["message"].(string); !strings.Contains(msg, "idle for") {
		t.Errorf("message = %q", msg)
	}
}

// TestAnsibleVault runs a playbook from -playbook-dir whose vars file is vaulted: with
// -vault-password-file the job reads it; without, it fails with Ansible's message; and the
// password never shows in what charond answers.
func TestAnsibleVault(t *testing.T) {
	requireAnsible(t)
	dir := t.TempDir()
	playbooks := filepath.Join(dir, "playbooks")
	if err := os.MkdirAll(playbooks, 0o755); err != nil {
		t.Fatal(err)
	}
	const password = "correct-horse-battery"
	passFile := filepath.Join(dir, "vault-pass")
	os.WriteFile(passFile, []byte(password+"\n"), 0o600)
	secrets := filepath.Join(playbooks, "secrets.yml")
	os.WriteFile(secrets, []byte("secret_word: swordfish\n"), 0o600)
	if out, err := exec.Command("ansible-vault", "encrypt", "--vault-password-file", passFile, secrets).CombinedOutput(); err != nil {
		t.Fatalf("ansible-vault encrypt: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(playbooks, "vaulted.yml"), []byte("- hosts: localhost\n  gather_facts: false\n"+
		"  vars_files: [secrets.yml]\n  tasks:\n    - debug:\n        msg: \"the word has {{ secret_word | length }} letters\"\n"), 0o644)
	run := func(t *testing.T, flags ...string) (map[string]any, string) {
		d, err := tryStartDaemon(t, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)),
			append([]string{"-playbook-dir", playbooks}, flags...), withRealAnsible)
		if err != nil {
			t.Fatal(err)
		}
		td := &testDaemon{daemon: d, URL: "http://" + d.addr, dir: dir}
		defer td.stop(t)
		id := td.submit(t, "application/x-yaml", "name: vault\nplaybook: vaulted.yml\n", 201)["id"].(string)
		job := td.waitJob(t, id, "ended", func(j map[string]any) bool { return Status(j["status"].(string)).Final() })
		return job, string(get(t, td.URL+"/api/v1/jobs/"+id+"/logs")) + string(get(t, td.URL+"/api/v1/jobs/"+id+"/events"))
	}
	job, text := run(t, "-vault-password-file", passFile)
	if job["status"] != string(StatusCompleted) || !strings.Contains(text, "the word has 9 letters") {
		t.Errorf("with the password: %v %v\n%s", job["status"], job["message"], text)
	}
	command, _ := json.Marshal(job["command"])
	if !strings.Contains(string(command), "--vault-password-file="+passFile) {
		t.Errorf("command %s does not name the password file", command)
	}
	for _, shown := range []string{text, string(command), fmt.Sprint(job)} {
		if strings.Contains(shown, password) {
			t.Error("the vault password shows in what charond answers")
		}
	}
	job, text = run(t)
	if job["status"] != string(StatusFailed) || !strings.Contains(text, "no vault secrets") {
		t.Errorf("without the password: %v %v\n%s", job["status"], job["message"], text)
	}
	// A password file others can read is refused at start.
	os.Chmod(passFile, 0o644)
	if _, err := vaultArgs(passFile, nil); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a readable vault password file: %v", err)
	}
	for _, id := range []string{"prod", "@" + passFile, "prod@prompt", "a b@" + passFile} {
		if _, err := vaultArgs("", []string{id}); err == nil {
			t.Errorf("-vault-id %q accepted", id)
		}
	}
}

func TestParseInventoryShapes(t *testing.T) {
	f := newPlaybookFixture(t)
	lim := f.limits()
	lim.InventoryDir = f.dir
	os.WriteFile(filepath.Join(f.dir, "hosts.ini"), []byte("[web]\nweb1\n"), 0o644)
	parse := func(inv string) (*JobSpec, error) {
		return parseJobSpec([]byte("name: i\nplaybook: site.yml\ninventory: "+inv+"\n"), false, lim)
	}
	spec, err := parse("{all: {vars: {ansible_connection: local}, children: {web: {hosts: {web1: {port: 81}, web2: null}, vars: {role: frontend}}, db: {hosts: {db1: {}}}}}}")
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.hostNames(); !reflect.DeepEqual(got, []string{"db1", "web1", "web2"}) || spec.Inventory != nil {
		t.Errorf("hosts = %v, list %v", got, spec.Inventory)
	}
	if spec, err := parse("hosts.ini"); err != nil || spec.InventoryPath != filepath.Join(f.dir, "hosts.ini") {
		t.Errorf("path inventory: %+v, %v", spec, err)
	}
	for inv, want := range map[string]string{
		"{web: {hosts: {\"{{ lookup('pipe','id') }}\": {}}}}": "template marker",
		"{web: {hosts: {all: {}}}}":                           "built-in groups",
		"{\"web-servers\": {hosts: {a: {}}}}":                 "not a group name",
		"{web: {hosts: {a: {\"bad-name\": 1}}}}":              "inventory.web.hosts.a:",
		"{web: {host: {a: {}}}}":                              "not part of a group",
		"{web: {hosts: [a]}}":                                 "inventory.web.hosts:",
		"{web: {vars: {x: 1}}}":                               "at least one host",
		"{plugin: {hosts: {a: {}}}}":                          "inventory plugin",
		"{web: {hosts: {a: {}}, vars: [x]}}":                  "inventory.web.vars:",
		"../outside.yml":                                      "outside the inventory directory",
		"missing.ini":                                         "does not exist",
		"42":                                                  "inventory:",
	} {
		_, err := parse(inv)
		if err == nil {
			t.Errorf("inventory %s accepted", inv)
			continue
		}
		if status, msg := httpStatus(err); status != 400 || !strings.Contains(msg, want) {
			t.Errorf("inventory %s: %d %q, want 400 saying %q", inv, status, msg, want)
		}
	}
	lim.PlaybooksOnly = true
	if _, err := parseJobSpec([]byte("name: i\nplaybook: site.yml\ninventory: {web: {hosts: {a: {ansible_ssh_common_args: '-o ProxyCommand=id'}}}}\n"), false, lim); err == nil {
		t.Error("-playbooks-only let an inventory set ansible_ssh_common_args")
	}
}

// TestAnsibleGroupedInventory runs a play for one group of a pasted YAML inventory, and one
// from an INI inventory file inside -playbook-dir, with the real ansible-playbook.
func TestAnsibleGroupedInventory(t *testing.T) {
	requireAnsible(t)
	td := startTestDaemon(t, withRealAnsible)
	marker := filepath.Join(t.TempDir(), "pwned")
	inventory := map[string]any{"all": map[string]any{
		"vars": map[string]any{"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"},
		"children": map[string]any{
			"web": map[string]any{"hosts": map[string]any{"web1": map[string]any{"slot": 1}, "web2": map[string]any{"slot": 2}},
				"vars": map[string]any{"role": "frontend", "note": "{{ lookup('pipe', 'touch " + marker + "') }}"}},
			"db": map[string]any{"hosts": map[string]any{"db1": nil}},
		}}}
	doc, _ := json.Marshal(map[string]any{"name": "grouped", "inventory": inventory, "limit": "web",
		"playbook": "- hosts: web\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: \"{{ inventory_hostname }} is {{ role }} in slot {{ slot }} ({{ note }})\"\n"})
	id := td.submit(t, "application/json", string(doc), 201)["id"].(string)
	td.waitStatus(t, id, StatusCompleted)
	log := string(get(t, td.URL+"/api/v1/jobs/"+id+"/logs"))
	for _, want := range []string{"web1 is frontend in slot 1", "web2 is frontend in slot 2", "({{ lookup('pipe'"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "db1") {
		t.Errorf("the play for web ran on db1:\n%s", log)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("a template in an inventory var ran on the controller")
	}

	os.WriteFile(filepath.Join(td.srv.limits.PlaybookDir, "hosts.ini"), []byte("[app]\napp1 ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n"), 0o644)
	doc, _ = json.Marshal(map[string]any{"name": "file", "inventory": "hosts.ini",
		"playbook": "- hosts: app\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: \"hello from {{ inventory_hostname }}\"\n"})
	id = td.submit(t, "application/json", string(doc), 201)["id"].(string)
	job := td.waitStatus(t, id, StatusCompleted)
	if log := string(get(t, td.URL+"/api/v1/jobs/"+id+"/logs")); !strings.Contains(log, "hello from app1") {
		t.Errorf("inventory file: log lacks the host:\n%s", log)
	}
	if job["inventory"] != filepath.Join(td.srv.limits.PlaybookDir, "hosts.ini") {
		t.Errorf("job inventory = %v", job["inventory"])
	}
}
