package grow

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"
)

const (
	mib      = 1 << 20
	testData = "edgepbx-data"
)

// makeDisk writes a GPT disk like the image's (two slots, data last) with
// small partitions, size bytes long.
func makeDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	d, err := diskfs.Create(p, size, diskfs.SectorSize512)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	start := uint64(mib / 512)
	var parts []*gpt.Partition
	for i, s := range []struct {
		name string
		size int64
	}{{"edgepbx-a", 4 * mib}, {"edgepbx-b", 4 * mib}, {testData, 32 * mib}} {
		n := uint64(s.size / 512)
		parts = append(parts, &gpt.Partition{Index: i + 1, Start: start, End: start + n - 1, Size: uint64(s.size),
			Type: gpt.LinuxFilesystem, Name: s.name, GUID: "0FC63DAF-8483-4772-8E79-3D69D847000" + string(rune('1'+i))})
		start += n
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		GUID: "11111111-2222-4333-8444-555555555555", Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	return p
}

func readTable(t *testing.T, p string) *gpt.Table {
	t.Helper()
	d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, ok := d.Table.(*gpt.Table)
	if !ok {
		t.Fatalf("%s: no GPT", p)
	}
	return tb
}

func growFile(t *testing.T, p, label string) (Change, error) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Table(f, label)
}

func TestTableGrowsLastPartitionToDiskEnd(t *testing.T) {
	p := makeDisk(t, 42*mib)
	if err := os.Truncate(p, 1024*mib); err != nil {
		t.Fatal(err)
	}
	c, err := growFile(t, p, testData)
	if err != nil {
		t.Fatal(err)
	}
	// 1 MiB head + 4 + 4 MiB slots: data starts at 9 MiB and ends at the
	// last MiB boundary before the backup GPT, i.e. 1023 MiB.
	if c.Index != 3 || c.Start != 9*mib || c.OldSize != 32*mib || c.NewSize != 1014*mib {
		t.Fatalf("change = %+v, want partition 3 from 9 MiB, 32 MiB -> 1014 MiB", c)
	}
	tb := readTable(t, p)
	if tb.RecoveredFromBackup {
		t.Fatal("primary GPT invalid after grow")
	}
	last := tb.Partitions[2]
	if got := int64(last.End-last.Start+1) * 512; got != 1014*mib {
		t.Fatalf("on-disk data partition is %d bytes", got)
	}
	// The backup header is the disk's last sector.
	f, _ := os.Open(p)
	defer f.Close()
	hdr := make([]byte, 8)
	if _, err := f.ReadAt(hdr, 1024*mib-512); err != nil || string(hdr) != "EFI PART" {
		t.Fatalf("no backup GPT header at the end of the disk: %q %v", hdr, err)
	}
	// Again: nothing to do.
	c2, err := growFile(t, p, testData)
	if err != nil || c2.Grown() {
		t.Fatalf("second grow = %+v, %v; want no change", c2, err)
	}
}

// A power cut while the primary GPT is being written leaves a primary
// whose entries do not match its CRC; the backup (written first) is new.
// Table must come back with the new layout and repair the primary.
func TestTableTornPrimaryWriteRecoversFromBackup(t *testing.T) {
	p := makeDisk(t, 42*mib)
	old, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 256*mib); err != nil {
		t.Fatal(err)
	}
	if _, err := growFile(t, p, testData); err != nil {
		t.Fatal(err)
	}
	// Tear: the old primary header (LBA 1) over the new one; its entry CRC
	// no longer matches the new entries at LBA 2.
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(old[512:1024], 512); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if tb := readTable(t, p); !tb.RecoveredFromBackup {
		t.Fatal("test setup: torn primary still reads as valid")
	}
	c, err := growFile(t, p, testData)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Recovered || c.NewSize != 246*mib {
		t.Fatalf("change = %+v, want recovered with 246 MiB", c)
	}
	if tb := readTable(t, p); tb.RecoveredFromBackup {
		t.Fatal("primary GPT not repaired")
	}
}

// Cut before the primary was touched: old primary (valid), new backup at
// the new end. Growing again gives the same result.
func TestTableCutBeforePrimaryWrite(t *testing.T) {
	p := makeDisk(t, 42*mib)
	old, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 256*mib); err != nil {
		t.Fatal(err)
	}
	if _, err := growFile(t, p, testData); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(old[:34*512], 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if tb := readTable(t, p); tb.RecoveredFromBackup || int64(tb.Partitions[2].End+1)*512 != 41*mib {
		t.Fatal("test setup: want the old, valid primary")
	}
	c, err := growFile(t, p, testData)
	if err != nil || c.NewSize != 246*mib {
		t.Fatalf("change = %+v, %v; want 246 MiB", c, err)
	}
}

func TestTableRefusals(t *testing.T) {
	p := makeDisk(t, 42*mib)
	if err := os.Truncate(p, 128*mib); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p)
	for _, tc := range []struct {
		label string
		want  error
	}{{"edgepbx-a", ErrNotLast}, {"nope", ErrNoPartition}} {
		if _, err := growFile(t, p, tc.label); !errors.Is(err, tc.want) {
			t.Errorf("grow %q: err = %v, want %v", tc.label, err, tc.want)
		}
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Fatal("a refused grow changed the disk")
	}
}

func TestParseSuperblock(t *testing.T) {
	sb := make([]byte, sbLen)
	if _, _, err := parseSuperblock(sb); err == nil {
		t.Fatal("zero superblock accepted")
	}
	sb[offMagic], sb[offMagic+1] = 0x53, 0xEF
	sb[offLogBlockSize] = 2
	sb[offBlocksLo] = 0x10
	sb[offIncompat] = incompat64bit
	sb[offBlocksHi] = 1
	bs, n, err := parseSuperblock(sb)
	if err != nil || bs != 4096 || n != 1<<32|0x10 {
		t.Fatalf("= %d, %d, %v", bs, n, err)
	}
	sb[offLogBlockSize] = 40
	if _, _, err := parseSuperblock(sb); err == nil {
		t.Fatal("absurd block size accepted")
	}
}

func FuzzParseSuperblock(f *testing.F) {
	f.Add(make([]byte, sbLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseSuperblock(b)
	})
}

// TestGrowMountedLoop grows a mounted ext4 on a loop device the way PID 1
// does on the box: root only (CI runs as root).
func TestGrowMountedLoop(t *testing.T) {
	if os.Getuid() != 0 || os.Getenv("CI") == "" {
		t.Skip("needs root and CI=true (loop devices, mount)")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	p := makeDisk(t, 42*mib)
	out, err := exec.Command("losetup", "--find", "--show", "--partscan", p).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	part := loop + "p3"
	if _, err := os.Stat("/sys/class/block/" + strings.TrimPrefix(loop, "/dev/") + "p3"); err != nil {
		// Containers often give loop devices without partition scanning;
		// the QEMU test (qemu/e2e TestDiskImageUEFI) grows a real disk.
		t.Skipf("loop device has no partitions here: %v", err)
	}
	waitNode(t, part)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-T", "default", part).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	mnt := t.TempDir()
	if err := unix.Mount(part, mnt, "ext4", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, 0) })
	payload := bytes.Repeat([]byte("edgepbx"), 100000)
	if err := os.WriteFile(filepath.Join(mnt, "keep"), payload, 0o600); err != nil {
		t.Fatal(err)
	}
	// The disk grows under the running system (a bigger target disk).
	if err := os.Truncate(p, 200*mib); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("losetup", "-c", loop).CombinedOutput(); err != nil {
		t.Fatalf("losetup -c: %v %s", err, out)
	}
	r, err := Partition{Device: part, Mount: mnt, Label: testData}.Grow()
	if err != nil {
		t.Fatal(err)
	}
	if !r.Table.Grown() || r.NewBlocks <= r.OldBlocks || r.NewBlocks*r.BlockSize != uint64(r.Table.NewSize) {
		t.Fatalf("result = %+v: want partition and ext4 grown to %d bytes", r, r.Table.NewSize)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if got := st.Blocks * uint64(st.Bsize); got < 150*mib {
		t.Fatalf("mounted file system is %d bytes after grow", got)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "keep")); err != nil || !bytes.Equal(b, payload) {
		t.Fatalf("data lost: %v", err)
	}
	// Again: nothing left to do.
	r2, err := Partition{Device: part, Mount: mnt, Label: testData}.Grow()
	if err != nil || r2.Table.Grown() || r2.NewBlocks != r2.OldBlocks {
		t.Fatalf("second grow = %+v, %v", r2, err)
	}
}

func waitNode(t *testing.T, p string) {
	t.Helper()
	for range 200 {
		if _, err := os.Stat(p); err == nil {
			return
		}
		exec.Command("udevadm", "settle").Run()
		unix.Nanosleep(&unix.Timespec{Nsec: 10e6}, nil)
	}
	t.Fatalf("%s did not appear", p)
}
