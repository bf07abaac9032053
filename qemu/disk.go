package qemu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// DataLabel is the file-system label of the data disk; PID 1 mounts it by
// device, the label tells a human what the file is.
const DataLabel = "edgepbx-data"

// ext4 superblock: at byte 1024, magic 0xEF53 at offset 56 within it.
const (
	superblockOffset = 1024
	ext4MagicOffset  = superblockOffset + 56
	ext4Magic        = 0xEF53
)

// EnsureDataDisk makes sure path holds an ext4 data disk: an existing file is
// checked (never rewritten), a missing one is created sparse at size bytes and
// formatted with the host's mkfs.ext4. The new disk appears under its final
// name only when complete, so an interrupted creation leaves nothing behind.
// created tells whether a new disk was made.
func EnsureDataDisk(ctx context.Context, path string, size int64) (created bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case err == nil:
		if !fi.Mode().IsRegular() {
			return false, fmt.Errorf("data disk %s: not a regular file", path)
		}
		if err := checkExt4(path); err != nil {
			return false, err
		}
		return false, nil
	case !errors.Is(err, os.ErrNotExist):
		return false, fmt.Errorf("data disk %s: %w", path, err)
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return false, fmt.Errorf("data disk %s: mkfs.ext4 not found on the host (Debian package e2fsprogs): %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("data disk %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, ".data-disk-*")
	if err != nil {
		return false, fmt.Errorf("data disk %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err = f.Truncate(size); err != nil {
		f.Close()
		return false, fmt.Errorf("data disk %s: size %d: %w", path, size, err)
	}
	if err = f.Close(); err != nil {
		return false, fmt.Errorf("data disk %s: %w", path, err)
	}
	// -m 1: keep a little room that only root (PID 1) can use when edgepbxd
	// fills the disk. -F: the target is a file, not a block device.
	out, err := exec.CommandContext(ctx, mkfs, "-q", "-F", "-m", "1", "-L", DataLabel, tmp).CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("data disk %s: mkfs.ext4: %w: %s", path, err, out)
	}
	if err = checkExt4(tmp); err != nil {
		return false, err
	}
	if err = os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("data disk %s: %w", path, err)
	}
	return true, nil
}

// checkExt4 refuses files that are not ext2/3/4 file systems, so a wrong path
// is reported instead of being handed to the guest.
func checkExt4(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("data disk %s: %w", path, err)
	}
	defer f.Close()
	var m [2]byte
	if _, err := f.ReadAt(m[:], ext4MagicOffset); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("data disk %s: too small to hold a file system", path)
		}
		return fmt.Errorf("data disk %s: %w", path, err)
	}
	if binary.LittleEndian.Uint16(m[:]) != ext4Magic {
		return fmt.Errorf("data disk %s: not an ext4 file system (no superblock magic)", path)
	}
	return nil
}
