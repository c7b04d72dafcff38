package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// lineTexts extracts the line texts of a /logs/lines answer.
func lineTexts(t *testing.T, got map[string]any) []string {
	t.Helper()
	var out []string
	for _, l := range got["lines"].([]any) {
		out = append(out, l.(map[string]any)["line"].(string))
	}
	return out
}

func TestLogLines(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "lines", 5, map[string]any{"fake": "lines", "count": 3000})
	td.waitStatus(t, id, StatusCompleted)
	base := td.URL + "/api/v1/jobs/" + id + "/logs/lines"
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"?from=1&limit=3", []string{"line 1", "line 2", "line 3"}},
		{"?from=1500&limit=2", []string{"line 1500", "line 1501"}},
		{"?from=2999", []string{"line 2999", "line 3000"}},
		{"?from=3001", nil},
		{"?limit=1", []string{"line 1"}},
	} {
		code, got := getJSON(t, base+tc.query)
		if code != http.StatusOK || got["total"] != float64(3000) || strings.Join(lineTexts(t, got), ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: %d total %v lines %v, want %v", tc.query, code, got["total"], lineTexts(t, got), tc.want)
		}
	}
	code, got := getJSON(t, base)
	if lines := lineTexts(t, got); code != http.StatusOK || len(lines) != defaultLineRange || lines[999] != "line 1000" {
		t.Errorf("default range: %d, %d lines", code, len(lines))
	}
	if l := got["lines"].([]any)[0].(map[string]any); l["stream"] != "stdout" || l["timestamp"] == nil {
		t.Errorf("a line is %v, want its stream and timestamp too", l)
	}
	for query, want := range map[string]string{
		"?from=0": "from:", "?from=x": "from:", "?limit=0": "limit:", "?limit=5001": "limit:",
	} {
		resp, raw := do(t, "GET", base+query, nil, "")
		wantError(t, resp, raw, http.StatusBadRequest, want)
	}
	resp, raw := do(t, "GET", td.URL+"/api/v1/jobs/nope/logs/lines", nil, "")
	wantError(t, resp, raw, http.StatusNotFound, "job not found: nope")
}

// matchLines lists a search answer's matches as "n:line", and its next.
func matchLines(t *testing.T, got map[string]any) (string, any) {
	t.Helper()
	var out []string
	for _, m := range got["matches"].([]any) {
		mm := m.(map[string]any)
		out = append(out, fmt.Sprintf("%v:%v", mm["n"], mm["line"]))
	}
	return strings.Join(out, " "), got["next"]
}

func TestLogSearch(t *testing.T) {
	td := startTestDaemon(t)
	id := td.submitFake(t, "lines", 5, map[string]any{"fake": "lines", "count": 3000})
	td.waitStatus(t, id, StatusCompleted)
	base := td.URL + "/api/v1/jobs/" + id + "/logs/search"
	for _, tc := range []struct {
		query, want string
		next        float64
	}{
		{"?q=line+1234", "1234:line 1234", 0},
		{"?q=LINE+29&limit=3", "29:line 29 290:line 290 291:line 291", 292},
		{"?q=line+29&from=292&limit=2", "292:line 292 293:line 293", 294},
		{"?q=line+2999", "2999:line 2999", 0},
		{"?q=line+29&from=300&backward=1&limit=3", "299:line 299 298:line 298 297:line 297", 296},
		{"?q=line+29&from=100&backward=1", "29:line 29", 0},
		{"?q=stdout", "", 0},    // the stream field is not the line
		{"?q=timestamp", "", 0}, // nor the field names
		{"?q=%C3%A9t%C3%A9", "", 0},
		{"?q=ine+3000", "3000:line 3000", 0},
	} {
		code, got := getJSON(t, base+tc.query)
		if matches, next := matchLines(t, got); code != http.StatusOK || matches != tc.want || next != tc.next {
			t.Errorf("%s: %d %q next %v, want %q next %v", tc.query, code, matches, next, tc.want, tc.next)
		}
	}
	for query, want := range map[string]string{
		"": "q:", "?q=x&from=0": "from:", "?q=x&limit=1001": "limit:", "?q=x&backward=yes": "backward:",
		"?q=" + strings.Repeat("x", maxQueryBytes+1): "q:", "?q=%ff": "q:",
	} {
		resp, raw := do(t, "GET", base+query, nil, "")
		wantError(t, resp, raw, http.StatusBadRequest, want)
	}
}

// TestLineMatcher checks the raw look never hides a match: text JSON escapes, and any case.
func TestLineMatcher(t *testing.T) {
	now := time.Unix(0, 0)
	for _, tc := range []struct {
		line, query string
		want        bool
	}{
		{"Hello World", "world", true},
		{"Hello World", "WORLD", true},
		{`say "hi"`, `"hi"`, true},
		{`a\b`, `a\b`, true},
		{"tab\there", "tab\th", true},
		{"Ünïcode", "ünï", true},
		{"plain", "stdout", false},
		{"\u0007bell", "u0007", false}, // inside the escape, not the line
		{"x", "timestamp", false},
	} {
		payload := appendLogPayload(nil, []byte(tc.line), now, "stdout")
		if _, got := newLineMatcher(tc.query).match(payload); got != tc.want {
			t.Errorf("%q in %q: %v, want %v", tc.query, tc.line, got, tc.want)
		}
	}
}

// BenchmarkSearchMillionLines searches a stored log of a million lines end to end, as a
// search that finds nothing does.
func BenchmarkSearchMillionLines(b *testing.B) {
	l, _, err := openEventLog(filepath.Join(b.TempDir(), "big.log"), logStream)
	if err != nil {
		b.Fatal(err)
	}
	defer l.close()
	now := time.Now()
	batch := make([][]byte, 0, 1000)
	for i := 1; i <= 1_000_000; i++ {
		batch = append(batch, appendLogPayload(nil, []byte(fmt.Sprintf("ok: [web%d] => item %d of the deployment", i%50, i)), now, "stdout"))
		if len(batch) == cap(batch) {
			if err := l.appendData(batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	m := newLineMatcher("no such text")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if matches, _, err := searchForward(l, m, 1, 100); err != nil || len(matches) != 0 {
			b.Fatal(matches, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/search")
}
