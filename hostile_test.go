package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// This file feeds charond what a careless or malicious client might send: broken and hostile
// job documents, odd ids, methods and paths. Every one must be refused with a JSON error that
// names the field or the rule, leave nothing behind, and never bring charond down.

// hostileCase is one submission and how charond must refuse it.
type hostileCase struct {
	name        string
	contentType string // "" sends no Content-Type, which charond refuses with 415
	body        string
	status      int
	want        string // a substring of the error message naming the field or the rule
}

// hostileOmit, as a field's value in hostileYAML or hostileJSON, leaves the field out.
const hostileOmit = "\x00omit"

// hostilePlaybook is a valid embedded playbook, spelled as a double-quoted string that YAML
// and JSON read alike.
const hostilePlaybook = `"- hosts: localhost\n  tasks: []\n"`

// hostileYAML writes a YAML job document: a valid name and playbook, with the fields given as
// key, raw YAML value pairs replacing them or added after them.
func hostileYAML(kv ...string) string {
	return hostileDocument(kv, func(k, v string) string { return k + ": " + v + "\n" }, "", "")
}

// hostileJSON writes a JSON job document like hostileYAML, the values raw JSON.
func hostileJSON(kv ...string) string {
	return hostileDocument(kv, func(k, v string) string { return `"` + k + `": ` + v }, "{", "}")
}

func hostileDocument(kv []string, field func(k, v string) string, open, close string) string {
	keys := []string{"name", "playbook"}
	values := map[string]string{"name": `"hostile"`, "playbook": hostilePlaybook}
	for i := 0; i+1 < len(kv); i += 2 {
		if _, ok := values[kv[i]]; !ok {
			keys = append(keys, kv[i])
		}
		values[kv[i]] = kv[i+1]
	}
	var parts []string
	for _, k := range keys {
		if v := values[k]; v != hostileOmit {
			parts = append(parts, field(k, v))
		}
	}
	if open == "" {
		return strings.Join(parts, "")
	}
	return open + strings.Join(parts, ", ") + close
}

// hostileBillionLaughs is the classic alias bomb under variables: nine levels of ten aliases
// each, 10^9 strings once expanded, in a few hundred bytes. rest follows it: name, playbook
// and whatever else the case needs, which may alias the bomb too.
func hostileBillionLaughs(rest string) string {
	var b strings.Builder
	b.WriteString("description: &a0 lol\nvariables:\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "  l%d: &a%d [", i, i)
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]\n")
	}
	return b.String() + rest
}

// hostileCases returns the table; dir is the daemon's playbook directory, where
// setUpHostileDir has put the symlinks and the FIFO that some cases name.
func hostileCases(dir string) []hostileCase {
	const (
		yamlCT = "application/x-yaml"
		jsonCT = "application/json"
		bad    = http.StatusBadRequest
	)
	deepJSON := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	return []hostileCase{
		// The body as a whole.
		{"empty body", yamlCT, "", bad, "empty"},
		{"no Content-Type", "", hostileYAML(), http.StatusUnsupportedMediaType, "Content-Type is missing"},
		{"text/plain", "text/plain", hostileYAML(), http.StatusUnsupportedMediaType, "application/x-yaml"},
		{"empty JSON body", jsonCT, "", bad, "empty"},
		{"whitespace only", yamlCT, " \n\t\r\n  ", bad, "empty"},
		{"comment only", yamlCT, "# nothing here\n", bad, "empty"},
		{"document marker only", yamlCT, "---\n", bad, "mapping"},
		{"malformed YAML", yamlCT, "name: [unclosed\nplaybook: x\n", bad, "not valid YAML"},
		{"tab indentation", yamlCT, "name: x\n\tplaybook: y\n", bad, "not valid YAML"},
		{"raw NUL byte in YAML", yamlCT, "name: a\x00b\nplaybook: " + hostilePlaybook + "\n", bad, "not valid YAML"},
		{"unknown anchor", yamlCT, hostileYAML("name", "*nowhere"), bad, "not valid YAML"},
		{"YAML list", yamlCT, "- name: x\n  playbook: y\n", bad, "not a list"},
		{"YAML scalar", yamlCT, "just some text\n", bad, "must be a mapping"},
		{"YAML multi-document stream", yamlCT, hostileYAML() + "---\n" + hostileYAML(), bad, "more than one"},
		{"YAML trailing document marker", yamlCT, hostileYAML() + "---\n", bad, "more than one"},
		{"JSON array", jsonCT, "[" + hostileJSON() + "]", bad, "not a list"},
		{"JSON string", jsonCT, `"job"`, bad, "must be a mapping"},
		{"JSON null", jsonCT, "null", bad, "not a null"},
		{"JSON trailing garbage", jsonCT, hostileJSON() + " garbage", bad, "more than one"},
		{"two JSON objects", jsonCT, hostileJSON() + hostileJSON(), bad, "more than one"},
		{"truncated JSON", jsonCT, `{"name": "x",`, bad, "not valid JSON"},
		{"JSON comment", jsonCT, "// job\n" + hostileJSON(), bad, "not valid JSON"},
		{"JSON NaN", jsonCT, hostileJSON("priority", "NaN"), bad, "not valid JSON"},
		{"JSON non-string key", jsonCT, `{"name": "x", 1: "y"}`, bad, "not valid JSON"},
		{"JSON nested 10000 levels", jsonCT, hostileJSON("variables", `{"v": `+deepJSON(10000)+`}`), bad, "nested more than"},
		{"JSON root nested 10000 levels", jsonCT, deepJSON(10000), bad, "nested more than"},
		{"YAML nested 100000 levels", yamlCT, hostileYAML("variables", "{v: "+deepJSON(100000)+"}"), bad, "not valid YAML"},
		{"YAML sent as JSON", jsonCT, hostileYAML(), bad, "not valid JSON"},

		// Encodings.
		{"invalid UTF-8 in YAML value", yamlCT, hostileYAML("name", "\"caf\xe9\""), bad, "UTF-8"},
		{"invalid UTF-8 in YAML key", yamlCT, hostileYAML("n\xffme", "x"), bad, "UTF-8"},
		{"invalid UTF-8 in JSON string", jsonCT, hostileJSON("name", "\"caf\xe9\""), bad, "UTF-8"},
		{"overlong UTF-8 slash in JSON path", jsonCT, hostileJSON("playbook", "\"..\xc0\xaf..\xc0\xafetc\xc0\xafpasswd\""), bad, "UTF-8"},
		{"UTF-16 surrogate in JSON", jsonCT, hostileJSON("description", "\"\xed\xa0\x80\""), bad, "UTF-8"},
		{"lone surrogate escape in JSON name", jsonCT, hostileJSON("name", `"a\ud800"`), bad, "UTF-8"},
		{"lone surrogate escape in JSON host", jsonCT, hostileJSON("inventory", `["web\udc00"]`), bad, "UTF-8"},
		{"NUL in name", yamlCT, hostileYAML("name", `"a\0b"`), bad, "name:"},
		{"NUL in host", jsonCT, hostileJSON("inventory", `["web\u00001"]`), bad, "inventory[0]:"},
		{"NUL in playbook path", jsonCT, hostileJSON("playbook", `"site.yml\u0000.txt"`), bad, "playbook:"},
		{"NUL in description", jsonCT, hostileJSON("description", `"\u0000"`), bad, "description:"},

		// Keys.
		{"unknown field YAML", yamlCT, hostileYAML("nmae", "x"), bad, "unknown field"},
		{"unknown field JSON", jsonCT, hostileJSON("hosts", `"all"`), bad, "unknown field"},
		{"merge key", yamlCT, "base: &b {name: x}\n<<: *b\n", bad, "unknown field"},
		{"huge unknown field", jsonCT, hostileJSON(strings.Repeat("k", 100000), "1"), bad, "unknown field"},
		{"duplicate key YAML", yamlCT, hostileYAML() + "name: again\n", bad, "more than once"},
		{"duplicate key JSON", jsonCT, `{"name": "a", "name": "b", "playbook": ` + hostilePlaybook + `}`, bad, "more than once"},
		{"duplicate variable YAML", yamlCT, hostileYAML("variables", "{a: 1, a: 2}"), bad, "variables:"},
		{"duplicate variable JSON", jsonCT, hostileJSON("variables", `{"a": 1, "a": 2}`), bad, "variables:"},
		{"sequence as key", yamlCT, "? [name]\n: x\n", bad, "field names"},
		{"alias as key", yamlCT, "description: &k name\n*k : x\n", bad, "field names"},

		// name and description.
		{"missing name", yamlCT, hostileYAML("name", hostileOmit), bad, "name: required"},
		{"empty name", yamlCT, hostileYAML("name", `""`), bad, "name: required"},
		{"name is a number", yamlCT, hostileYAML("name", "42"), bad, "name:"},
		{"name is a list", jsonCT, hostileJSON("name", `["a"]`), bad, "name:"},
		{"name is null", jsonCT, hostileJSON("name", "null"), bad, "name:"},
		{"name is a boolean", yamlCT, hostileYAML("name", "true"), bad, "name:"},
		{"name with custom tag", yamlCT, hostileYAML("name", "!custom x"), bad, "name:"},
		{"name as binary", yamlCT, hostileYAML("name", "!!binary aGVsbG8="), bad, "name:"},
		{"name too long", yamlCT, hostileYAML("name", strings.Repeat("n", 201)), bad, "name:"},
		{"description is a mapping", yamlCT, hostileYAML("description", "{a: b}"), bad, "description:"},
		{"description too long", jsonCT, hostileJSON("description", `"`+strings.Repeat("d", 4097)+`"`), bad, "description:"},
		{"name aliases a billion laughs", yamlCT, hostileBillionLaughs("name: *a9\nplaybook: " + hostilePlaybook + "\n"), bad, "name:"},

		// playbook.
		{"missing playbook", yamlCT, hostileYAML("playbook", hostileOmit), bad, "playbook: required"},
		{"blank playbook", yamlCT, hostileYAML("playbook", `"   "`), bad, "playbook: required"},
		{"playbook is a number", jsonCT, hostileJSON("playbook", "42"), bad, "playbook:"},
		{"playbook is a map", yamlCT, hostileYAML("playbook", "{hosts: all, tasks: []}"), bad, "playbook:"},
		{"embedded playbook is a map", yamlCT, hostileYAML("playbook", `"hosts: all\ntasks: []\n"`), bad, "playbook:"},
		{"play is a string", yamlCT, hostileYAML("playbook", `"- just a string\n"`), bad, "play 1 must be a mapping"},
		{"play is a list", yamlCT, hostileYAML("playbook", `"- hosts: all\n- [a, b]\n"`), bad, "play 2 must be a mapping"},
		{"embedded playbook of two documents", yamlCT, hostileYAML("playbook", `"- hosts: all\n---\n- hosts: all\n"`), bad, "playbook:"},
		{"embedded playbook without plays", yamlCT, hostileYAML("playbook", `"[]\n"`), bad, "playbook:"},
		{"embedded playbook malformed", yamlCT, hostileYAML("playbook", `"- hosts: [\n"`), bad, "playbook:"},
		{"path traversal", yamlCT, hostileYAML("playbook", "../../etc/passwd"), bad, "playbook:"},
		{"path traversal to root", yamlCT, hostileYAML("playbook", strings.Repeat("../", 40)+"etc/passwd"), bad, "outside the playbook directory"},
		{"absolute path outside", jsonCT, hostileJSON("playbook", `"/etc/passwd"`), bad, "outside the playbook directory"},
		{"symlink out", yamlCT, hostileYAML("playbook", "escape.yml"), bad, "outside the playbook directory"},
		{"symlink to a directory out", yamlCT, hostileYAML("playbook", "escape-dir/passwd"), bad, "outside the playbook directory"},
		{"playbook dir itself", yamlCT, hostileYAML("playbook", filepath.Join(dir, ".")), bad, "not a regular file"},
		{"FIFO", yamlCT, hostileYAML("playbook", "fifo.yml"), bad, "not a regular file"},
		{"missing file", yamlCT, hostileYAML("playbook", "nope.yml"), bad, "does not exist"},

		// inventory.
		{"inventory is a string", yamlCT, hostileYAML("inventory", "localhost"), bad, "inventory:"},
		{"inventory is empty", jsonCT, hostileJSON("inventory", "[]"), bad, "inventory:"},
		{"host is a number", jsonCT, hostileJSON("inventory", "[42]"), bad, "inventory[0]:"},
		{"host is a list", yamlCT, hostileYAML("inventory", "[[a]]"), bad, "inventory[0]:"},
		{"host with a space", yamlCT, hostileYAML("inventory", `["web 1"]`), bad, "inventory[0]:"},
		{"host with a comma", yamlCT, hostileYAML("inventory", `[ok, "a,b"]`), bad, "inventory[1]:"},
		{"host with a leading dash", jsonCT, hostileJSON("inventory", `["ok", "--become"]`), bad, "inventory[1]:"},
		{"host with a newline", jsonCT, hostileJSON("inventory", `["a\nb"]`), bad, "inventory[0]:"},
		{"host range pattern", yamlCT, hostileYAML("inventory", `["web[1:99999999]"]`), bad, "inventory[0]:"},
		{"host is a template", yamlCT, hostileYAML("inventory", `["{{ lookup('pipe', 'id') }}"]`), bad, "template marker"},
		{"host is a template statement", jsonCT, hostileJSON("inventory", `["a{% raw %}b"]`), bad, "template marker"},
		{"host is the group all", yamlCT, hostileYAML("inventory", `[web1, all]`), bad, "inventory[1]:"},
		{"host is the group ungrouped", yamlCT, hostileYAML("inventory", `[ungrouped]`), bad, "built-in groups"},
		{"host is a pattern", yamlCT, hostileYAML("inventory", `["web*"]`), bad, "inventory[0]:"},
		{"host is shell text", jsonCT, hostileJSON("inventory", `["a$(id)"]`), bad, "inventory[0]:"},
		{"host is empty", jsonCT, hostileJSON("inventory", `[""]`), bad, "inventory[0]:"},
		{"host too long", jsonCT, hostileJSON("inventory", `["`+strings.Repeat("h", 254)+`"]`), bad, "inventory[0]:"},
		{"too many hosts", jsonCT, hostileJSON("inventory", "["+strings.TrimSuffix(strings.Repeat(`"h",`, maxHosts+1), ",")+"]"), bad, "inventory:"},

		// variables.
		{"variables is a list", yamlCT, hostileYAML("variables", "[a, b]"), bad, "variables:"},
		{"variables is a string", jsonCT, hostileJSON("variables", `"a=b"`), bad, "variables:"},
		{"variable with a number key", yamlCT, hostileYAML("variables", "{1: a}"), bad, "variables:"},
		{"nested non-string key", yamlCT, hostileYAML("variables", "{a: {1: b}}"), bad, "variables.a:"},
		{"variable with a list key", yamlCT, hostileYAML("variables", "{? [a] : b}"), bad, "variables:"},
		{"variable name with a dash", jsonCT, hostileJSON("variables", `{"bad-name": 1}`), bad, "variables:"},
		{"variable is infinite", yamlCT, hostileYAML("variables", "{x: .inf}"), bad, "variables.x:"},
		{"variable is NaN", yamlCT, hostileYAML("variables", "{x: .nan}"), bad, "variables.x:"},
		{"billion laughs", yamlCT, hostileBillionLaughs(hostileYAML()), bad, "variables:"},
		{"inventory aliases a billion laughs", yamlCT, hostileBillionLaughs(hostileYAML("inventory", "*a9")), bad, "inventory[0]:"},
		{"playbook aliases a billion laughs", yamlCT, hostileBillionLaughs("name: x\nplaybook: *a9\n"), bad, "playbook:"},

		// priority.
		{"priority 1e400 YAML", yamlCT, hostileYAML("priority", "1e400"), bad, "priority:"},
		{"priority 1e400 JSON", jsonCT, hostileJSON("priority", "1e400"), bad, "priority:"},
		{"priority 20 digits YAML", yamlCT, hostileYAML("priority", "99999999999999999999"), bad, "priority:"},
		{"priority 20 digits JSON", jsonCT, hostileJSON("priority", "99999999999999999999"), bad, "priority:"},
		{"priority 0", yamlCT, hostileYAML("priority", "0"), bad, "priority:"},
		{"priority 16", jsonCT, hostileJSON("priority", "16"), bad, "priority:"},
		{"priority negative", jsonCT, hostileJSON("priority", "-9223372036854775808"), bad, "priority:"},
		{"priority word", yamlCT, hostileYAML("priority", "urgent"), bad, "priority:"},
		{"priority is a fraction", jsonCT, hostileJSON("priority", "5.5"), bad, "priority:"},
		{"priority is a string number", jsonCT, hostileJSON("priority", `"5"`), bad, "priority:"},
		{"priority is a list", yamlCT, hostileYAML("priority", "[5]"), bad, "priority:"},
		{"priority is a boolean", jsonCT, hostileJSON("priority", "true"), bad, "priority:"},

		// timeout.
		{"timeout 10^30 seconds YAML", yamlCT, hostileYAML("timeout", "1"+strings.Repeat("0", 30)), bad, "timeout:"},
		{"timeout 10^30 seconds JSON", jsonCT, hostileJSON("timeout", "1"+strings.Repeat("0", 30)), bad, "timeout:"},
		{"timeout 1e400", jsonCT, hostileJSON("timeout", "1e400"), bad, "timeout:"},
		{"timeout overflowing a Duration", jsonCT, hostileJSON("timeout", "9223372037"), bad, "above the maximum"},
		{"timeout most negative", jsonCT, hostileJSON("timeout", "-9223372036854775808"), bad, "timeout: must not be negative"},
		{"timeout negative", yamlCT, hostileYAML("timeout", "-1"), bad, "timeout: must not be negative"},
		{"timeout negative duration", yamlCT, hostileYAML("timeout", "-5m"), bad, "timeout: must not be negative"},
		{"timeout above the maximum", yamlCT, hostileYAML("timeout", "2h"), bad, "above the maximum"},
		{"timeout duration overflow", yamlCT, hostileYAML("timeout", "99999999999h"), bad, "timeout:"},
		{"timeout word", yamlCT, hostileYAML("timeout", "forever"), bad, "timeout:"},
		{"timeout is a mapping", yamlCT, hostileYAML("timeout", "{s: 1}"), bad, "timeout:"},
		{"timeout is a boolean", jsonCT, hostileJSON("timeout", "false"), bad, "timeout:"},

		// Transport.
		{"body over 1 MiB", yamlCT, hostileYAML("description", strings.Repeat("x", 2<<20)), http.StatusRequestEntityTooLarge, "larger than"},
		{"text/plain", "text/plain", hostileYAML(), http.StatusUnsupportedMediaType, "Content-Type"},
		{"form", "application/x-www-form-urlencoded", "name=x&playbook=y", http.StatusUnsupportedMediaType, "Content-Type"},
		{"multipart", "multipart/form-data; boundary=x", "--x--", http.StatusUnsupportedMediaType, "Content-Type"},
		{"unparsable Content-Type", "application/json; =", hostileJSON(), http.StatusUnsupportedMediaType, "Content-Type"},
	}
}

// setUpHostileDir places what the path cases need in the playbook directory: symlinks that
// lead out of it, and a FIFO, which must be refused without ever being opened.
func setUpHostileDir(t *testing.T, dir string) {
	t.Helper()
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "escape.yml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(dir, "escape-dir")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.yml"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestHostileSubmissions posts every case of the table: each must be refused with a JSON error
// naming the field or the rule, and together they must leave no job, no file and no harm.
func TestHostileSubmissions(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) { d.sched.runner.playbookCmd = "/bin/true" })
	setUpHostileDir(t, td.srv.limits.PlaybookDir)
	cases := hostileCases(td.srv.limits.PlaybookDir)
	if len(cases) < 40 {
		t.Errorf("only %d hostile cases; want at least 40", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, raw := do(t, "POST", td.URL+"/api/v1/jobs", contentType(tc.contentType), tc.body)
			wantError(t, resp, raw, tc.status, tc.want)
		})
	}

	_, list := getJSON(t, td.URL+"/api/v1/jobs?limit=1000")
	if jobs, _ := list["jobs"].([]any); len(jobs) != 0 {
		t.Errorf("refused submissions left %d jobs behind: %v", len(jobs), jobs)
	}
	entries, err := os.ReadDir(filepath.Join(td.cfg.DataDir, "logs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if info, err := e.Info(); e.Name() == "feed.0.events" && err == nil && info.Size() == 0 {
			continue // the all-jobs feed, open from the start, and empty: nothing was announced
		}
		t.Errorf("refused submissions left a file behind: logs/%s", e.Name())
	}
	if code, body := getJSON(t, td.URL+"/healthz"); code != http.StatusOK || body["status"] != "ok" {
		t.Errorf("/healthz after the hostile submissions = %d %v", code, body)
	}

	// The documents the cases start from are valid: each refusal is the hostile part's doing.
	td.submit(t, "application/x-yaml", hostileYAML(), http.StatusCreated)
	td.submit(t, "application/json", hostileJSON(), http.StatusCreated)
}

// TestOddButValidSubmissions checks the other side of the refusals: documents that look
// unusual but are valid YAML or JSON, and that Ansible runs, are accepted as they mean.
func TestOddButValidSubmissions(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) { d.sched.runner.playbookCmd = "/bin/true" })
	dir := td.srv.limits.PlaybookDir
	if err := os.WriteFile(filepath.Join(dir, "site.yml"), []byte("- hosts: all\n  tasks: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("site.yml", filepath.Join(dir, "link.yml")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		contentType string
		body        string
		field, want string // a field of the answer and its value as JSON
	}{
		{"aliased play", "application/x-yaml", hostileYAML("playbook", `"- &p {hosts: all, tasks: []}\n- *p\n"`), "", ""},
		{"aliased host", "application/x-yaml", hostileYAML("inventory", "[&h web1, web2, *h]"), "inventory", `["web1","web2"]`},
		{"aliased variables", "application/x-yaml", hostileYAML("variables", "{base: &b {a: 1}, copy: *b}"), "variables", `{"base":{"a":1},"copy":{"a":1}}`},
		{"document markers", "application/x-yaml", "---\n" + hostileYAML() + "...\n", "name", `"hostile"`},
		{"byte order mark", "application/x-yaml", "\ufeff" + hostileYAML(), "name", `"hostile"`},
		{"JSON escapes", "application/json", hostileJSON("name", `"caf\u00e9 \ud83d\ude80"`), "name", `"café 🚀"`},
		{"priority word in capitals", "application/x-yaml", hostileYAML("priority", "HIGH"), "priority", "10"},
		{"timeout as a duration", "application/json", hostileJSON("timeout", `"90s"`), "timeout", "90"},
		{"path with a dot segment inside", "application/x-yaml", hostileYAML("playbook", "./site.yml"), "playbook", `"./site.yml"`},
		{"symlink inside", "application/x-yaml", hostileYAML("playbook", "link.yml"), "playbook", `"link.yml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, raw := do(t, "POST", td.URL+"/api/v1/jobs", contentType(tt.contentType), tt.body)
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("status = %d, want 201; body %s", resp.StatusCode, raw)
			}
			var job map[string]json.RawMessage
			if err := json.Unmarshal(raw, &job); err != nil {
				t.Fatal(err)
			}
			if got := string(job[tt.field]); tt.field != "" && got != tt.want {
				t.Errorf("%s = %s, want %s", tt.field, got, tt.want)
			}
		})
	}
}

// TestBadRoutesAndMethods sends odd ids, paths, methods and query strings: each must get a
// JSON error (404, 405 or 400), never the mux's HTML or plain-text pages, and never a panic.
func TestBadRoutesAndMethods(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) { d.sched.runner.playbookCmd = "/bin/true" })
	id := td.submitFake(t, "real", 5, nil)
	td.waitStatus(t, id, StatusCompleted)
	job := "/api/v1/jobs/" + id
	long := strings.Repeat("a", 16<<10)
	digits := strings.Repeat("9", 32<<10)
	// cleanPath marks a path with dot segments or doubled slashes: answered 404, or redirected
	// to its clean form, but in JSON either way.
	const cleanPath = -1
	tests := []struct {
		method string
		path   string
		header string // a Last-Event-ID to send, if any
		status int
		want   string // in the error message
	}{
		// Ids.
		{"GET", "/api/v1/jobs/" + long, "", 404, "job not found: aaaa"},
		{"GET", "/api/v1/jobs/" + long + "/logs/stream", "", 404, "job not found"},
		{"DELETE", "/api/v1/jobs/" + long, "", 404, "job not found"},
		{"GET", "/api/v1/jobs/abc%00def", "", 404, "job not found: abc\x00def"},
		{"GET", "/api/v1/jobs/%00/events/stream", "", 404, "job not found"},
		{"POST", "/api/v1/jobs/%00/cancel", "", 404, "job not found"},
		{"GET", "/api/v1/jobs/ジョブ", "", 404, "job not found: ジョブ"},
		{"GET", "/api/v1/jobs/%E2%80%AEdi-boj", "", 404, "job not found"},
		{"GET", "/api/v1/jobs/%ff%fe/logs", "", 404, "job not found"},
		{"GET", "/api/v1/jobs/" + strings.ToUpper(id), "", 404, "job not found"},
		{"GET", job + "%20", "", 404, "job not found"},

		// Encoded slashes and dot segments.
		{"GET", "/api/v1/jobs/a%2Fb", "", 404, "job not found: a/b"},
		{"GET", "/api/v1/jobs/a%2Fb/logs", "", 404, "job not found: a/b"},
		{"DELETE", "/api/v1/jobs/..%2F..%2Fhealthz", "", 404, "../../healthz"},
		{"GET", "/api/v1/jobs/%2e%2e/%2e%2e/etc/passwd", "", 404, "no such endpoint"},
		{"GET", "/api/v1/jobs/%2e%2e", "", 404, ".."},
		{"GET", "/api/v1/jobs/../../etc/passwd", "", cleanPath, ""},
		{"POST", "/api/v1/jobs/../../etc/passwd", "", cleanPath, ""},
		{"GET", "/api/v1/jobs/./" + id, "", cleanPath, ""},
		{"GET", job + "/logs/stream/..", "", cleanPath, ""},
		{"GET", "//api/v1/jobs", "", cleanPath, ""},

		// Methods.
		{"PUT", job, "", 405, "PUT"},
		{"PATCH", job, "", 405, "PATCH"},
		{"PATCH", "/api/v1/jobs", "", 405, "PATCH"},
		{"DELETE", "/api/v1/jobs", "", 405, "DELETE"},
		{"DELETE", job + "/logs", "", 405, "DELETE"},
		{"PUT", job + "/events", "", 405, "PUT"},
		{"PATCH", job + "/cancel", "", 405, "PATCH"},
		{"DELETE", job + "/cancel", "", 405, "DELETE"},
		{"POST", job + "/events/stream", "", 405, "POST"},
		{"GET", job + "/relaunch", "", 405, "GET"},
		{"POST", "/api/v1/events/stream", "", 405, "POST"},
		{"DELETE", "/healthz", "", 405, "DELETE"},
		{"OPTIONS", "/api/v1/jobs", "", 405, "OPTIONS"},
		{"TRACE", job, "", 405, "TRACE"},
		{"BREW", "/api/v1/jobs", "", 405, "BREW"},
		{"PUT", "/api/v1/jobs/a%2Fb", "", 405, "PUT"},

		// Unknown routes.
		{"GET", "/api/v1/jobs/" + id + "/logs/tail", "", 404, "no such endpoint"},
		{"GET", "/api/v1/jobs/" + id + "/cancel/now", "", 404, "no such endpoint"},
		{"GET", "/.env", "", 404, "no such endpoint"},
		{"GET", "/api/v1/jobs.json", "", 404, "no such endpoint"},
		{"PUT", "/" + long, "", 404, "no such endpoint"},

		// Huge and hostile query strings and resume points.
		{"GET", "/api/v1/jobs?limit=" + digits, "", 400, "limit:"},
		{"GET", "/api/v1/jobs?status=" + long, "", 400, "status:"},
		{"GET", "/api/v1/jobs?status=%00", "", 400, "status:"},
		{"GET", "/api/v1/jobs?limit=%ff", "", 400, "limit:"},
		{"GET", job + "/logs?format=" + long, "", 400, "format:"},
		{"GET", job + "/logs/stream?since=" + digits, "", 400, "since:"},
		{"GET", job + "/events/stream?since=-1", "", 400, "since:"},
		{"GET", "/api/v1/events/stream?since=x", "", 400, "since:"},
		{"GET", "/api/v1/events/stream", digits, 400, "Last-Event-ID:"},
		{"GET", job + "/logs/stream", "-5", 400, "Last-Event-ID:"},
		{"GET", job + "/logs/stream", digits, 400, "Last-Event-ID:"},
		{"GET", "/api/v1/jobs/nope?" + strings.Repeat("a=1&", 8<<10), "", 404, "job not found: nope"},
	}
	for _, tt := range tests {
		name := tt.method + " " + tt.path
		if len(name) > 80 {
			name = name[:80]
		}
		t.Run(name, func(t *testing.T) {
			var h map[string]string
			if tt.header != "" {
				h = map[string]string{"Last-Event-ID": tt.header}
			}
			resp, raw := do(t, tt.method, td.URL+tt.path, h, "")
			if tt.status == cleanPath {
				hostileWantCleanPath(t, resp, raw)
				return
			}
			wantError(t, resp, raw, tt.status, tt.want)
			if tt.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
		})
	}
	if code, body := getJSON(t, td.URL+"/healthz"); code != http.StatusOK || body["status"] != "ok" {
		t.Errorf("/healthz after the bad requests = %d %v", code, body)
	}
}

// hostileWantCleanPath checks the answer to a path that is not clean: a JSON 404, or a
// redirect to the clean path whose body is JSON too, never the mux's HTML link.
func hostileWantCleanPath(t *testing.T, resp *http.Response, raw []byte) {
	t.Helper()
	switch resp.StatusCode {
	case http.StatusNotFound:
		wantError(t, resp, raw, http.StatusNotFound, "")
		return
	case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") {
			t.Errorf("redirect to %q, want a path on this server", loc)
		}
	default:
		t.Errorf("status = %d, want 404 or a redirect to the clean path; body %.300q", resp.StatusCode, raw)
	}
	if got, want := resp.Header.Get("Content-Type"), "application/json"; got != want {
		t.Errorf("Content-Type = %q, want %q; body %.300q", got, want, raw)
	}
	if !json.Valid(raw) {
		t.Errorf("answer is not JSON: %.300q", raw)
	}
}
