package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// eventLog is one stream of a job (its output lines, or its events): an append-only sequence
// of events numbered from 1, kept in a file with one JSON payload a line, plus a window of
// the newest events in memory, already encoded as SSE frames.
//
// The writer (the job's pipe readers, or its status changes) writes each batch to the file
// before any client can see it, so a line a client was shown survives a crash of charond.
// Readers never wait for the writer's disk I/O: they take only mu, which guards memory.
// A reader that is behind the window, a late client or any client of an old job, reads its
// events back from the file; so memory stays bounded whatever a log's size.
//
// A file is open only while it is used: for appending while the job runs, and for each read
// from disk. Thousands of kept jobs hold no file descriptors.
type eventLog struct {
	kind streamKind // which of the job's streams this is
	path string     // the file; it may not exist until the first append
	// onFault, when set, hears of every failed write, so the store can stop taking jobs.
	onFault func(error)

	writeMu sync.Mutex // serializes appends, so the file and the ids agree; held across the file write
	w       *os.File   // the append handle while the job writes, else nil; guarded by writeMu
	// exists says the file was there when the log was opened, or has been created since;
	// guarded by writeMu. A log whose file is new creates it with O_EXCL, so that a file
	// planted under its name is refused rather than written through.
	exists bool
	// deferred holds the lines of events published before the file exists, written at the head
	// of the file by the first append; guarded by writeMu. Only an event that can be rebuilt
	// from the job's saved record goes here (a queued job's "queued" event), so creating a
	// file, the slowest step of accepting a job, waits until the job runs.
	deferred []byte
	// sealed is set by flush, once the job has ended: appends fail after it; guarded by writeMu.
	sealed bool

	mu sync.Mutex // guards the fields below; never held across I/O
	// base is the id before the file's first event: 0 for a job's logs, which are never cut;
	// the all-jobs feed drops its oldest events and keeps numbering on (see trim).
	base    int
	count   int           // events in the file; the last id is base+count
	size    int64         // bytes of whole lines in the file
	sparse  []int64       // sparse[k] is the file offset of event base+k*sparseEvery+1
	window  []record      // the newest events: ids base+count-len(window)+1 .. base+count
	end     *streamEnd    // set once, when nothing more will be appended
	changed chan struct{} // closed, and replaced, whenever events are appended or the log ends
	subs    map[*subscriber]struct{}
	failure error // the first write error; appends fail after it
}

// record is one event, encoded once as a complete SSE frame and shared by every subscriber;
// data is the JSON payload inside frame.
type record struct {
	frame []byte
	data  []byte
}

// streamEnd is what the closing `completed` event reports about the job.
type streamEnd struct {
	Status   Status
	ExitCode *int
}

// subscriber is one client streaming a log. It is tracked for counting; it is woken through
// the log's changed channel, so an append costs the same whatever the number of subscribers.
// (It must not be an empty struct: pointers to zero-size values may all be equal, and then
// every subscriber would be the same map key.)
type subscriber struct {
	joined time.Time // when the client connected
}

const (
	// windowSize is how many of the newest events stay in memory for live subscribers. At
	// a typical 150 bytes a frame it is about 600 KiB a running job.
	windowSize = 4096
	// sparseEvery is how often the file offset of an event is remembered: reading from the
	// middle of a file skips at most this many lines. A million-line log costs 32 KiB.
	sparseEvery = 256
	// readBatch bounds how many records a subscriber copies per turn, so one flush stays small.
	readBatch = 1024
)

// errLogClosed is returned by appends after the job has ended.
var errLogClosed = errors.New("log is closed")

// openEventLog indexes the file at path, if it exists. A torn last line, left by a crash in
// the middle of a write, is cut off, and its length returned in torn.
func openEventLog(path string, kind streamKind) (l *eventLog, torn int64, err error) {
	l = &eventLog{kind: kind, path: path, subs: make(map[*subscriber]struct{}), changed: make(chan struct{})}
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return l, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	l.exists = true
	if torn, err = l.index(f); err != nil {
		return nil, 0, fmt.Errorf("index %s: %w", path, err)
	}
	return l, torn, nil
}

// index counts the file's whole lines and records their sparse offsets. A partial last line
// is cut off and its length returned.
func (l *eventLog) index(f *os.File) (torn int64, err error) {
	buf := make([]byte, 64<<10)
	var pos, lineStart int64 // the file offsets of buf[0] and of the line being read
	for {
		n, rerr := f.Read(buf)
		for i := 0; i < n; {
			j := bytes.IndexByte(buf[i:n], '\n')
			if j < 0 {
				break
			}
			l.noteLine(lineStart)
			i += j + 1
			lineStart = pos + int64(i)
		}
		pos += int64(n)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return 0, rerr
		}
	}
	l.size = lineStart
	if torn = pos - lineStart; torn > 0 {
		if err := f.Truncate(lineStart); err != nil {
			return 0, err
		}
	}
	return torn, nil
}

func (l *eventLog) noteLine(off int64) {
	if l.count%sparseEvery == 0 {
		l.sparse = append(l.sparse, off)
	}
	l.count++
}

// appendData writes one event per JSON payload to the file, then publishes them to the
// subscribers. Payloads are copied, so the caller may reuse them.
func (l *eventLog) appendData(payloads ...[]byte) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	closed, failure, base := l.end != nil, l.failure, l.size
	l.mu.Unlock()
	closed = closed || l.sealed
	switch {
	case closed:
		return errLogClosed
	case failure != nil:
		return failure
	}
	var buf bytes.Buffer
	buf.Write(l.deferred)
	for _, p := range payloads {
		buf.Write(p)
		buf.WriteByte('\n')
	}
	err := l.openForAppend()
	if err == nil {
		_, err = l.w.Write(buf.Bytes())
	}
	if err != nil {
		err = fmt.Errorf("write %s: %w", l.path, err)
		l.mu.Lock()
		l.failure = err
		l.mu.Unlock()
		l.noteFault(err)
		return err
	}
	l.deferred = nil

	l.mu.Lock()
	defer l.mu.Unlock()
	l.publishLocked(base, payloads...)
	l.wakeLocked()
	return nil
}

// appendDeferred publishes one event without writing it yet: the next append writes it first.
// The caller must be able to rebuild the event from durable state after a crash.
func (l *eventLog) appendDeferred(payload []byte) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.deferred = append(append(l.deferred, payload...), '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	l.publishLocked(l.size, payload)
	l.wakeLocked()
}

// publishLocked adds events to the memory index and window, as if written from offset off;
// mu is held.
func (l *eventLog) publishLocked(off int64, payloads ...[]byte) {
	for _, p := range payloads {
		if l.count%sparseEvery == 0 {
			l.sparse = append(l.sparse, off)
		}
		off += int64(len(p)) + 1
		l.count++
		l.window = append(l.window, encodeRecord(l.base+l.count, l.kind.event, p))
	}
	l.size = off
	if len(l.window) >= 2*windowSize {
		// Copy the newest half so the older frames can be collected.
		l.window = append([]record(nil), l.window[len(l.window)-windowSize:]...)
	}
}

// noteFault passes a failed write on to onFault, if set.
func (l *eventLog) noteFault(err error) {
	if l.onFault != nil && err != nil {
		l.onFault(err)
	}
}

// openForAppend opens the file for appending if it is not open, creating it if it is new;
// writeMu is held.
func (l *eventLog) openForAppend() error {
	if l.w != nil {
		return nil
	}
	flag := os.O_WRONLY | os.O_APPEND | syscall.O_NOFOLLOW
	if !l.exists {
		flag |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(l.path, flag, 0o600)
	if err != nil {
		return err
	}
	l.w, l.exists = f, true
	return nil
}

// closeWriter closes the append handle, if open; writeMu is held.
func (l *eventLog) closeWriter() error {
	if l.w == nil {
		return nil
	}
	err := l.w.Close()
	l.w = nil
	return err
}

// flush writes the log to disk and closes its append handle, once nothing more will be
// appended: appends fail afterwards. It is the I/O half of ending a log, done before
// markComplete so that markComplete can happen under the job's lock.
func (l *eventLog) flush() error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.sealed = true
	err := l.sync()
	if cerr := l.closeWriter(); err == nil {
		err = cerr
	}
	l.noteFault(err)
	return err
}

// markComplete marks the log complete and wakes every subscriber so they send `completed`.
// It does no I/O. The window stays for the subscribers still reading it, and goes with the last of them
// (see unsubscribe), so a crowd that was following the job does not fall back to the file
// all at once.
func (l *eventLog) markComplete(end streamEnd) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.end == nil {
		l.end = &end
		if len(l.subs) == 0 {
			l.window = nil
		}
		l.wakeLocked()
	}
}

// sync flushes the file to disk, through the append handle or, when it is closed, through a
// new one (fsync flushes a file's data whatever descriptor wrote it); writeMu is held.
func (l *eventLog) sync() error {
	if l.w != nil {
		return l.w.Sync()
	}
	f, err := os.OpenFile(l.path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil // nothing was ever written
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// markEnded sets the end of a log loaded from disk for a job that had already ended.
func (l *eventLog) markEnded(end streamEnd) {
	l.mu.Lock()
	l.end = &end
	l.mu.Unlock()
}

// close closes the append handle, if open: for a job that is deleted, or at shutdown. Like
// every close in charond, it releases what is held and nothing else: ending a log is flush
// and markComplete.
func (l *eventLog) close() error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	return l.closeWriter()
}

// wakeLocked wakes every subscriber waiting for a change.
func (l *eventLog) wakeLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// readResult is what a subscriber gets from one read.
type readResult struct {
	recs    []record        // the events after the one asked for, at most readBatch
	end     *streamEnd      // set when the job has ended and nothing is left to read
	changed <-chan struct{} // closed when there is more to read: wait on it when recs is empty
}

// read returns the events after id `after`, or from the oldest one kept if that is later.
// Events still in the window are shared frames; older ones are read back from the file.
func (l *eventLog) read(after int) (readResult, error) {
	l.mu.Lock()
	after = max(after, l.base)
	last := l.base + l.count
	if after >= last {
		res := readResult{end: l.end, changed: l.changed}
		l.mu.Unlock()
		return res, nil
	}
	if first := last - len(l.window) + 1; after+1 >= first {
		recs := l.window[after+1-first:]
		if len(recs) > readBatch {
			recs = recs[:readBatch]
		}
		l.mu.Unlock()
		return readResult{recs: recs}, nil
	}
	l.mu.Unlock()
	recs, err := l.readBack(after, readBatch)
	if errors.Is(err, os.ErrNotExist) {
		// A trim replaced the file between the lookup and the open: look again in the new one.
		recs, err = l.readBack(after, readBatch)
	}
	return readResult{recs: recs}, err
}

// readBack reads up to n events after id `after`, or from the oldest one kept, from the file.
func (l *eventLog) readBack(after, n int) ([]record, error) {
	l.mu.Lock()
	after = max(after, l.base)
	k := (after - l.base) / sparseEvery
	if k >= len(l.sparse) {
		l.mu.Unlock()
		return nil, nil // nothing after it
	}
	path, start, startID, size := l.path, l.sparse[k], l.base+k*sparseEvery+1, l.size
	l.mu.Unlock()
	return l.readFile(path, start, startID, size, after, n)
}

// readFile reads up to n events after id `after` from the file at path, starting from the
// known offset of event startID and reading no further than size.
func (l *eventLog) readFile(path string, start int64, startID int, size int64, after, n int) ([]record, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// A small buffer: many late clients may read at once, each with its own.
	r := bufio.NewReaderSize(io.NewSectionReader(f, start, size-start), 16<<10)
	var recs []record
	for id := startID; len(recs) < n; id++ {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if id > after {
			recs = append(recs, encodeRecord(id, l.kind.event, line[:len(line)-1]))
		}
	}
	return recs, nil
}

// contents returns a reader of every event so far as JSON lines, one payload a line. It
// reads the file, so a reader of a long log never holds the lock. The caller closes it.
func (l *eventLog) contents() (io.ReadCloser, error) {
	l.writeMu.Lock()
	deferred := l.deferred
	l.writeMu.Unlock()
	if deferred != nil {
		// Nothing is in the file yet: the deferred events are all there is.
		return io.NopCloser(bytes.NewReader(deferred)), nil
	}
	l.mu.Lock()
	path, size := l.path, l.size
	l.mu.Unlock()
	if size == 0 {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, 0, size), f}, nil
}

// idRange is the ids the log holds, first to last: first > last when it holds none.
func (l *eventLog) idRange() (first, last int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.base + 1, l.base + l.count
}

// length is the id of the last event: for a job's logs, the number of events appended so far.
func (l *eventLog) length() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.base + l.count
}

func (l *eventLog) subscribe() *subscriber {
	s := &subscriber{joined: time.Now()}
	l.mu.Lock()
	l.subs[s] = struct{}{}
	l.mu.Unlock()
	return s
}

func (l *eventLog) unsubscribe(s *subscriber) {
	l.mu.Lock()
	delete(l.subs, s)
	if l.end != nil && len(l.subs) == 0 {
		l.window = nil // the job has ended: later readers read the file
	}
	l.mu.Unlock()
}

// subscriberCount is the number of clients streaming this log right now.
func (l *eventLog) subscriberCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.subs)
}

// trim drops the events up to id `through` and keeps numbering the others as they were. The
// kept events are copied to a new file at newPath, which is synced, and the log moves to it;
// the old file is then removed, and its directory synced. Appends wait meanwhile; readers do
// not: one that looked up the old file just before the move finds it gone and looks again
// (see read). A crash leaves the old file, the new one, or both, each whole: the caller picks
// one at start (see openFeed).
func (l *eventLog) trim(through int, newPath string) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	through = min(through, l.base+l.count)
	oldPath, base, sparse, size := l.path, l.base, l.sparse, l.size
	l.mu.Unlock()
	if through <= base || len(l.deferred) > 0 {
		return nil // nothing to drop (and a log with deferred events is a job's, never trimmed)
	}
	if err := l.closeWriter(); err != nil {
		return err
	}
	k := (through - base) / sparseEvery
	from, err := l.offsetAfter(oldPath, sparse[min(k, len(sparse)-1)], base+min(k, len(sparse)-1)*sparseEvery+1, through, size)
	if err == nil {
		err = copyTail(oldPath, newPath, from, size)
	}
	var idx *eventLog
	if err == nil {
		idx, err = indexFile(newPath)
	}
	if err != nil {
		l.noteFault(err)
		return fmt.Errorf("trim %s: %w", oldPath, err)
	}
	l.mu.Lock()
	l.path, l.base, l.count, l.sparse, l.size = newPath, through, idx.count, idx.sparse, idx.size
	l.mu.Unlock()
	l.exists = true
	if err := os.Remove(oldPath); err != nil {
		return fmt.Errorf("trim: remove %s: %w", oldPath, err)
	}
	return syncDir(filepath.Dir(newPath))
}

// offsetAfter is the file offset of the first event after id `through`, found by reading
// lines from start, the offset of event startID, up to size.
func (l *eventLog) offsetAfter(path string, start int64, startID, through int, size int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := bufio.NewReader(io.NewSectionReader(f, start, size-start))
	off := start
	for id := startID; id <= through; id++ {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", path, err)
		}
		off += int64(len(line))
	}
	return off, nil
}

// copyTail writes the bytes of src from offset `from` up to size into a new file dst (see
// writeNewFile).
func copyTail(src, dst string, from, size int64) error {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeNewFile(dst, func(w io.Writer) error {
		_, err := io.Copy(w, io.NewSectionReader(in, from, size-from))
		return err
	})
}

// writeNewFile makes dst whole and durable, or not at all: write fills dst.tmp, created with
// O_EXCL and never through a link, which is synced, renamed to dst, and its directory synced.
func writeNewFile(dst string, write func(io.Writer) error) error {
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	err = write(out)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(dst))
}

// indexFile counts the whole lines of the file at path and notes their sparse offsets, as
// openEventLog does, into a bare eventLog whose count, sparse and size the caller takes.
func indexFile(path string) (*eventLog, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	idx := &eventLog{}
	// The file was copied whole lines only, so index finds no torn line to cut.
	_, err = idx.index(f)
	return idx, err
}

// syncDir makes the names in dir durable: a file created or renamed there survives a crash
// only once its directory is synced.
func syncDir(dir string) error {
	d, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// repair takes a log whose writes failed back into use, for the all-jobs feed, which outlives
// any one fault: a file cut short by a failed write is cut back to its last whole event, and a
// file that is gone, or shorter than what was published, is written anew from the events in
// memory, at pathFor(the id before the first of them); older ones are lost with the old file.
// Ids stay as they were. Appends fail until it has succeeded.
func (l *eventLog) repair(pathFor func(base int) string) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.closeWriter() // a descriptor of the old file, perhaps of a deleted one
	l.mu.Lock()
	path, size := l.path, l.size
	l.mu.Unlock()
	if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && fi.Size() >= size {
		if err := os.Truncate(path, size); err != nil {
			return err
		}
	} else if err := l.rewriteFromWindow(pathFor); err != nil {
		return err
	}
	l.mu.Lock()
	l.failure = nil
	l.mu.Unlock()
	return nil
}

// rewriteFromWindow writes the events in memory to a new file and moves the log to it;
// writeMu is held.
func (l *eventLog) rewriteFromWindow(pathFor func(base int) string) error {
	l.mu.Lock()
	window, oldPath := l.window, l.path
	base := l.base + l.count - len(window)
	l.mu.Unlock()
	var buf bytes.Buffer
	for _, r := range window {
		buf.Write(r.data)
		buf.WriteByte('\n')
	}
	newPath := pathFor(base)
	if err := writeNewFile(newPath, func(w io.Writer) error { _, err := w.Write(buf.Bytes()); return err }); err != nil {
		return err
	}
	idx, err := indexFile(newPath)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.path, l.base, l.count, l.sparse, l.size = newPath, base, idx.count, idx.sparse, idx.size
	l.mu.Unlock()
	l.exists = true
	if oldPath != newPath {
		if err := os.Remove(oldPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return syncDir(filepath.Dir(newPath))
}

// scan calls fn with the id and JSON payload of each event after id `after`, in order, read
// from the file as it is now, until fn returns false. It is for reading a whole log quickly
// (a search): it makes no frames, and holds the lock only to look up where to start.
func (l *eventLog) scan(after int, fn func(id int, payload []byte) bool) error {
	l.mu.Lock()
	after = max(after, l.base)
	k := (after - l.base) / sparseEvery
	if k >= len(l.sparse) {
		l.mu.Unlock()
		return nil
	}
	path, start, id, size := l.path, l.sparse[k], l.base+k*sparseEvery+1, l.size
	l.mu.Unlock()
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// A large buffer: a scan reads the file from end to end, and is one of few at a time.
	r := bufio.NewReaderSize(io.NewSectionReader(f, start, size-start), 256<<10)
	for ; ; id++ {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer (a long output line, JSON-escaped): read it whole.
			rest, rerr := r.ReadBytes('\n')
			line, err = append(append([]byte(nil), line...), rest...), rerr
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if id > after && !fn(id, line[:len(line)-1]) {
			return nil
		}
	}
}
