package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faults is what a test makes the files opened through a journal's open function do wrong.
// Each fault holds until the test clears it.
type faults struct {
	mu       sync.Mutex
	writeErr error  // a Write writes half its bytes, then fails with this
	short    bool   // a Write writes half its bytes and reports no error
	syncErr  error  // a Sync fails with this...
	syncOnly string // ...if this is empty or the file's name ends with it
	truncErr error  // a Truncate fails with this
	openErr  error  // opening fails with this
	onSync   func() // called before each Sync
}

func (fs *faults) set(change func(fs *faults)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	change(fs)
}

func (fs *faults) clear() {
	fs.set(func(fs *faults) {
		fs.writeErr, fs.short, fs.syncErr, fs.syncOnly, fs.truncErr, fs.openErr, fs.onSync = nil, false, nil, "", nil, nil, nil
	})
}

func (fs *faults) open(name string, flag int, perm os.FileMode) (journalFile, error) {
	fs.mu.Lock()
	err := fs.openErr
	fs.mu.Unlock()
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	f, err := openNoFollow(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultyFile{journalFile: f, name: name, faults: fs}, nil
}

// faultyFile is a real file that fails as its faults say.
type faultyFile struct {
	journalFile
	name   string
	faults *faults
}

func (f *faultyFile) Write(p []byte) (int, error) {
	fs := f.faults
	fs.mu.Lock()
	werr, short := fs.writeErr, fs.short
	fs.mu.Unlock()
	if werr == nil && !short {
		return f.journalFile.Write(p)
	}
	n, _ := f.journalFile.Write(p[:len(p)/2])
	return n, werr
}

func (f *faultyFile) Sync() error {
	fs := f.faults
	fs.mu.Lock()
	serr, only, hook := fs.syncErr, fs.syncOnly, fs.onSync
	fs.mu.Unlock()
	if hook != nil {
		hook()
	}
	if serr != nil && (only == "" || strings.HasSuffix(f.name, only)) {
		return serr
	}
	return f.journalFile.Sync()
}

func (f *faultyFile) Truncate(size int64) error {
	f.faults.mu.Lock()
	err := f.faults.truncErr
	f.faults.mu.Unlock()
	if err != nil {
		return err
	}
	return f.journalFile.Truncate(size)
}

// withFaults makes a test daemon's journal open its files through fs, and reopens the journal
// before the daemon starts, so that the current file is one of them.
func withFaults(t *testing.T, fs *faults) testOption {
	return func(d *daemon) {
		d.sched.store.journal.open = fs.open
		if err := d.sched.compact(); err != nil {
			t.Fatal(err)
		}
	}
}

// testRecord is a valid record of a queued job.
func testRecord(n int) jobRecord {
	return jobRecord{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", n), Version: 1, Seq: uint64(n), CreatedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), JobSpec: JobSpec{Name: fmt.Sprint("job ", n), Playbook: "- hosts: all\n", Inventory: []string{"localhost"}, Priority: 5, Timeout: time.Minute}, jobState: jobState{Status: StatusQueued}}
}

// testJournal is a store in a temporary data dir whose journal files fail as fs says, opened
// with the records given.
func testJournal(t *testing.T, recs ...jobRecord) (*store, *faults) {
	t.Helper()
	st, _, err := openStore(filepath.Join(t.TempDir(), "data"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	fs := &faults{}
	st.journal.open = fs.open
	if err := st.compact(func() []jobRecord { return recs }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.journal.close() })
	return st, fs
}

// loadIDs reads the store's journal as a start would, failing the test on any warning, and
// returns the ids of the jobs found.
func loadIDs(t *testing.T, st *store) []string {
	t.Helper()
	var warnings bytes.Buffer
	recs, err := readJournal(st.journal.path, slog.New(slog.NewTextHandler(&warnings, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if warnings.Len() > 0 {
		t.Errorf("loading the journal warned:\n%s", warnings.String())
	}
	var ids []string
	for _, rec := range recs {
		ids = append(ids, rec.ID)
	}
	return ids
}

func idsOf(recs ...jobRecord) []string {
	var ids []string
	for _, rec := range recs {
		ids = append(ids, rec.ID)
	}
	return ids
}

// TestFailedAppendIsCutBack makes one append fail half-way, by ENOSPC or a short write: the
// torn record must be cut off, so that the next record, acknowledged, loads back.
func TestFailedAppendIsCutBack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject func(fs *faults)
	}{
		{"ENOSPC", func(fs *faults) { fs.writeErr = syscall.ENOSPC }},
		{"short write", func(fs *faults) { fs.short = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, c := testRecord(1), testRecord(2), testRecord(3)
			st, fs := testJournal(t)
			if err := st.save(a); err != nil {
				t.Fatal(err)
			}
			fs.set(tc.inject)
			if err := st.save(b); err == nil {
				t.Fatal("an append that failed half-way succeeded")
			}
			fs.clear()
			if err := st.save(c); err != nil {
				t.Fatalf("the append after a failed one: %v", err)
			}
			if got, want := loadIDs(t, st), idsOf(a, c); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("jobs loaded = %v, want %v", got, want)
			}
		})
	}
}

// TestJournalFailsClosed covers the faults after which the journal's file cannot be trusted:
// an append that cannot be cut back, an fsync error, a journal file deleted or replaced. The
// append fails, later ones are refused, and a compaction from memory recovers.
func TestJournalFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject func(t *testing.T, st *store, fs *faults)
	}{
		{"write and truncate fail", func(t *testing.T, st *store, fs *faults) {
			fs.set(func(fs *faults) { fs.writeErr, fs.truncErr = syscall.ENOSPC, syscall.EIO })
		}},
		{"fsync fails", func(t *testing.T, st *store, fs *faults) {
			fs.set(func(fs *faults) { fs.syncErr = syscall.EIO })
		}},
		{"journal deleted", func(t *testing.T, st *store, fs *faults) {
			if err := os.Remove(st.journal.path); err != nil {
				t.Fatal(err)
			}
		}},
		{"journal replaced", func(t *testing.T, st *store, fs *faults) {
			other := st.journal.path + ".other"
			if err := os.WriteFile(other, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(other, st.journal.path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, c, d := testRecord(1), testRecord(2), testRecord(3), testRecord(4)
			st, fs := testJournal(t)
			if err := st.save(a); err != nil {
				t.Fatal(err)
			}
			tc.inject(t, st, fs)
			if err := st.save(b); err == nil {
				t.Fatal("the append succeeded")
			}
			fs.clear()
			if err := st.save(c); err == nil {
				t.Fatal("an append after the fault was taken: the journal did not fail closed")
			}
			if err := st.journal.check(); err == nil {
				t.Error("check finds nothing wrong with a failed journal")
			}
			if st.unavailable() == nil {
				t.Error("the store is still healthy")
			}
			// Memory holds a and c (b's submission was refused, c's change was made before its
			// append); the rewrite is what is kept.
			if err := st.compact(func() []jobRecord { return []jobRecord{a, c} }); err != nil {
				t.Fatal(err)
			}
			if err := st.save(d); err != nil {
				t.Fatalf("append after the rewrite: %v", err)
			}
			if got, want := loadIDs(t, st), idsOf(a, c, d); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("jobs loaded = %v, want %v", got, want)
			}
		})
	}
}

// TestFailedCompactionKeepsTheJournal makes each step of a compaction fail: before the
// rename the old journal stays in use; after it (the directory's fsync) the journal is in an
// unknown state, so appends stop until a compaction succeeds.
func TestFailedCompactionKeepsTheJournal(t *testing.T) {
	for _, tc := range []struct {
		name        string
		inject      func(fs *faults)
		oldInUse    bool
		wantAppends bool
	}{
		{"temp file cannot be created", func(fs *faults) { fs.openErr = syscall.ENOSPC }, true, true},
		{"temp file write fails", func(fs *faults) { fs.writeErr = syscall.ENOSPC }, true, true},
		{"temp file fsync fails", func(fs *faults) { fs.syncErr, fs.syncOnly = syscall.EIO, ".tmp" }, true, true},
		{"directory fsync fails", func(fs *faults) { fs.syncErr, fs.syncOnly = syscall.EIO, "/data" }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, c := testRecord(1), testRecord(2), testRecord(3)
			st, fs := testJournal(t, a)
			fs.set(tc.inject)
			if err := st.compact(func() []jobRecord { return []jobRecord{a, b} }); err == nil {
				t.Fatal("the compaction succeeded")
			}
			if _, err := os.Lstat(st.journal.path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("temp file left behind: %v", err)
			}
			fs.clear()
			err := st.save(c)
			if got := err == nil; got != tc.wantAppends {
				t.Fatalf("append after the failed compaction: %v", err)
			}
			if !tc.wantAppends {
				if err := st.compact(func() []jobRecord { return []jobRecord{a, b, c} }); err != nil {
					t.Fatal(err)
				}
			}
			want := idsOf(a, b, c)
			if tc.oldInUse {
				want = idsOf(a, c)
			}
			if got := loadIDs(t, st); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("jobs loaded = %v, want %v", got, want)
			}
		})
	}
}

// TestStaleTempFileIsReplaced leaves a temp file of an interrupted compaction: the next one
// removes it and creates its own, exclusively.
func TestStaleTempFileIsReplaced(t *testing.T) {
	a := testRecord(1)
	st, _ := testJournal(t)
	if err := os.WriteFile(st.journal.path+".tmp", []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.compact(func() []jobRecord { return []jobRecord{a} }); err != nil {
		t.Fatal(err)
	}
	if got := loadIDs(t, st); len(got) != 1 || got[0] != a.ID {
		t.Errorf("jobs loaded = %v", got)
	}
}

// TestSaveRefusesRecordThatWouldNotLoad checks that a record is only appended if a start
// would load it.
func TestSaveRefusesRecordThatWouldNotLoad(t *testing.T) {
	st, _ := testJournal(t)
	bad := testRecord(1)
	bad.Priority = 0
	if err := st.save(bad); err == nil || !strings.Contains(err.Error(), "would not load back") {
		t.Errorf("save of a record that would be skipped at load: %v", err)
	}
	if raw, _ := os.ReadFile(st.journal.path); len(raw) != 0 {
		t.Errorf("journal holds %q", raw)
	}
	if st.unavailable() != nil {
		t.Error("a record refused as impossible marked the store unhealthy")
	}
}

// TestSubmissionIsInMemoryWhileSaved checks that a job is in memory while its record is
// written, so a compaction that runs before the submission is answered keeps it.
func TestSubmissionIsInMemoryWhileSaved(t *testing.T) {
	fs := &faults{}
	td := startTestDaemon(t, withFaults(t, fs))
	var mu sync.Mutex
	var seen []string
	fs.set(func(fs *faults) {
		fs.onSync = func() {
			for _, rec := range td.sched.snapshot() {
				mu.Lock()
				seen = append(seen, rec.Name)
				mu.Unlock()
			}
		}
	})
	td.submitFake(t, "in memory", 5, map[string]any{"fake": "sleep", "seconds": 60})
	fs.clear()
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.Join(seen, ","), "in memory") {
		t.Errorf("a compaction during the submission's fsync would write %v: the submitted job is missing", seen)
	}
}

// BenchmarkRecordCheck measures what decoding a record back and checking it costs a save.
func BenchmarkRecordCheck(b *testing.B) {
	rec := testRecord(1)
	line, _ := json.Marshal(rec)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		var back jobRecord
		if err := json.Unmarshal(line, &back); err != nil {
			b.Fatal(err)
		}
		if err := checkRecord(&back); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAppendsGoOnWhileCompacting holds a compaction in its snapshot and then in the fsync of
// its new file: appends made meanwhile must be acknowledged without waiting for it, and be in
// the journal it leaves.
func TestAppendsGoOnWhileCompacting(t *testing.T) {
	a, b, c := testRecord(1), testRecord(2), testRecord(3)
	st, fs := testJournal(t, a)
	inSnapshot, proceed := make(chan struct{}), make(chan struct{})
	inSync, release := make(chan struct{}), make(chan struct{})
	compacted := make(chan error, 1)
	go func() {
		compacted <- st.compact(func() []jobRecord { close(inSnapshot); <-proceed; return []jobRecord{a} })
	}()
	<-inSnapshot
	during := make(chan error, 1)
	go func() { during <- st.save(b) }() // while the snapshot is being taken
	select {
	case err := <-during:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(proceed)
		t.Fatal("an append waited for the compaction's snapshot")
	}
	fs.set(func(fs *faults) {
		fs.onSync = func() {
			select {
			case inSync <- struct{}{}: // the first fsync from now on: the new file's
				<-release
			default:
			}
		}
	})
	close(proceed)
	<-inSync
	saved := make(chan error, 1)
	go func() { saved <- st.save(c) }()
	select {
	case err := <-saved:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-compacted:
		t.Fatalf("the compaction ended (%v) before an append made during its fsync", err)
	}
	close(release)
	if err := <-compacted; err != nil {
		t.Fatal(err)
	}
	if got, want := loadIDs(t, st), idsOf(a, b, c); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("jobs loaded = %v, want %v", got, want)
	}
	if n := st.journal.recordCount(); n != 3 {
		t.Errorf("record count = %d, want 3", n)
	}
}
