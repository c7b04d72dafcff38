package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// scrape reads /metrics and returns every sample by its name and labels, as written.
func scrape(t *testing.T, url string, headers map[string]string) (map[string]float64, []byte) {
	t.Helper()
	resp, body := do(t, "GET", url+"/metrics", headers, "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("/metrics: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples, body
}

// TestMetrics scrapes /metrics before and after jobs run: Prometheus' own promtool finds
// nothing wrong with it, and the values move as the jobs do.
func TestMetrics(t *testing.T) {
	tool := needTool(t, "promtool", "prometheus")
	td := startTestDaemon(t)
	before, _ := scrape(t, td.URL, nil)

	gated, open := gatedJob(t, td, 3) // running, with 3 lines, while we look
	queued := td.submitFake(t, "waits", 5, map[string]any{"fake": "lines", "count": 2})
	_, events := openStream(t, td.URL+"/api/v1/jobs/"+gated+"/logs/stream", nil)
	<-events // connected: one subscriber, one stream
	during, _ := scrape(t, td.URL, nil)
	for name, want := range map[string]float64{
		"charond_jobs_running": 1, "charond_jobs_queued": 1, "charond_streams_open": 1, "charond_stream_subscribers": 1,
	} {
		if during[name] != want {
			t.Errorf("while a job runs and one waits: %s = %v, want %v", name, during[name], want)
		}
	}
	open()
	td.waitStatus(t, gated, StatusCompleted)
	td.waitStatus(t, queued, StatusCompleted)
	failed := td.submitFake(t, "fails", 5, map[string]any{"fake": "exit", "code": 2})
	td.waitStatus(t, failed, StatusFailed)

	var after map[string]float64
	var text []byte
	waitFor(t, "the metrics to count the ended jobs", func() (bool, string) {
		after, text = scrape(t, td.URL, nil)
		return after[`charond_jobs_finished_total{status="failed"}`] == 1, string(text)
	})
	for _, tc := range []struct {
		name string
		diff float64
	}{
		{`charond_jobs_finished_total{status="completed"}`, 2},
		{`charond_jobs_finished_total{status="failed"}`, 1},
		{`charond_log_lines_total`, 6 + 2 + 1},
		{`charond_line_latency_seconds_count`, 9},
		{`charond_job_queue_wait_seconds_count`, 3},
		{`charond_job_duration_seconds_count`, 3},
		{`charond_job_duration_seconds_bucket{le="+Inf"}`, 3},
	} {
		if got := after[tc.name] - before[tc.name]; got != tc.diff {
			t.Errorf("%s moved by %v, want %v", tc.name, got, tc.diff)
		}
	}
	if after["charond_journal_fsync_seconds_count"] <= before["charond_journal_fsync_seconds_count"] ||
		after["charond_journal_fsync_seconds_sum"] <= 0 || after["charond_line_latency_seconds_sum"] <= 0 {
		t.Errorf("fsync and latency histograms did not move: %v", after)
	}
	if after["charond_jobs_running"] != 0 || after["charond_streams_open"] != 0 || after["charond_store_healthy"] != 1 {
		t.Errorf("after the jobs: running %v, streams %v, healthy %v", after["charond_jobs_running"], after["charond_streams_open"], after["charond_store_healthy"])
	}
	if after[fmt.Sprintf(`charond_build_info{version="%s",revision="%s",goversion="%s"}`, thisBuild.Version, thisBuild.Revision, thisBuild.Go)] != 1 {
		t.Errorf("no charond_build_info for this build:\n%s", text)
	}

	file := filepath.Join(t.TempDir(), "metrics.txt")
	if err := os.WriteFile(file, text, 0o600); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(tool, "check", "metrics")
	check.Stdin = bytes.NewReader(text)
	if out, err := check.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("promtool check metrics: %v\n%s\nthe exposition:\n%s", err, out, text)
	}
}

// TestMetricsNeedTheToken scrapes with and without the bearer token.
func TestMetricsNeedTheToken(t *testing.T) {
	td := startTestDaemon(t, func(d *daemon) { d.srv.token = "a-token-for-the-scraper" })
	resp, body := do(t, "GET", td.URL+"/metrics", nil, "")
	wantError(t, resp, body, http.StatusUnauthorized, "bearer token")
	scrape(t, td.URL, map[string]string{"Authorization": "Bearer a-token-for-the-scraper"})
}

// TestHistogram checks buckets, sum and count, and that a nil one takes updates.
func TestHistogram(t *testing.T) {
	h := newHistogram(0.1, 1, 10)
	for _, v := range []float64{0.05, 0.1, 0.5, 5, 50} {
		h.observe(v)
	}
	h.observeN(0.5, 3)
	var e exposition
	e.histogram("x_seconds", "x", h)
	want := `# HELP x_seconds x
# TYPE x_seconds histogram
x_seconds_bucket{le="0.1"} 2
x_seconds_bucket{le="1"} 6
x_seconds_bucket{le="10"} 7
x_seconds_bucket{le="+Inf"} 8
x_seconds_sum 57.15
x_seconds_count 8
`
	if e.String() != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", e.String(), want)
	}
	var none *histogram
	none.observe(1) // a nil histogram, as a benchmark without metrics has, does nothing
	var c *counter
	c.add(1)
}
