package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// seedSimpleJob is simple_job.yaml as the original streaming demo README printed it, verbatim.
const seedSimpleJob = `name: "Simple Ansible Task"
description: "A basic Ansible task that runs quickly"
playbook: |
  ---
  - name: Simple Demo Playbook
    hosts: localhost
    gather_facts: false
    connection: local

    tasks:
      - name: Show welcome message
        debug:
          msg: "{{ message | default('Hello from Charon Ansible job!') }}"

      - name: Simulate some work
        debug:
          msg: "Job is running..."

      - name: Wait a moment
        pause:
          seconds: 3

      - name: Show completion message
        debug:
          msg: "Job completed successfully!"
inventory:
  - "localhost"
variables:
  message: "Hello from Charon Ansible job!"
priority: 5
timeout: 60
`

// seedSimplePlaybook is the embedded playbook of seedSimpleJob once the block scalar is read.
const seedSimplePlaybook = `---
- name: Simple Demo Playbook
  hosts: localhost
  gather_facts: false
  connection: local

  tasks:
    - name: Show welcome message
      debug:
        msg: "{{ message | default('Hello from Charon Ansible job!') }}"

    - name: Simulate some work
      debug:
        msg: "Job is running..."

    - name: Wait a moment
      pause:
        seconds: 3

    - name: Show completion message
      debug:
        msg: "Job completed successfully!"
`

// miniPlaybook is the smallest embedded playbook the tests use, as YAML text.
const miniPlaybook = "- hosts: localhost\n  tasks: []\n"

// playbookFixture is a playbook dir with files for the external-playbook cases, and a file
// beside it (outside it) that paths may try to reach.
type playbookFixture struct {
	base    string // realpath of the temp dir holding both
	dir     string // the playbook dir: base/playbooks
	outside string // base/outside.yml
}

func newPlaybookFixture(t *testing.T) playbookFixture {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := playbookFixture{base: base, dir: filepath.Join(base, "playbooks"), outside: filepath.Join(base, "outside.yml")}
	for _, d := range []string{f.dir, filepath.Join(f.dir, "sub"), filepath.Join(f.dir, "roles")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{filepath.Join(f.dir, "site.yml"), filepath.Join(f.dir, "sub", "deploy.yml"), f.outside} {
		if err := os.WriteFile(p, []byte(miniPlaybook), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		filepath.Join(f.dir, "escape.yml"): f.outside,                        // inside, pointing outside
		filepath.Join(f.dir, "alias.yml"):  filepath.Join(f.dir, "site.yml"), // inside, pointing inside
	}
	for link, target := range links {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f playbookFixture) limits() specLimits {
	return specLimits{PlaybookDir: f.dir, DefaultTimeout: 10 * time.Minute, MaxTimeout: 2 * time.Hour, MaxForks: 50}
}

func TestParseJobSpecValid(t *testing.T) {
	fx := newPlaybookFixture(t)
	lim := fx.limits()
	// spec fills in the defaults parseJobSpec applies, for the fields a case leaves zero.
	spec := func(s JobSpec) *JobSpec {
		if s.Name == "" {
			s.Name = "t"
		}
		if s.Playbook == "" {
			s.Playbook = miniPlaybook
		}
		if s.Inventory == nil {
			s.Inventory = []string{"localhost"}
		}
		if s.Variables == nil {
			s.Variables = map[string]any{}
		}
		if s.Priority == 0 {
			s.Priority = defaultPriority
		}
		if s.Timeout == 0 {
			s.Timeout = lim.DefaultTimeout
		}
		return &s
	}
	// doc is a minimal YAML job with an embedded playbook, plus the extra lines given.
	doc := func(extra string) string {
		return "name: t\nplaybook: |\n  - hosts: localhost\n    tasks: []\n" + extra
	}
	tests := []struct {
		name   string
		body   string
		isJSON bool
		want   *JobSpec
	}{
		{
			name: "seed simple_job.yaml",
			body: seedSimpleJob,
			want: spec(JobSpec{
				Name:        "Simple Ansible Task",
				Description: "A basic Ansible task that runs quickly",
				Playbook:    seedSimplePlaybook,
				Variables:   map[string]any{"message": "Hello from Charon Ansible job!"},
				Priority:    5,
				Timeout:     60 * time.Second,
			}),
		},
		{
			name:   "JSON form",
			body:   `{"name":"j","description":"d","playbook":"- hosts: localhost\n  tasks: []\n","inventory":["web1","web2"],"variables":{"n":3,"s":"3"},"priority":"high","timeout":"90s"}`,
			isJSON: true,
			want: spec(JobSpec{
				Name: "j", Description: "d",
				Inventory: []string{"web1", "web2"},
				Variables: map[string]any{"n": 3, "s": "3"},
				Priority:  10,
				Timeout:   90 * time.Second,
			}),
		},
		{
			name:   "JSON pretty-printed with spaces",
			body:   "{\n  \"name\": \"t\",\n  \"playbook\": \"site.yml\"\n}\n",
			isJSON: true,
			want:   spec(JobSpec{Playbook: "site.yml", PlaybookPath: filepath.Join(fx.dir, "site.yml")}),
		},
		{
			// json.MarshalIndent(v, "", "\t") and `jq --tab` write this.
			name:   "JSON pretty-printed with tabs",
			body:   "{\n\t\"name\": \"t\",\n\t\"playbook\": \"site.yml\"\n}\n",
			isJSON: true,
			want:   spec(JobSpec{Playbook: "site.yml", PlaybookPath: filepath.Join(fx.dir, "site.yml")}),
		},
		{
			// Python's json.dumps (ensure_ascii, the default) writes non-BMP characters as
			// surrogate pairs: examples/streaming_demo/long_job.yaml has emoji in its playbook.
			name:   "JSON with a surrogate-pair escape",
			body:   `{"name":"t","description":"\ud83d\ude80 go","playbook":"site.yml"}`,
			isJSON: true,
			want:   spec(JobSpec{Description: "🚀 go", Playbook: "site.yml", PlaybookPath: filepath.Join(fx.dir, "site.yml")}),
		},
		{
			// PHP's json_encode escapes every slash by default.
			name:   `JSON with an escaped slash \/`,
			body:   `{"name":"t","playbook":"sub\/deploy.yml"}`,
			isJSON: true,
			want:   spec(JobSpec{Playbook: "sub/deploy.yml", PlaybookPath: filepath.Join(fx.dir, "sub", "deploy.yml")}),
		},
		{name: "priority low", body: doc("priority: low\n"), want: spec(JobSpec{Priority: 1})},
		{name: "priority normal", body: doc("priority: normal\n"), want: spec(JobSpec{Priority: 5})},
		{name: "priority high", body: doc("priority: high\n"), want: spec(JobSpec{Priority: 10})},
		{name: "priority critical", body: doc("priority: critical\n"), want: spec(JobSpec{Priority: 15})},
		{name: "priority word in capitals", body: doc("priority: Critical\n"), want: spec(JobSpec{Priority: 15})},
		{name: "priority default", body: doc(""), want: spec(JobSpec{Priority: 5})},
		{name: "priority 1", body: doc("priority: 1\n"), want: spec(JobSpec{Priority: 1})},
		{name: "priority 15", body: doc("priority: 15\n"), want: spec(JobSpec{Priority: 15})},
		{name: "timeout int seconds", body: doc("timeout: 120\n"), want: spec(JobSpec{Timeout: 2 * time.Minute})},
		{name: "timeout 90s", body: doc("timeout: 90s\n"), want: spec(JobSpec{Timeout: 90 * time.Second})},
		{name: "timeout quoted 5m", body: doc("timeout: \"5m\"\n"), want: spec(JobSpec{Timeout: 5 * time.Minute})},
		{name: "timeout exactly max", body: doc("timeout: 7200\n"), want: spec(JobSpec{Timeout: 2 * time.Hour})},
		{name: "timeout 0 means default", body: doc("timeout: 0\n"), want: spec(JobSpec{Timeout: lim.DefaultTimeout})},
		{name: "timeout 0s means default", body: doc("timeout: 0s\n"), want: spec(JobSpec{Timeout: lim.DefaultTimeout})},
		{name: "timeout missing means default", body: doc(""), want: spec(JobSpec{Timeout: lim.DefaultTimeout})},
		{name: "inventory default", body: doc(""), want: spec(JobSpec{Inventory: []string{"localhost"}})},
		{
			name: "inventory hosts kept in order, duplicates dropped",
			body: doc("inventory: [web1.example.com, 10.0.0.7, web1.example.com, db_1]\n"),
			want: spec(JobSpec{Inventory: []string{"web1.example.com", "10.0.0.7", "db_1"}}),
		},
		{
			name: "variables keep their types",
			body: doc("variables:\n  task_count: \"20\"\n  count: 20\n  ratio: 0.5\n  on: true\n  none: null\n" +
				"  nested:\n    list: [1, two, {three: 3}]\n    map: {k: v}\n"),
			want: spec(JobSpec{Variables: map[string]any{
				"task_count": "20",
				"count":      20,
				"ratio":      0.5,
				"on":         true,
				"none":       nil,
				"nested": map[string]any{
					"list": []any{1, "two", map[string]any{"three": 3}},
					"map":  map[string]any{"k": "v"},
				},
			}}),
		},
		{
			name:   "JSON variables keep their types",
			body:   `{"name":"t","playbook":"site.yml","variables":{"s":"20","n":20,"l":[1,"a"],"m":{"k":false}}}`,
			isJSON: true,
			want: spec(JobSpec{
				Playbook: "site.yml", PlaybookPath: filepath.Join(fx.dir, "site.yml"),
				Variables: map[string]any{"s": "20", "n": 20, "l": []any{1, "a"}, "m": map[string]any{"k": false}},
			}),
		},
		{name: "variables null means none", body: doc("variables:\n"), want: spec(JobSpec{Variables: map[string]any{}})},
		{
			name: "variables timestamp becomes a string",
			body: doc("variables:\n  when: 2024-01-02T03:04:05Z\n"),
			want: spec(JobSpec{Variables: map[string]any{"when": "2024-01-02T03:04:05Z"}}),
		},
		{
			name: "external playbook relative",
			body: "name: t\nplaybook: site.yml\n",
			want: spec(JobSpec{Playbook: "site.yml", PlaybookPath: filepath.Join(fx.dir, "site.yml")}),
		},
		{
			name: "external playbook in a subdirectory",
			body: "name: t\nplaybook: sub/deploy.yml\n",
			want: spec(JobSpec{Playbook: "sub/deploy.yml", PlaybookPath: filepath.Join(fx.dir, "sub", "deploy.yml")}),
		},
		{
			name: "external playbook absolute inside",
			body: "name: t\nplaybook: " + filepath.Join(fx.dir, "sub", "deploy.yml") + "\n",
			want: spec(JobSpec{Playbook: filepath.Join(fx.dir, "sub", "deploy.yml"), PlaybookPath: filepath.Join(fx.dir, "sub", "deploy.yml")}),
		},
		{
			name: "external playbook with .. that stays inside",
			body: "name: t\nplaybook: sub/../site.yml\n",
			want: spec(JobSpec{Playbook: "sub/../site.yml", PlaybookPath: filepath.Join(fx.dir, "site.yml")}),
		},
		{
			name: "external playbook symlink inside to inside",
			body: "name: t\nplaybook: alias.yml\n",
			want: spec(JobSpec{Playbook: "alias.yml", PlaybookPath: filepath.Join(fx.dir, "site.yml")}),
		},
		{
			name: "top-level alias resolves",
			body: "name: &n t\ndescription: *n\nplaybook: site.yml\n",
			want: spec(JobSpec{Description: "t", Playbook: "site.yml", PlaybookPath: filepath.Join(fx.dir, "site.yml")}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseJobSpec([]byte(tt.body), tt.isJSON, lim)
			if err != nil {
				t.Fatalf("parseJobSpec: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseJobSpec =\n%#v\nwant\n%#v", got, tt.want)
			}
			if gotEmb, wantEmb := got.Embedded(), tt.want.PlaybookPath == ""; gotEmb != wantEmb {
				t.Errorf("Embedded() = %v, want %v", gotEmb, wantEmb)
			}
		})
	}
}

func TestParseJobSpecInvalid(t *testing.T) {
	fx := newPlaybookFixture(t)
	lim := fx.limits()
	// doc is a valid YAML job with an external playbook, plus the extra lines given.
	doc := func(extra string) string { return "name: t\nplaybook: site.yml\n" + extra }
	tests := []struct {
		name   string
		body   string
		isJSON bool
		want   []string // substrings of the error message
	}{
		{name: "missing name", body: "playbook: site.yml\n", want: []string{"name:", "required"}},
		{name: "empty name", body: "name: \"\"\nplaybook: site.yml\n", want: []string{"name:", "required"}},
		{name: "missing playbook", body: "name: t\n", want: []string{"playbook:", "required"}},
		{name: "blank playbook", body: "name: t\nplaybook: \"  \"\n", want: []string{"playbook:", "required"}},
		{name: "unknown field", body: doc("colour: blue\n"), want: []string{`"colour"`, "unknown field"}},
		{name: "unknown field in JSON", body: `{"name":"t","playbook":"site.yml","hosts":["a"]}`, isJSON: true, want: []string{`"hosts"`, "unknown field"}},
		{name: "duplicate key", body: doc("name: again\n"), want: []string{"name:", "more than once"}},
		{name: "duplicate key in JSON", body: `{"name":"t","playbook":"site.yml","priority":1,"priority":2}`, isJSON: true, want: []string{"priority:", "more than once"}},
		{name: "name a list", body: "name: [a, b]\nplaybook: site.yml\n", want: []string{"name:", "string"}},
		{name: "name a mapping", body: "name: {a: b}\nplaybook: site.yml\n", want: []string{"name:", "string"}},
		{name: "name a JSON number", body: `{"name":42,"playbook":"site.yml"}`, isJSON: true, want: []string{"name:", "string"}},
		{name: "name null", body: "name: null\nplaybook: site.yml\n", want: []string{"name:"}},
		{name: "name too long", body: "name: " + strings.Repeat("n", 201) + "\nplaybook: site.yml\n", want: []string{"name:", "200"}},
		{name: "description a list", body: doc("description: [a]\n"), want: []string{"description:"}},
		{name: "priority 0", body: doc("priority: 0\n"), want: []string{"priority:", "out of range"}},
		{name: "priority 16", body: doc("priority: 16\n"), want: []string{"priority:", "out of range"}},
		{name: "priority negative", body: doc("priority: -1\n"), want: []string{"priority:"}},
		{name: "priority urgent", body: doc("priority: urgent\n"), want: []string{"priority:", "urgent"}},
		{name: "priority 1.5", body: doc("priority: 1.5\n"), want: []string{"priority:", "1.5"}},
		{name: "priority quoted number", body: doc("priority: \"5\"\n"), want: []string{"priority:"}},
		{name: "priority list", body: doc("priority: [5]\n"), want: []string{"priority:", "list"}},
		{name: "priority boolean", body: doc("priority: true\n"), want: []string{"priority:"}},
		{name: "priority JSON string number", body: `{"name":"t","playbook":"site.yml","priority":"10"}`, isJSON: true, want: []string{"priority:"}},
		{name: "timeout negative", body: doc("timeout: -5\n"), want: []string{"timeout:", "negative"}},
		{name: "timeout negative duration", body: doc("timeout: -5s\n"), want: []string{"timeout:", "negative"}},
		{name: "timeout above max", body: doc("timeout: 7201\n"), want: []string{"timeout:", "maximum"}},
		{name: "timeout duration above max", body: doc("timeout: 3h\n"), want: []string{"timeout:", "maximum"}},
		{name: "timeout huge seconds", body: doc("timeout: 9223372036854775807\n"), want: []string{"timeout:"}},
		{name: "timeout soon", body: doc("timeout: soon\n"), want: []string{"timeout:", "soon"}},
		{name: "timeout no unit", body: doc("timeout: \"90\"\n"), want: []string{"timeout:"}},
		{name: "timeout float", body: doc("timeout: 1.5\n"), want: []string{"timeout:"}},
		{name: "timeout a list", body: doc("timeout: [60]\n"), want: []string{"timeout:", "list"}},
		// A string is an inventory path and a mapping a YAML inventory (issue 12): these two are
		// refused now for what is wrong with them, not for not being lists.
		{name: "inventory a string", body: doc("inventory: localhost\n"), want: []string{"inventory:", "does not exist"}},
		{name: "inventory a mapping", body: doc("inventory: {all: {hosts: a}}\n"), want: []string{"inventory.all.hosts:", "mapping"}},
		{name: "inventory empty", body: doc("inventory: []\n"), want: []string{"inventory:", "at least one"}},
		{name: "inventory host with space", body: doc("inventory: [ok, \"web 1\"]\n"), want: []string{"inventory[1]:", "white space"}},
		{name: "inventory host with tab", body: doc("inventory: [\"web\\t1\"]\n"), want: []string{"inventory[0]:"}},
		{name: "inventory host with newline", body: doc("inventory: [\"web\\n1\"]\n"), want: []string{"inventory[0]:"}},
		{name: "inventory host with unicode space", body: doc("inventory: [ok, \"web\u20031\"]\n"), want: []string{"inventory[1]:"}},
		{name: "inventory host with comma", body: doc("inventory: [ok, \"a,b\"]\n"), want: []string{"inventory[1]:", "comma"}},
		{name: "inventory host with leading dash", body: doc("inventory: [ok, \"-i\"]\n"), want: []string{"inventory[1]:", "'-'"}},
		{name: "inventory host range pattern", body: doc("inventory: [ok, \"h[0:99999999]\"]\n"), want: []string{"inventory[1]:", "range"}},
		{name: "inventory host with NUL", body: doc("inventory: [ok, \"a\\0b\"]\n"), want: []string{"inventory[1]:", "NUL"}},
		{name: "inventory host empty", body: doc("inventory: [ok, \"\"]\n"), want: []string{"inventory[1]:", "empty"}},
		{name: "inventory host a list", body: doc("inventory: [ok, [a]]\n"), want: []string{"inventory[1]:", "string"}},
		{name: "inventory host a mapping", body: doc("inventory: [ok, {a: b}]\n"), want: []string{"inventory[1]:", "string"}},
		{name: "inventory host null", body: doc("inventory: [ok, null]\n"), want: []string{"inventory[1]:", "string"}},
		{name: "inventory host a JSON number", body: `{"name":"t","playbook":"site.yml","inventory":["ok",42]}`, isJSON: true, want: []string{"inventory[1]:", "string"}},
		{name: "variables a list", body: doc("variables: [a, b]\n"), want: []string{"variables:", "mapping"}},
		{name: "variables a string", body: doc("variables: x\n"), want: []string{"variables:", "mapping"}},
		{name: "variable name starting with a digit", body: doc("variables: {1abc: x}\n"), want: []string{"variables:", `"1abc"`}},
		{name: "variable name with a dash", body: doc("variables: {a-b: x}\n"), want: []string{"variables:", `"a-b"`}},
		{name: "variable name empty", body: doc("variables: {\"\": x}\n"), want: []string{"variables:"}},
		{name: "variable given twice", body: doc("variables:\n  a: 1\n  a: 2\n"), want: []string{"variables:"}},
		{name: "variables nested non-string key", body: doc("variables:\n  outer:\n    1: x\n"), want: []string{"variables.outer:", "keys must be strings"}},
		{name: "variables non-string key in a list", body: doc("variables:\n  l:\n    - {true: x}\n"), want: []string{"variables.l[0]:", "keys must be strings"}},
		{name: "variables infinity", body: doc("variables: {x: .inf}\n"), want: []string{"variables.x:"}},
		{name: "variables NaN", body: doc("variables: {x: .nan}\n"), want: []string{"variables.x:"}},
		{
			name: "embedded playbook invalid YAML",
			body: "name: t\nplaybook: |\n  - hosts: all\n    tasks: [unclosed\n",
			want: []string{"playbook:", "not valid YAML", "line"},
		},
		{
			name: "embedded playbook a mapping",
			body: "name: t\nplaybook: |\n  hosts: all\n  tasks: []\n",
			want: []string{"playbook:", "list of plays", "mapping"},
		},
		{
			name: "embedded playbook a play that is a string",
			body: "name: t\nplaybook: |\n  - hosts: all\n  - just a string\n",
			want: []string{"playbook:", "play 2", "string", "line 2"},
		},
		{name: "embedded playbook an empty list", body: "name: t\nplaybook: |\n  []\n", want: []string{"playbook:", "no plays"}},
		{name: "embedded playbook a scalar", body: "name: t\nplaybook: |\n  site.yml\n", want: []string{"playbook:", "list of plays"}},
		{name: "empty body", body: "", want: []string{"empty"}},
		{name: "whitespace body", body: " \n\t\n ", want: []string{"empty"}},
		{name: "comment-only body", body: "# nothing here\n", want: []string{"job document"}},
		{name: "scalar body", body: "hello\n", want: []string{"mapping", "string"}},
		{name: "JSON array body", body: `[{"name":"t","playbook":"site.yml"}]`, isJSON: true, want: []string{"mapping", "list"}},
		{name: "JSON string body", body: `"job"`, isJSON: true, want: []string{"mapping", "string"}},
		{name: "YAML list body", body: "- name: t\n  playbook: site.yml\n", want: []string{"mapping", "list"}},
		{name: "multi-document YAML", body: "name: a\nplaybook: site.yml\n---\nname: b\nplaybook: site.yml\n", want: []string{"more than one"}},
		{name: "invalid YAML", body: "name: t\nplaybook: [site.yml\n", want: []string{"not valid YAML", "line"}},
		{name: "invalid JSON", body: `{name: "t", playbook: "site.yml"}`, isJSON: true, want: []string{"not valid JSON"}},
		{name: "YAML sent as JSON", body: "name: t\nplaybook: site.yml\n", isJSON: true, want: []string{"not valid JSON"}},
		{name: "JSON with trailing garbage", body: `{"name":"t","playbook":"site.yml"} xyz`, isJSON: true, want: []string{"JSON"}},
		{name: "JSON followed by a second object", body: `{"name":"t","playbook":"site.yml"}{"name":"u"}`, isJSON: true, want: []string{"more than one"}},
		{name: "JSON with a trailing brace", body: `{"name":"t","playbook":"site.yml"}}`, isJSON: true, want: []string{"request body"}},
		{name: "external path missing", body: "name: t\nplaybook: nope.yml\n", want: []string{"playbook:", "does not exist"}},
		{name: "external path a directory", body: "name: t\nplaybook: roles\n", want: []string{"playbook:", "not a regular file"}},
		{name: "external path the playbook dir itself", body: "name: t\nplaybook: .\n", want: []string{"playbook:", "not a regular file"}},
		{name: "external path ../ escaping", body: "name: t\nplaybook: ../outside.yml\n", want: []string{"playbook:", "outside"}},
		{name: "external path seed ../../ escaping", body: "name: t\nplaybook: \"../../ansible/provision-masternode.yaml\"\n", want: []string{"playbook:"}},
		{name: "external path absolute outside", body: "name: t\nplaybook: " + fx.outside + "\n", want: []string{"playbook:", "outside the playbook directory"}},
		{name: "external path symlink escaping", body: "name: t\nplaybook: escape.yml\n", want: []string{"playbook:", "outside the playbook directory"}},
		{name: "external path with NUL", body: "name: t\nplaybook: \"site.yml\\0.txt\"\n", want: []string{"playbook:", "NUL"}},
		{name: "playbook a list", body: "name: t\nplaybook: [site.yml]\n", want: []string{"playbook:", "string"}},
		{name: "non-scalar field name", body: "? [name]\n: t\nplaybook: site.yml\n", want: []string{"field names"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := parseJobSpec([]byte(tt.body), tt.isJSON, lim)
			if err == nil {
				t.Fatalf("parseJobSpec succeeded with %#v, want an error", spec)
			}
			status, msg := httpStatus(err)
			if got, want := status, http.StatusBadRequest; got != want {
				t.Errorf("httpStatus = %d (%q), want %d", got, msg, want)
			}
			for _, want := range tt.want {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not contain %q", msg, want)
				}
			}
		})
	}
}

// TestParseJobSpecAliasBomb feeds a billion-laughs document: nine levels of nine aliases, which
// would expand to 9^9 strings. It must be refused quickly, without expanding it.
func TestParseJobSpecAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("name: bomb\nplaybook: |\n  - hosts: localhost\n    tasks: []\nvariables:\n")
	b.WriteString("  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	for c := 'b'; c <= 'i'; c++ {
		prev := string(c - 1)
		b.WriteString("  " + string(c) + ": &" + string(c) + " [")
		for i := 0; i < 9; i++ {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString("*" + prev)
		}
		b.WriteString("]\n")
	}
	lim := specLimits{PlaybookDir: t.TempDir(), DefaultTimeout: time.Minute, MaxTimeout: time.Hour}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	spec, err := parseJobSpec([]byte(b.String()), false, lim)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)

	if err == nil {
		t.Fatalf("parseJobSpec accepted an alias bomb: %d variables", len(spec.Variables))
	}
	status, msg := httpStatus(err)
	if got, want := status, http.StatusBadRequest; got != want {
		t.Errorf("httpStatus = %d (%q), want %d", got, msg, want)
	}
	if !strings.Contains(msg, "variables:") {
		t.Errorf("message %q does not name variables", msg)
	}
	t.Logf("refused in %v: %s", elapsed, msg)
	if got, max := elapsed, 2*time.Second; got > max {
		t.Errorf("took %v, want under %v", got, max)
	}
	if got, max := after.TotalAlloc-before.TotalAlloc, uint64(256<<20); got > max {
		t.Errorf("allocated %d MB, want under %d MB", got>>20, max>>20)
	}
}

func TestHasLoneSurrogate(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{`{"a":"plain"}`, false},
		{`{"a":"\ud83d\ude80"}`, false}, // a pair: 🚀
		{`{"a":"\ud800"}`, true},        // a high half alone
		{`{"a":"\udc00x"}`, true},       // a low half alone
		{`{"a":"\ud800\u0041"}`, true},  // a high half followed by something else
		{`{"a":"\\ud800"}`, false},      // an escaped backslash, then text
		{`{"a":"\\\ud800"}`, true},      // an escaped backslash, then a lone half
		{`{"a":"\u00e9\n\"\/"}`, false}, // other escapes
		{`{"a":"\ud83d\ude80\ud800"}`, true},
	}
	for _, tt := range tests {
		if got := hasLoneSurrogate([]byte(tt.in)); got != tt.want {
			t.Errorf("hasLoneSurrogate(%s) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestRecordRoundTrip checks that a job's record and its inverse are plain copies: every
// field of the spec and the state survives the journal's JSON and comes back.
func TestRecordRoundTrip(t *testing.T) {
	code := 2
	job := jobFromRecord(jobRecord{ID: newJobID(), Version: 7, Seq: 3, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		JobSpec: JobSpec{Name: "n", Description: "d", Playbook: "/p/site.yml", PlaybookPath: "/p/site.yml",
			Inventory: []string{"web1", "web2"}, Variables: map[string]any{"a": "b", "n": 1.5}, Priority: 10, Timeout: time.Minute},
		jobState: jobState{Status: StatusFailed, StartedAt: time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC),
			FinishedAt: time.Date(2026, 1, 2, 3, 4, 9, 0, time.UTC), ExitCode: &code, Message: "m", PGID: 4242,
			Summary: &jobSummary{Hosts: map[string]hostCounts{"web1": {OK: 1, Failed: 1}}, FailedTasks: []failedTask{{Host: "web1", Task: "t", Message: "x"}}}}})
	first := job.record()
	line, err := json.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	var back jobRecord
	if err := json.Unmarshal(line, &back); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(jobFromRecord(back).record())
	if string(again) != string(line) {
		t.Errorf("record after a round trip:\n%s\nwant:\n%s", again, line)
	}
	for _, key := range []string{`"name":"n"`, `"playbook_path":"/p/site.yml"`, `"timeout_ns":60000000000`, `"status":"failed"`, `"pgid":4242`, `"exit_code":2`, `"version":7`, `"seq":3`} {
		if !strings.Contains(string(line), key) {
			t.Errorf("record %s lacks %s", line, key)
		}
	}
	if job.record().Version != 7 {
		t.Error("taking a record made a new version: compactions would bump every job")
	}
}

func TestParseLaunchOptions(t *testing.T) {
	f := newPlaybookFixture(t)
	parse := func(fields string) (*JobSpec, error) {
		return parseJobSpec([]byte("name: o\nplaybook: site.yml\n"+fields), false, f.limits())
	}
	spec, err := parse("limit: \"web:&prod,!db1\"\ntags: [deploy, config]\nskip_tags: [slow]\ncheck: true\ndiff: true\n" +
		"verbosity: 3\nforks: 10\nstart_at_task: Install packages\n")
	if err != nil {
		t.Fatal(err)
	}
	got := spec.args("/w/inv.json", "/w/vars.yml")
	want := []string{"-i", "/w/inv.json", "-e", "@/w/vars.yml", "--limit=web:&prod,!db1", "--tags=deploy,config",
		"--skip-tags=slow", "--check", "--diff", "-vvv", "--forks=10", "--start-at-task=Install packages"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("args = %q\nwant  %q", got, want)
	}
	plain, err := parse("")
	if err != nil {
		t.Fatal(err)
	}
	if got := plain.args("i", "v"); !reflect.DeepEqual(got, []string{"-i", "i", "-e", "@v"}) {
		t.Errorf("args without options = %q", got)
	}
	for _, tt := range []struct{ fields, want string }{
		{"limit: \"-e @x\"\n", "limit:"},
		{"limit: \"@hosts.txt\"\n", "limit:"},
		{"limit: \"web 1\"\n", "limit:"},
		{"limit: \"{{ lookup('pipe', 'id') }}\"\n", "limit:"},
		{"limit: \"\"\n", "limit:"},
		{"limit: [web]\n", "limit:"},
		{"tags: deploy\n", "tags:"},
		{"tags: []\n", "tags:"},
		{"tags: [\"a,b\"]\n", "tags[0]:"},
		{"tags: [ok, \"a b\"]\n", "tags[1]:"},
		{"skip_tags: [\"\"]\n", "skip_tags[0]:"},
		{"skip_tags: [\"{% x %}\"]\n", "skip_tags[0]:"},
		{"check: \"yes\"\n", "check:"},
		{"diff: 1\n", "diff:"},
		{"verbosity: 5\n", "verbosity:"},
		{"verbosity: -1\n", "verbosity:"},
		{"verbosity: \"2\"\n", "verbosity:"},
		{"forks: 0\n", "forks:"},
		{"forks: 51\n", "-max-forks"},
		{"start_at_task: \"a\\nb\"\n", "start_at_task:"},
		{"start_at_task: \"  \"\n", "start_at_task:"},
	} {
		_, err := parse(tt.fields)
		if err == nil {
			t.Errorf("%q accepted", tt.fields)
			continue
		}
		if status, msg := httpStatus(err); status != http.StatusBadRequest || !strings.Contains(msg, tt.want) {
			t.Errorf("%q: %d %q, want 400 naming %s", tt.fields, status, msg, tt.want)
		}
	}
}
