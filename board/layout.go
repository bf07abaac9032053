package board

import (
	"crypto/sha256"
	"fmt"
)

// The disk layout every disk image has and PID 1 relies on (see
// docs/architecture.md, "Disk image and A/B slots"). It is the same for all
// boards: only the UKI's file name inside a slot depends on the arch.
const (
	// SectorSize is the logical sector size images are built for.
	SectorSize = 512
	// Align is where every partition starts and ends (1 MiB).
	Align = 1 << 20

	SlotALabel = "edgepbx-a"
	SlotBLabel = "edgepbx-b"
	DataLabel  = "edgepbx-data"

	// SlotSize is each slot partition; a slot image may be smaller.
	SlotSize = 128 << 20
	// DataSize is the data partition in the image; PID 1 grows it to
	// the end of the disk on first boot.
	DataSize = 64 << 20

	// ESPType is the EFI System Partition type: both slots carry it, so
	// a firmware with empty NVRAM finds slot A's \EFI\BOOT\BOOT*.EFI.
	ESPType = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	// LinuxFSType is the data partition's type (Linux file system data).
	LinuxFSType = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
)

// SlotLabels are the two system slots, A first.
var SlotLabels = [2]string{SlotALabel, SlotBLabel}

// UKIPath is where a slot image holds its unified kernel image: the
// removable-media default path the firmware boots without a Boot#### entry.
func UKIPath(arch string) string {
	if arch == ArchARM64 {
		return "/EFI/BOOT/BOOTAA64.EFI"
	}
	return "/EFI/BOOT/BOOTX64.EFI"
}

// DiskSize is the size of the raw disk image: 1 MiB for the protective
// MBR and primary GPT, the two slots, the data partition and 1 MiB for
// the backup GPT.
func DiskSize() int64 { return Align + 2*SlotSize + DataSize + Align }

// LayoutGUID derives a fixed GUID (RFC 4122 version 4 layout, so tools
// accept it) from the board, the version and what it names, so two
// builds of the same tree give the same bytes.
func LayoutGUID(board, version, what string) string {
	h := sha256.Sum256([]byte("edgepbx-disk-guid\x00" + board + "\x00" + version + "\x00" + what))
	h[6] = h[6]&0x0f | 0x40
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}
