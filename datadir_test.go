package main

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// startError starts charond on dir/data as newDaemon does at start, and returns why it
// refused; nil when it started (it is then closed again).
func startError(t *testing.T, dir string) error {
	t.Helper()
	cfg, err := parseFlags([]string{"-playbook-dir", dir, "-data-dir", filepath.Join(dir, "data")},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	d.sched.close()
	return nil
}

// wantRefusal checks that start was refused with a one-line error containing want.
func wantRefusal(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case err == nil:
		t.Fatalf("charond started; want it refused with %q", want)
	case !strings.Contains(err.Error(), want):
		t.Errorf("start refused with %q, want it to say %q", err, want)
	case strings.Contains(err.Error(), "\n"):
		t.Errorf("the refusal is not one line: %q", err)
	}
}

// requireRoot skips a test that needs to give files to another user.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to make files of another user (tests run as root here and in CI)")
	}
}

// nobody is a uid charond does not run as.
const nobody = 65534

// TestForeignDataDirIsRefused starts charond on data dirs another user owns or may write in.
func TestForeignDataDirIsRefused(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, data string)
		want  string // "" when start must succeed
	}{
		{"owned by another user", func(t *testing.T, data string) { must(t, os.Chown(data, nobody, nobody)) },
			"is owned by uid 65534, not by charond's user (uid 0): another user could plant files in it"},
		{"writable by all", func(t *testing.T, data string) { must(t, os.Chmod(data, 0o777)) },
			"is writable by its group or others (mode 0777)"},
		{"writable by its group", func(t *testing.T, data string) { must(t, os.Chmod(data, 0o770)) },
			"is writable by its group or others (mode 0770)"},
		{"a link of another user", func(t *testing.T, data string) { linkDataDir(t, data, nobody) },
			"is a symbolic link owned by uid 65534"},
		{"a link of root", func(t *testing.T, data string) { linkDataDir(t, data, 0) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			must(t, os.Mkdir(data, 0o700))
			tc.setup(t, data)
			err := startError(t, dir)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("start refused: %v", err)
				}
				return
			}
			wantRefusal(t, err, tc.want)
			if entries, _ := os.ReadDir(data); len(entries) != 0 {
				t.Errorf("charond wrote into a data dir it refused: %v", entries)
			}
		})
	}
}

// linkDataDir replaces data by a symbolic link, owned by uid, to an empty directory of ours.
func linkDataDir(t *testing.T, data string, uid int) {
	target := data + ".real"
	must(t, os.Rename(data, target))
	must(t, os.Symlink(target, data))
	must(t, os.Lchown(data, uid, uid))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestPlantedEntriesAreRefused plants, in a data dir of charond's, links and other users'
// files under the names charond uses. Start must be refused, and nothing reached through
// them: a victim file with a torn-looking tail (which loading a log would cut) stays whole, a
// victim directory keeps its file (which clearing work/ would remove).
func TestPlantedEntriesAreRefused(t *testing.T) {
	requireRoot(t)
	const logName = "00000000-0000-4000-8000-000000000001.log"
	for _, tc := range []struct {
		name  string
		entry string // under the data dir
		plant func(t *testing.T, path, victim, victimDir string)
		want  string
	}{
		{"journal a link", "jobs.journal", symlinkTo(false), "is a symbolic link"},
		{"journal temp file a link", "jobs.journal.tmp", symlinkTo(false), "is a symbolic link"},
		{"journal of another user", "jobs.journal", fileOf(nobody), "is owned by uid 65534"},
		{"journal a hard link", "jobs.journal", hardLink, "has 2 hard links"},
		{"logs a link", "logs", symlinkTo(true), "is a symbolic link"},
		{"work a link", "work", symlinkTo(true), "is a symbolic link"},
		{"work of another user", "work", dirOf(nobody), "is owned by uid 65534"},
		{"log file a link", "logs/" + logName, symlinkTo(false), "is a symbolic link"},
		{"log file a hard link", "logs/" + logName, hardLink, "has 2 hard links"},
		{"log file of another user", "logs/" + logName, fileOf(nobody), "is owned by uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			must(t, os.MkdirAll(filepath.Join(data, "logs"), 0o700))
			victim, victimDir := filepath.Join(dir, "victim"), filepath.Join(dir, "victimdir")
			must(t, os.WriteFile(victim, []byte("precious"), 0o600))
			must(t, os.Mkdir(victimDir, 0o700))
			must(t, os.WriteFile(filepath.Join(victimDir, "keep"), []byte("precious"), 0o600))
			path := filepath.Join(data, tc.entry)
			tc.plant(t, path, victim, victimDir)

			wantRefusal(t, startError(t, dir), path+" "+tc.want)
			if got, _ := os.ReadFile(victim); string(got) != "precious" {
				t.Errorf("the victim file now holds %q", got)
			}
			if _, err := os.Stat(filepath.Join(victimDir, "keep")); err != nil {
				t.Errorf("the victim directory lost its file: %v", err)
			}
		})
	}
}

func symlinkTo(toDir bool) func(t *testing.T, path, victim, victimDir string) {
	return func(t *testing.T, path, victim, victimDir string) {
		target := victim
		if toDir {
			target = victimDir
		}
		os.RemoveAll(path)
		must(t, os.Symlink(target, path))
	}
}

func hardLink(t *testing.T, path, victim, victimDir string) { must(t, os.Link(victim, path)) }

func fileOf(uid int) func(t *testing.T, path, victim, victimDir string) {
	return func(t *testing.T, path, victim, victimDir string) {
		must(t, os.WriteFile(path, nil, 0o600))
		must(t, os.Chown(path, uid, uid))
	}
}

func dirOf(uid int) func(t *testing.T, path, victim, victimDir string) {
	return func(t *testing.T, path, victim, victimDir string) {
		must(t, os.Mkdir(path, 0o700))
		must(t, os.Chown(path, uid, uid))
	}
}

// TestPlantedLogFileIsNotWrittenThrough plants a link under the name of a queued job's log
// file while charond runs. When the job runs, its output must not reach the link's target:
// a new log file is created with O_EXCL and O_NOFOLLOW. The failed write marks the store
// unhealthy.
func TestPlantedLogFileIsNotWrittenThrough(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(victim, path string) error
	}{
		{"symbolic link", os.Symlink},
		{"hard link", os.Link},
	} {
		t.Run(tc.name, func(t *testing.T) {
			td := startTestDaemon(t)
			blocker := td.submitFake(t, "blocker", 15, map[string]any{"fake": "sleep", "seconds": 60})
			waitLogLines(t, td, blocker, 1)
			id := td.submitFake(t, "planted", 5, map[string]any{"fake": "lines", "count": 3})
			victim := filepath.Join(t.TempDir(), "victim")
			must(t, os.WriteFile(victim, []byte("precious\n"), 0o600))
			logFile := td.sched.store.logPath(id, logStream)
			must(t, tc.plant(victim, logFile))

			postCancel(t, td, blocker, http.StatusAccepted)
			waitFor(t, "the job to end", func() (bool, string) {
				st := mustJob(t, td, id).Status()
				return st.Final(), string(st)
			})
			if got, _ := os.ReadFile(victim); string(got) != "precious\n" {
				t.Errorf("the job's output was written through the planted %s: %q", tc.name, got)
			}
			wantHealth(t, td, false, logFile)
		})
	}
}

// TestDataDirIsCreatedPrivate checks that a missing data dir is created for charond's user
// alone, so that the checks above pass on it at the next start.
func TestDataDirIsCreatedPrivate(t *testing.T) {
	dir := t.TempDir()
	if err := startError(t, dir); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"", "logs", "work"} {
		fi, err := os.Stat(filepath.Join(dir, "data", sub))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o700 {
			t.Errorf("data/%s has mode %04o, want 0700", sub, perm)
		}
	}
	if err := startError(t, dir); err != nil {
		t.Errorf("second start: %v", err)
	}
}
