// Package qemu boots edgepbx images under QEMU for `edgepbx run` and the
// end-to-end tests: it builds the command line per architecture, creates the
// persistent data disk, forwards host ports, captures the serial console and
// drives QEMU through QMP.
package qemu

import (
	"errors"
	"fmt"
	"strings"
)

// Arch is a guest architecture QEMU can boot.
type Arch string

// Supported architectures.
const (
	ArchX86_64 Arch = "x86_64"
	ArchARM64  Arch = "arm64"
)

// ParseArch accepts the usual spellings of the two architectures.
func ParseArch(s string) (Arch, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "x86_64", "x86-64", "amd64":
		return ArchX86_64, nil
	case "arm64", "aarch64":
		return ArchARM64, nil
	}
	return "", fmt.Errorf("qemu: unsupported architecture %q (want x86_64 or arm64)", s)
}

// Target is what to boot, independent of how it was built: Boot derives it
// from an image, tests may fill it in by hand.
type Target struct {
	Arch      Arch
	Binary    string // qemu-system-* executable; default per Arch
	Machine   string // -M value; default per Arch (microvm / virt)
	CPU       string // -cpu value; default per Arch and accelerator
	Console   string // guest console device, e.g. ttyS0; default per Arch
	Kernel    string // x86_64: uncompressed vmlinux (PVH); arm64: Image
	Initramfs string
	Cmdline   string
	// UEFI boots a whole disk image through firmware instead of -kernel.
	UEFI *UEFI
}

// UEFI is a firmware boot of a disk image (x86_64: OVMF on q35). The disk
// is on the machine's AHCI controller, as on a real box; Vars is a
// writable copy of the firmware's variable store that persists across
// boots (BootOrder, BootNext, the slots' state).
type UEFI struct {
	Code string // read-only firmware, e.g. /usr/share/OVMF/OVMF_CODE_4M.fd
	Vars string // writable variable store
	Disk string // raw disk image
}

// withDefaults fills the per-architecture defaults and checks the result.
func (t Target) withDefaults(kvm bool) (Target, error) {
	switch t.Arch {
	case ArchX86_64:
		if t.Binary == "" {
			t.Binary = "qemu-system-x86_64"
		}
		if t.Machine == "" {
			t.Machine = "microvm"
			if t.UEFI != nil {
				t.Machine = "q35"
			}
		}
		if t.Console == "" {
			t.Console = "ttyS0"
		}
		if t.CPU == "" {
			// max gives TCG guests RDRAND, so the kernel's RNG is seeded early.
			t.CPU = "max"
		}
	case ArchARM64:
		if t.Binary == "" {
			t.Binary = "qemu-system-aarch64"
		}
		if t.Machine == "" {
			t.Machine = "virt"
		}
		if t.Console == "" {
			t.Console = "ttyAMA0"
		}
		if t.CPU == "" {
			t.CPU = "cortex-a57"
		}
	default:
		return t, fmt.Errorf("qemu: unsupported architecture %q", t.Arch)
	}
	if kvm {
		t.CPU = "host"
	}
	if t.UEFI != nil {
		if t.UEFI.Code == "" || t.UEFI.Vars == "" || t.UEFI.Disk == "" {
			return t, errors.New("qemu: UEFI target needs firmware code, variable store and disk")
		}
		for _, s := range []string{t.UEFI.Code, t.UEFI.Vars, t.UEFI.Disk} {
			if strings.ContainsAny(s, "\x00\n\r") {
				return t, fmt.Errorf("qemu: target field %q contains a control character", s)
			}
		}
		return t, nil
	}
	if t.Kernel == "" {
		return t, errors.New("qemu: target has no kernel")
	}
	if t.Initramfs == "" {
		return t, errors.New("qemu: target has no initramfs")
	}
	for _, s := range []string{t.Binary, t.Machine, t.CPU, t.Console, t.Kernel, t.Initramfs, t.Cmdline} {
		if strings.ContainsAny(s, "\x00\n\r") {
			return t, fmt.Errorf("qemu: target field %q contains a control character", s)
		}
	}
	return t, nil
}

// machineArg is the -M value: the board's machine plus the properties the
// runner relies on.
func (t Target) machineArg(kvm bool) string {
	m := t.Machine
	switch {
	case t.Arch == ArchX86_64 && m == "microvm":
		// acpi=on: system_powerdown becomes an ACPI power-button event and the
		// guest's poweroff reaches QEMU through the GED sleep registers.
		m += ",acpi=on,x-option-roms=off,rtc=on,isa-serial=on"
	}
	if kvm {
		m += ",accel=kvm"
	} else {
		m += ",accel=tcg"
	}
	return m
}

// cmdline is the kernel command line: the image's own plus console and panic
// handling (a panic reboots, -no-reboot turns that into QEMU exiting, so a
// broken guest shows as an exit instead of a hang), plus extras.
func (t Target) cmdline(extra []string) string {
	var parts []string
	if !hasParam(t.Cmdline, "console") {
		parts = append(parts, "console="+t.Console)
	}
	if t.Cmdline != "" {
		parts = append(parts, t.Cmdline)
	}
	if !hasParam(t.Cmdline, "panic") {
		parts = append(parts, "panic=-1")
	}
	parts = append(parts, extra...)
	return strings.Join(parts, " ")
}

func hasParam(cmdline, name string) bool {
	for _, f := range strings.Fields(cmdline) {
		if f == name || strings.HasPrefix(f, name+"=") {
			return true
		}
	}
	return false
}

// escapeOpt quotes a value for QEMU's option syntax, where a comma separates
// options and ",," stands for a literal comma.
func escapeOpt(s string) string {
	return strings.ReplaceAll(s, ",", ",,")
}
