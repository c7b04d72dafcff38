package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkIngest measures lines per second from a runner process into a job's log: the fake
// runner prints b.N lines as fast as the pipe takes them. It runs with charond's metrics, and
// without them (every metric nil, so each update does nothing), to measure what they cost.
func BenchmarkIngest(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts []testOption
	}{
		{"metrics=on", nil},
		{"metrics=off", []testOption{func(d *daemon) { d.sched.metrics = &metrics{}; d.sched.store.journal.fsyncTime = nil }}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			td := startTestDaemon(b, mode.opts...)
			b.ResetTimer()
			start := time.Now()
			id := td.submitFake(b, "ingest", 5, map[string]any{"fake": "lines", "count": b.N})
			td.waitStatus(b, id, StatusCompleted)
			elapsed := time.Since(start)
			b.StopTimer()
			job, _ := td.sched.get(id)
			if n := job.logs.length(); n != b.N {
				b.Fatalf("logged %d lines, want %d", n, b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "lines/s")
		})
	}
}

// discardStream is a ResponseWriter for in-process stream subscribers: it supports Flush and
// write deadlines as a real connection does, and drops the bytes.
type discardStream struct {
	h http.Header
}

func (d *discardStream) Header() http.Header              { return d.h }
func (d *discardStream) Write(p []byte) (int, error)      { return len(p), nil }
func (d *discardStream) WriteHeader(int)                  {}
func (d *discardStream) Flush()                           {}
func (d *discardStream) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkFanout1000 measures deliveries per second of one job's lines to 1,000 stream
// subscribers, each running the real stream handler loop.
func BenchmarkFanout1000(b *testing.B) {
	const subscribers = 1000
	logs, _, err := openEventLog(filepath.Join(b.TempDir(), "bench.log"), logStream)
	if err != nil {
		b.Fatal(err)
	}
	defer logs.close()
	job := &Job{ID: "bench", logs: logs}
	cfg := streamConfig{Heartbeat: time.Hour, WriteTimeout: time.Minute, Retry: time.Second}
	var wg sync.WaitGroup
	for i := 0; i < subscribers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := httptest.NewRequest("GET", "/api/v1/jobs/bench/logs/stream", nil).WithContext(context.Background())
			serveStream(&discardStream{h: http.Header{}}, r, job.logs, logStream, "job "+job.ID, cfg)
		}()
	}
	for job.logs.subscriberCount() < subscribers {
		time.Sleep(time.Millisecond)
	}
	line := [][]byte{[]byte("ok: [localhost] => {\"msg\": \"a typical line of Ansible output\"}")}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		job.appendLines(time.Now(), "stdout", line)
	}
	job.logs.flush()
	job.logs.markComplete(streamEnd{Status: StatusCompleted})
	wg.Wait()
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)*subscribers/elapsed.Seconds(), "deliveries/s")
}

// BenchmarkSubmitToStart measures the time from a submission over HTTP to its job running,
// with an idle worker waiting.
func BenchmarkSubmitToStart(b *testing.B) {
	td := startTestDaemon(b)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		id := td.submitFake(b, "quick", 5, map[string]any{"fake": "lines", "count": 1})
		job, _ := td.sched.get(id)
		td.waitStatus(b, id, StatusCompleted)
		job.mu.Lock()
		total += job.state().StartedAt.Sub(start)
		job.mu.Unlock()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/start")
}

// BenchmarkSubmit measures jobs accepted per second over HTTP, 64 submissions in flight, with
// the store on and the worker held so that every job stays queued.
func BenchmarkSubmit(b *testing.B) {
	td := startTestDaemon(b, func(d *daemon) { d.sched.maxQueue = b.N + 100 })
	blocker := td.submitFake(b, "blocker", 15, map[string]any{"fake": "sleep", "seconds": 600})
	_ = blocker
	doc := `{"name":"bench","playbook":"- hosts: localhost\n  tasks: []\n","priority":5}`
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := client.Post(td.URL+"/api/v1/jobs", "application/json", strings.NewReader(doc))
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				b.Errorf("status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
}
