package keys

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/edgepbx/edgepbx/init/atomicfile"
)

// readKeyFile returns a 32-byte key file, nil (no error) when it is absent.
func readKeyFile(dir, name string) ([]byte, error) {
	p := filepath.Join(dir, name)
	b, err := readBounded(p, 4096)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(b) != keyLen {
		return nil, fmt.Errorf("%w: %s has %d bytes, want %d", ErrCorrupt, p, len(b), keyLen)
	}
	return b, nil
}

// readBounded reads at most max bytes: a key file is tiny, and a huge one
// is damage, not something to load into PID 1's memory.
func readBounded(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("keys: read %s: %w", p, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorrupt, p, max)
	}
	return b, nil
}

func exists(dir, name string) bool {
	_, err := os.Lstat(filepath.Join(dir, name))
	return err == nil
}

// writeAtomic writes a 0600 file so that a power cut leaves either the old
// or the whole new one (atomicfile: fsync'd temp file, rename, directory
// fsync).
func writeAtomic(dir, name string, data []byte) error {
	if err := atomicfile.Write(filepath.Join(dir, name), data, 0o600); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	return nil
}

// wipeFile overwrites a file with zeros in place, fsyncs it, removes it and
// fsyncs the directory. On ext4 (data=ordered, no journalled data) the
// overwrite lands on the same blocks; flash wear levelling may keep old
// copies, which is why the TPM object, not the file, is the real erase
// where there is a TPM. An absent file is not an error.
func wipeFile(dir, name string) error {
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("keys: wipe %s: %w", p, err)
	}
	st, err := f.Stat()
	if err == nil {
		_, err = f.Write(make([]byte, st.Size()))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("keys: wipe %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("keys: wipe %s: %w", p, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
