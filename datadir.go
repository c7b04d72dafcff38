package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// The data dir holds what charond must be able to trust: the journal says which playbooks
// run, and charond, often root, writes wherever the names in it lead. So the dir must belong
// to charond's user and be writable by no one else, and nothing charond uses in it may be a
// symbolic link or another user's file. Otherwise another user could, for instance, plant a
// link named jobs.journal and have charond truncate the file it points to. Files are created
// with O_EXCL where they are new and opened with O_NOFOLLOW, so a name planted while charond
// runs is refused rather than followed.

// probeName is the file the store's probe creates and removes to see that the data dir still
// takes writes.
const probeName = ".charond-probe"

// probeData is what the probe writes: a full disk refuses a page, where it may still have
// room for an empty file.
var probeData = make([]byte, 4096)

// prepareDataDir creates dir if it is missing and checks that it is charond's. It returns
// dir with symbolic links resolved: a link is accepted as the data dir itself only if it
// belongs to charond's user or to root, since another user could point it anywhere.
func (st *store) prepareDataDir(dir string) (string, error) {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", err
		}
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		if uid := fileOwner(fi); uid != st.uid && uid != 0 {
			return "", fmt.Errorf("%s is a symbolic link owned by uid %d, not by charond's user (uid %d) or root: "+
				"its owner could point it anywhere; give the directory itself", dir, uid, st.uid)
		}
		if dir, err = filepath.EvalSymlinks(dir); err != nil {
			return "", err
		}
	}
	return dir, st.checkOwnedDir(dir)
}

// checkContents checks what charond keeps in the data dir at start, creating logs/ and work/
// if they are missing: none of it may be a link or belong to another user.
func (st *store) checkContents() error {
	for _, name := range []string{"jobs.journal", "jobs.journal.tmp"} {
		path := filepath.Join(st.dir, name)
		fi, err := os.Lstat(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := st.checkOwnedFile(path, fi); err != nil {
			return err
		}
	}
	if err := st.makeSubdirs(); err != nil {
		return err
	}
	logs := filepath.Join(st.dir, "logs")
	entries, err := os.ReadDir(logs)
	if err != nil {
		return err
	}
	for _, e := range entries {
		path := filepath.Join(logs, e.Name())
		fi, err := e.Info() // from lstat(2)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := st.checkOwnedFile(path, fi); err != nil {
			return err
		}
	}
	return nil
}

// makeSubdirs creates logs/ and work/ where they are missing, and checks them.
func (st *store) makeSubdirs() error {
	for _, sub := range []string{"logs", "work"} {
		path := filepath.Join(st.dir, sub)
		if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := st.checkOwnedDir(path); err != nil {
			return err
		}
	}
	return nil
}

// checkSubdirs checks that logs/ and work/ are still there and still charond's.
func (st *store) checkSubdirs() error {
	for _, sub := range []string{"logs", "work"} {
		if err := st.checkOwnedDir(filepath.Join(st.dir, sub)); err != nil {
			return err
		}
	}
	return nil
}

// checkOwnedDir checks that path is a directory of charond's user that no one else may
// write in.
func (st *store) checkOwnedDir(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if err := st.checkOwner(path, fi); err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", path)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%s is writable by its group or others (mode %04o): another user could plant files in it; "+
			"chmod go-w it or choose another -data-dir", path, perm)
	}
	return nil
}

// checkOwnedFile checks that path, described by fi from lstat(2), is a regular file of
// charond's user.
func (st *store) checkOwnedFile(path string, fi os.FileInfo) error {
	if err := st.checkOwner(path, fi); err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (%s): remove it", path, fi.Mode().Type())
	}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok && s.Nlink > 1 {
		return fmt.Errorf("%s has %d hard links: charond would write into a file that has other names; remove it", path, s.Nlink)
	}
	return nil
}

// checkOwner checks that an entry, described by fi from lstat(2), is no symbolic link and
// belongs to charond's user.
func (st *store) checkOwner(path string, fi os.FileInfo) error {
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("%s is a symbolic link: charond would write wherever it points; remove it", path)
	}
	if uid := fileOwner(fi); uid != st.uid {
		what := "could have planted it"
		if fi.IsDir() {
			what = "could plant files in it"
		}
		return fmt.Errorf("%s is owned by uid %d, not by charond's user (uid %d): another user %s; "+
			"chown it or choose another -data-dir", path, uid, st.uid, what)
	}
	return nil
}

// fileOwner is the uid that owns a file, or -1 when the system does not say.
func fileOwner(fi os.FileInfo) int {
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(s.Uid)
	}
	return -1
}

// checkWritable creates, writes and removes a probe file in the data dir.
func (st *store) checkWritable() error {
	path := filepath.Join(st.dir, probeName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove an old probe file: %w", err)
	}
	f, err := st.journal.open(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("cannot create a file in it: %w", err)
	}
	_, werr := f.Write(probeData)
	cerr := f.Close()
	rerr := os.Remove(path)
	if err := errors.Join(werr, cerr, rerr); err != nil {
		return fmt.Errorf("cannot write a file in it: %w", err)
	}
	return nil
}
