package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"
)

// This file is the client side of every stream: an SSE stream opened over a raw TCP
// connection, and a minimal SSE reader. net/http's client would cost a transport, a response
// and a body goroutine per subscriber; 10,000 subscribers need something smaller.

// sseEvent is one dispatched Server-Sent Event. Data is only valid until the next call to next.
type sseEvent struct {
	ID    int  // the id field, if HasID
	HasID bool //
	Event string
	Data  []byte
}

// sseReader reads Server-Sent Events: fields up to a blank line make an event; comments
// (": ping") and retry are skipped; several data lines join with "\n".
type sseReader struct {
	r    *bufio.Reader
	line []byte // a line longer than r's buffer, assembled
	data []byte // the event being read
}

func newSSEReader(r io.Reader, size int) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, size)}
}

// readLine returns the next line without its end (LF or CRLF); it is valid until the next call.
func (s *sseReader) readLine() ([]byte, error) {
	line, err := s.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		s.line = append(s.line[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = s.r.ReadSlice('\n')
			s.line = append(s.line, line...)
		}
		line = s.line
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF // a stream must not end inside a line
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// next returns the next event that carries data, or the read error (io.EOF at a clean end).
func (s *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	s.data = s.data[:0]
	hasData := false
	for {
		line, err := s.readLine()
		if err != nil {
			return sseEvent{}, err
		}
		if len(line) == 0 {
			if hasData {
				ev.Data = s.data
				return ev, nil
			}
			ev = sseEvent{} // an event with no data is not dispatched
			continue
		}
		if line[0] == ':' {
			continue // a comment, such as charond's ": ping"
		}
		field, value, found := bytes.Cut(line, []byte{':'})
		if found && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(field) {
		case "data":
			if hasData {
				s.data = append(s.data, '\n')
			}
			s.data = append(s.data, value...)
			hasData = true
		case "event":
			ev.Event = eventName(value)
		case "id":
			if n, err := strconv.Atoi(string(value)); err == nil {
				ev.ID, ev.HasID = n, true
			}
		}
	}
}

// eventName returns the event type as a string, without allocating for the names charond
// sends: a 10,000-subscriber run reads millions of them.
func eventName(b []byte) string {
	for _, name := range [...]string{"log", "completed", "connected", "job_event"} {
		if string(b) == name {
			return name
		}
	}
	return string(b)
}

// rawStream is one SSE stream read from a raw TCP connection.
type rawStream struct {
	conn net.Conn
	sse  *sseReader
}

// streamBufSize is the size of each of a stream's two read buffers (the connection's and the
// SSE reader's): a charond log frame is about 150 bytes, so 2 KiB holds a dozen, and 10,000
// subscribers cost 40 MiB of buffers.
const streamBufSize = 2 << 10

// errStatus is a stream refused with an HTTP status other than 200.
type errStatus struct {
	code int
	body string
}

func (e *errStatus) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.body) }

// openStream connects to addr, asks for path, and reads the response header. The stream's
// reads fail once deadline passes, which bounds every reading loop.
func openStream(ctx context.Context, addr, path string, deadline time.Time) (*rawStream, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(deadline)
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nAccept: text/event-stream\r\nUser-Agent: charonbench\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, streamBufSize)
	body, err := readResponseHead(br)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &rawStream{conn: conn, sse: newSSEReader(body, streamBufSize)}, nil
}

// readResponseHead reads an HTTP/1.1 response's status line and headers from br and returns its
// body: de-chunked if the server chunks it (Go's server does, for a streamed response). A status
// other than 200 is an *errStatus with the start of the body.
func readResponseHead(br *bufio.Reader) (io.Reader, error) {
	status, err := br.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("read status line: %w", err)
	}
	proto, rest, _ := strings.Cut(strings.TrimSpace(status), " ")
	codeText, _, _ := strings.Cut(rest, " ")
	code, err := strconv.Atoi(codeText)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil {
		return nil, fmt.Errorf("not an HTTP/1 status line: %q", status)
	}
	chunked := false
	length := int64(-1)
	for i := 0; ; i++ {
		if i > 100 {
			return nil, errors.New("more than 100 header lines")
		}
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("read headers: %w", err)
		}
		line = strings.TrimSpace(line)
		if line == "" {
			break
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
		case "content-length":
			length, _ = strconv.ParseInt(value, 10, 64)
		}
	}
	var body io.Reader = br
	if chunked {
		body = httputil.NewChunkedReader(br)
	} else if length >= 0 {
		body = io.LimitReader(br, length)
	}
	if code != 200 {
		msg, _ := io.ReadAll(io.LimitReader(body, 512))
		return nil, &errStatus{code: code, body: strings.TrimSpace(string(msg))}
	}
	return body, nil
}

// benchLinePrefix starts every line the fake runner prints on a schedule: "cb SEQ UNIXNANO".
const benchLinePrefix = "cb "

// parseBenchData finds the runner's line in a log event's JSON payload,
// {"line":"cb SEQ UNIXNANO",...}, and returns its sequence number and write time. It does not
// decode the JSON: the runner's lines need no escaping, and 10,000 subscribers decode millions.
func parseBenchData(data []byte) (seq int64, ts int64, ok bool) {
	const key = `"line":"` + benchLinePrefix
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0, 0, false
	}
	rest := data[i+len(key):]
	seq, rest, ok = parseUint(rest)
	if !ok || len(rest) == 0 || rest[0] != ' ' {
		return 0, 0, false
	}
	ts, rest, ok = parseUint(rest[1:])
	if !ok || len(rest) == 0 || rest[0] != '"' {
		return 0, 0, false
	}
	return seq, ts, true
}

// parseUint reads the decimal digits at the start of b.
func parseUint(b []byte) (n int64, rest []byte, ok bool) {
	i := 0
	for ; i < len(b) && i < 19 && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int64(b[i]-'0')
	}
	return n, b[i:], i > 0
}
