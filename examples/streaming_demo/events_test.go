package main

// Tests of how the events command shows a job's events: status changes, the playbook's plays,
// tasks and host results, and the recap. The expected output of each case is a golden file in
// testdata/events; run `go test -run TestEventsRendering -update` to rewrite them after a
// deliberate change, and read the diff.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata with the output the tests get")

// kv is the fields of a job event beyond type, job_id, timestamp and message.
type kv map[string]any

// jobEvent is the data of a job event of type typ, sec seconds after 15:30 UTC on the day of the
// fake's job.
func jobEvent(typ string, sec float64, message string, fields kv) string {
	m := map[string]any{
		"type":      typ,
		"job_id":    "job-1",
		"timestamp": time.Date(2023, 12, 7, 15, 30, 0, 0, time.UTC).Add(time.Duration(sec * float64(time.Second))).Format(time.RFC3339Nano),
		"message":   message,
	}
	for k, v := range fields {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func status(sec float64, s, message string) string {
	return jobEvent("status_changed", sec, message, kv{"status": s})
}

func playStart(sec float64, play string) string {
	return jobEvent("playbook_on_play_start", sec, "PLAY ["+play+"]", kv{"play": play})
}

func taskStart(sec float64, play, task, action string) string {
	return jobEvent("playbook_on_task_start", sec, "TASK ["+task+"]", kv{"play": play, "task": task, "action": action})
}

// hostResult is a runner_* event for host, with the fields a result always has and more.
func hostResult(typ string, sec float64, play, task, host string, more kv) string {
	f := kv{"play": play, "task": task, "action": "debug", "host": host, "changed": false}
	for k, v := range more {
		f[k] = v
	}
	outcome := strings.TrimPrefix(strings.TrimPrefix(typ, "runner_item_on_"), "runner_on_")
	return jobEvent(typ, sec, outcome+": ["+host+"]", f)
}

func stats(sec float64, hosts map[string]hostStats) string {
	return jobEvent("playbook_on_stats", sec, "PLAY RECAP", kv{"hosts": hosts})
}

// simpleJobEvents is what charond sends for simple_job.yaml: four debug and pause tasks on
// localhost, all ok.
func simpleJobEvents() []string {
	const play = "Simple Demo Playbook"
	events := []string{
		status(40, "queued", "Job queued with priority 5"),
		status(40.2, "running", "Job started"),
		jobEvent("playbook_on_start", 41, "Playbook playbook.yml started", kv{"playbook": "playbook.yml"}),
		playStart(41.1, play),
	}
	at := 41.2
	for _, task := range []string{"Show welcome message", "Simulate some work", "Wait a moment", "Show completion message"} {
		action, took := "debug", 0.031
		if task == "Wait a moment" {
			action, took = "pause", 3.004
		}
		events = append(events, taskStart(at, play, task, action),
			hostResult("runner_on_ok", at+took, play, task, "localhost", kv{"action": action, "duration": took}))
		at += took + 0.1
	}
	return append(events,
		stats(at, map[string]hostStats{"localhost": {OK: 4}}),
		status(at+0.1, "completed", "Job finished successfully"))
}

// everyOutcomeEvents is a playbook on three hosts that meets every kind of result, a loop, a
// handler and a failure whose message runs over several lines.
func everyOutcomeEvents() []string {
	const play = "Site"
	return []string{
		status(40, "running", "Job started"),
		jobEvent("playbook_on_start", 40.5, "Playbook site.yml started", kv{"playbook": "site.yml"}),
		playStart(41, play),
		taskStart(41, play, "Install nginx", "apt"),
		hostResult("runner_on_ok", 41.4, play, "Install nginx", "db1", kv{"action": "apt", "duration": 0.4}),
		hostResult("runner_on_ok", 41.9, play, "Install nginx", "localhost", kv{"action": "apt", "changed": true, "duration": 0.46}),
		hostResult("runner_on_unreachable", 42, play, "Install nginx", "web1", kv{"action": "apt",
			"msg": "Failed to connect to the host via ssh: ssh: connect to host web1 port 22: Connection refused"}),
		taskStart(42.1, play, "failing but ignored", "command"),
		hostResult("runner_on_failed", 42.2, play, "failing but ignored", "db1", kv{"action": "command",
			"msg": "boom", "ignore_errors": true, "duration": 0.05}),
		hostResult("runner_on_failed", 42.3, play, "failing but ignored", "localhost", kv{"action": "command", "changed": true,
			"msg": "non-zero return code\r\nline two of stderr\n", "ignore_errors": true, "duration": 75.4}),
		taskStart(42.4, play, "only on Debian", "apt"),
		hostResult("runner_on_skipped", 42.4, play, "only on Debian", "db1", nil),
		hostResult("runner_on_skipped", 42.4, play, "only on Debian", "localhost", nil),
		taskStart(42.5, play, "loop task", "debug"),
		hostResult("runner_item_on_ok", 42.6, play, "loop task", "db1", kv{"item": "1", "duration": 0.1}),
		hostResult("runner_item_on_ok", 42.7, play, "loop task", "db1", kv{"item": "2", "changed": true, "duration": 0.2}),
		hostResult("runner_item_on_skipped", 42.7, play, "loop task", "db1", kv{"item": "3"}),
		hostResult("runner_item_on_failed", 42.8, play, "loop task", "db1", kv{"item": "4", "msg": "item 4 is bad"}),
		hostResult("runner_on_failed", 42.9, play, "loop task", "db1", kv{"msg": "One or more items failed", "duration": 0.3}),
		jobEvent("playbook_on_task_start", 43, "TASK [restart nginx]",
			kv{"play": play, "task": "restart nginx", "action": "service", "handler": true}),
		hostResult("runner_on_ok", 43.5, play, "restart nginx", "localhost", kv{"action": "service", "changed": true, "duration": 0.5}),
		stats(44, map[string]hostStats{
			"localhost": {OK: 2, Changed: 2, Skipped: 1, Ignored: 1},
			"db1":       {OK: 2, Failed: 1, Skipped: 1, Ignored: 1},
			"web1":      {Unreachable: 1},
		}),
		status(44.1, "failed", "Job failed with exit code 2"),
	}
}

func TestEventsRendering(t *testing.T) {
	tests := []struct {
		name    string
		events  []string
		final   string
		wantNot []string // what must not be shown
	}{
		{name: "simple_job", events: simpleJobEvents()},
		{name: "every_outcome", events: everyOutcomeEvents(), final: "failed"},
		{
			name: "no_log",
			events: []string{
				playStart(41, "Secrets"),
				taskStart(41, "Secrets", "set the password", "user"),
				// no_log wins even over a msg and item that should not have been sent.
				hostResult("runner_on_failed", 41.5, "Secrets", "set the password", "localhost",
					kv{"no_log": true, "msg": "password s3cret rejected", "duration": 0.2}),
				hostResult("runner_on_unreachable", 41.6, "Secrets", "set the password", "web1", kv{"no_log": true}),
				taskStart(42, "Secrets", "loop over secrets", "debug"),
				hostResult("runner_item_on_ok", 42.1, "Secrets", "loop over secrets", "localhost", kv{"no_log": true, "item": "s3cret"}),
				hostResult("runner_item_on_failed", 42.2, "Secrets", "loop over secrets", "localhost", kv{"no_log": true}),
				hostResult("runner_on_failed", 42.3, "Secrets", "loop over secrets", "localhost", kv{"no_log": true}),
			},
			final:   "failed",
			wantNot: []string{"s3cret"},
		},
		{
			name: "unknown_types",
			events: []string{
				jobEvent("playbook_on_include", 41, "included: tasks.yml for localhost", nil),
				hostResult("runner_on_async_poll", 41.5, "P", "wait", "localhost", nil),
				jobEvent("runner_on_ok", 42, "ok, but for no host", kv{"task": "T"}),
				jobEvent("", 42.5, "an event without a type", nil),
			},
		},
		{
			name: "callback_missing",
			events: []string{
				status(40, "running", "Job started"),
				jobEvent("warning", 40.5, "Task events are unavailable: the charon_events callback plugin did not load", nil),
				status(45, "completed", "Job finished successfully"),
			},
		},
		{
			// With the free strategy hosts run different tasks at once, so a result may land
			// under another task's heading; it gets its own task's heading again.
			name: "interleaved_tasks",
			events: []string{
				playStart(41, "Free"),
				taskStart(41, "Free", "slow", "command"),
				taskStart(41.1, "Free", "fast", "debug"),
				hostResult("runner_on_ok", 41.2, "Free", "fast", "web1", nil),
				hostResult("runner_on_ok", 43, "Free", "slow", "web2", kv{"changed": true}),
				hostResult("runner_on_ok", 43.1, "Free", "fast", "web2", nil),
				// A result whose task start never came gets a plain heading.
				hostResult("runner_on_ok", 44, "Free", "missed start", "web1", nil),
			},
		},
		{
			name: "two_plays_same_task_names",
			events: []string{
				playStart(41, "First"),
				taskStart(41, "First", "ping", "ping"),
				hostResult("runner_on_ok", 41.1, "First", "ping", "web1", nil),
				playStart(42, "Second"),
				taskStart(42, "Second", "ping", "ping"),
				hostResult("runner_on_ok", 42.1, "Second", "ping", "db1", nil),
			},
		},
		{
			name: "field_of_unexpected_type",
			events: []string{
				playStart(41, "P"),
				taskStart(41, "P", "T", "debug"),
				hostResult("runner_on_ok", 41.1, "P", "T", "localhost", kv{"changed": "yes", "duration": "fast"}),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeCharond{events: tt.events, final: cmp.Or(tt.final, "completed")}
			c, out, errOut := testClient(f.start(t))
			c.out.loc = time.UTC

			c.follow(context.Background(), "events", "events", "job-1")

			if errOut.Len() != 0 {
				t.Errorf("stderr:\n%s", errOut)
			}
			golden := filepath.Join("testdata", "events", tt.name+".golden")
			if *update {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run the test with -update to write it)", err)
			}
			if got := out.String(); got != string(want) {
				t.Errorf("output differs from %s\n got:\n%s\nwant:\n%s", golden, got, want)
			}
			for _, bad := range tt.wantNot {
				if strings.Contains(out.String(), bad) {
					t.Errorf("output shows %q:\n%s", bad, out)
				}
			}
		})
	}
}

func TestRecapListsEveryHost(t *testing.T) {
	tests := []struct {
		name  string
		hosts map[string]hostStats
		want  []string // the recap's lines after its heading, in order
	}{
		{
			name:  "one host",
			hosts: map[string]hostStats{"localhost": {OK: 4}},
			want:  []string{"localhost  ok=4 changed=0 unreachable=0 failed=0 skipped=0 rescued=0 ignored=0"},
		},
		{
			name: "hosts in name order, aligned",
			hosts: map[string]hostStats{
				"web-frontend-01.example.com": {OK: 3, Changed: 1},
				"db1":                         {OK: 1, Failed: 1, Rescued: 1},
				"cache":                       {Unreachable: 1},
				"ünïcode":                     {Skipped: 2, Ignored: 1},
			},
			want: []string{
				"cache                        ok=0 changed=0 unreachable=1 failed=0 skipped=0 rescued=0 ignored=0",
				"db1                          ok=1 changed=0 unreachable=0 failed=1 skipped=0 rescued=1 ignored=0",
				"web-frontend-01.example.com  ok=3 changed=1 unreachable=0 failed=0 skipped=0 rescued=0 ignored=0",
				"ünïcode                      ok=0 changed=0 unreachable=0 failed=0 skipped=2 rescued=0 ignored=1",
			},
		},
		{name: "no hosts", hosts: map[string]hostStats{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeCharond{events: []string{stats(44, tt.hosts)}, final: "completed"}
			c, out, _ := testClient(f.start(t))
			c.out.loc = time.UTC

			c.follow(context.Background(), "events", "events", "job-1")

			_, after, ok := strings.Cut(out.String(), "[15:30:44] 📊 PLAY RECAP\n")
			if !ok {
				t.Fatalf("no recap heading:\n%s", out)
			}
			var got []string
			for _, line := range strings.Split(after, "\n") {
				text, ok := strings.CutPrefix(line, stampPad+"  ")
				if !ok {
					break
				}
				got = append(got, text)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("recap lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestEventColours checks that a terminal sees each result in its colour and status changes
// coloured by status; the golden files above have colour off.
func TestEventColours(t *testing.T) {
	tests := []struct {
		name  string
		event string
		want  string
	}{
		{"status", status(40, "running", "Job started"), ansiBlue + "🏃 running    Job started" + ansiReset},
		{"ok", hostResult("runner_on_ok", 41, "P", "T", "h", nil), ansiGreen + "    ✅ h" + ansiReset},
		{"changed", hostResult("runner_on_ok", 41, "P", "T", "h", kv{"changed": true}), ansiYellow + "    🔄 h" + ansiReset},
		{"failed", hostResult("runner_on_failed", 41, "P", "T", "h", kv{"msg": "boom"}), ansiRed + "    ❌ h: boom" + ansiReset},
		{"failed over lines", hostResult("runner_on_failed", 41, "P", "T", "h", kv{"msg": "boom\nmore"}),
			stampPad + "       " + ansiRed + "more" + ansiReset},
		{"skipped", hostResult("runner_item_on_skipped", 41, "P", "T", "h", kv{"item": "x"}), ansiCyan + "      ⏭ h item=x" + ansiReset},
		{"unreachable", hostResult("runner_on_unreachable", 41, "P", "T", "h", nil), ansiRed + "    🔌 h" + ansiReset},
		{"task", taskStart(41, "P", "T", "debug"), ansiBold + "  TASK [T]" + ansiReset},
		{"recap", stats(41, map[string]hostStats{"a": {Failed: 1}, "b": {Changed: 1}, "c": {OK: 1}}),
			ansiRed + "a  ok=0" + "|" + ansiYellow + "b  ok=0" + "|" + ansiGreen + "c  ok=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			p := &printer{out: &out, err: &out, color: true}
			p.event("job_event", decodeData(tt.event))
			for _, want := range strings.Split(tt.want, "|") {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%q", want, out.String())
				}
			}
		})
	}
}

func TestDecodeDataKeepsWhatItCan(t *testing.T) {
	tests := []struct {
		data string
		want string // fmt's %+v of the fields checked
	}{
		{`{"type":"runner_on_ok","host":"h","changed":"yes"}`, "{Type:runner_on_ok Host:h Changed:false Line:}"},
		{`{"line":"a","changed":1}`, "{Type: Host: Changed:false Line:a}"},
		{`not JSON`, "{Type: Host: Changed:false Line:not JSON}"},
		{`123`, "{Type: Host: Changed:false Line:123}"},
		{`"text"`, "{Type: Host: Changed:false Line:\"text\"}"},
	}
	for _, tt := range tests {
		d := decodeData(tt.data)
		got := fmt.Sprintf("%+v", struct {
			Type, Host string
			Changed    bool
			Line       string
		}{d.Type, d.Host, d.Changed, d.Line})
		if got != tt.want {
			t.Errorf("decodeData(%s) = %s, want %s", tt.data, got, tt.want)
		}
	}
}
