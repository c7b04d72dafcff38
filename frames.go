package main

import (
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// streamKind names one of a job's two streams the same way everywhere: the suffix of its file
// under logs/, the SSE event name of its records, and the word its notices use.
type streamKind struct {
	file  string // logs/ID.<file>
	event string // the "event:" field of every record
	noun  string // as in "Connected to log stream for job ..."
}

var (
	logStream    = streamKind{file: "log", event: "log", noun: "log"}
	eventsStream = streamKind{file: "events", event: "job_event", noun: "event"}
)

// This file builds the bytes both halves of a job's streams share: the JSON payload of a log
// line, as the log file stores it and the stream's data field carries it, and the SSE frame
// of an event, built once when the event is appended and sent as is to every subscriber.

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
