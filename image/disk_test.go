package image

import (
	"bytes"
	"context"
	"debug/pe"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/edgepbx/edgepbx/board"
)

// fakeStub is a minimal PE32+ image with one section, laid out like
// systemd-stub (4 KiB section alignment, 512-byte file alignment, room
// for more section headers).
func fakeStub() []byte {
	b := make([]byte, 0x600)
	b[0], b[1] = 'M', 'Z'
	binary.LittleEndian.PutUint32(b[peSigOffset:], 0x40)
	copy(b[0x40:], "PE\x00\x00")
	coff := 0x44
	binary.LittleEndian.PutUint16(b[coff:], 0x8664)  // machine
	binary.LittleEndian.PutUint16(b[coff+2:], 1)     // sections
	binary.LittleEndian.PutUint16(b[coff+16:], 0xF0) // optional header size
	binary.LittleEndian.PutUint16(b[coff+18:], 0x22) // executable, large address aware
	opt := coff + coffSize
	binary.LittleEndian.PutUint16(b[opt:], pe32PlusMagic)
	binary.LittleEndian.PutUint32(b[opt+optSectionAlign:], 0x1000)
	binary.LittleEndian.PutUint32(b[opt+optFileAlign:], 0x200)
	binary.LittleEndian.PutUint32(b[opt+optSizeOfImage:], 0x2000)
	binary.LittleEndian.PutUint32(b[opt+optSizeOfHeaders:], 0x400)
	binary.LittleEndian.PutUint32(b[opt+108:], 16) // data directories
	h := b[opt+0xF0:]
	copy(h, ".text")
	binary.LittleEndian.PutUint32(h[8:], 0x10)    // virtual size
	binary.LittleEndian.PutUint32(h[12:], 0x1000) // VA
	binary.LittleEndian.PutUint32(h[16:], 0x200)  // raw size
	binary.LittleEndian.PutUint32(h[20:], 0x400)  // raw offset
	binary.LittleEndian.PutUint32(h[36:], 0x60000020)
	copy(b[0x400:], "stub code")
	return b
}

// The UKI is read back with Go's PE parser: the stub's section plus ours,
// each holding its bytes, at increasing 4 KiB-aligned addresses.
func TestBuildUKI(t *testing.T) {
	secs := []UKISection{{".osrel", []byte("ID=edgepbx\n")}, {".cmdline", []byte("console=ttyS0\x00")}, {".initrd", bytes.Repeat([]byte{7}, 5000)}, {".linux", bytes.Repeat([]byte{9}, 3000)}}
	uki, err := BuildUKI(fakeStub(), secs)
	if err != nil {
		t.Fatal(err)
	}
	f, err := pe.NewFile(bytes.NewReader(uki))
	if err != nil {
		t.Fatalf("UKI is not a PE file: %v", err)
	}
	if len(f.Sections) != 1+len(secs) {
		t.Fatalf("%d sections", len(f.Sections))
	}
	var lastVA uint32
	for i, s := range f.Sections[1:] {
		data, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		if s.Name != secs[i].Name || !bytes.Equal(data[:s.VirtualSize], secs[i].Data) || s.VirtualAddress%0x1000 != 0 || s.VirtualAddress <= lastVA {
			t.Fatalf("section %d = %s at %#x (%d bytes)", i, s.Name, s.VirtualAddress, s.VirtualSize)
		}
		lastVA = s.VirtualAddress
	}
	for _, bad := range [][]UKISection{{{".text", nil}}, {{"", []byte{1}}}, {{".waytoolong", nil}}} {
		if _, err := BuildUKI(fakeStub(), bad); err == nil {
			t.Errorf("sections %q accepted", bad[0].Name)
		}
	}
	if _, err := BuildUKI([]byte("ELF"), secs); err == nil {
		t.Error("a non-PE stub accepted")
	}
}

// The disk image is built twice from the same inputs: byte-identical,
// with the layout PID 1 relies on (board/layout.go).
func TestDiskImageLayoutReproducible(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (e2fsprogs)")
	}
	files := []slotFile{{board.UKIPath(board.ArchAMD64), bytes.Repeat([]byte("uki"), 1<<20)}, {SlotManifest, []byte(`{"board":"pc-x86_64","version":"1"}` + "\n")}}
	build := func(dir string) (disk, slot []byte) {
		os.MkdirAll(dir, 0o755)
		sp, dp, ip := filepath.Join(dir, "slot.img"), filepath.Join(dir, "data.img"), filepath.Join(dir, "disk.img")
		if _, err := WriteSlotImage(sp, files); err != nil {
			t.Fatal(err)
		}
		if err := writeDataFS(context.Background(), dp, "pc-x86_64", "1"); err != nil {
			t.Fatal(err)
		}
		if err := WriteDiskImage(ip, "pc-x86_64", "1", sp, dp); err != nil {
			t.Fatal(err)
		}
		disk, _ = os.ReadFile(ip)
		slot, _ = os.ReadFile(sp)
		return disk, slot
	}
	dir := t.TempDir()
	d1, s1 := build(filepath.Join(dir, "1"))
	// FAT keeps 2-second times: the second build runs in another one.
	for t0 := time.Now(); time.Since(t0) < 2*time.Second; {
		time.Sleep(100 * time.Millisecond)
	}
	d2, s2 := build(filepath.Join(dir, "2"))
	if !bytes.Equal(s1, s2) {
		t.Fatalf("two slot images differ at byte %d", firstDiff(s1, s2))
	}
	if !bytes.Equal(d1, d2) {
		t.Fatalf("two disk images differ at byte %d", firstDiff(d1, d2))
	}
	if int64(len(d1)) != board.DiskSize() {
		t.Fatalf("disk is %d bytes", len(d1))
	}
	m, err := ReadSlotManifest(filepath.Join(dir, "1", "slot.img"))
	if err != nil || m.Board != "pc-x86_64" {
		t.Fatalf("slot manifest = %+v, %v", m, err)
	}
	d, err := diskfs.Open(filepath.Join(dir, "1", "disk.img"), diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, ok := d.Table.(*gpt.Table)
	if !ok || !tb.ProtectiveMBR {
		t.Fatal("no GPT with a protective MBR")
	}
	want := []struct {
		label string
		typ   string
		start int64
		size  int64
	}{
		{board.SlotALabel, board.ESPType, board.Align, board.SlotSize},
		{board.SlotBLabel, board.ESPType, board.Align + board.SlotSize, board.SlotSize},
		{board.DataLabel, board.LinuxFSType, board.Align + 2*board.SlotSize, board.DataSize},
	}
	for i, w := range want {
		p := tb.Partitions[i]
		if p.Name != w.label || string(p.Type) != w.typ || int64(p.Start)*512 != w.start || int64(p.End-p.Start+1)*512 != w.size {
			t.Fatalf("partition %d = %s %s %d+%d, want %+v", i+1, p.Name, p.Type, p.Start, p.End-p.Start+1, w)
		}
		if i < 2 && !bytes.Equal(d1[w.start:w.start+int64(len(s1))], s1) {
			t.Fatalf("slot %s does not hold the slot image", w.label)
		}
	}
	// The data partition holds an ext4 labelled edgepbx-data.
	sb := d1[want[2].start+1024:]
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xEF53 || string(bytes.TrimRight(sb[0x78:0x88], "\x00")) != board.DataLabel {
		t.Fatal("data partition has no ext4 labelled edgepbx-data")
	}
	// A journal (compat 0x4) and extents (incompat 0x40): without them a
	// power cut damages /data.
	if binary.LittleEndian.Uint32(sb[0x5c:])&0x4 == 0 || binary.LittleEndian.Uint32(sb[0x60:])&0x40 == 0 {
		t.Fatalf("data file system lacks a journal or extents: compat %#x incompat %#x",
			binary.LittleEndian.Uint32(sb[0x5c:]), binary.LittleEndian.Uint32(sb[0x60:]))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
