package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file holds the HTTP half of live streaming: serveStream copies one of a job's
// eventLogs to one client over Server-Sent Events. The frames it sends are built in frames.go.

// streamConfig holds the settings of every SSE stream.
type streamConfig struct {
	Heartbeat    time.Duration // how often an idle stream sends a `: ping` comment
	WriteTimeout time.Duration // how long one write may block before the client counts as gone
	Retry        time.Duration // the reconnection delay suggested to EventSource clients
	// Stopping is closed when charond shuts down, after every running job has ended: streams
	// of jobs that will not end now (queued ones, kept for the next start) close then.
	Stopping <-chan struct{}
	Log      *slog.Logger // where streams that fail on charond's side are reported
}

// connectedData and completedData are the payloads of the notices that open and close a
// stream. Both carry `line` beside `message` so that clients that read data['line'] from
// every event, as the README's Python example does, keep working.
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

// sendRecords writes the records' shared frames and flushes them; an error means the client
// is gone.
func (sw *streamWriter) sendRecords(recs []record) error {
	if err := sw.rc.SetWriteDeadline(time.Now().Add(sw.timeout)); err != nil {
		return err
	}
	for _, r := range recs {
		if _, err := sw.w.Write(r.frame); err != nil {
			return err
		}
	}
	return sw.rc.Flush()
}

// send writes one frame, such as a notice or a ping, and flushes it.
func (sw *streamWriter) send(frame []byte) error {
	return sw.sendRecords([]record{{frame: frame}})
}

// serveStream streams a log of kind, one of a job's or the all-jobs feed, to a client until
// the log has ended and everything is sent, the client goes away, a write times out, or
// charond stops. subject names what the log is of, for the connected notice ("job ID"). It
// runs on the request's goroutine and starts none of its own, so a client that disconnects
// leaves nothing behind. It returns an error only before anything is written, for the caller
// to answer.
func serveStream(w http.ResponseWriter, r *http.Request, l *eventLog, kind streamKind, subject string, cfg streamConfig) error {
	after, resuming, err := resumePoint(r)
	if err != nil {
		return err
	}
	sub := l.subscribe()
	defer l.unsubscribe(sub)
	first, err := l.read(after)
	if err != nil {
		return err
	}
	if resuming && first.end != nil && len(first.recs) == 0 {
		// A reconnect after the end: 204 tells EventSource to stop reconnecting.
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	st := &stream{log: l, sub: sub, kind: kind, cfg: cfg, after: after,
		out: &streamWriter{w: w, rc: http.NewResponseController(w), timeout: cfg.WriteTimeout}}
	defer st.out.rc.SetWriteDeadline(time.Time{})
	msg := fmt.Sprintf("Connected to %s stream for %s", kind.noun, subject)
	hello := noticeFrame("connected", -1, connectedData{Message: msg, Line: msg, Timestamp: time.Now().UTC()}, cfg.Retry)
	if err := st.out.send(hello); err != nil {
		return nil
	}
	if err := st.run(r.Context(), first); err != nil && cfg.Log != nil {
		cfg.Log.Warn("stream ended early", "of", subject, "stream", kind.noun, "err", err)
	}
	return nil
}

// stream is one client's stream in progress.
type stream struct {
	log   *eventLog
	sub   *subscriber
	kind  streamKind
	cfg   streamConfig
	out   *streamWriter
	after int // the id of the last event sent
}

// run sends the events it is given and all later ones, then `completed`. It returns when
// that is sent, when the client is gone (ctx ends or a write fails), or when charond stops
// while the job has not ended (the client will resume from the restarted charond).
func (st *stream) run(ctx context.Context, res readResult) error {
	heartbeat := time.NewTicker(st.cfg.Heartbeat)
	defer heartbeat.Stop()
	stopping := false
	for {
		switch {
		case len(res.recs) > 0:
			if err := st.out.sendRecords(res.recs); err != nil {
				return nil // the client is gone
			}
			st.after += len(res.recs)
		case res.end != nil:
			return st.complete(res.end)
		case stopping:
			return nil
		default:
			select {
			case <-res.changed:
			case <-heartbeat.C:
				if err := st.out.send([]byte(": ping\n\n")); err != nil {
					return nil
				}
			case <-st.cfg.Stopping:
				stopping = true // send what there is, then end
			case <-ctx.Done():
				return nil
			}
		}
		var err error
		if res, err = st.log.read(st.after); err != nil {
			return err
		}
	}
}

// complete sends `completed`, whose id is the last event's, so that a reconnect after it is
// recognised.
func (st *stream) complete(end *streamEnd) error {
	msg := strings.ToUpper(st.kind.noun[:1]) + st.kind.noun[1:] + " stream completed"
	d := completedData{Message: msg, Line: msg, Timestamp: time.Now().UTC(), Status: end.Status, ExitCode: end.ExitCode}
	st.out.send(noticeFrame("completed", st.log.length(), d, 0))
	return nil
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
