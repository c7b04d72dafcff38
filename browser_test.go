package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// findChromium returns a headless-capable Chromium, or skips (fails under CI's
// CHARON_REQUIRE_ANSIBLE=1, whose machines install it) when there is none.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CHARON_REQUIRE_ANSIBLE") == "1" {
		t.Fatal("no Chromium for the browser test (apt-get install chromium)")
	}
	t.Skip("no Chromium installed; apt-get install chromium to run the browser test")
	return ""
}

// TestReadmeJavaScriptExample runs the README's EventSource example unchanged in headless
// Chromium, on a page from another origin (allowed with -cors-origins). A second EventSource
// that never closes shows the 204 ending the browser's automatic reconnects.
func TestReadmeJavaScriptExample(t *testing.T) {
	chromium := findChromium(t)
	blocks := readmeBlocks(t, "javascript")
	if len(blocks) != 1 || !strings.Contains(blocks[0], "new EventSource(") {
		t.Fatalf("README should hold its EventSource JavaScript example; found %d blocks", len(blocks))
	}
	page := http.NewServeMux()
	pages := httptest.NewServer(page)
	defer pages.Close()
	td := startTestDaemon(t, func(d *daemon) { d.srv.corsOrigins = []string{pages.URL} })
	id := td.submitFake(t, "js", 5, map[string]any{"fake": "lines", "count": 3})

	example := strings.ReplaceAll(blocks[0], "http://localhost:8080/api/v1/jobs/job-id/", td.URL+"/api/v1/jobs/"+id+"/")
	page.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><script>
%s
const again = new EventSource(%q);
again.onerror = () => { if (again.readyState === EventSource.CLOSED) console.log('reconnects stopped'); };
</script>`, example, td.URL+"/api/v1/jobs/"+id+"/events/stream")
	})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--enable-logging=stderr", "--v=0", pages.URL)
	console := &consoleWatcher{want: "reconnects stopped", done: make(chan struct{})}
	cmd.Stderr = console
	cmd.Stdout = console
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-console.done:
	case <-ctx.Done():
	}
	cancel()
	cmd.Wait()

	got := console.messages()
	want := []string{"LOG: line 1", "LOG: line 2", "LOG: line 3", "Stream completed", "reconnects stopped"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("browser console:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// consoleWatcher collects the page's console.log messages from Chromium's log output and
// closes done when it has seen the message `want`.
type consoleWatcher struct {
	want string
	done chan struct{}
	buf  strings.Builder
}

var consoleMessage = regexp.MustCompile(`CONSOLE[:(]\d+\)?\] "(.*)", source:`)

func (c *consoleWatcher) Write(p []byte) (int, error) {
	had := strings.Contains(c.buf.String(), `"`+c.want+`"`)
	c.buf.Write(p)
	if !had && strings.Contains(c.buf.String(), `"`+c.want+`"`) {
		close(c.done)
	}
	return len(p), nil
}

func (c *consoleWatcher) messages() []string {
	var out []string
	for _, m := range consoleMessage.FindAllStringSubmatch(c.buf.String(), -1) {
		out = append(out, m[1])
	}
	return out
}
