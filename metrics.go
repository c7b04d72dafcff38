package main

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
)

// This file holds charond's Prometheus metrics, served at GET /metrics in the text exposition
// format, written by hand: a few counters, gauges and histograms need no client library (and
// charond takes no dependency it can do without; see README). Names follow Prometheus'
// conventions: charond_ prefix, base units (seconds), _total only on counters, and no job id
// in any label, so the number of series stays fixed whatever the number of jobs.
//
// Every metric type is safe for concurrent use and costs a few atomic adds to update. A nil
// histogram or counter takes updates and does nothing: the benchmarks measure what metrics
// cost against a &metrics{} whose every metric is nil.

// counter is a monotonically increasing count.
type counter struct{ n atomic.Uint64 }

func (c *counter) add(n int) {
	if c != nil {
		c.n.Add(uint64(n))
	}
}

func (c *counter) value() uint64 {
	if c == nil {
		return 0
	}
	return c.n.Load()
}

// histogram counts observations into fixed buckets, as Prometheus' histograms do: counts[i]
// is the number of observations at most bounds[i], not yet made cumulative.
type histogram struct {
	bounds  []float64
	counts  []atomic.Uint64 // one a bound, and one more for +Inf
	count   atomic.Uint64
	sumBits atomic.Uint64 // the float64 sum of every observation
}

func newHistogram(bounds ...float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// observe counts one observation of v.
func (h *histogram) observe(v float64) { h.observeN(v, 1) }

// observeN counts n observations of the same v (the lines of one batch, say) at once.
func (h *histogram) observeN(v float64, n int) {
	if h == nil || n <= 0 {
		return
	}
	h.counts[sort.SearchFloat64s(h.bounds, v)].Add(uint64(n))
	h.count.Add(uint64(n))
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v*float64(n))) {
			return
		}
	}
}

// Buckets. Ansible runs take seconds to hours, and wait in the queue from nothing to hours;
// a line reaches streams in microseconds to milliseconds; an fsync takes a fraction of a
// millisecond on a good disk and a second on a bad one.
var (
	runBuckets     = []float64{1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400}
	waitBuckets    = []float64{0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 86400}
	latencyBuckets = []float64{0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}
	fsyncBuckets   = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}
)

// metrics is what charond counts as it runs. Gauges are not kept here: they are read from
// the scheduler and the server when scraped.
type metrics struct {
	jobsFinished map[Status]*counter // by final status
	queueWait    *histogram          // from submission to start
	jobDuration  *histogram          // from start to end
	logLines     *counter            // output lines stored
	taskEvents   *counter            // task and host events from the callback plugin
	lineLatency  *histogram          // from a line read off the pipe to its being on disk and visible to streams
	fsync        *histogram          // of the journal's group commits
	webhooks     map[string]*counter // deliveries by outcome: delivered, given_up
}

func newMetrics() *metrics {
	m := &metrics{
		jobsFinished: map[Status]*counter{},
		queueWait:    newHistogram(waitBuckets...),
		jobDuration:  newHistogram(runBuckets...),
		lineLatency:  newHistogram(latencyBuckets...),
		fsync:        newHistogram(fsyncBuckets...),
		logLines:     &counter{},
		taskEvents:   &counter{},
		webhooks:     map[string]*counter{"delivered": {}, "given_up": {}},
	}
	for _, st := range allStatuses {
		if st.Final() {
			m.jobsFinished[st] = &counter{}
		}
	}
	return m
}

// jobEnded counts a job that ended in state st, and how long it ran.
func (m *metrics) jobEnded(st jobState) {
	m.jobsFinished[st.Status].add(1)
	if !st.StartedAt.IsZero() {
		m.jobDuration.observe(st.FinishedAt.Sub(st.StartedAt).Seconds())
	}
}

// webhookOutcome counts a delivery to a target that ended: delivered or given_up.
func (m *metrics) webhookOutcome(outcome string) { m.webhooks[outcome].add(1) }

// gauges are the values read when /metrics is scraped.
type gauges struct {
	queued, running, kept int
	streams               int64
	subscribers           int
	healthy               bool
}

// exposition writes every metric in Prometheus' text format, version 0.0.4.
type exposition struct{ bytes.Buffer }

func (e *exposition) header(name, kind, help string) {
	fmt.Fprintf(e, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
}

func (e *exposition) sample(name, labels string, v float64) {
	if labels != "" {
		labels = "{" + labels + "}"
	}
	e.WriteString(name + labels + " " + strconv.FormatFloat(v, 'g', -1, 64) + "\n")
}

func (e *exposition) histogram(name, help string, h *histogram) {
	e.header(name, "histogram", help)
	var cumulative uint64
	for i, b := range h.bounds {
		cumulative += h.counts[i].Load()
		e.sample(name+"_bucket", `le="`+strconv.FormatFloat(b, 'g', -1, 64)+`"`, float64(cumulative))
	}
	// +Inf is the count, read once, so that the buckets never add up to more than it: an
	// observation made meanwhile shows in the next scrape.
	count := h.count.Load()
	cumulative += h.counts[len(h.bounds)].Load()
	e.sample(name+"_bucket", `le="+Inf"`, float64(max(count, cumulative)))
	e.sample(name+"_sum", "", math.Float64frombits(h.sumBits.Load()))
	e.sample(name+"_count", "", float64(max(count, cumulative)))
}

// labelValue escapes a label value as the text format wants it.
func labelValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// write is the whole exposition.
func (m *metrics) write(g gauges, build buildInfo) []byte {
	var e exposition
	e.header("charond_build_info", "gauge", "charond's version and the VCS revision it was built from; the value is always 1.")
	e.sample("charond_build_info", fmt.Sprintf(`version="%s",revision="%s",goversion="%s"`,
		labelValue(build.Version), labelValue(build.Revision), labelValue(build.Go)), 1)
	e.header("charond_jobs_finished_total", "counter", "Jobs that ended, by final status.")
	for _, st := range allStatuses {
		if c := m.jobsFinished[st]; c != nil {
			e.sample("charond_jobs_finished_total", `status="`+string(st)+`"`, float64(c.value()))
		}
	}
	e.header("charond_jobs_queued", "gauge", "Jobs waiting in the queue.")
	e.sample("charond_jobs_queued", "", float64(g.queued))
	e.header("charond_jobs_running", "gauge", "Jobs running now.")
	e.sample("charond_jobs_running", "", float64(g.running))
	e.header("charond_jobs_kept", "gauge", "Jobs charond keeps, in every status (see -retention and -max-jobs).")
	e.sample("charond_jobs_kept", "", float64(g.kept))
	e.histogram("charond_job_queue_wait_seconds", "Time from a job's submission to its start.", m.queueWait)
	e.histogram("charond_job_duration_seconds", "Time from a job's start to its end.", m.jobDuration)
	e.header("charond_log_lines_total", "counter", "Output lines of jobs stored and streamed.")
	e.sample("charond_log_lines_total", "", float64(m.logLines.value()))
	e.header("charond_task_events_total", "counter", "Task and host events of jobs, from Charon's callback plugin.")
	e.sample("charond_task_events_total", "", float64(m.taskEvents.value()))
	e.histogram("charond_line_latency_seconds", "Time from an output line read off a job's pipe to its being on disk and visible to streams.", m.lineLatency)
	e.header("charond_streams_open", "gauge", "Server-Sent Events streams open now.")
	e.sample("charond_streams_open", "", float64(g.streams))
	e.header("charond_stream_subscribers", "gauge", "Clients following a job's log or events, or the all-jobs stream, now.")
	e.sample("charond_stream_subscribers", "", float64(g.subscribers))
	e.histogram("charond_journal_fsync_seconds", "Time of each fsync of the job journal (one for every group of concurrent changes).", m.fsync)
	e.header("charond_webhook_deliveries_total", "counter", "Webhook deliveries to a target, by outcome: delivered, or given_up after the last attempt.")
	for _, outcome := range []string{"delivered", "given_up"} {
		e.sample("charond_webhook_deliveries_total", `outcome="`+outcome+`"`, float64(m.webhooks[outcome].value()))
	}
	e.header("charond_store_healthy", "gauge", "1 while the data dir takes writes, 0 while charond refuses jobs for a fault (see /healthz).")
	healthy := 0.0
	if g.healthy {
		healthy = 1
	}
	e.sample("charond_store_healthy", "", healthy)
	return e.Bytes()
}

// serveMetrics answers GET /metrics.
func (s *server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	queued, running := s.sched.counts()
	g := gauges{queued: queued, running: running, kept: s.sched.kept(), streams: s.openStreams.Load(),
		subscribers: s.sched.subscribers(), healthy: s.sched.store.unavailable() == nil}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write(s.sched.metrics.write(g, thisBuild))
}
