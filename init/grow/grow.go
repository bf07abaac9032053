// Package grow enlarges the data partition and its ext4 file system to the
// end of the disk: the disk image is written small, the box's disk is big.
//
// Crash safety comes from the order of the steps, each idempotent, so a
// power cut anywhere boots and the next boot finishes the job:
//  1. the GPT is rewritten by go-diskfs, which writes and syncs the backup
//     header at the new end of the disk before the primary; a torn primary
//     fails its CRC and the kernel (and Table) use the new backup;
//  2. the kernel is told the new partition size (BLKPG_RESIZE_PARTITION,
//     which works while the partition is mounted);
//  3. ext4 grows online (EXT4_IOC_RESIZE_FS), journaled by the kernel.
package grow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"
)

// Align is where the grown partition ends (a multiple of 1 MiB, like the
// image's partitions).
const Align = 1 << 20

// ErrNotLast means the partition is not the last on the disk: growing it
// would overwrite the next one.
var ErrNotLast = errors.New("partition is not the last on the disk")

// ErrNoPartition means the disk has no GPT partition with that label.
var ErrNoPartition = errors.New("no GPT partition with that label")

// Change says what Table did.
type Change struct {
	Index     int   // GPT partition number (1-based)
	Start     int64 // bytes
	OldSize   int64 // bytes
	NewSize   int64 // bytes
	Recovered bool  // the primary GPT was damaged and was rewritten from the backup
}

// Grown reports whether the partition got bigger.
func (c Change) Grown() bool { return c.NewSize > c.OldSize }

// Table grows the GPT partition named label on the disk behind f (a disk
// image file or a whole-disk block device) to the last Align boundary
// before the backup GPT, and moves the backup GPT to the end of the disk.
// A table that already fits is left alone (unless its primary was damaged).
func Table(f *os.File, label string) (Change, error) {
	d, err := diskfs.OpenBackend(fileBackend{f}, diskfs.WithOpenMode(diskfs.ReadWrite))
	if err != nil {
		return Change{}, fmt.Errorf("grow %s: %w", f.Name(), err)
	}
	if d.Table == nil {
		return Change{}, fmt.Errorf("grow %s: no readable partition table", f.Name())
	}
	t, ok := d.Table.(*gpt.Table)
	if !ok {
		return Change{}, fmt.Errorf("grow %s: partition table is %s, want gpt", f.Name(), d.Table.Type())
	}
	sector := int64(t.LogicalSectorSize)
	if sector != 512 && sector != 4096 {
		return Change{}, fmt.Errorf("grow %s: sector size %d unsupported", f.Name(), sector)
	}
	var p *gpt.Partition
	for _, q := range t.Partitions {
		if q != nil && q.Type != gpt.Unused && q.Name == label {
			if p != nil {
				return Change{}, fmt.Errorf("grow %s: two partitions named %q", f.Name(), label)
			}
			p = q
		}
	}
	if p == nil {
		return Change{}, fmt.Errorf("grow %s: %q: %w", f.Name(), label, ErrNoPartition)
	}
	for _, q := range t.Partitions {
		if q != nil && q != p && q.Type != gpt.Unused && q.Start > p.Start {
			return Change{}, fmt.Errorf("grow %s: %q (partition %d): %w", f.Name(), label, p.Index, ErrNotLast)
		}
	}
	c := Change{Index: p.Index, Start: int64(p.Start) * sector, OldSize: int64(p.End-p.Start+1) * sector, Recovered: t.RecoveredFromBackup}
	c.NewSize = c.OldSize

	diskSectors := d.Size / sector
	// The backup GPT takes the last sector (header) and 16 KiB of entries
	// before it; GPT entry arrays are 128 entries of 128 bytes.
	entrySectors := (128 * 128) / sector
	lastUsable := diskSectors - 2 - entrySectors
	alignSectors := Align / sector
	newEnd := (lastUsable+1)/alignSectors*alignSectors - 1
	if newEnd <= int64(p.End) && !t.RecoveredFromBackup {
		return c, nil
	}
	if newEnd > int64(p.End) {
		p.End = uint64(newEnd)
		p.Size = uint64((newEnd - int64(p.Start) + 1) * sector)
		c.NewSize = int64(p.Size)
	}
	t.Resize(uint64(diskSectors * sector))
	w, err := d.Backend.Writable()
	if err != nil {
		return c, fmt.Errorf("grow %s: %w", f.Name(), err)
	}
	if err := t.Write(w, diskSectors*sector); err != nil {
		return c, fmt.Errorf("grow %s: write GPT: %w", f.Name(), err)
	}
	return c, nil
}

// Partition is a mounted data partition to grow.
type Partition struct {
	Device string // the partition's node, e.g. /dev/sda3
	Mount  string // where its ext4 is mounted
	Label  string // its GPT name (board.DataLabel)
	// SysRoot is where sysfs is mounted ("/sys" when empty).
	SysRoot string
}

// Result is what Grow did.
type Result struct {
	Disk      string
	Table     Change
	OldBlocks uint64 // ext4 blocks before
	NewBlocks uint64 // and after
	BlockSize uint64
}

// Grow grows the partition in the GPT, in the kernel and the ext4 on it.
func (p Partition) Grow() (Result, error) {
	sys := p.SysRoot
	if sys == "" {
		sys = "/sys"
	}
	name := filepath.Base(p.Device)
	diskName, pno, err := parentDisk(sys, name)
	if err != nil {
		return Result{}, fmt.Errorf("grow %s: %w", p.Device, err)
	}
	r := Result{Disk: filepath.Join(filepath.Dir(p.Device), diskName)}
	f, err := os.OpenFile(r.Disk, os.O_RDWR, 0)
	if err != nil {
		return r, fmt.Errorf("grow %s: %w", p.Device, err)
	}
	defer f.Close()
	if r.Table, err = Table(f, p.Label); err != nil {
		return r, err
	}
	if r.Table.Index != pno {
		return r, fmt.Errorf("grow %s: it is partition %d, the GPT names partition %d %q", p.Device, pno, r.Table.Index, p.Label)
	}
	// The kernel may still have the old size (grown just now, or on a
	// boot cut short after the GPT write): tell it.
	kernelSize, err := readSectors(filepath.Join(sys, "class/block", name, "size"))
	if err != nil {
		return r, fmt.Errorf("grow %s: %w", p.Device, err)
	}
	if kernelSize*512 < r.Table.NewSize {
		if err := resizePartition(f, pno, r.Table.Start, r.Table.NewSize); err != nil {
			return r, fmt.Errorf("grow %s: tell the kernel the new size: %w", p.Device, err)
		}
	}
	// ext4 last: its online resize is journaled and a no-op when the
	// file system already fills the partition.
	bs, blocks, err := ext4Blocks(p.Device)
	if err != nil {
		return r, fmt.Errorf("grow %s: %w", p.Device, err)
	}
	r.BlockSize, r.OldBlocks, r.NewBlocks = bs, blocks, blocks
	want := uint64(r.Table.NewSize) / bs
	if want <= blocks {
		return r, nil
	}
	dir, err := os.Open(p.Mount)
	if err != nil {
		return r, fmt.Errorf("grow %s: %w", p.Device, err)
	}
	defer dir.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, dir.Fd(), ext4IocResizeFS, uintptr(unsafe.Pointer(&want))); e != 0 {
		return r, fmt.Errorf("grow %s: ext4 online resize to %d blocks: %w", p.Device, want, e)
	}
	if _, r.NewBlocks, err = ext4Blocks(p.Device); err != nil {
		return r, fmt.Errorf("grow %s: %w", p.Device, err)
	}
	return r, nil
}

// ioctl numbers: BLKPG is _IO(0x12,105); EXT4_IOC_RESIZE_FS is
// _IOW('f', 16, __u64).
const (
	blkpg           = 0x1269
	ext4IocResizeFS = 0x40086610
)

func resizePartition(disk *os.File, pno int, start, size int64) error {
	part := unix.BlkpgPartition{Start: start, Length: size, Pno: int32(pno)}
	arg := unix.BlkpgIoctlArg{Op: unix.BLKPG_RESIZE_PARTITION, Datalen: int32(unsafe.Sizeof(part)), Data: (*byte)(unsafe.Pointer(&part))}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, disk.Fd(), blkpg, uintptr(unsafe.Pointer(&arg))); e != 0 {
		return e
	}
	return nil
}

// parentDisk finds the whole disk a partition belongs to and its number.
func parentDisk(sys, part string) (string, int, error) {
	if part == "" || strings.ContainsAny(part, "/") || strings.Contains(part, "..") {
		return "", 0, fmt.Errorf("bad partition name %q", part)
	}
	real, err := filepath.EvalSymlinks(filepath.Join(sys, "class/block", part))
	if err != nil {
		return "", 0, err
	}
	b, err := os.ReadFile(filepath.Join(real, "partition"))
	if err != nil {
		return "", 0, fmt.Errorf("%s is not a partition: %w", part, err)
	}
	pno, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pno < 1 || pno > 128 {
		return "", 0, fmt.Errorf("%s: bad partition number %q", part, b)
	}
	return filepath.Base(filepath.Dir(real)), pno, nil
}

func readSectors(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// ext4 superblock fields (at byte 1024 of the partition).
const (
	sbOffset        = 1024
	sbMagic         = 0xEF53
	incompat64bit   = 0x80
	sbLen           = 1024
	offBlocksLo     = 0x04
	offLogBlockSize = 0x18
	offMagic        = 0x38
	offIncompat     = 0x60
	offBlocksHi     = 0x150
)

// ext4Blocks reads the block size and block count from the superblock.
func ext4Blocks(dev string) (bs, blocks uint64, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sb := make([]byte, sbLen)
	if _, err := f.ReadAt(sb, sbOffset); err != nil && !errors.Is(err, io.EOF) {
		return 0, 0, fmt.Errorf("ext4 superblock: %w", err)
	}
	return parseSuperblock(sb)
}

func parseSuperblock(sb []byte) (bs, blocks uint64, err error) {
	if len(sb) < sbLen || binary.LittleEndian.Uint16(sb[offMagic:]) != sbMagic {
		return 0, 0, errors.New("ext4 superblock: bad magic")
	}
	lg := binary.LittleEndian.Uint32(sb[offLogBlockSize:])
	if lg > 6 {
		return 0, 0, fmt.Errorf("ext4 superblock: block size 2^(10+%d) unsupported", lg)
	}
	bs = 1024 << lg
	blocks = uint64(binary.LittleEndian.Uint32(sb[offBlocksLo:]))
	if binary.LittleEndian.Uint32(sb[offIncompat:])&incompat64bit != 0 {
		blocks |= uint64(binary.LittleEndian.Uint32(sb[offBlocksHi:])) << 32
	}
	return bs, blocks, nil
}

// fileBackend lets go-diskfs use an already open file or block device.
type fileBackend struct{ f *os.File }

func (b fileBackend) Stat() (os.FileInfo, error)              { return b.f.Stat() }
func (b fileBackend) Read(p []byte) (int, error)              { return b.f.Read(p) }
func (b fileBackend) ReadAt(p []byte, off int64) (int, error) { return b.f.ReadAt(p, off) }
func (b fileBackend) Seek(off int64, wh int) (int64, error)   { return b.f.Seek(off, wh) }
func (b fileBackend) Close() error                            { return nil }
func (b fileBackend) Sys() (*os.File, error)                  { return b.f, nil }
func (b fileBackend) Writable() (backend.WritableFile, error) { return b.f, nil }
func (b fileBackend) Path() string                            { return b.f.Name() }
