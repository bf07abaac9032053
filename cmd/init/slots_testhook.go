//go:build testhook

package main

import (
	"encoding/binary"
	"io"
	"os"
	"syscall"

	"github.com/edgepbx/edgepbx/init/shutdown"
)

// Slot test hooks: the QEMU test of the A/B boot path drives the slot API
// as the update installer does, without a bundle (the installer's own
// tests cover verification).
const (
	hookSlotInstall  = "edgepbx-test: slot install"  // copy the running slot into the other, trial it
	hookSlotCommit   = "edgepbx-test: slot commit"   // the health gate's verdict: healthy
	hookSlotRollback = "edgepbx-test: slot rollback" // the health gate's verdict: not healthy
	hookReboot       = "edgepbx-test: reboot"
	// hookFreeze stops edgepbxd (SIGSTOP): it hangs, its health reports
	// stop, PID 1 stops petting the watchdog and the hardware resets.
	hookFreeze = "edgepbx-test: freeze edgepbxd"
)

// slotHook runs a slot hook command; false: line is not one.
func slotHook(b *box, line string) bool {
	switch line {
	case hookSlotInstall, hookSlotCommit, hookSlotRollback:
	case hookReboot:
		b.request(shutdown.Reboot)
		return true
	case hookFreeze:
		err := b.sup.Signal(daemonName, syscall.SIGSTOP)
		b.say("edgepbxd frozen (err %v)", err)
		return true
	default:
		return false
	}
	if b.slots == nil {
		b.say("slot hook: no slots")
		return true
	}
	var err error
	switch line {
	case hookSlotInstall:
		err = copySlot(b)
	case hookSlotCommit:
		if err = b.slots.Commit(); err == nil {
			b.say("slot %s committed", b.slots.State().Booted)
		}
	case hookSlotRollback:
		if err = b.slots.Rollback("test: edgepbxd did not become healthy"); err == nil {
			b.say("slot rollback recorded, rebooting")
			b.request(shutdown.Reboot)
		}
	}
	if err != nil {
		b.say("slot hook failed: %v", err)
	}
	return true
}

func copySlot(b *box) error {
	src, err := b.slots.Active()
	if err != nil {
		return err
	}
	dst, err := b.slots.Inactive()
	if err != nil {
		return err
	}
	if err := b.slots.MarkInvalid(dst.Name); err != nil {
		return err
	}
	in, err := os.Open(src.Path)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := dst.Open()
	if err != nil {
		return err
	}
	defer out.Close()
	// Only the FAT volume (what a bundle carries), not the whole partition:
	// BPB bytes per sector (offset 11) times total sectors (offset 32).
	n := min(src.Size, dst.Size)
	bpb := make([]byte, 36)
	if _, err := in.ReadAt(bpb, 0); err == nil {
		if v := int64(binary.LittleEndian.Uint16(bpb[11:])) * int64(binary.LittleEndian.Uint32(bpb[32:])); v > 0 && v < n {
			n = v
		}
	}
	if _, err := io.Copy(out, io.LimitReader(in, n)); err != nil {
		return err
	}
	if err := out.Sync(); err != nil {
		return err
	}
	if err := b.slots.MarkTrial(dst.Name); err != nil {
		return err
	}
	b.say("slot %s marked for a trial boot", dst.Name)
	return nil
}
