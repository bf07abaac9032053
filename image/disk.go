package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/edgepbx/edgepbx/board"
)

// Output file names of a disk build.
const (
	DiskName     = "disk.img"
	SlotName     = "slot.img"
	SlotManifest = "/edgepbx/manifest.json"
)

// fatTime is every FAT entry's timestamp: a fixed instant keeps two builds
// byte-identical (FAT has no "unset" time; 2020 is inside its range).
var fatTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// ext4Time is what mke2fs believes the time is (E2FSPROGS_FAKE_TIME).
const ext4Time = "1577836800"

// minSlotImage is the smallest FAT32 volume with 512-byte clusters
// (65525 clusters plus FATs and reserved sectors), rounded up to MiB.
const minSlotImage = 34 << 20

// Disk is a built disk image.
type Disk struct {
	Path       string // the raw GPT disk image
	Size       int64
	Slot       string // the slot image (FAT32 with the UKI): a bundle's payload
	SlotSize   int64
	SlotSHA256 string
	UKISize    int64
	StubPkg    string // systemd-boot-efi version the UKI starts with
}

// SlotImageManifest is /edgepbx/manifest.json inside a slot image.
type SlotImageManifest struct {
	Board           string `json:"board"`
	Arch            string `json:"arch"`
	Version         string `json:"version"`
	KernelRelease   string `json:"kernel_release"`
	KernelSHA256    string `json:"kernel_sha256"`
	InitramfsSHA256 string `json:"initramfs_sha256"`
	Cmdline         string `json:"cmdline"`
	Stub            string `json:"stub"`
}

// buildDisk writes slot.img and disk.img into o.outDir for a built image.
func buildDisk(ctx context.Context, o *options, prof board.Profile, k *Kernel, img *Image, version string) (*Disk, error) {
	stub, stubVer, err := fetchStub(ctx, o, prof.Arch)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	kpath := k.Vmlinuz
	if prof.Arch == board.ArchARM64 {
		kpath = k.Image // the EFI stub is in the uncompressed Image
	}
	kernel, err := os.ReadFile(kpath)
	if err != nil {
		return nil, fmt.Errorf("disk: kernel: %w", err)
	}
	initrd, err := os.ReadFile(img.Initramfs)
	if err != nil {
		return nil, fmt.Errorf("disk: initramfs: %w", err)
	}
	uki, err := BuildUKI(stub, []UKISection{
		{Name: ".osrel", Data: osRelease(prof.Name, version)},
		{Name: ".cmdline", Data: append([]byte(img.Cmdline), 0)},
		{Name: ".initrd", Data: initrd},
		{Name: ".linux", Data: kernel},
	})
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	ksum, isum := sha256.Sum256(kernel), sha256.Sum256(initrd)
	man, err := json.MarshalIndent(SlotImageManifest{
		Board: prof.Name, Arch: prof.Arch, Version: version, KernelRelease: img.KernelRelease,
		KernelSHA256: hex.EncodeToString(ksum[:]), InitramfsSHA256: hex.EncodeToString(isum[:]),
		Cmdline: img.Cmdline, Stub: StubPackage + " " + stubVer,
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	d := &Disk{
		Path:    filepath.Join(o.outDir, DiskName),
		Slot:    filepath.Join(o.outDir, SlotName),
		Size:    board.DiskSize(),
		UKISize: int64(len(uki)),
		StubPkg: stubVer,
	}
	work, err := os.MkdirTemp(o.tempDir, "edgepbx-disk-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	slotTmp := filepath.Join(work, SlotName)
	files := []slotFile{{board.UKIPath(prof.Arch), uki}, {SlotManifest, append(man, '\n')}}
	if d.SlotSize, err = WriteSlotImage(slotTmp, files); err != nil {
		return nil, err
	}
	dataTmp := filepath.Join(work, "data.img")
	if err := writeDataFS(ctx, dataTmp, prof.Name, version); err != nil {
		return nil, err
	}
	diskTmp := filepath.Join(work, DiskName)
	if err := WriteDiskImage(diskTmp, prof.Name, version, slotTmp, dataTmp); err != nil {
		return nil, err
	}
	if d.SlotSHA256, _, err = copyAtomic(slotTmp, d.Slot); err != nil {
		return nil, err
	}
	if err := os.Rename(diskTmp, d.Path); err != nil {
		// work may be on another file system than the out dir.
		if _, _, err := copyAtomic(diskTmp, d.Path); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func osRelease(boardName, version string) []byte {
	return []byte(fmt.Sprintf("NAME=edgepbx\nID=edgepbx\nVERSION_ID=%s\nPRETTY_NAME=\"edgepbx %s (%s)\"\n", version, version, boardName))
}

type slotFile struct {
	path string // absolute, '/'-separated
	data []byte
}

// WriteSlotImage writes a FAT32 volume labelled EDGEPBX holding files to
// path and returns its size: the files' size plus 4 MiB, rounded up to
// MiB, at least minSlotImage and at most board.SlotSize. Every directory
// and file entry carries fatTime and files are written in path order.
func WriteSlotImage(path string, files []slotFile) (int64, error) {
	var need int64
	for _, f := range files {
		need += int64(len(f.data))
	}
	size := max(int64(alignUp(uint64(need)+4<<20, board.Align)), minSlotImage)
	if size > board.SlotSize {
		return 0, fmt.Errorf("slot image: %d bytes of files need %d bytes, more than the %d-byte slot", need, size, board.SlotSize)
	}
	// go-diskfs stamps the volume label and "."/".." entries with the
	// time of day unless SOURCE_DATE_EPOCH (the reproducible-builds
	// convention) is set: a build at another second differed.
	if os.Getenv("SOURCE_DATE_EPOCH") == "" {
		os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(fatTime.Unix(), 10))
	}
	d, err := diskfs.Create(path, size, diskfs.SectorSize512)
	if err != nil {
		return 0, fmt.Errorf("slot image: %w", err)
	}
	defer d.Close()
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat32, VolumeLabel: "EDGEPBX", Reproducible: true})
	if err != nil {
		return 0, fmt.Errorf("slot image: mkfs: %w", err)
	}
	sorted := append([]slotFile(nil), files...)
	sortSlotFiles(sorted)
	made := map[string]bool{}
	for _, f := range sorted {
		dir := filepath.ToSlash(filepath.Dir(f.path))
		var parts []string
		for _, p := range strings.Split(strings.Trim(dir, "/"), "/") {
			if p == "" {
				continue
			}
			parts = append(parts, p)
			dp := "/" + strings.Join(parts, "/")
			if made[dp] {
				continue
			}
			if err := fs.Mkdir(dp); err != nil {
				return 0, fmt.Errorf("slot image: mkdir %s: %w", dp, err)
			}
			if err := fs.Chtimes(dp, fatTime, fatTime, fatTime); err != nil {
				return 0, fmt.Errorf("slot image: %s: %w", dp, err)
			}
			made[dp] = true
		}
		w, err := fs.OpenFile(f.path, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return 0, fmt.Errorf("slot image: create %s: %w", f.path, err)
		}
		if _, err := w.Write(f.data); err != nil {
			w.Close()
			return 0, fmt.Errorf("slot image: write %s: %w", f.path, err)
		}
		if err := w.Close(); err != nil {
			return 0, fmt.Errorf("slot image: %s: %w", f.path, err)
		}
		if err := fs.Chtimes(f.path, fatTime, fatTime, fatTime); err != nil {
			return 0, fmt.Errorf("slot image: %s: %w", f.path, err)
		}
	}
	if err := fs.Close(); err != nil {
		return 0, err
	}
	return size, nil
}

func sortSlotFiles(fs []slotFile) {
	for i := 1; i < len(fs); i++ {
		for j := i; j > 0 && fs[j].path < fs[j-1].path; j-- {
			fs[j], fs[j-1] = fs[j-1], fs[j]
		}
	}
}

// writeDataFS makes the empty ext4 data file system with the host's
// mke2fs (e2fsprogs; go-diskfs's ext4 writer is young and the box's
// kernel must grow this file system online for years): 4 KiB blocks so it
// can grow to the whole disk, a UUID and hash seed derived from the build,
// and a fixed clock, so two builds are byte-identical.
// dataFeatures are the data file system's ext4 features: a journal (the
// kernel replays it after a power cut; the online grow is journaled),
// extents, checksummed metadata.
const dataFeatures = "has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize"

func writeDataFS(ctx context.Context, path, boardName, version string) error {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return fmt.Errorf("data file system: mkfs.ext4 not found on the host (Debian package e2fsprogs): %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(board.DataSize); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	uuid := strings.ToLower(board.LayoutGUID(boardName, version, "data-fs"))
	seed := strings.ToLower(board.LayoutGUID(boardName, version, "data-hash-seed"))
	// MKE2FS_CONFIG=/dev/null (no host defaults, for a reproducible
	// build) also drops mke2fs.conf's ext4 stanza: without -O the file
	// system had no journal and no extents, an ext2 that a power cut left
	// damaged ("structure needs cleaning" on /data). The features are
	// e2fsprogs' ext4 defaults, named here.
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-b", "4096", "-I", "256", "-T", "default", "-m", "1",
		"-O", dataFeatures, "-L", board.DataLabel, "-U", uuid,
		"-E", "hash_seed="+seed+",root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0", path)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME="+ext4Time, "MKE2FS_CONFIG=/dev/null")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("data file system: mkfs.ext4: %w: %s", err, out)
	}
	return nil
}

// WriteDiskImage writes the raw GPT disk: protective MBR, the two slots
// (both holding slotImg), the data partition holding dataImg, and the
// backup GPT. GUIDs derive from board and version.
func WriteDiskImage(path, boardName, version, slotImg, dataImg string) error {
	size := board.DiskSize()
	os.Remove(path)
	d, err := diskfs.Create(path, size, diskfs.SectorSize512)
	if err != nil {
		return fmt.Errorf("disk image: %w", err)
	}
	defer d.Close()
	const s = board.SectorSize
	start := uint64(board.Align / s)
	var parts []*gpt.Partition
	for i, p := range []struct {
		label string
		typ   gpt.Type
		size  int64
	}{
		{board.SlotALabel, gpt.Type(board.ESPType), board.SlotSize},
		{board.SlotBLabel, gpt.Type(board.ESPType), board.SlotSize},
		{board.DataLabel, gpt.Type(board.LinuxFSType), board.DataSize},
	} {
		n := uint64(p.size / s)
		parts = append(parts, &gpt.Partition{
			Index: i + 1, Start: start, End: start + n - 1, Size: uint64(p.size),
			Type: p.typ, Name: p.label, GUID: board.LayoutGUID(boardName, version, "part-"+p.label),
		})
		start += n
	}
	table := &gpt.Table{
		LogicalSectorSize: s, PhysicalSectorSize: s, ProtectiveMBR: true,
		GUID: board.LayoutGUID(boardName, version, "disk"), Partitions: parts,
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("disk image: partition: %w", err)
	}
	for i, src := range []string{slotImg, slotImg, dataImg} {
		if err := writePart(d, i+1, src); err != nil {
			return err
		}
	}
	return nil
}

func writePart(d *disk.Disk, idx int, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	p, err := d.GetPartition(idx)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() > p.GetSize() {
		return fmt.Errorf("disk image: %s (%d bytes) does not fit partition %d (%d bytes)", src, fi.Size(), idx, p.GetSize())
	}
	// WritePartitionContents wants exactly the partition's bytes: pad.
	r := io.MultiReader(f, io.LimitReader(zeroReader{}, p.GetSize()-fi.Size()))
	n, err := d.WritePartitionContents(idx, r)
	if err != nil {
		return fmt.Errorf("disk image: partition %d: %w", idx, err)
	}
	if n != p.GetSize() {
		return fmt.Errorf("disk image: partition %d: wrote %d of %d bytes", idx, n, p.GetSize())
	}
	return nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// ErrNotSlotImage is returned by ReadSlotManifest for a file that is no
// slot image.
var ErrNotSlotImage = errors.New("not an edgepbx slot image")

// ReadSlotManifest reads /edgepbx/manifest.json from a slot image.
func ReadSlotManifest(path string) (*SlotImageManifest, error) {
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrNotSlotImage, err)
	}
	b, err := fs.ReadFile(SlotManifest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrNotSlotImage, err)
	}
	var m SlotImageManifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", path, err)
	}
	return &m, nil
}
