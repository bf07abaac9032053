package qemu

import (
	"fmt"
	"strconv"
	"strings"
)

// tapFD is the descriptor number QEMU sees the tap on (first of ExtraFiles).
const tapFD = 3

// args builds QEMU's argument list (without the binary). It is pure so it can
// be tested per architecture; all host resources (ports, disk, QMP socket) are
// decided before.
func args(t Target, c config, qmpSocket string) ([]string, error) {
	a := []string{
		"-nodefaults", "-no-user-config", "-display", "none",
		// -no-reboot: a guest reboot or panic ends QEMU; the caller decides
		// whether to start again.
		"-no-reboot",
		"-M", t.machineArg(c.kvm),
		"-cpu", t.CPU,
		"-m", strconv.Itoa(c.memoryMiB),
		"-smp", "1",
		// The console is QEMU's stdin/stdout, which the runner owns; signal=off
		// so a stray ^C byte is not QEMU's business.
		"-chardev", "stdio,id=con0,signal=off",
		"-serial", "chardev:con0",
		"-chardev", "socket,id=qmp0,path=" + escapeOpt(qmpSocket) + ",server=on,wait=off",
		"-mon", "chardev=qmp0,mode=control",
	}
	if c.kvm {
		a = append(a, "-enable-kvm")
	}
	if u := t.UEFI; u != nil {
		// The firmware loads the kernel from the disk. x86_64: the disk is
		// on q35's AHCI, the NIC an e1000e (drivers a pc-x86_64 box loads
		// anyway); arm64 virt: virtio PCI. The watchdog is an i6300esb.
		disk, nic := "ide-hd,drive=disk0,bus=ide.0", "e1000e,netdev=net0"
		if t.Arch == ArchARM64 {
			disk, nic = "virtio-blk-pci,drive=disk0", "virtio-net-pci,netdev=net0"
		}
		a = append(a,
			"-drive", "if=pflash,format=raw,readonly=on,file="+escapeOpt(u.Code),
			"-drive", "if=pflash,format=raw,file="+escapeOpt(u.Vars),
			"-drive", "id=disk0,if=none,format=raw,cache=writeback,file="+escapeOpt(u.Disk),
			"-device", disk,
			"-device", "i6300esb")
		tpm, err := tpmArgs(t, c)
		if err != nil {
			return nil, err
		}
		a = append(a, tpm...)
		nd, err := userNetdev(c.forwards, c.guestFwds)
		if err != nil {
			return nil, err
		}
		return append(a, "-netdev", nd, "-device", nic), nil
	}
	a = append(a, "-kernel", t.Kernel, "-initrd", t.Initramfs, "-append", t.cmdline(append(c.kernelArgs(), tpmKernelArgs(t, c)...)))
	// virtio-mmio transports on both machines: microvm has nothing else, and
	// virt describes them in its device tree, so one driver set serves both.
	const bus = "device"
	a = append(a, "-device", "virtio-rng-"+bus)
	if c.dataDisk != "" {
		a = append(a,
			"-drive", "id=data0,if=none,format=raw,cache=writeback,file="+escapeOpt(c.dataDisk),
			"-device", "virtio-blk-"+bus+",drive=data0")
	}
	tpm, err := tpmArgs(t, c)
	if err != nil {
		return nil, err
	}
	a = append(a, tpm...)
	switch {
	case c.tap != nil && len(c.guestFwds) > 0:
		return nil, fmt.Errorf("qemu: guest forwards need user-mode networking, not a tap")
	case c.tap != nil:
		a = append(a,
			"-netdev", "tap,id=net0,fd="+strconv.Itoa(tapFD),
			"-device", "virtio-net-"+bus+",netdev=net0")
	default:
		nd, err := userNetdev(c.forwards, c.guestFwds)
		if err != nil {
			return nil, err
		}
		a = append(a, "-netdev", nd, "-device", "virtio-net-"+bus+",netdev=net0")
	}
	return a, nil
}

// userNetdev is the user-mode (slirp) network: restrict=on keeps the guest from
// reaching anything beyond its own forwards, and forwards listen on loopback
// only so the VM is never exposed to the host's networks.
func userNetdev(fw []Forward, gfw []GuestForward) (string, error) {
	var b strings.Builder
	b.WriteString("user,id=net0,restrict=on")
	for _, f := range fw {
		if f.HostPort <= 0 {
			return "", fmt.Errorf("qemu: forward %s guest port %d has no host port", f.Proto, f.GuestPort)
		}
		fmt.Fprintf(&b, ",hostfwd=%s:127.0.0.1:%d-:%d", f.Proto, f.HostPort, f.GuestPort)
	}
	for _, g := range gfw {
		if g.Each {
			// Addresses hold no commas, so the command needs no escaping.
			fmt.Fprintf(&b, ",guestfwd=tcp:%s-cmd:busybox nc %s %d", g.Guest, g.Host.Addr(), g.Host.Port())
			continue
		}
		fmt.Fprintf(&b, ",guestfwd=tcp:%s-tcp:%s", g.Guest, g.Host)
	}
	return b.String(), nil
}

// tpmKernelArgs: QEMU's microvm lists the TIS device in its DSDT but builds
// no TPM2 ACPI table, so Linux's ACPI probe refuses it ("failed to get TPM2
// ACPI table"); force=1 probes the TIS at its fixed address instead, and
// the device has no interrupt line there.
func tpmKernelArgs(t Target, c config) []string {
	if c.tpmCtrl == "" || t.Arch != ArchX86_64 || t.Machine != "microvm" {
		return nil
	}
	return []string{"tpm_tis.force=1", "tpm_tis.interrupts=0"}
}

// tpmArgs attach the swtpm socket (WithTPM), if any.
func tpmArgs(t Target, c config) ([]string, error) {
	if c.tpmCtrl == "" {
		return nil, nil
	}
	// x86: the ISA TIS device, described in ACPI (microvm and q35).
	// arm64 virt would take tpm-tis-device, but Debian's arm64 kernel
	// builds no MMIO TIS driver (CONFIG_TCG_TIS unset): refuse rather
	// than boot a guest that silently has no TPM.
	if t.Arch != ArchX86_64 {
		return nil, fmt.Errorf("qemu: no TPM on %s: the kernel has no driver for QEMU's TPM device", t.Arch)
	}
	return []string{
		"-chardev", "socket,id=tpmc0,path=" + escapeOpt(c.tpmCtrl),
		"-tpmdev", "emulator,id=tpm0,chardev=tpmc0",
		"-device", "tpm-tis,tpmdev=tpm0"}, nil
}
