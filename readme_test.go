package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// These tests run the README's own examples, its curl commands and Python client, as a
// user would paste them, so the documentation cannot drift from the daemon. Only the address
// is changed, to the test daemon's.

// readmeBlocks returns the README's fenced code blocks in the given language.
func readmeBlocks(t *testing.T, lang string) []string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```")
	var blocks []string
	for _, m := range re.FindAllStringSubmatch(string(readme), -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// pythonWithRequests finds a python3 that can import requests, the Python example's one
// dependency (Debian's python3-requests).
func pythonWithRequests(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if err := exec.Command(py, "-c", "import requests").Run(); err == nil {
			return py
		}
	}
	if os.Getenv("CHARON_REQUIRE_ANSIBLE") == "1" {
		t.Fatal("no python3 with the requests module (apt-get install python3-requests)")
	}
	t.Skip("no python3 with the requests module; apt-get install python3-requests to run this test")
	return ""
}

// TestReadmePythonExample runs the README's Python snippet unchanged: it reads data['line'] from
// every data line, so the connected and completed events must carry `line` too.
func TestReadmePythonExample(t *testing.T) {
	py := pythonWithRequests(t)
	blocks := readmeBlocks(t, "python")
	if len(blocks) != 1 || !strings.Contains(blocks[0], "def stream_job_logs(job_id):") {
		t.Fatalf("README should hold its Python example; found %d python blocks", len(blocks))
	}
	td := startTestDaemon(t)
	id := td.submitFake(t, "py", 5, map[string]any{"fake": "lines", "count": 3})
	script := strings.ReplaceAll(blocks[0], "http://localhost:8080", td.URL) + "\nstream_job_logs(" + quotePy(id) + ")\n"
	out, err := exec.Command(py, "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("python example failed: %v\n%s", err, out)
	}
	want := "LOG: Connected to log stream for job " + id + "\nLOG: line 1\nLOG: line 2\nLOG: line 3\nLOG: Log stream completed\n"
	if string(out) != want {
		t.Errorf("python example printed:\n%s\nwant:\n%s", out, want)
	}
}

func quotePy(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }

// TestReadmeCurlExamples submits simple_job.yaml with the README's curl command and streams
// its log with the README's curl -N command.
func TestReadmeCurlExamples(t *testing.T) {
	requireAnsible(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	td := startTestDaemon(t, withRealAnsible)
	var submit, stream string
	for _, block := range readmeBlocks(t, "bash") {
		for _, cmd := range strings.Split(strings.ReplaceAll(block, "\\\n", " "), "\n") {
			switch {
			case strings.HasPrefix(cmd, "curl -X POST http://localhost:8080/api/v1/jobs ") && submit == "":
				submit = cmd
			case strings.HasPrefix(cmd, "curl -N ") && stream == "":
				stream = cmd
			}
		}
	}
	if submit == "" || stream == "" {
		t.Fatalf("README lacks its curl commands (submit %q, stream %q)", submit, stream)
	}
	run := func(cmd string) string {
		t.Helper()
		c := exec.Command("bash", "-c", strings.ReplaceAll(cmd, "http://localhost:8080", td.URL))
		c.Dir = "examples/streaming_demo"
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
		return string(out)
	}
	answer := run(submit)
	id := regexp.MustCompile(`"id":"([^"]+)"`).FindStringSubmatch(answer)
	if id == nil || !strings.Contains(answer, `"status":"queued"`) {
		t.Fatalf("submit answered %s", answer)
	}
	out := run(strings.ReplaceAll(stream, "<job-id>", id[1]))
	for _, want := range []string{"event: connected", "event: log", "Job is running...", "Job completed successfully!", "event: completed", `"status":"completed"`} {
		if !strings.Contains(out, want) {
			t.Errorf("stream output lacks %q:\n%s", want, out)
		}
	}
}
