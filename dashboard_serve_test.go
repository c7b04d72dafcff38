package main

import (
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDashboardIsServed loads the page and every file it names, as a browser would, from a
// charond with a token: none of them needs it, each carries the content security policy, and
// every script a script imports is there too.
func TestDashboardIsServed(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) { d.srv.token = "a-token-the-page-asks-for" })
	resp, page := do(t, "GET", td.URL+"/", nil, "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	wantPageHeaders(t, "/", resp)
	refs := regexp.MustCompile(`(?:src|href)="(/ui/[^"]+)"`).FindAllStringSubmatch(string(page), -1)
	if len(refs) == 0 {
		t.Fatalf("the page names no file under /ui/:\n%s", page)
	}
	for _, ref := range refs {
		resp, body := do(t, "GET", td.URL+ref[1], nil, "")
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %d", ref[1], resp.StatusCode)
		}
		wantPageHeaders(t, ref[1], resp)
		if etag := resp.Header.Get("ETag"); etag != "" {
			if again, _ := do(t, "GET", td.URL+ref[1], map[string]string{"If-None-Match": etag}, ""); again.StatusCode != http.StatusNotModified {
				t.Errorf("GET %s with its ETag: %d, want 304", ref[1], again.StatusCode)
			}
		}
	}
	// Every module a script imports is one of the page's files (a missing one would only
	// show in a browser's console).
	imports := regexp.MustCompile(`(?m)(?:^|\s)(?:import|export)\s[^'"]*?from\s+['"]\./([^'"]+)['"]|import\(['"]\./([^'"]+)['"]\)`)
	entries, _ := os.ReadDir("web")
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".js") {
			continue
		}
		src, _ := os.ReadFile("web/" + e.Name())
		for _, m := range imports.FindAllStringSubmatch(string(src), -1) {
			name := m[1] + m[2]
			if _, ok := td.srv.web[name]; !ok {
				t.Errorf("web/%s imports ./%s, which is not among the page's files", e.Name(), name)
			}
		}
	}
	resp, body := do(t, "GET", td.URL+"/ui/nope.js", nil, "")
	wantError(t, resp, body, http.StatusNotFound, "no such file")
	if resp, _ := do(t, "GET", td.URL+"/api/v1/jobs", nil, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the API without the token: %d, want 401", resp.StatusCode)
	}
}

func wantPageHeaders(t *testing.T, path string, resp *http.Response) {
	t.Helper()
	for name, want := range pageHeaders {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("%s: %s = %q, want %q", path, name, got, want)
		}
	}
}
