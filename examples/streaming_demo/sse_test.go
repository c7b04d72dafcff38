package main

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// readAll parses input to its end and returns the events and the parser's final state.
func readAll(t *testing.T, r io.Reader) ([]sseEvent, *sseReader) {
	t.Helper()
	p := &sseReader{r: bufio.NewReader(r)}
	var events []sseEvent
	for {
		ev, err := p.next()
		if errors.Is(err, io.EOF) {
			return events, p
		}
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		events = append(events, ev)
	}
}

func TestSSEReader(t *testing.T) {
	tests := []struct {
		name       string
		input      string
		want       []sseEvent
		wantLastID string
		wantRetry  time.Duration
	}{
		{
			name:       "LF line ends",
			input:      "id: 1\nevent: log\ndata: {\"line\":\"a\"}\n\n",
			want:       []sseEvent{{Type: "log", Data: `{"line":"a"}`, ID: "1"}},
			wantLastID: "1",
		},
		{
			name:       "CRLF line ends",
			input:      "id: 1\r\nevent: log\r\ndata: a\r\n\r\n",
			want:       []sseEvent{{Type: "log", Data: "a", ID: "1"}},
			wantLastID: "1",
		},
		{
			name:       "CR line ends",
			input:      "id: 1\revent: log\rdata: a\r\r",
			want:       []sseEvent{{Type: "log", Data: "a", ID: "1"}},
			wantLastID: "1",
		},
		{
			name:  "mixed line ends",
			input: "data: a\r\ndata: b\rdata: c\n\r\ndata: d\n\r",
			want:  []sseEvent{{Type: "message", Data: "a\nb\nc"}, {Type: "message", Data: "d"}},
		},
		{
			name:  "multi-line data joined with LF",
			input: "event: log\ndata: first\ndata: second\ndata:\ndata: fourth\n\n",
			want:  []sseEvent{{Type: "log", Data: "first\nsecond\n\nfourth"}},
		},
		{
			name:  "comments are skipped",
			input: ": ping\n\n:another\ndata: x\n: in the middle\n\n",
			want:  []sseEvent{{Type: "message", Data: "x"}},
		},
		{
			name:  "only one space after the colon is stripped",
			input: "data:x\n\ndata:  y\n\ndata: a: b\n\n",
			want: []sseEvent{
				{Type: "message", Data: "x"},
				{Type: "message", Data: " y"},
				{Type: "message", Data: "a: b"},
			},
		},
		{
			name:  "a field without a colon has an empty value",
			input: "data\n\nevent\ndata: x\n\n",
			want:  []sseEvent{{Type: "message", Data: ""}, {Type: "message", Data: "x"}},
		},
		{
			name:       "an event without data is not dispatched but its id counts",
			input:      "event: completed\nid: 7\n\ndata: next\n\n",
			want:       []sseEvent{{Type: "message", Data: "next"}},
			wantLastID: "7",
		},
		{
			name:       "the last event ID persists across events",
			input:      "id: 3\ndata: a\n\ndata: b\n\n",
			want:       []sseEvent{{Type: "message", Data: "a", ID: "3"}, {Type: "message", Data: "b"}},
			wantLastID: "3",
		},
		{
			name:       "an empty id resets the last event ID",
			input:      "id: 3\ndata: a\n\nid\ndata: b\n\n",
			want:       []sseEvent{{Type: "message", Data: "a", ID: "3"}, {Type: "message", Data: "b"}},
			wantLastID: "",
		},
		{
			name:       "an id containing NUL is ignored",
			input:      "id: 3\ndata: a\n\nid: 4\x005\ndata: b\n\n",
			want:       []sseEvent{{Type: "message", Data: "a", ID: "3"}, {Type: "message", Data: "b"}},
			wantLastID: "3",
		},
		{
			name:      "retry in milliseconds",
			input:     "retry: 2500\n\ndata: x\n\n",
			want:      []sseEvent{{Type: "message", Data: "x"}},
			wantRetry: 2500 * time.Millisecond,
		},
		{
			name:      "a retry that is not all digits is ignored",
			input:     "retry: 1000\n\nretry: 5s\n\nretry: -1\n\nretry:\n\n",
			wantRetry: time.Second,
		},
		{
			name:  "unknown fields are ignored",
			input: "foo: bar\ndata: x\nDATA: y\n\n",
			want:  []sseEvent{{Type: "message", Data: "x"}},
		},
		{
			name:  "an event not finished by a blank line is dropped at the end",
			input: "data: a\n\ndata: b\n",
			want:  []sseEvent{{Type: "message", Data: "a"}},
		},
		{
			name:  "a leading byte order mark is skipped",
			input: "\uFEFFdata: x\n\n",
			want:  []sseEvent{{Type: "message", Data: "x"}},
		},
		{
			name:  "event type is reset after dispatch",
			input: "event: log\ndata: a\n\ndata: b\n\n",
			want:  []sseEvent{{Type: "log", Data: "a"}, {Type: "message", Data: "b"}},
		},
		{
			name:  "non-ASCII data passes through",
			input: "data: 📊 Processing item 1/15\n\n",
			want:  []sseEvent{{Type: "message", Data: "📊 Processing item 1/15"}},
		},
	}
	for _, tt := range tests {
		readers := map[string]func(string) io.Reader{
			"whole":       func(s string) io.Reader { return strings.NewReader(s) },
			"byte-a-time": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		}
		for how, reader := range readers {
			t.Run(tt.name+"/"+how, func(t *testing.T) {
				got, p := readAll(t, reader(tt.input))
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("events:\n got %q\nwant %q", got, tt.want)
				}
				if p.lastID != tt.wantLastID {
					t.Errorf("lastID = %q, want %q", p.lastID, tt.wantLastID)
				}
				if p.retry != tt.wantRetry {
					t.Errorf("retry = %v, want %v", p.retry, tt.wantRetry)
				}
			})
		}
	}
}

// A line that ends in CR must be returned at once: waiting to see whether an LF follows would
// hold an event back until the server sends something more, which may be 15 s later.
func TestSSEReaderDoesNotWaitAfterCR(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	// Both goroutines end by the time the deferred pw.Close has run: the write once the parser
	// has read it, the parser with the event or, if it is still waiting, with an error.
	go pw.Write([]byte("data: now\r\r"))
	p := &sseReader{r: bufio.NewReader(pr)}
	got := make(chan sseEvent, 1)
	go func() {
		ev, _ := p.next()
		got <- ev
	}()
	select {
	case ev := <-got:
		if ev.Data != "now" {
			t.Errorf("Data = %q, want %q", ev.Data, "now")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("next did not return the event ended by CR CR")
	}
}

func TestSSEReaderLineTooLong(t *testing.T) {
	input := "data: " + strings.Repeat("x", maxLineBytes) + "\n\n"
	p := &sseReader{r: bufio.NewReader(strings.NewReader(input))}
	if _, err := p.next(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("next = %v, want an error about the line's length", err)
	}
}
