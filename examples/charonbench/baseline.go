package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// This file is the latency benchmark's yardstick: the simplest SSE fan-out one can write. One
// goroutine reads a runner's stdout and encodes each line once as an SSE frame; each client
// has a buffered channel of frames, and its handler writes what is queued and flushes. It keeps
// no history, no file and no ids beyond a counter: whatever charond costs beyond this is the
// price of its durability, replay and resumption.

// baselineQueue is each client's channel capacity, in frames: like charond's in-memory window
// of 4096 events, room for seconds of backlog at any rate the benchmark uses. A client that
// falls this far behind is dropped.
const baselineQueue = 4096

// baseline is one fan-out of one runner's output to HTTP clients.
type baseline struct {
	addr   string
	ln     net.Listener
	srv    *http.Server
	runner *exec.Cmd

	mu      sync.Mutex // guards the fields below
	clients map[*baselineClient]struct{}
	ended   bool // the runner's output has ended: no more clients
	dropped int  // clients dropped for a full queue

	ready chan struct{} // closed when the runner prints "ready"
	done  chan struct{} // closed when every client has been sent the end and the runner reaped
}

type baselineClient struct {
	ch chan []byte // closed by the reader (its only sender) at the end or when dropping the client
}

// startBaseline serves /stream on a free loopback port and starts the runner (this program)
// with the given vars file. The runner's output is fanned out from the first line on; clients
// that connect later get only later lines, so callers connect them before opening the gate.
func startBaseline(varsPath string) (*baseline, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &baseline{addr: ln.Addr().String(), ln: ln, clients: make(map[*baselineClient]struct{}),
		ready: make(chan struct{}), done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stream", b.serveStream)
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go b.srv.Serve(ln) // ends when close shuts the server down

	b.runner = exec.Command(self, "-i", os.DevNull, "-e", "@"+varsPath, benchPlaybook)
	b.runner.Env = append(os.Environ(), runnerEnv+"=1", "PYTHONUNBUFFERED=1")
	b.runner.Stderr = os.Stderr
	stdout, err := b.runner.StdoutPipe()
	if err != nil {
		b.srv.Close()
		return nil, err
	}
	if err := b.runner.Start(); err != nil {
		b.srv.Close()
		return nil, err
	}
	go b.read(stdout) // ends at the runner's EOF, then reaps it and closes done
	return b, nil
}

// read is the single reader of the runner's output: each line becomes one frame, published to
// every client at once.
func (b *baseline) read(stdout io.Reader) {
	defer close(b.done)
	br := bufio.NewReaderSize(stdout, 64<<10)
	id := 0
	for {
		line, err := br.ReadSlice('\n')
		if err == nil {
			content := line[:len(line)-1]
			if id == 0 && string(content) == "ready" {
				close(b.ready)
			}
			id++
			b.publish(baselineFrame(id, content, time.Now()))
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintln(os.Stderr, "charonbench: baseline: read runner:", err)
			}
			break
		}
	}
	b.finish([]byte("id: " + strconv.Itoa(id) + "\nevent: completed\ndata: {\"status\":\"completed\"}\n\n"))
	b.runner.Wait()
}

// publish queues a frame for every client; a client whose queue is full is dropped.
func (b *baseline) publish(frame []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.clients {
		select {
		case c.ch <- frame:
		default:
			delete(b.clients, c)
			close(c.ch)
			b.dropped++
		}
	}
}

// finish sends the last frame to every client and closes their queues.
func (b *baseline) finish(frame []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ended = true
	for c := range b.clients {
		select {
		case c.ch <- frame:
		default:
			b.dropped++
		}
		close(c.ch)
		delete(b.clients, c)
	}
}

func (b *baseline) serveStream(w http.ResponseWriter, r *http.Request) {
	c := &baselineClient{ch: make(chan []byte, baselineQueue)}
	b.mu.Lock()
	if b.ended {
		b.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	b.clients[c] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.clients, c) // if still there; the reader closes c.ch only while it is
		b.mu.Unlock()
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	io.WriteString(w, "retry: 3000\nevent: connected\ndata: {\"message\":\"connected\"}\n\n")
	if rc.Flush() != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case f, ok := <-c.ch:
			if !ok {
				return
			}
			w.Write(f)
		drain:
			for {
				select {
				case f, ok := <-c.ch:
					if !ok {
						rc.Flush()
						return
					}
					w.Write(f)
				default:
					break drain
				}
			}
			if rc.Flush() != nil {
				return
			}
		}
	}
}

// close stops the server and the runner, if still running (it is our child: by its PID).
func (b *baseline) close() {
	select {
	case <-b.done:
	default:
		b.runner.Process.Kill()
		select {
		case <-b.done:
		case <-time.After(10 * time.Second):
		}
	}
	b.srv.Close()
}

// droppedClients is how many clients were dropped for falling baselineQueue frames behind.
func (b *baseline) droppedClients() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}

// baselineFrame encodes a log line as charond does: id, event and a JSON payload with the line,
// a timestamp and the stream.
func baselineFrame(id int, line []byte, at time.Time) []byte {
	f := make([]byte, 0, 96+len(line))
	f = append(f, "id: "...)
	f = strconv.AppendInt(f, int64(id), 10)
	f = append(f, "\nevent: log\ndata: {\"line\":"...)
	f = appendJSONString(f, line)
	f = append(f, ",\"timestamp\":\""...)
	f = at.UTC().AppendFormat(f, time.RFC3339Nano)
	f = append(f, "\",\"stream\":\"stdout\"}\n\n"...)
	return f
}

// appendJSONString appends s as a JSON string, escaping what JSON requires of ASCII; the
// runner's lines are ASCII.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
