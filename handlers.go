package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// retryAfterSeconds is the Retry-After of a 429 or 503: long enough for a few jobs to start.
const retryAfterSeconds = "5"

// server holds what the HTTP handlers need.
type server struct {
	token          string // the bearer token every /api/ route needs; empty: none
	maxStreams     int64  // open SSE streams allowed at once
	openStreams    atomic.Int64
	sched          *scheduler
	log            *slog.Logger
	limits         specLimits
	maxBody        int64
	stream         streamConfig
	corsOrigins    []string // exact origins, or "*"
	ansibleVersion string   // what `ansible-playbook --version` said, or why it could not run
	ansibleErr     error    // why ansible-playbook could not run at start; nil if it did
	workers        int
	hosts          hostGuard           // the Host names answered
	web            map[string]webAsset // the dashboard's files, by name under web/
	bodyTimeout    time.Duration       // how long a request body may take to arrive (streams excepted)
}

// routes registers every endpoint. Each path also gets a method-less pattern that answers 405
// in JSON, and "/" answers 404 in JSON, so no request ever gets the mux's plain-text pages.
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	s.handle(mux, "/{$}", map[string]http.HandlerFunc{"GET": s.servePage})
	s.handle(mux, "/ui/{name}", map[string]http.HandlerFunc{"GET": s.serveWebAsset})
	s.handle(mux, "/healthz", map[string]http.HandlerFunc{"GET": s.health})
	s.handle(mux, "/readyz", map[string]http.HandlerFunc{"GET": s.ready})
	s.handle(mux, "/metrics", map[string]http.HandlerFunc{"GET": s.serveMetrics})
	s.handle(mux, "/api/v1/info", map[string]http.HandlerFunc{"GET": s.info})
	s.handle(mux, "/api/v1/jobs", map[string]http.HandlerFunc{"GET": s.listJobs, "POST": s.submitJob})
	s.handle(mux, "/api/v1/jobs/{id}", map[string]http.HandlerFunc{"GET": s.getJob, "DELETE": s.deleteJob})
	s.handle(mux, "/api/v1/jobs/{id}/logs", map[string]http.HandlerFunc{"GET": s.getLogs})
	s.handle(mux, "/api/v1/jobs/{id}/logs/lines", map[string]http.HandlerFunc{"GET": s.getLogLines})
	s.handle(mux, "/api/v1/jobs/{id}/logs/search", map[string]http.HandlerFunc{"GET": s.searchLog})
	s.handle(mux, "/api/v1/jobs/{id}/events", map[string]http.HandlerFunc{"GET": s.getEvents})
	s.handle(mux, "/api/v1/jobs/{id}/cancel", map[string]http.HandlerFunc{"POST": s.cancelJob})
	s.handle(mux, "/api/v1/jobs/{id}/relaunch", map[string]http.HandlerFunc{"POST": s.relaunchJob})
	s.handle(mux, "/api/v1/jobs/{id}/logs/stream", map[string]http.HandlerFunc{"GET": s.streamLogs})
	s.handle(mux, "/api/v1/jobs/{id}/events/stream", map[string]http.HandlerFunc{"GET": s.streamEvents})
	s.handle(mux, "/api/v1/events/stream", map[string]http.HandlerFunc{"GET": s.streamFeed})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, apiErrorf(errNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s.boundBodyTime(s.boundWriteStalls(s.guardHost(s.cors(s.refuseCrossSite(s.requireToken(canonicalPaths(mux)))))))
}

// boundWriteStalls drops a client that stops reading an answer: each write to it must go
// through within -stream-write-timeout, as each stream write must (streams set their own
// deadlines). Without it, a client that asks for a long log and never reads would hold a
// goroutine, a connection and an open file for ever. A slow client that keeps reading is
// not cut: the deadline moves with every write.
func (s *server) boundWriteStalls(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isStreamPath(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		// The server clears the deadline after each request, so none outlives its answer.
		next.ServeHTTP(&stallBoundWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.stream.WriteTimeout}, r)
	})
}

// stallBoundWriter sets a write deadline before each write of an answer.
type stallBoundWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	until   time.Time // the deadline last set
}

// Write moves the deadline forward once half of it has gone by, rather than at every write:
// a plain-text log is written a line at a time, and a million lines need not move it a
// million times. A write then always has at least half the timeout to go through.
func (w *stallBoundWriter) Write(p []byte) (int, error) {
	if now := time.Now(); w.until.Sub(now) < w.timeout/2 {
		w.until = now.Add(w.timeout)
		_ = w.rc.SetWriteDeadline(w.until)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection underneath.
func (w *stallBoundWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// boundBodyTime gives every request that has a body -read-body-timeout to deliver it, so a
// client that trickles one in cannot hold a connection and a goroutine for ever, whatever
// answer it gets (a refusal too: the server reads what is left of a body before it reuses a
// connection). A request without a body gets no deadline: once its body is read, the server
// watches the connection for the client going away, and a deadline would end the request's
// context in the middle of a long answer; for the same reason a stream lifts it when it
// starts. (The server's own ReadTimeout has that flaw for every request.) The server sets the
// deadline anew for the next request on the connection.
func (s *server) boundBodyTime(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 { // -1: chunked, length unknown
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.bodyTimeout))
		}
		next.ServeHTTP(w, r)
	})
}

// canonicalPaths answers a path with `..`, `.` or doubled slashes with a JSON 404, where the
// mux would redirect with an HTML page: no API path needs cleaning, and a redirect would only
// move a request somewhere its sender did not name.
func canonicalPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		clean := path.Clean(p)
		if strings.HasSuffix(p, "/") && clean != "/" {
			clean += "/"
		}
		if p != clean || !strings.HasPrefix(p, "/") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			body, _ := json.Marshal(map[string]string{"error": "no such endpoint: " + r.Method + " " + p + " (paths must not contain . or .. segments or doubled slashes)"})
			w.Write(append(body, '\n'))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) handle(mux *http.ServeMux, path string, byMethod map[string]http.HandlerFunc) {
	methods := make([]string, 0, len(byMethod)+1)
	for method, h := range byMethod {
		mux.HandleFunc(method+" "+path, h)
		methods = append(methods, method)
		if method == "GET" {
			methods = append(methods, "HEAD")
		}
	}
	sort.Strings(methods)
	allow := strings.Join(methods, ", ")
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		s.writeError(w, r, apiErrorf(errNotAllowed, "method %s is not allowed on %s; use %s", r.Method, r.URL.Path, allow))
	})
}

// health answers 200 {"status":"ok"}, or 503 {"status":"unhealthy","error":...} while the
// data dir is unusable and charond refuses new jobs.
func (s *server) health(w http.ResponseWriter, r *http.Request) {
	if err := s.sched.store.unavailable(); err != nil {
		s.writeJSON(w, r, http.StatusServiceUnavailable, map[string]string{"status": "unhealthy", "error": err.Error()})
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]string{"status": "ok"})
}

// ready answers 200 {"status":"ready"} when charond can take and run jobs: the store takes
// writes, the journal is loaded and open, ansible-playbook ran at start, and charond is not
// shutting down. Otherwise 503 {"status":"not ready","error":...,"reasons":[...]}. A load
// balancer sends jobs only to a ready charond; /healthz, liveness, says only whether to
// restart it.
func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	var reasons []string
	if err := s.sched.store.unavailable(); err != nil {
		reasons = append(reasons, err.Error())
	}
	if err := s.sched.store.journal.check(); err != nil {
		reasons = append(reasons, "the journal is not loaded and open: "+err.Error())
	}
	if s.ansibleErr != nil {
		reasons = append(reasons, "ansible-playbook cannot run: "+s.ansibleErr.Error())
	}
	if s.sched.isClosed() {
		reasons = append(reasons, "charond is shutting down")
	}
	if len(reasons) > 0 {
		s.writeJSON(w, r, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "error": strings.Join(reasons, "; "), "reasons": reasons})
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *server) info(w http.ResponseWriter, r *http.Request) {
	queued, running := s.sched.counts()
	s.writeJSON(w, r, http.StatusOK, map[string]any{
		"last_event_id":            s.sched.store.feed.log.length(),
		"version":                  thisBuild.Version,
		"build":                    thisBuild,
		"ansible_playbook_version": s.ansibleVersion,
		"workers":                  s.workers,
		"queued":                   queued,
		"running":                  running,
		"containment":              s.sched.runner.contain.info(),
	})
}

// yamlTypes and jsonTypes are the accepted Content-Types of a job submission. None of them
// is one a browser lets a page of another origin send without a CORS preflight.
var (
	yamlTypes = map[string]bool{"application/x-yaml": true, "application/yaml": true, "text/yaml": true, "text/x-yaml": true}
	jsonTypes = map[string]bool{"application/json": true}
)

const acceptedTypes = "application/x-yaml, application/yaml, text/yaml or application/json"

func (s *server) submitJob(w http.ResponseWriter, r *http.Request) {
	isJSON, err := submissionFormat(r.Header.Get("Content-Type"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	spec, err := parseJobSpec(body, isJSON, s.limits)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	job, queued, err := s.sched.submit(spec)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("job queued", "job", job.ID, "name", spec.Name, "priority", spec.Priority)
	w.Header().Set("Location", "/api/v1/jobs/"+job.ID)
	s.writeJSON(w, r, http.StatusCreated, job.view(queued, true))
}

// readBody reads a request's body, up to -max-body, within -read-body-timeout.
func (s *server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err == nil {
		return body, nil
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, apiErrorf(errTooLarge, "request body is larger than %d bytes (-max-body)", s.maxBody)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, apiErrorf(errTimeout, "request body did not arrive within %s (-read-body-timeout)", s.bodyTimeout)
	}
	return nil, invalidf("cannot read request body: %v", err)
}

// submissionFormat tells YAML from JSON by Content-Type. A missing type is refused, and so is
// every type a web page may send without asking (text/plain and the form encodings): a job
// is code, and a cross-site page must not be able to submit one.
func submissionFormat(contentType string) (isJSON bool, err error) {
	if contentType == "" {
		return false, apiErrorf(errUnsupported, "Content-Type is missing: send the job as %s", acceptedTypes)
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false, apiErrorf(errUnsupported, "Content-Type %q cannot be parsed: %v", contentType, err)
	}
	switch {
	case yamlTypes[mt]:
		return false, nil
	case jsonTypes[mt]:
		return true, nil
	}
	return false, apiErrorf(errUnsupported, "Content-Type %s is not supported: send the job as %s", mt, acceptedTypes)
}

func (s *server) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status := Status(q.Get("status"))
	if status != "" && !validStatus(status) {
		s.writeError(w, r, invalidf("status: %q is not a job status; use one of %s", status, statusNames()))
		return
	}
	limit := 100
	if raw := q.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 {
			s.writeError(w, r, invalidf("limit: %q is not a whole number of 1 or more", raw))
			return
		}
		limit = n
	}
	// Read before the jobs: a client that lists, then follows the all-jobs stream from this
	// id, misses no change (one made meanwhile may reach it twice, from both).
	lastEvent := s.sched.store.feed.log.length()
	jobs := s.sched.list(status, limit)
	views := make([]jobView, len(jobs))
	for i, job := range jobs {
		views[i] = s.sched.view(job, false)
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"jobs": views, "last_event_id": lastEvent})
}

func validStatus(st Status) bool {
	for _, s := range allStatuses {
		if s == st {
			return true
		}
	}
	return false
}

func statusNames() string {
	names := make([]string, len(allStatuses))
	for i, s := range allStatuses {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

func (s *server) getJob(w http.ResponseWriter, r *http.Request) {
	job, err := s.sched.get(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, s.sched.view(job, true))
}

func (s *server) cancelJob(w http.ResponseWriter, r *http.Request) {
	job, err := s.sched.cancel(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("job cancel requested", "job", job.ID)
	s.writeJSON(w, r, http.StatusAccepted, s.sched.view(job, true))
}

// relaunchJob submits a new job that runs an ended one again, on all its hosts or, with the
// body {"hosts": "failed"}, on those that failed or were unreachable.
func (s *server) relaunchJob(w http.ResponseWriter, r *http.Request) {
	failedOnly, err := s.relaunchHosts(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	job, queued, err := s.sched.relaunch(r.PathValue("id"), failedOnly, s.limits)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("job relaunched", "job", job.ID, "relaunch_of", job.Spec.RelaunchOf, "failed_only", failedOnly)
	w.Header().Set("Location", "/api/v1/jobs/"+job.ID)
	s.writeJSON(w, r, http.StatusCreated, job.view(queued, true))
}

// relaunchHosts reads a relaunch's optional body, {"hosts": "all" | "failed"}: an empty body
// means all. A body must be JSON, sent as such.
func (s *server) relaunchHosts(w http.ResponseWriter, r *http.Request) (failedOnly bool, err error) {
	body, err := s.readBody(w, r)
	if err != nil || len(bytes.TrimSpace(body)) == 0 {
		return false, err
	}
	if ct := r.Header.Get("Content-Type"); ct == "" {
		return false, apiErrorf(errUnsupported, "Content-Type is missing: send the relaunch body as application/json")
	} else if mt, _, _ := mime.ParseMediaType(ct); !jsonTypes[mt] {
		return false, apiErrorf(errUnsupported, "Content-Type %s is not supported: send the relaunch body as application/json", ct)
	}
	var req struct {
		Hosts *string `json:"hosts"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return false, invalidf("relaunch body: %v; send {\"hosts\": \"all\"} or {\"hosts\": \"failed\"}", err)
	}
	if dec.More() {
		return false, invalidf("relaunch body: more than one JSON value")
	}
	switch {
	case req.Hosts == nil || *req.Hosts == "all":
		return false, nil
	case *req.Hosts == "failed":
		return true, nil
	}
	return false, invalidf("hosts: %q is not all or failed", *req.Hosts)
}

func (s *server) deleteJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.sched.remove(id); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("job deleted", "job", id)
	w.WriteHeader(http.StatusNoContent)
}

// getLogs answers the whole log so far: plain text, or with ?format=jsonl one JSON object a
// line, the same objects the stream carries.
func (s *server) getLogs(w http.ResponseWriter, r *http.Request) {
	job, err := s.sched.get(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "text" && format != "jsonl" {
		s.writeError(w, r, invalidf("format: %q is not supported; use text or jsonl", format))
		return
	}
	stored, err := job.logs.contents()
	if err != nil {
		s.writeError(w, r, fmt.Errorf("read log of job %s: %w", job.ID, err))
		return
	}
	defer stored.Close()
	if format == "jsonl" {
		w.Header().Set("Content-Type", "application/jsonl; charset=utf-8")
		io.Copy(w, stored)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	lines := bufio.NewReader(stored)
	for {
		raw, err := lines.ReadBytes('\n')
		if err != nil {
			return // io.EOF: every stored line ends with a newline
		}
		var l struct {
			Line string `json:"line"`
		}
		if err := json.Unmarshal(raw, &l); err != nil {
			s.log.Error("stored log line does not decode", "job", job.ID, "err", err)
			continue
		}
		io.WriteString(w, l.Line+"\n")
	}
}

// getEvents answers the job's recorded events (status changes and task events) as JSON, each
// with its stream id, for tools that do not want a stream.
func (s *server) getEvents(w http.ResponseWriter, r *http.Request) {
	job, err := s.sched.get(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	contents, err := job.events.contents()
	if err != nil {
		s.writeError(w, r, fmt.Errorf("read events of job %s: %w", job.ID, err))
		return
	}
	defer contents.Close()
	var body bytes.Buffer
	body.WriteString(`{"events":[`)
	stored := bufio.NewReader(contents)
	for id := 1; ; id++ {
		raw, err := stored.ReadBytes('\n')
		if err != nil {
			break // io.EOF: every stored event ends with a newline
		}
		if id > 1 {
			body.WriteByte(',')
		}
		// Every stored event is a JSON object: put the id first inside it.
		fmt.Fprintf(&body, `{"id":%d,`, id)
		body.Write(bytes.TrimSpace(raw)[1:])
	}
	body.WriteString("]}\n")
	w.Header().Set("Content-Type", "application/json")
	w.Write(body.Bytes())
}

func (s *server) streamLogs(w http.ResponseWriter, r *http.Request) {
	s.serveJobStream(w, r, logStream)
}

func (s *server) streamEvents(w http.ResponseWriter, r *http.Request) {
	s.serveJobStream(w, r, eventsStream)
}

func (s *server) serveJobStream(w http.ResponseWriter, r *http.Request, kind streamKind) {
	job, err := s.sched.get(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.serveLog(w, r, job.stream(kind), kind, "job "+job.ID)
}

// streamFeed streams the all-jobs feed: every job's status changes, from Last-Event-ID on.
func (s *server) streamFeed(w http.ResponseWriter, r *http.Request) {
	s.serveLog(w, r, s.sched.store.feed.log, feedStream, "all jobs")
}

// serveLog streams l to the client, within -max-streams.
func (s *server) serveLog(w http.ResponseWriter, r *http.Request, l *eventLog, kind streamKind, subject string) {
	if n := s.openStreams.Add(1); n > s.maxStreams {
		s.openStreams.Add(-1)
		s.writeError(w, r, apiErrorf(errUnavailable, "too many open streams (%d, -max-streams): try again later", s.maxStreams))
		return
	}
	defer s.openStreams.Add(-1)
	// A stream reads no body and lasts as long as its job: only its writes have deadlines.
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	if err := serveStream(w, r, l, kind, subject, s.stream); err != nil {
		s.writeError(w, r, err)
	}
}

// writeJSON marshals first and only then writes, so a marshal error never leaves a half-sent 200.
func (s *server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("encode response: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// writeError answers {"error": "..."} with the error's status. Only internal errors are logged;
// their details stay in charond's log and the client gets a generic message.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := httpStatus(err)
	switch status {
	case http.StatusInternalServerError:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		// Both pass: the queue drains, streams close, a restart ends.
		w.Header().Set("Retry-After", retryAfterSeconds)
	}
	body, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}
