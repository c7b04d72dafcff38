package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// This file is the tests' side of charond's API: one way to send a request and read its
// answer, and one parser for the event streams.

// testClient sends every request of the tests. It does not follow redirects: a redirect is an
// answer to check, not to hide.
var testClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// roundTrip sends one request and returns the answer with its body unread. headers are set as
// given, whatever bytes they hold, so that a test can send what a careless or hostile client
// would; "Host" sets the request's host.
func roundTrip(t testing.TB, method, url string, headers map[string]string, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

// send is roundTrip for an answer the test reads as it comes, a stream's: its body is closed
// when the test ends, if the test has not closed it before.
func send(t testing.TB, method, url string, headers map[string]string, body string) *http.Response {
	t.Helper()
	resp := roundTrip(t, method, url, headers, body)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// do sends one request and returns the answer with its whole body read. It also checks what
// every error answer of charond's must be: JSON.
func do(t testing.TB, method, url string, headers map[string]string, body string) (*http.Response, []byte) {
	t.Helper()
	resp := roundTrip(t, method, url, headers, body)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, url, err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode >= 400 && ct != "application/json" {
		t.Errorf("%s %s: error answer %d has Content-Type %q, want application/json; body %.300q", method, url, resp.StatusCode, ct, raw)
	}
	return resp, raw
}

// get fetches url and returns the body of its answer, which must be a 200.
func get(t testing.TB, url string) []byte {
	t.Helper()
	resp, raw := do(t, "GET", url, nil, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200; body %.300q", url, resp.StatusCode, raw)
	}
	return raw
}

// doJSON is do for an answer that must be a JSON object, which it decodes.
func doJSON(t testing.TB, method, url string, headers map[string]string, body string) (int, map[string]any) {
	t.Helper()
	resp, raw := do(t, method, url, headers, body)
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("%s %s: answer %d is not a JSON object: %v: %.300q", method, url, resp.StatusCode, err, raw)
	}
	return resp.StatusCode, got
}

// getJSON fetches a URL and decodes its JSON answer, returning the status too.
func getJSON(t testing.TB, url string) (int, map[string]any) {
	t.Helper()
	return doJSON(t, "GET", url, nil, "")
}

// contentType is the headers of a request with that Content-Type, or none for "".
func contentType(ct string) map[string]string {
	if ct == "" {
		return nil
	}
	return map[string]string{"Content-Type": ct}
}

// wantError checks that an answer is exactly {"error": "..."} in JSON with the status, valid
// UTF-8 whatever the request held, and that the message contains want. It returns the message.
func wantError(t testing.TB, resp *http.Response, raw []byte, status int, want string) string {
	t.Helper()
	if got := resp.StatusCode; got != status {
		t.Errorf("status = %d, want %d; body %.300q", got, status, raw)
	}
	if got, want := resp.Header.Get("Content-Type"), "application/json"; got != want {
		t.Errorf("Content-Type = %q, want %q; body %.300q", got, want, raw)
	}
	if !utf8.Valid(raw) {
		t.Errorf("answer is not valid UTF-8: %.300q", raw)
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("error body is not JSON: %v: %.300q", err, raw)
	}
	msg, ok := body["error"].(string)
	if !ok || len(body) != 1 || msg == "" {
		t.Fatalf("error body = %.300s, want exactly {\"error\": \"...\"}", raw)
	}
	if !strings.Contains(msg, want) {
		t.Errorf("error %q does not contain %q", msg, want)
	}
	return msg
}

// sseEvent is one event of a stream, as a client sees it.
type sseEvent struct {
	ID        string    // the event's own id field, "" if it has none (a browser would carry the last one over)
	Event     string    // its type; "message" when it has no event field
	Data      string    // its data fields, joined by newlines
	DataLines int       // how many data fields made up Data
	Retry     int64     // the reconnection time set in its block, in ms; -1 if none
	At        time.Time // when the client read it
}

// The two kinds of error sseReader.next returns besides io.EOF and the reader's own: a stream
// that breaks the rules, and one that ends in the middle of a line or an event.
var (
	errSSEFormat    = errors.New("not a valid event stream")
	errSSETruncated = errors.New("event stream cut short")
)

// sseReader parses an event stream by the rules of the WHATWG HTML standard, "Server-sent
// events: Interpreting an event stream": lines end at CRLF, LF or CR; a line starting with ':'
// is a comment; "field: value" loses one space before the value; a blank line dispatches the
// event if it has data. Where a browser would quietly ignore or repair something, this parser
// is strict and fails with errSSEFormat instead: invalid UTF-8 (a browser decodes it with
// replacement), a field other than id, event, data and retry (a leading BOM shows up as one),
// an id holding NUL or a retry that is not digits (both ignored by browsers), and an event
// field without data (dropped). A stream that ends in the middle of a line or an event (which
// a browser discards) fails with errSSETruncated.
//
// The same parser reads the tests' live streams (openStream) and checks the encoders' frames
// byte for byte (FuzzSSEEncoding), so every stream a test reads is held to these rules.
type sseReader struct {
	sc      *bufio.Scanner
	afterCR bool // the last line ended at a CR: an LF right after it is part of that line end
}

func newSSEReader(r io.Reader) *sseReader {
	s := &sseReader{sc: bufio.NewScanner(r)}
	// A log line is kept up to 64 KiB, which JSON escapes can make six times longer.
	s.sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	s.sc.Split(s.splitLine)
	return s
}

// splitLine is the bufio.SplitFunc for SSE lines. A line that ends at a CR is returned at once,
// without waiting to see whether an LF follows: that LF, when it comes, is skipped.
func (s *sseReader) splitLine(data []byte, atEOF bool) (int, []byte, error) {
	skip := 0
	if s.afterCR && len(data) > 0 {
		s.afterCR = false
		if data[0] == '\n' {
			skip = 1
		}
	}
	i := bytes.IndexAny(data[skip:], "\r\n")
	if i < 0 {
		if atEOF && len(data) > skip {
			return 0, nil, fmt.Errorf("%w: the stream ends inside the line %.100q", errSSETruncated, data[skip:])
		}
		return skip, nil, nil
	}
	end := skip + i
	s.afterCR = data[end] == '\r'
	return end + 1, data[skip:end], nil
}

// next returns the next event. At the end of a stream that ends between events it returns
// io.EOF.
func (s *sseReader) next() (sseEvent, error) {
	ev := sseEvent{Retry: -1}
	var data []string
	pending := false // a field has been seen since the last dispatch
	for s.sc.Scan() {
		line := s.sc.Text()
		if !utf8.ValidString(line) {
			return sseEvent{}, fmt.Errorf("%w: the line %q is not valid UTF-8", errSSEFormat, line)
		}
		if line == "" {
			if len(data) > 0 {
				if ev.Event == "" {
					ev.Event = "message"
				}
				ev.Data, ev.DataLines, ev.At = strings.Join(data, "\n"), len(data), time.Now()
				return ev, nil
			}
			if ev.Event != "" {
				return sseEvent{}, fmt.Errorf("%w: event %q has no data, so it is never dispatched", errSSEFormat, ev.Event)
			}
			ev, data, pending = sseEvent{Retry: -1}, nil, false
			continue
		}
		if line[0] == ':' {
			continue
		}
		pending = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.Event = value
		case "data":
			data = append(data, value)
		case "id":
			if strings.ContainsRune(value, 0) {
				return sseEvent{}, fmt.Errorf("%w: id %q holds NUL", errSSEFormat, value)
			}
			ev.ID = value
		case "retry":
			ms, err := strconv.ParseInt(value, 10, 64)
			if err != nil || strings.Trim(value, "0123456789") != "" {
				return sseEvent{}, fmt.Errorf("%w: retry %q is not a number of milliseconds", errSSEFormat, value)
			}
			ev.Retry = ms
		default:
			return sseEvent{}, fmt.Errorf("%w: unknown field %q in the line %.100q", errSSEFormat, field, line)
		}
	}
	if err := s.sc.Err(); err != nil {
		return sseEvent{}, err
	}
	if pending {
		return sseEvent{}, fmt.Errorf("%w: the stream ends inside an event, with no blank line after its last field", errSSETruncated)
	}
	return sseEvent{}, io.EOF
}

// parseSSE parses a whole event stream, which must end between two events.
func parseSSE(stream []byte) ([]sseEvent, error) {
	r := newSSEReader(bytes.NewReader(stream))
	var evs []sseEvent
	for {
		ev, err := r.next()
		if errors.Is(err, io.EOF) {
			return evs, nil
		}
		if err != nil {
			return nil, err
		}
		evs = append(evs, ev)
	}
}

// openStream connects to a stream and returns its events; headers may set Last-Event-ID. The
// channel is closed when the stream ends, or when it stops being an event stream by the
// rules of sseReader, which fails the test when it ends. An answer other than a 200 has no
// events.
func openStream(t testing.TB, url string, headers map[string]string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	h := map[string]string{"Accept": "text/event-stream"}
	for k, v := range headers {
		h[k] = v
	}
	resp := roundTrip(t, "GET", url, h, "")
	events := make(chan sseEvent, 1024)
	stop := make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		// Ends at the end of the stream, or when the test ends: the cleanup below closes stop
		// and the body, so that neither a read nor a send can block it.
		defer close(events)
		if resp.StatusCode != http.StatusOK {
			ended <- nil
			return
		}
		r := newSSEReader(resp.Body)
		for {
			ev, err := r.next()
			if err != nil {
				ended <- err
				return
			}
			select {
			case events <- ev:
			case <-stop:
				ended <- nil
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		resp.Body.Close()
		// A stream cut short by charond's end or the test's is no fault of the stream's.
		if err := <-ended; errors.Is(err, errSSEFormat) {
			t.Errorf("stream %s: %v", url, err)
		}
	})
	return resp, events
}

// collect reads a stream's events up to and including `completed`, or up to the end of a
// stream that ends without it. It fails the test if the stream ends without sending any
// event, so that a caller may take the last one, or if it neither completes nor ends.
func collect(t testing.TB, events <-chan sseEvent) []sseEvent {
	t.Helper()
	var all []sseEvent
	waitFor(t, "the stream to complete or end", func() (bool, string) {
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					return true, ""
				}
				all = append(all, ev)
				if ev.Event == "completed" {
					return true, ""
				}
			default:
				if len(all) == 0 {
					return false, "no event yet"
				}
				return false, fmt.Sprintf("%d events, the last %+v", len(all), all[len(all)-1])
			}
		}
	})
	if len(all) == 0 {
		t.Fatal("the stream ended without sending any event")
	}
	return all
}

// collectCompleted is collect for a stream that must run its whole course: it fails the test
// unless the stream opened with `connected` and ended with `completed`. The events in between
// are all[1:len(all)-1].
func collectCompleted(t testing.TB, events <-chan sseEvent) []sseEvent {
	t.Helper()
	all := collect(t, events)
	if first, last := all[0], all[len(all)-1]; len(all) < 2 || first.Event != "connected" || last.Event != "completed" {
		t.Fatalf("stream of %d events from %+v to %+v, want it to open with connected and end with completed", len(all), first, last)
	}
	return all
}

// logLines extracts the log events' ids and line texts, checking that ids count up from first.
func logLines(t testing.TB, events []sseEvent, first int) []string {
	t.Helper()
	var lines []string
	for _, ev := range events {
		if ev.Event != "log" {
			continue
		}
		want := strconv.Itoa(first + len(lines))
		if ev.ID != want {
			t.Fatalf("log event id = %s, want %s (lost or repeated line)", ev.ID, want)
		}
		var d struct{ Line string }
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
			t.Fatalf("log data is not JSON: %v: %q", err, ev.Data)
		}
		lines = append(lines, d.Line)
	}
	return lines
}
