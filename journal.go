package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// journalFile is what the journal needs of an open file. Every file the journal (and the
// store's probe) opens goes through journal.open, which tests swap to inject short writes,
// ENOSPC and fsync errors.
type journalFile interface {
	Write(p []byte) (int, error)
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
	Close() error
}

// openFunc opens a file as os.OpenFile does.
type openFunc func(name string, flag int, perm os.FileMode) (journalFile, error)

// openNoFollow opens a file, refusing to follow a symbolic link as its last element: a link
// planted in the data dir must not make charond write, or truncate, anywhere else.
func openNoFollow(name string, flag int, perm os.FileMode) (journalFile, error) {
	f, err := os.OpenFile(name, flag|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// journal is the append-only file of job records, with group commit.
//
// A failed write never leaves a torn record for the next one to be glued to. A failed or
// short write is cut back to the end of the last whole record. If that fails, or an fsync
// fails (after which Linux may have dropped the unwritten pages, so what the file holds is
// unknown), or the journal's path is found to name another file than the one written (it was
// deleted, or its directory was, and writes to an unlinked file still succeed), the file is
// not trusted again: appends fail until a compaction writes a new one from memory.
type journal struct {
	path      string
	open      openFunc   // swapped by tests
	fsyncTime *histogram // times each group commit's fsync; set before the first append

	// compactMu serializes compactions; it is held for the whole of one.
	//
	// mu guards the fields below. It is held across an append's write and across the swap
	// at the end of a compaction, never across an fsync of an append nor a compaction's
	// snapshot and big write: submissions go on while a compaction runs.
	//
	// Lock order: see scheduler.mu. The records mu writes are built under the scheduler's and
	// the jobs' locks, which are released first; a compaction's snapshot takes those under
	// compactMu only.
	compactMu sync.Mutex
	mu        sync.Mutex
	cond      *sync.Cond  // signalled when an fsync ends, or a compaction replaces the file
	cur       *journalGen // the file appends go to; nil until the first compaction, and after close
	syncing   bool        // an fsync is under way, outside the lock
	closed    bool        // close was called: no compaction may open a file again
	records   int         // records in the current file
	// tail keeps a copy of every record appended while a compaction runs, to be appended to
	// the new file before it replaces the old one; nil when no compaction runs.
	tail        *bytes.Buffer
	tailRecords int
}

// journalGen is one file of the journal, from the compaction that wrote it until the next.
// An appender waits on the generation it wrote to. f and ident never change.
type journalGen struct {
	f        journalFile
	ident    os.FileInfo // f's identity when it became the journal, to compare with path's
	written  int64       // bytes of whole records in the file
	synced   int64       // bytes of the file known to be on disk
	failed   error       // the file is not trusted: appends to it fail
	replaced bool        // a later file holds every change appended to this one
}

func newJournal(path string) *journal {
	j := &journal{path: path, open: openNoFollow}
	j.cond = sync.NewCond(&j.mu)
	return j
}

// append writes one record and waits until it is on disk. Appenders that arrive while an
// fsync is under way share the next one. The caller makes the change in memory first: a
// compaction that replaces the file meanwhile writes what memory holds, and so also ends the
// wait with success.
func (j *journal) append(line []byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	g, err := j.usableLocked()
	if err != nil {
		return err
	}
	if err := j.writeLocked(g, line); err != nil {
		return err
	}
	end := g.written
	for !g.replaced && g.synced < end {
		if g.failed != nil {
			return g.failed
		}
		if j.syncing {
			j.cond.Wait()
			continue
		}
		j.syncing = true
		target := g.written
		j.mu.Unlock()
		began := time.Now()
		err := g.f.Sync()
		j.fsyncTime.observe(time.Since(began).Seconds())
		if err == nil {
			err = j.checkSame(g.ident)
		}
		j.mu.Lock()
		j.syncing = false
		j.cond.Broadcast()
		if err != nil {
			return j.failLocked(g, fmt.Errorf("sync %s: %w", j.path, err))
		}
		if target > g.synced {
			g.synced = target
		}
	}
	return nil
}

// writeLocked appends line to g's file. A failed or short write is cut back to the last whole
// record, so that the next append starts a line of its own; if that cannot be done, g fails.
func (j *journal) writeLocked(g *journalGen, line []byte) error {
	n, err := g.f.Write(line)
	if err == nil && n != len(line) {
		err = io.ErrShortWrite
	}
	if err == nil {
		g.written += int64(n)
		j.records++
		if j.tail != nil {
			j.tail.Write(line)
			j.tailRecords++
		}
		return nil
	}
	err = fmt.Errorf("append to %s: %w", j.path, err)
	if cerr := cutBack(g.f, g.written); cerr != nil {
		return j.failLocked(g, fmt.Errorf("%w; cutting the torn record off failed too (%v)", err, cerr))
	}
	return err
}

// cutBack truncates f to size, and checks that it took.
func cutBack(f journalFile, size int64) error {
	if err := f.Truncate(size); err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != size {
		return fmt.Errorf("the file is %d bytes long after truncating it to %d", fi.Size(), size)
	}
	return nil
}

// failLocked stops appends to g, keeping the first reason, and returns it.
func (j *journal) failLocked(g *journalGen, err error) error {
	if g.failed == nil {
		g.failed = fmt.Errorf("%w: the journal takes no appends until it is rewritten", err)
	}
	return g.failed
}

// checkSame returns an error unless the journal's path still names the file with identity
// ident.
func (j *journal) checkSame(ident os.FileInfo) error {
	fi, err := os.Lstat(j.path)
	if err != nil {
		return fmt.Errorf("the journal file is gone: %w", err)
	}
	if !os.SameFile(fi, ident) {
		return fmt.Errorf("%s was replaced by another file", j.path)
	}
	return nil
}

// usableLocked returns the open file's state, or why appends are refused; j.mu is held.
func (j *journal) usableLocked() (*journalGen, error) {
	g := j.cur
	switch {
	case g == nil:
		return nil, errors.New("journal is not open")
	case g.failed != nil:
		return nil, g.failed
	}
	return g, nil
}

// check returns why the journal cannot take appends, or nil.
func (j *journal) check() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	g, err := j.usableLocked()
	if err != nil {
		return err
	}
	return j.checkSame(g.ident)
}

// recordCount is the number of records in the journal file.
func (j *journal) recordCount() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.records
}

// compact replaces the journal with the records that snapshot returns, and whatever is
// appended while it runs, durably, and makes the new file the one appends go to; it is also
// how a failed journal is recovered. snapshot must reflect every change made in memory
// before it is called: records are appended after their change is made, so any record not in
// the old file by then is appended later, and kept in tail. Only the start and the swap hold
// mu; the snapshot, the encoding and the big write with its fsync do not. A compaction that
// fails before its rename leaves the old file in use.
func (j *journal) compact(snapshot func() []jobRecord) error {
	j.compactMu.Lock()
	defer j.compactMu.Unlock()
	j.mu.Lock()
	j.tail, j.tailRecords = &bytes.Buffer{}, 0
	j.mu.Unlock()

	recs := snapshot()
	data, err := encodeRecords(recs)
	var tf journalFile
	if err == nil {
		tf, err = j.writeTemp(data)
	}

	j.mu.Lock()
	defer j.mu.Unlock()
	tail, tailRecords := j.tail.Bytes(), j.tailRecords
	j.tail = nil
	if err != nil {
		return fmt.Errorf("compact %s: %w", j.path, err)
	}
	if j.closed {
		tf.Close()
		os.Remove(j.tempPath())
		return errors.New("journal is closed")
	}
	// An fsync of the old file must not be under way when it is closed below.
	for j.syncing {
		j.cond.Wait()
	}
	renamed, err := j.install(tf, tail)
	if !renamed {
		return fmt.Errorf("compact %s: %w", j.path, err)
	}
	size := int64(len(data) + len(tail))
	var ident os.FileInfo
	if err == nil {
		ident, err = tf.Stat()
	}
	old := j.cur
	j.cur = &journalGen{f: tf, ident: ident, written: size, synced: size}
	j.records = len(recs) + tailRecords
	if err != nil {
		// The new file is in place, but a crash may bring the old one back.
		err = fmt.Errorf("compact %s: %w", j.path, err)
		j.failLocked(j.cur, err)
	}
	if old != nil {
		if err != nil {
			j.failLocked(old, err)
		} else {
			old.replaced = true
		}
		old.f.Close()
	}
	j.cond.Broadcast()
	return err
}

// encodeRecords writes records as journal lines.
func encodeRecords(recs []jobRecord) ([]byte, error) {
	var buf bytes.Buffer
	for _, rec := range recs {
		line, err := json.Marshal(rec)
		if err != nil {
			return nil, fmt.Errorf("encode job %s: %w", rec.ID, err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}

// tempPath is where a compaction writes the new journal before it renames it into place.
func (j *journal) tempPath() string { return j.path + ".tmp" }

// writeTemp writes data to a new file beside the journal and syncs it. It returns the file
// open for appending: the descriptor that wrote it becomes the journal's, so nothing can swap
// the file between the rename and a reopen.
func (j *journal) writeTemp(data []byte) (journalFile, error) {
	tmp := j.tempPath()
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	// O_EXCL: the name was just freed, so a file found there now is someone else's.
	tf, err := j.open(tmp, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	err = writeAll(tf, data)
	if err == nil {
		err = tf.Sync()
	}
	if err != nil {
		tf.Close()
		os.Remove(tmp)
		return nil, err
	}
	return tf, nil
}

// install appends tail to the written temp file, syncs it if need be, renames it over the
// journal and syncs the directory, so that a crash leaves either the old journal or the new
// one. renamed reports whether the new file replaced the journal, even when err says the
// rename may not be durable; when it did not, tf is closed and removed. mu is held.
func (j *journal) install(tf journalFile, tail []byte) (renamed bool, err error) {
	if len(tail) > 0 {
		if err = writeAll(tf, tail); err == nil {
			err = tf.Sync()
		}
	}
	if err == nil {
		err = os.Rename(j.tempPath(), j.path)
	}
	if err != nil {
		tf.Close()
		os.Remove(j.tempPath())
		return false, err
	}
	d, err := j.open(filepath.Dir(j.path), os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return true, err
	}
	defer d.Close()
	return true, d.Sync()
}

// writeAll writes data to f, counting a short write as an error.
func writeAll(f journalFile, data []byte) error {
	n, err := f.Write(data)
	if err == nil && n != len(data) {
		err = io.ErrShortWrite
	}
	return err
}

// close closes the journal file; appends fail afterwards.
func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.syncing {
		j.cond.Wait()
	}
	j.closed = true
	g := j.cur
	if g == nil {
		return nil
	}
	j.cur = nil
	j.failLocked(g, errors.New("journal is closed"))
	j.cond.Broadcast()
	return g.f.Close()
}
