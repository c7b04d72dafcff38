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
	example := readmePython(t, "def stream_job_logs(job_id):")
	td := startTestDaemon(t)
	id := td.submitFake(t, "py", 5, map[string]any{"fake": "lines", "count": 3})
	script := strings.ReplaceAll(example, "http://localhost:8080", td.URL) + "\nstream_job_logs(" + quotePy(id) + ")\n"
	out, err := exec.Command(py, "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("python example failed: %v\n%s", err, out)
	}
	want := "LOG: Connected to log stream for job " + id + "\nLOG: line 1\nLOG: line 2\nLOG: line 3\nLOG: Log stream completed\n"
	if string(out) != want {
		t.Errorf("python example printed:\n%s\nwant:\n%s", out, want)
	}
}

// readmePython is the README's one Python block that holds marker.
func readmePython(t *testing.T, marker string) string {
	t.Helper()
	var found []string
	for _, b := range readmeBlocks(t, "python") {
		if strings.Contains(b, marker) {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		t.Fatalf("README should hold one Python block with %q; found %d", marker, len(found))
	}
	return found[0]
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

// TestReadmeWebhookVerifier runs a webhook receiver built on the README's verification code,
// unchanged, as a Python HTTP server: every delivery charond sends passes it, and a delivery
// whose body was altered on the way does not.
func TestReadmeWebhookVerifier(t *testing.T) {
	py := pythonWithRequests(t)
	receiver := readmePython(t, "def verified(") + `
import http.server, sys
SECRET = sys.argv[1].encode()
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = verified(SECRET, body, self.headers.get("X-Charon-Signature-256", ""))
        print("verified" if ok else "refused", self.headers.get("X-Charon-Delivery"), flush=True)
        self.send_response(204 if ok else 401)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
print("port", server.server_address[1], flush=True)
server.serve_forever()
`
	cmd := exec.Command(py, "-c", receiver, hookSecret)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var port string
	waitFor(t, "the Python receiver to listen", func() (bool, string) {
		_, after, ok := strings.Cut(out.String(), "port ")
		port, _, _ = strings.Cut(after, "\n")
		return ok && strings.Contains(after, "\n"), out.String()
	})
	url := "http://127.0.0.1:" + port + "/hook"

	td := startHookedDaemon(t, t.TempDir(), url)
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, td.submitFake(t, "hooked", 5, map[string]any{"fake": "lines", "count": 1}))
	}
	for _, id := range ids {
		waitDelivered(t, td, id)
		if !strings.Contains(out.String(), "verified "+id+"\n") {
			t.Errorf("the README's receiver did not verify the delivery of %s:\n%s", id, out.String())
		}
	}
	// A delivery altered on the way, its signature that of the original body, is refused.
	body := webhookBody(mustJob(t, td, ids[0]).record(), "http://x")
	sig := signature([]byte(hookSecret), body)
	tampered := strings.Replace(string(body), `"status":"completed"`, `"status":"failed"`, 1)
	resp := roundTrip(t, "POST", url, map[string]string{"X-Charon-Signature-256": sig, "X-Charon-Delivery": "forged", "Content-Type": "application/json"}, tampered)
	if resp.StatusCode != 401 || tampered == string(body) {
		t.Errorf("a tampered delivery: %d, want the README's receiver to refuse it", resp.StatusCode)
	}
	waitFor(t, "the receiver to refuse the forgery", func() (bool, string) {
		return strings.Contains(out.String(), "refused forged\n"), out.String()
	})
}
