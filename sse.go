package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// This file holds the two halves of live streaming: eventLog, the append-only sequence of
// encoded events of one job's stream, with its subscribers; and serveStream, the HTTP handler
// half that copies a log's events to one client over Server-Sent Events.
//
// The design keeps the writer (the job's pipe readers) independent of every reader: appending
// never waits for a subscriber, it only pokes each subscriber's one-slot wake channel. A
// subscriber is a cursor (the last id it sent) that copies what it has not yet sent out of the
// log, so a slow client holds no per-client buffer and can never slow the job or another client.

// record is one event of a stream, encoded once as a complete SSE frame and shared by every
// subscriber. data is the JSON payload inside frame.
type record struct {
	frame []byte
	data  []byte
}

// streamEnd is what the closing `completed` event reports about the job.
type streamEnd struct {
	Status   Status
	ExitCode *int
}

// subscriber is one client's place in a log. wake has room for one signal: an append that
// finds it full knows the subscriber will look at the log anyway.
type subscriber struct {
	wake chan struct{}
}

// eventLog is an append-only sequence of events numbered from 1. Records are never changed
// once appended, so a reader may use a slice of them after releasing the lock.
type eventLog struct {
	event string // the SSE event name of every record: "log" or "job_event"

	mu      sync.Mutex // guards the fields below; never held across I/O
	records []record   // records[i] has id i+1
	end     *streamEnd // set once, when the job has ended and nothing more will be appended
	subs    map[*subscriber]struct{}
}

func newEventLog(event string) *eventLog {
	return &eventLog{event: event, subs: make(map[*subscriber]struct{})}
}

// appendData appends one event per JSON payload and wakes the subscribers. Payloads are copied
// into their frames, so the caller may reuse them.
func (l *eventLog) appendData(payloads ...[]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.end != nil {
		return // the stream is closed; a late event has nowhere to go
	}
	for _, p := range payloads {
		id := len(l.records) + 1
		l.records = append(l.records, encodeRecord(id, l.event, p))
	}
	l.wakeLocked()
}

// close marks the log complete and wakes every subscriber so they send `completed`.
func (l *eventLog) close(end streamEnd) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.end == nil {
		l.end = &end
		l.wakeLocked()
	}
}

func (l *eventLog) wakeLocked() {
	for s := range l.subs {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// readBatch bounds how many records a subscriber copies per turn, so one flush stays small.
const readBatch = 1024

// read returns the records after id `after` (at most readBatch), and the stream's end once the
// job has ended and nothing after `after` is left.
func (l *eventLog) read(after int) ([]record, *streamEnd) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if after < 0 {
		after = 0
	}
	if after >= len(l.records) {
		return nil, l.end
	}
	recs := l.records[after:]
	if len(recs) > readBatch {
		recs = recs[:readBatch]
	}
	return recs, nil
}

// snapshot returns every record so far and whether the log is complete.
func (l *eventLog) snapshot() ([]record, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.records[:len(l.records):len(l.records)], l.end != nil
}

// length is the number of events appended so far, which is also the last id.
func (l *eventLog) length() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

func (l *eventLog) subscribe() *subscriber {
	s := &subscriber{wake: make(chan struct{}, 1)}
	l.mu.Lock()
	l.subs[s] = struct{}{}
	l.mu.Unlock()
	return s
}

func (l *eventLog) unsubscribe(s *subscriber) {
	l.mu.Lock()
	delete(l.subs, s)
	l.mu.Unlock()
}

// subscriberCount is the number of clients streaming this log right now.
func (l *eventLog) subscriberCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.subs)
}

// encodeRecord builds the SSE frame for one event. JSON never holds a raw newline, so the
// payload always fits one data line.
func encodeRecord(id int, event string, payload []byte) record {
	prefix := "id: " + strconv.Itoa(id) + "\nevent: " + event + "\ndata: "
	frame := make([]byte, 0, len(prefix)+len(payload)+2)
	frame = append(frame, prefix...)
	frame = append(frame, payload...)
	frame = append(frame, '\n', '\n')
	return record{frame: frame, data: frame[len(prefix) : len(frame)-2]}
}

// streamConfig holds the settings of every SSE stream.
type streamConfig struct {
	Heartbeat    time.Duration // how often an idle stream sends a `: ping` comment
	WriteTimeout time.Duration // how long one write may block before the client counts as gone
	Retry        time.Duration // the reconnection delay suggested to EventSource clients
}

// connectedData and completedData are the payloads of the notices that open and close a
// stream. Both carry `line` beside the seed's `message` so that clients that read
// data['line'] from every event, as the seed's Python example does, keep working.
type connectedData struct {
	Message   string    `json:"message"`
	Line      string    `json:"line"`
	Timestamp time.Time `json:"timestamp"`
}

type completedData struct {
	Message   string    `json:"message"`
	Line      string    `json:"line"`
	Timestamp time.Time `json:"timestamp"`
	Status    Status    `json:"status"`
	ExitCode  *int      `json:"exit_code"`
}

// resumePoint reads where a reconnecting client left off: the Last-Event-ID header that
// EventSource sends, or ?since= for clients that cannot set headers. 0 means from the start.
func resumePoint(r *http.Request) (after int, resuming bool, err error) {
	raw, name := r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	if raw == "" {
		raw, name = r.URL.Query().Get("since"), "since"
	}
	if raw == "" {
		return 0, false, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil || n < 0 {
		return 0, false, invalidf("%s: %q is not an event id (a whole number, 0 or more)", name, raw)
	}
	return n, true, nil
}

// streamWriter writes SSE frames to one client, each batch under a write deadline.
type streamWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

// send writes the frames and flushes them; an error means the client is gone.
func (sw *streamWriter) send(frames ...[]byte) error {
	if err := sw.rc.SetWriteDeadline(time.Now().Add(sw.timeout)); err != nil {
		return err
	}
	for _, f := range frames {
		if _, err := sw.w.Write(f); err != nil {
			return err
		}
	}
	return sw.rc.Flush()
}

// serveStream streams one of a job's logs to a client until the job has ended and everything
// is sent, the client goes away, or a write times out. It runs on the request's goroutine and
// starts none of its own, so a client that disconnects leaves nothing behind.
func serveStream(w http.ResponseWriter, r *http.Request, job *Job, l *eventLog, what string, cfg streamConfig) error {
	after, resuming, err := resumePoint(r)
	if err != nil {
		return err
	}
	sub := l.subscribe()
	defer l.unsubscribe(sub)
	recs, end := l.read(after)
	if resuming && end != nil && len(recs) == 0 {
		// A reconnect after the end: 204 tells EventSource to stop reconnecting.
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	sw := &streamWriter{w: w, rc: http.NewResponseController(w), timeout: cfg.WriteTimeout}
	defer sw.rc.SetWriteDeadline(time.Time{})
	msg := fmt.Sprintf("Connected to %s stream for job %s", what, job.ID)
	hello := noticeFrame("connected", -1, connectedData{Message: msg, Line: msg, Timestamp: time.Now().UTC()}, cfg.Retry)
	if err := sw.send(hello); err != nil {
		return nil
	}
	heartbeat := time.NewTicker(cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		if len(recs) > 0 {
			if err := sw.send(frames(recs)...); err != nil {
				return nil // the client is gone
			}
			after += len(recs)
		} else if end != nil {
			msg := strings.ToUpper(what[:1]) + what[1:] + " stream completed"
			d := completedData{Message: msg, Line: msg, Timestamp: time.Now().UTC(), Status: end.Status, ExitCode: end.ExitCode}
			// The id is the last event's, so that a reconnect after `completed` is recognised.
			done := noticeFrame("completed", l.length(), d, 0)
			sw.send(done)
			return nil
		} else {
			select {
			case <-sub.wake:
			case <-heartbeat.C:
				if err := sw.send([]byte(": ping\n\n")); err != nil {
					return nil
				}
			case <-r.Context().Done():
				return nil
			}
		}
		recs, end = l.read(after)
	}
}

func frames(recs []record) [][]byte {
	out := make([][]byte, len(recs))
	for i, r := range recs {
		out[i] = r.frame
	}
	return out
}

// noticeFrame encodes a `connected` or `completed` event; id < 0 leaves the id field out so
// that `connected` does not move a client's Last-Event-ID.
func noticeFrame(event string, id int, payload any, retry time.Duration) []byte {
	data, err := json.Marshal(payload)
	if err != nil {
		panic("encoding a notice cannot fail: " + err.Error())
	}
	var b strings.Builder
	if retry > 0 {
		fmt.Fprintf(&b, "retry: %d\n", retry.Milliseconds())
	}
	if id >= 0 {
		fmt.Fprintf(&b, "id: %d\n", id)
	}
	fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", event, data)
	return []byte(b.String())
}

// appendLogPayload appends the JSON payload of one log line,
// {"line": ..., "timestamp": ..., "stream": ...}, written by hand because it runs for every
// line a job prints.
func appendLogPayload(dst, line []byte, ts time.Time, stream string) []byte {
	dst = append(dst, `{"line":`...)
	dst = appendJSONString(dst, line)
	dst = append(dst, `,"timestamp":"`...)
	dst = ts.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","stream":"`...)
	dst = append(dst, stream...)
	return append(dst, `"}`...)
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as encoding/json
// does, so every payload is valid JSON whatever bytes a playbook prints.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but break JavaScript parsers that eval lines.
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = fmt.Appendf(dst, `\u%04x`, r)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
