package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLineSplitter(t *testing.T) {
	tests := []struct {
		name    string
		chunks  []string
		maxLine int
		want    []string
	}{
		{"one line", []string{"hello\n"}, 100, []string{"hello"}},
		{"several in one chunk", []string{"a\nb\nc\n"}, 100, []string{"a", "b", "c"}},
		{"line across chunks", []string{"hel", "lo\nwor", "ld\n"}, 100, []string{"hello", "world"}},
		{"CRLF", []string{"a\r\nb\r\n"}, 100, []string{"a", "b"}},
		{"empty lines", []string{"\n\n"}, 100, []string{"", ""}},
		{"unterminated last line", []string{"a\nrest"}, 100, []string{"a", "rest"}},
		{"long line cut", []string{"abcdefghij\nnext\n"}, 4, []string{"abcd [charond: line truncated: 6 bytes dropped, lines are kept up to 4 bytes (-max-line)]", "next"}},
		{"long line across chunks", []string{"abc", "def", "ghi\nok\n"}, 4, []string{"abcd [charond: line truncated: 5 bytes dropped, lines are kept up to 4 bytes (-max-line)]", "ok"}},
		{"cut inside a rune", []string{"aé\n"}, 2, []string{"a [charond: line truncated: 2 bytes dropped, lines are kept up to 2 bytes (-max-line)]"}},
		{"long unterminated", []string{"abcdef"}, 3, []string{"abc [charond: line truncated: 3 bytes dropped, lines are kept up to 3 bytes (-max-line)]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := lineSplitter{maxLine: tt.maxLine}
			var got []string
			for _, c := range tt.chunks {
				for _, l := range s.split([]byte(c), nil) {
					got = append(got, string(l))
				}
			}
			if rest := s.rest(); rest != nil {
				got = append(got, string(rest))
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// jobLines reads a finished job's log as JSON lines: text and stream of each.
func jobLines(t *testing.T, td *testDaemon, id string) (lines, streams []string) {
	t.Helper()
	body := get(t, td.URL+"/api/v1/jobs/"+id+"/logs?format=jsonl")
	for _, raw := range bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n")) {
		if len(raw) == 0 {
			continue
		}
		var l struct{ Line, Stream string }
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatalf("jsonl line: %v: %q", err, raw)
		}
		lines = append(lines, l.Line)
		streams = append(streams, l.Stream)
	}
	return lines, streams
}

func TestRunCapturesStdoutAndStderrInOrder(t *testing.T) {
	td := startTestDaemon(t)
	// stdout and stderr are two pipes, read by two goroutines: lines keep the order in which
	// they reach charond, so the fake writes them far enough apart that the order it wrote
	// them in is the order they arrive, even when a reader waits for a busy CPU (2 ms was not,
	// under -race on a loaded 2-core machine).
	id := td.submitFake(t, "lines", 5, map[string]any{"fake": "lines", "count": 9, "stderr_every": 3, "interval_ms": 40})
	job := td.waitStatus(t, id, StatusCompleted)
	if job["exit_code"].(float64) != 0 || job["log_lines"].(float64) != 9 {
		t.Fatalf("job = %v", job)
	}
	lines, streams := jobLines(t, td, id)
	if got, want := strings.Join(lines, ","), strings.Join(fakeLines(9), ","); got != want {
		t.Errorf("lines = %s, want %s", got, want)
	}
	for i, s := range streams {
		want := "stdout"
		if (i+1)%3 == 0 {
			want = "stderr"
		}
		if s != want {
			t.Errorf("line %d stream = %s, want %s", i+1, s, want)
		}
	}
}

func TestRunOneMegabyteLine(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "big", 5, map[string]any{"fake": "bigline", "size": 1 << 20})
	_, events := openStream(t, td.URL+"/api/v1/jobs/"+id+"/logs/stream", nil)
	got := logLines(t, collect(t, events), 1)
	if len(got) != 2 {
		t.Fatalf("got %d lines, want 2", len(got))
	}
	wantPrefix := strings.Repeat("x", 64<<10) + " [charond: line truncated: 983040 bytes dropped"
	if !strings.HasPrefix(got[0], wantPrefix) {
		t.Errorf("long line starts %q..., want it cut at 64 KiB with a note", got[0][len(got[0])-120:])
	}
	if got[1] != "after" {
		t.Errorf("line after the long one = %q, want %q", got[1], "after")
	}
}

func TestRunExitCodeFails(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "exit", 5, map[string]any{"fake": "exit", "code": 2})
	job := td.waitStatus(t, id, StatusFailed)
	if job["exit_code"].(float64) != 2 {
		t.Errorf("exit_code = %v, want 2", job["exit_code"])
	}
	if want := "ansible-playbook exited with code 2: one or more hosts failed"; job["message"] != want {
		t.Errorf("message = %q, want %q", job["message"], want)
	}
}

func TestRunMissingAnsibleFailsSayingHowToInstall(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) { d.sched.runner.playbookCmd = "/nonexistent/ansible-playbook" })
	id := td.submitFake(t, "missing", 5, map[string]any{"fake": "lines"})
	job := td.waitStatus(t, id, StatusFailed)
	msg, _ := job["message"].(string)
	if !strings.Contains(msg, "not found") || !strings.Contains(msg, "ansible-core") {
		t.Errorf("message = %q, want it to say the runner is missing and how to install it", msg)
	}
	if job["exit_code"] != nil {
		t.Errorf("exit_code = %v, want null", job["exit_code"])
	}
}

func TestRunTimeout(t *testing.T) {
	td := startTestDaemon(t)
	body := `{"name":"slow","playbook":"- hosts: localhost\n","timeout":"300ms","variables":{"fake":"sleep","seconds":60}}`
	id := td.submit(t, "application/json", body, 201)["id"].(string)
	job := td.waitStatus(t, id, StatusTimedOut)
	if !strings.Contains(job["message"].(string), "timed out after 300ms") {
		t.Errorf("message = %q", job["message"])
	}
}

func TestCancelRunningJob(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "sleeper", 5, map[string]any{"fake": "sleep", "seconds": 60})
	waitLogLines(t, td, id, 1)
	postCancel(t, td, id, 202)
	job := td.waitStatus(t, id, StatusCancelled)
	if job["message"] != "Job cancelled" {
		t.Errorf("message = %q, want %q", job["message"], "Job cancelled")
	}
	postCancel(t, td, id, 409)
}

// TestCancelSIGKILLsAfterGrace cancels a job whose runner ignores SIGTERM: charond must give it
// the kill grace to end by itself, then kill it.
func TestCancelSIGKILLsAfterGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	td := startTestDaemon(t, func(d *daemon) { d.sched.runner.killGrace = grace })
	id := td.submitFake(t, "stubborn", 5, map[string]any{"fake": "ignore_term"})
	waitLogLines(t, td, id, 1) // printed once SIGTERM is ignored
	pid := loggedPID(t, td, id, "started ")
	start := time.Now()
	postCancel(t, td, id, 202)
	waitProcessGone(t, pid)
	// A lower bound only: how much longer it took depends on the machine's other work.
	if lived := time.Since(start); lived < grace {
		t.Errorf("the runner died %v after the cancel, before the %v grace was up: it was not given the grace", lived, grace)
	}
	td.waitStatus(t, id, StatusCancelled)
}

// TestNoOrphanAfterJob starts a job whose child leaves a background process holding the output
// pipe. The job must still end, and the background process must not outlive it.
func TestNoOrphanAfterJob(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "orphan", 5, map[string]any{"fake": "grandchild"})
	td.waitStatus(t, id, StatusCompleted)
	if lines, _ := jobLines(t, td, id); len(lines) != 1 {
		t.Fatalf("lines = %q, want only the grandchild's pid", lines)
	}
	waitProcessGone(t, loggedPID(t, td, id, "grandchild "))
}

func TestRunEnvironmentAndFiles(t *testing.T) {
	td := startTestDaemon(t)
	ext := filepath.Join(td.srv.limits.PlaybookDir, "site")
	if err := os.MkdirAll(ext, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ext, "play.yml"), []byte("- hosts: all\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, playbook, wantCwd string
	}{
		{"embedded", "- hosts: localhost\n", filepath.Join(td.dir, "data", "work")},
		{"external", "site/play.yml", filepath.Join(td.srv.limits.PlaybookDir, "site")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, _ := json.Marshal(map[string]any{"name": tt.name, "playbook": tt.playbook, "variables": map[string]any{"fake": "report"}})
			id := td.submit(t, "application/json", string(doc), 201)["id"].(string)
			td.waitStatus(t, id, StatusCompleted)
			lines, _ := jobLines(t, td, id)
			got := map[string]string{}
			for _, l := range lines {
				k, v, _ := strings.Cut(l, "=")
				got[k] = v
			}
			if !strings.HasPrefix(got["cwd"], tt.wantCwd) {
				t.Errorf("cwd = %s, want under %s", got["cwd"], tt.wantCwd)
			}
			for k, want := range map[string]string{"varsmode": "600", "PYTHONUNBUFFERED": "1", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0", "stdin": "Dc---------"} {
				if got[k] != want {
					t.Errorf("%s = %q, want %q", k, got[k], want)
				}
			}
			if !strings.Contains(got["args"], "-i ") || !strings.Contains(got["args"], "-e @") {
				t.Errorf("args = %q, want -i INVENTORY -e @VARS", got["args"])
			}
		})
	}
	waitNoWorkDirs(t, filepath.Join(td.dir, "data", "work"))
}

// waitNoWorkDirs checks that every job's work dir, which holds its variables, is gone.
func waitNoWorkDirs(t *testing.T, root string) {
	t.Helper()
	waitFor(t, "the work dirs in "+root+" to be removed", func() (bool, string) {
		entries, err := os.ReadDir(root)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		return len(entries) == 0, fmt.Sprint(entries)
	})
}

func postCancel(t *testing.T, td *testDaemon, id string, want int) {
	t.Helper()
	if resp, raw := do(t, "POST", td.URL+"/api/v1/jobs/"+id+"/cancel", nil, ""); resp.StatusCode != want {
		t.Fatalf("cancel status = %d, want %d; body %s", resp.StatusCode, want, raw)
	}
}
