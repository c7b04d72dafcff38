package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain lets the test binary act as the fake runner, as the real program does, so that
// TestBaselineFanout can start it.
func TestMain(m *testing.M) {
	if os.Getenv(runnerEnv) == "1" {
		os.Exit(runnerMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func TestPercentile(t *testing.T) {
	ten := make([]time.Duration, 10)
	for i := range ten {
		ten[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", []time.Duration{7}, 99, 7},
		{"median of ten is the 5th", ten, 50, 5 * time.Millisecond},
		{"p99 of ten is the largest", ten, 99, 10 * time.Millisecond},
		{"p90 of ten is the 9th", ten, 90, 9 * time.Millisecond},
		{"p100", ten, 100, 10 * time.Millisecond},
		{"tiny p is the smallest", ten, 0.1, time.Millisecond},
		{"median of three", []time.Duration{1, 2, 3}, 50, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarizeDoesNotReorderItsInput(t *testing.T) {
	in := []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond}
	got := summarize(in)
	want := summary{N: 3, Min: 1, P50: 2, P99: 3, Max: 3}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if in[0] != 3*time.Millisecond {
		t.Errorf("summarize sorted its input: %v", in)
	}
	if got, want := median([]float64{1.2, 0.9, 1.0}), 1.0; got != want {
		t.Errorf("median = %v, want %v", got, want)
	}
}

func TestHistogramBucketsCoverEveryDuration(t *testing.T) {
	for _, d := range []time.Duration{0, time.Microsecond, 3 * time.Microsecond, 4 * time.Microsecond, 7 * time.Microsecond,
		8 * time.Microsecond, 999 * time.Microsecond, time.Millisecond, 1234567 * time.Microsecond, time.Minute} {
		i := histIndex(d)
		lo, hi := histLower(i), histLower(i+1)
		if d.Truncate(time.Microsecond) < lo || d >= hi {
			t.Errorf("%v went to bucket %d = [%v, %v)", d, i, lo, hi)
		}
		if lo >= 4*time.Microsecond && float64(hi-lo) > 0.25*float64(lo)+1e3 {
			t.Errorf("bucket %d = [%v, %v) is wider than 25%%", i, lo, hi)
		}
	}
	if got := histIndex(-time.Second); got != 0 {
		t.Errorf("a negative latency went to bucket %d, want 0", got)
	}
}

func TestHistogramQuantileIsAnUpperBound(t *testing.T) {
	var h latencyHist
	var samples []time.Duration
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * 37 * time.Microsecond
		h.add(d)
		samples = append(samples, d)
	}
	for _, p := range []float64{50, 99} {
		exact := percentile(samples, p)
		got := h.quantile(p)
		if got < exact || float64(got) > 1.25*float64(exact)+1e3 {
			t.Errorf("p%v: histogram says %v, exact %v: want an upper bound within 25%%", p, got, exact)
		}
	}
	var other latencyHist
	other.add(time.Hour)
	h.merge(&other)
	if got := h.count(); got != 1001 {
		t.Errorf("count after merge = %d, want 1001", got)
	}
	if got := h.maxBound(); got < time.Hour {
		t.Errorf("maxBound = %v, want at least an hour", got)
	}
}

func TestIDChecker(t *testing.T) {
	tests := []struct {
		name                   string
		ids                    []int
		end                    int
		wantOK                 bool
		gaps, missing, repeats int
	}{
		{"in order", []int{1, 2, 3}, 3, true, 0, 0, 0},
		{"nothing, nothing expected", nil, 0, true, 0, 0, 0},
		{"a gap", []int{1, 2, 5, 6}, 6, false, 1, 2, 0},
		{"starts late", []int{3, 4}, 4, false, 1, 2, 0},
		{"a repeat", []int{1, 2, 2, 3}, 3, false, 0, 0, 1},
		{"out of order", []int{1, 3, 2}, 3, false, 1, 1, 1},
		{"ends short of the end", []int{1, 2}, 4, false, 1, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c idChecker
			for _, id := range tt.ids {
				c.see(id)
			}
			c.finish(tt.end)
			if c.ok() != tt.wantOK || c.gaps != tt.gaps || c.missing != tt.missing || c.repeats != tt.repeats {
				t.Errorf("got ok=%v gaps=%d missing=%d repeats=%d (%s), want ok=%v gaps=%d missing=%d repeats=%d",
					c.ok(), c.gaps, c.missing, c.repeats, &c, tt.wantOK, tt.gaps, tt.missing, tt.repeats)
			}
		})
	}
}

func TestSSEReader(t *testing.T) {
	long := strings.Repeat("x", 100) // longer than the reader's 16-byte buffer
	stream := "retry: 3000\nevent: connected\ndata: {\"message\": \"hi\"}\n\n" +
		": ping\n\n" +
		"id: 1\r\nevent: log\r\ndata: {\"line\":\"cb 1 1700000000000000000\"}\r\n\r\n" +
		"id: 2\nevent: log\ndata:" + long + "\n\n" +
		"id: 3\ndata: first\ndata: second\n\n" +
		"event: nothing\n\n" + // no data: not dispatched
		"id: 4\nevent: completed\ndata: {\"status\":\"completed\"}\n\n"
	r := newSSEReader(strings.NewReader(stream), 16)
	want := []struct {
		id    int
		hasID bool
		event string
		data  string
	}{
		{0, false, "connected", `{"message": "hi"}`},
		{1, true, "log", `{"line":"cb 1 1700000000000000000"}`},
		{2, true, "log", long},
		{3, true, "", "first\nsecond"},
		{4, true, "completed", `{"status":"completed"}`},
	}
	for i, w := range want {
		ev, err := r.next()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ev.ID != w.id || ev.HasID != w.hasID || ev.Event != w.event || string(ev.Data) != w.data {
			t.Errorf("event %d = {%d %v %q %q}, want {%d %v %q %q}", i, ev.ID, ev.HasID, ev.Event, ev.Data, w.id, w.hasID, w.event, w.data)
		}
	}
	if _, err := r.next(); err != io.EOF {
		t.Errorf("after the last event: err = %v, want io.EOF", err)
	}

	cut := newSSEReader(strings.NewReader("id: 1\ndata: {\"li"), 16)
	if _, err := cut.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a stream cut inside a line: err = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestReadResponseHead(t *testing.T) {
	t.Run("chunked 200", func(t *testing.T) {
		resp := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
		// The second event is split across chunks, as a server's flushes may split it.
		for _, chunk := range []string{"event: connected\ndata: x\n\nid: 1\nev", "ent: log\ndata: y\n\n"} {
			resp += fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk)
		}
		resp += "0\r\n\r\n"
		r, err := readResponseHead(bufio.NewReader(strings.NewReader(resp)))
		if err != nil {
			t.Fatal(err)
		}
		sse := newSSEReader(r, 64)
		for _, want := range []string{"connected", "log"} {
			ev, err := sse.next()
			if err != nil || ev.Event != want {
				t.Fatalf("got %q, %v; want %q", ev.Event, err, want)
			}
		}
		if _, err := sse.next(); err != io.EOF {
			t.Errorf("after the last chunk: err = %v, want io.EOF", err)
		}
	})
	t.Run("503 is an errStatus", func(t *testing.T) {
		resp := "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 22\r\n\r\n{\"error\":\"too many\"}\n\n"
		_, err := readResponseHead(bufio.NewReader(strings.NewReader(resp)))
		var es *errStatus
		if !errors.As(err, &es) || es.code != 503 || !strings.Contains(es.body, "too many") {
			t.Errorf("err = %v, want an errStatus 503 with the body", err)
		}
	})
}

func TestParseBenchData(t *testing.T) {
	tests := []struct {
		data    string
		seq, ts int64
		ok      bool
	}{
		{`{"line":"cb 17 1700000000123456789","timestamp":"x","stream":"stdout"}`, 17, 1700000000123456789, true},
		{`{"line":"ready","timestamp":"x"}`, 0, 0, false},
		{`{"line":"cb 17","timestamp":"x"}`, 0, 0, false},
		{`{"line":"cb x 1","timestamp":"x"}`, 0, 0, false},
	}
	for _, tt := range tests {
		seq, ts, ok := parseBenchData([]byte(tt.data))
		if seq != tt.seq || ts != tt.ts || ok != tt.ok {
			t.Errorf("parseBenchData(%s) = %d, %d, %v; want %d, %d, %v", tt.data, seq, ts, ok, tt.seq, tt.ts, tt.ok)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command name with a space and a parenthesis, then 13 ticks of user and 7 of system time.
	stat := "1234 (char) ond) S 1 1234 1234 0 -1 4194560 100 0 0 0 13 7 0 0 20 0 8 0 100 1000 50\n"
	got, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 200 * time.Millisecond; got != want {
		t.Errorf("parseStatCPU = %v, want %v", got, want)
	}
}

func TestParseLevels(t *testing.T) {
	got, err := parseLevels("1x100, 1000x20")
	if err != nil {
		t.Fatal(err)
	}
	if want := []latencyLevel{{1, 100}, {1000, 20}}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("parseLevels = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "100", "0x10", "10x", "x10", "10x-1"} {
		if _, err := parseLevels(bad); err == nil {
			t.Errorf("parseLevels(%q) succeeded, want an error", bad)
		}
	}
}

func TestCheckDispatchOrder(t *testing.T) {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	job := func(index, prio, created, started int) dispatched {
		return dispatched{index: index, prio: prio, created: at(created), started: at(1000 + started),
			sent: at(created - 1), answered: at(created + 1)}
	}
	tests := []struct {
		name                             string
		jobs, waiting                    []dispatched
		ok                               bool
		prioInv, createdBeyond, definite int
	}{
		{"priority then FIFO", []dispatched{job(0, 5, 0, 2), job(1, 15, 10, 0), job(2, 5, 20, 3), job(3, 15, 30, 1)}, nil, true, 0, 0, 0},
		{"a lower priority first", []dispatched{job(0, 5, 0, 0), job(1, 15, 10, 1)}, nil, false, 1, 0, 0},
		{"a later one of the same priority first", []dispatched{job(0, 5, 0, 1), job(1, 5, 10, 0)}, nil, false, 0, 1, 1},
		{"waiting behind", []dispatched{job(0, 15, 0, 0), job(1, 5, 10, 1)}, []dispatched{job(2, 5, 20, 0), job(3, 1, 5, 0)}, true, 0, 0, 0},
		{"waiting out of turn", []dispatched{job(0, 5, 10, 0)}, []dispatched{job(1, 5, 0, 0)}, false, 0, 0, 0},
		{"a higher priority still waiting", []dispatched{job(0, 5, 0, 0)}, []dispatched{job(1, 10, 10, 0)}, false, 0, 0, 0},
		{"concurrent submissions within the tie", []dispatched{
			{index: 0, prio: 5, created: at(0).Add(time.Microsecond), started: at(1000), sent: at(-1), answered: at(2)},
			{index: 1, prio: 5, created: at(0), started: at(1001), sent: at(-1), answered: at(2)},
		}, nil, true, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := checkDispatchOrder(tt.jobs, tt.waiting)
			if r.OK != tt.ok || r.PriorityInversions != tt.prioInv || r.CreatedBeyondTie != tt.createdBeyond || r.DefiniteFIFO != tt.definite {
				t.Errorf("got %+v, want ok=%v priority inversions=%d created beyond tie=%d definite=%d",
					r, tt.ok, tt.prioInv, tt.createdBeyond, tt.definite)
			}
		})
	}
}

// TestBaselineFanout runs the baseline with this test binary as its runner: three clients
// connect, the gate opens, and each gets every scheduled line once, in order, then the end.
func TestBaselineFanout(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	vars := runnerVars{Mode: "lines", Steps: [][2]float64{{200, 0.1}}, Gate: gate, GateTimeout: 10}
	raw, _ := json.Marshal(vars)
	varsPath := filepath.Join(dir, "vars.json")
	if err := os.WriteFile(varsPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := startBaseline(varsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	deadline := time.Now().Add(10 * time.Second)
	streams, failed, err := connectStreams(context.Background(), 3, b.addr, "/stream", deadline, 3)
	if err != nil || failed > 0 {
		t.Fatalf("connect: %d failed: %v", failed, err)
	}
	defer closeStreams(streams)
	select {
	case <-b.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the runner printed nothing")
	}
	var wg sync.WaitGroup
	clients := make([]*latencyClient, len(streams))
	for i, s := range streams {
		clients[i] = &latencyClient{fromFirst: true}
		wg.Add(1)
		go func() {
			defer wg.Done()
			clients[i].read(s, 0)
		}()
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if !waitReaders(&wg, 10*time.Second, streams) {
		t.Fatal("the streams did not end within 10 s")
	}
	want := int64(scheduleLines(vars.Steps))
	for i, c := range clients {
		c.ids.finish(c.endID)
		if !c.ended || c.received != want || int64(len(c.samples)) != want || !c.ids.ok() {
			t.Errorf("client %d: ended=%v received %d lines (%d timed), want %d; %s; err %v",
				i, c.ended, c.received, len(c.samples), want, &c.ids, c.err)
		}
	}
}

// TestImportsOnlyStdlib keeps charonbench free of dependencies: an import path whose first
// element has no dot is the standard library's.
func TestImportsOnlyStdlib(t *testing.T) {
	names, err := filepath.Glob("*.go")
	if err != nil || len(names) == 0 {
		t.Fatalf("glob: %v (%d files)", err, len(names))
	}
	for _, name := range names {
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path := strings.Trim(imp.Path.Value, `"`)
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
				t.Errorf("%s imports %s: charonbench uses the standard library only", name, path)
			}
		}
	}
}
