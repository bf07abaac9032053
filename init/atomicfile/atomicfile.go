// Package atomicfile writes small state files so that a power cut leaves
// the old or the new content, never a mix: temp file in the same
// directory, explicit mode, fsync, rename, fsync of the directory. It is
// the one such helper PID 1's packages use (netconf, netfw, clock, update).
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with data, mode perm exactly (the umask does not
// apply). A missing parent directory is created with perm plus the search
// bit wherever perm can read, so 0600 files get 0700 directories and 0644
// files 0755 ones: a private file never lands in a directory others list.
func Write(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		if err := os.MkdirAll(dir, DirMode(perm)); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		// MkdirAll honours the umask; the mode must not depend on it.
		if err := os.Chmod(dir, DirMode(perm)); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	// Mode before content: the temp file is never readable wider than perm.
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync dir: %w", path, err)
	}
	return nil
}

// DirMode is the mode Write gives a directory it creates for a file of perm.
func DirMode(perm os.FileMode) os.FileMode {
	perm &= 0o777
	d := perm | 0o700
	if perm&0o040 != 0 {
		d |= 0o010
	}
	if perm&0o004 != 0 {
		d |= 0o001
	}
	return d
}
