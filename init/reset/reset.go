// Package reset is PID 1's factory reset by crypto-erase: the key material
// is destroyed first (so whatever the wipe misses is sealed under a key that
// no longer exists), then every file under /data is overwritten in place and
// removed. A marker file written before the erase makes the reset resumable:
// a power cut half-way leaves the marker, and the next boot finishes the job
// before anything reads /data.
//
// PID 1 cannot re-create the data file system: the image carries no mkfs
// (Go-only userland) and the partition is formatted by the installer. So the
// wipe works inside the mounted file system: ext4 rewrites a file's existing
// blocks in place (no copy-on-write), so overwriting every regular file with
// zeros before unlinking it clears the blocks the store, CDRs and config
// occupy; blocks freed earlier (files replaced by rename) only ever held
// sealed secrets or age-encrypted backups, unreadable once the key is gone.
package reset

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MarkerName is the file in the data directory that says a factory reset
// was confirmed and has not finished.
const MarkerName = ".factory-reset"

// CmdlineFlag on the kernel command line asks for a factory reset at boot.
const CmdlineFlag = "edgepbx.factory_reset=1"

// Requested reports whether the kernel command line asks for a reset.
func Requested(cmdline string) bool {
	for _, f := range strings.Fields(cmdline) {
		if f == CmdlineFlag {
			return true
		}
	}
	return false
}

// Pending reports whether a confirmed reset did not finish (marker present).
func Pending(dataDir string) bool {
	_, err := os.Lstat(filepath.Join(dataDir, MarkerName))
	return err == nil
}

// EraseKeyFile destroys a key file: its bytes are overwritten in place with
// random bytes and fsync'd (so the old key is not left in the blocks the file
// occupied), then the file is unlinked and its directory fsync'd. A missing
// file is not an error: there is nothing left to erase (a resumed reset).
//
// This is today's key erase (device key in a file). With a TPM the sealed
// object is evicted instead; PID 1 passes that function as Plan.EraseKeys.
func EraseKeyFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reset: erase key %s: %w", path, err)
	}
	if err := overwrite(f, rand.Reader); err != nil {
		f.Close()
		return fmt.Errorf("reset: erase key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("reset: erase key %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reset: erase key %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// overwrite writes src over the whole of f from offset 0, then fsyncs.
func overwrite(f *os.File, src io.Reader) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file")
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.CopyBuffer(f, io.LimitReader(src, fi.Size()), make([]byte, 1<<20)); err != nil {
		return err
	}
	return f.Sync()
}

// Plan is one factory reset.
type Plan struct {
	// DataDir is the mounted data partition.
	DataDir string
	// EraseKeys destroys the key material (EraseKeyFile of the device key,
	// or the TPM eviction). It runs before any other file is touched.
	EraseKeys func() error
	// Progress, if set, is told each step (for the console).
	Progress func(step string)
}

func (p Plan) say(s string) {
	if p.Progress != nil {
		p.Progress(s)
	}
}

// Run performs the reset: marker, key erase, overwrite and remove every
// file, marker last. It is idempotent: run again after a power cut, it
// finishes what is left. An error leaves the marker, so the next boot
// tries again rather than starting on half a store.
func (p Plan) Run() error {
	if p.DataDir == "" || p.EraseKeys == nil {
		return errors.New("reset: plan needs a data directory and a key erase")
	}
	marker := filepath.Join(p.DataDir, MarkerName)
	if err := writeMarker(marker); err != nil {
		return err
	}
	p.say("erasing keys")
	if err := p.EraseKeys(); err != nil {
		return err
	}
	p.say("wiping " + p.DataDir)
	n, err := Wipe(p.DataDir, MarkerName)
	if err != nil {
		return err
	}
	p.say(fmt.Sprintf("wiped %d files", n))
	if err := os.Remove(marker); err != nil {
		return fmt.Errorf("reset: remove marker: %w", err)
	}
	return syncDir(p.DataDir)
}

func writeMarker(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("reset: marker: %w", err)
	}
	if _, err := f.WriteString("factory reset confirmed\n"); err != nil {
		f.Close()
		return fmt.Errorf("reset: marker: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("reset: marker: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("reset: marker: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// Wipe overwrites every regular file under dir with zeros (fsync'd), then
// removes everything in dir except the entry named keep. Symbolic links
// are removed, never followed. It returns how many files it overwrote.
// lost+found is emptied and kept (ext4's fsck wants it).
func Wipe(dir, keep string) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || (filepath.Dir(path) == dir && d.Name() == keep) {
			return nil
		}
		f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		werr := overwrite(f, zeros{})
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("%s: %w", path, werr)
		}
		n++
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("reset: overwrite: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return n, fmt.Errorf("reset: %w", err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		switch e.Name() {
		case keep:
			continue
		case "lost+found":
			sub, err := os.ReadDir(p)
			if err != nil {
				return n, fmt.Errorf("reset: %w", err)
			}
			for _, s := range sub {
				if err := os.RemoveAll(filepath.Join(p, s.Name())); err != nil {
					return n, fmt.Errorf("reset: %w", err)
				}
			}
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return n, fmt.Errorf("reset: %w", err)
		}
	}
	return n, syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("reset: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("reset: sync %s: %w", dir, err)
	}
	return nil
}
