package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestSubmitOptionsOverrideTheJobFile runs `submit` with launch options: they replace the job
// file's own in what is posted, and the rest of the file is kept.
func TestSubmitOptionsOverrideTheJobFile(t *testing.T) {
	f := &fakeCharond{final: "completed"}
	srv := f.start(t)
	file := filepath.Join(t.TempDir(), "job.yaml")
	os.WriteFile(file, []byte("name: opts\nplaybook: \"- hosts: all\\n\"\nlimit: web1\ntags: [old]\npriority: 7\n"), 0o644)
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		if k == "CHARON_URL" {
			return srv.URL
		}
		return ""
	}
	args := []string{"streaming_demo", "submit", "--limit", "web2", "--tags=deploy,config", "--skip-tags", "slow",
		"--check", "--diff", "-vv", "--forks", "4", "--start-at-task", "Deploy it", file}
	if code := run(context.Background(), args, &out, &errOut, getenv); code != exitCompleted {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
	}
	var posted map[string]any
	if err := yaml.Unmarshal(f.seen().posted, &posted); err != nil {
		t.Fatalf("posted body is not YAML: %v\n%s", err, f.seen().posted)
	}
	want := map[string]any{"name": "opts", "playbook": "- hosts: all\n", "priority": 7, "limit": "web2",
		"tags": []any{"deploy", "config"}, "skip_tags": []any{"slow"}, "check": true, "diff": true,
		"verbosity": 2, "forks": 4, "start_at_task": "Deploy it"}
	if !reflect.DeepEqual(posted, want) {
		t.Errorf("posted %v\nwant   %v", posted, want)
	}
	for _, bad := range [][]string{{"--limit"}, {"--forks", "many", "f"}, {"--frobnicate", "f"}, {"-vvvvv", "f"}} {
		var o, e bytes.Buffer
		if code := run(context.Background(), append([]string{"streaming_demo", "submit"}, bad...), &o, &e, getenv); code != exitUsage {
			t.Errorf("submit %q: exit %d, want %d", bad, code, exitUsage)
		}
	}
}

// TestSubmittedShowsTheOptions prints the "Job submitted" block of a job with options.
func TestSubmittedShowsTheOptions(t *testing.T) {
	var out bytes.Buffer
	p := &printer{out: &out, err: &out}
	p.submitted("✅ Job submitted!", job{ID: "j", Name: "n", Status: "queued", Limit: "web2", Tags: []string{"deploy"},
		Check: true, Diff: true, Verbosity: 1})
	if want := "   Options: --limit web2 --tags deploy --check --diff -v\n"; !strings.Contains(out.String(), want) {
		t.Errorf("printed:\n%s\nwant a line %q", out.String(), want)
	}
	out.Reset()
	p.submitted("✅ Job submitted!", job{ID: "j", Name: "n", Status: "queued"})
	if strings.Contains(out.String(), "Options") {
		t.Errorf("a job without options printed an Options line:\n%s", out.String())
	}
}
