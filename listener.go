package main

import (
	"bytes"
	"encoding/json"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// This file makes the few answers that net/http writes by itself, before any handler runs,
// JSON like every other answer: 431 for a request line or header block over
// -max-header-bytes, 400 for a request that does not parse, and the like. The server writes
// each of them in one Write to the connection, in a fixed plain-text form with no Date header,
// which no handler's answer has; that form is recognised and rewritten, nothing else is.

// plainHTTPError matches net/http's own error answer: a status line, the two headers it always
// sends, and a one-line body (the status again, or what is wrong).
var plainHTTPError = regexp.MustCompile(`\AHTTP/1\.1 ([1-5][0-9][0-9]) ([^\r\n]*)\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n([^\r\n]*)\z`)

// jsonErrorListener wraps a plain-HTTP listener's connections. (Under TLS the server writes
// these answers to the TLS connection itself, where they cannot be seen, so they stay plain.)
type jsonErrorListener struct{ net.Listener }

func (l jsonErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return jsonErrorConn{c}, nil
}

type jsonErrorConn struct{ net.Conn }

func (c jsonErrorConn) Write(p []byte) (int, error) {
	if !bytes.HasPrefix(p, []byte("HTTP/1.1 ")) {
		return c.Conn.Write(p)
	}
	m := plainHTTPError.FindSubmatch(p)
	if m == nil {
		return c.Conn.Write(p)
	}
	if _, err := c.Conn.Write(jsonHTTPError(string(m[1]), string(m[2]), string(m[3]))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// jsonHTTPError is the same answer with a JSON body. The status text may carry a detail
// ("Bad Request: missing required Host header"): the status line keeps the reason phrase,
// the body says it all.
func jsonHTTPError(code, status, body string) []byte {
	reason, _, _ := strings.Cut(status, ": ")
	msg := strings.TrimPrefix(body, code+" ")
	if code == "431" {
		msg = "request line or headers are larger than -max-header-bytes allows"
	}
	out, _ := json.Marshal(map[string]string{"error": msg})
	out = append(out, '\n')
	head := "HTTP/1.1 " + code + " " + reason + "\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(out)) + "\r\nConnection: close\r\n\r\n"
	return append([]byte(head), out...)
}
