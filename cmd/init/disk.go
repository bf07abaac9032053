package main

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/init/grow"
	"github.com/edgepbx/edgepbx/init/mount"
	"github.com/edgepbx/edgepbx/init/slots"
)

const efivars = "/sys/firmware/efi/efivars"

// growData grows /data to the end of its disk (first boot of a flashed
// image, or a disk replaced by a bigger copy). A failure is loud but not
// fatal: /data is mounted and works at its old size.
func (b *box) growData(d mount.DataMount) {
	label, ok := d.Label()
	if !ok {
		return
	}
	dev, err := d.Resolve()
	if err != nil || dev == "" {
		b.log.Warn("data grow: device", "err", err)
		return
	}
	r, err := grow.Partition{Device: dev, Mount: dataDir, Label: label}.Grow()
	if err != nil {
		b.log.Error("data grow", "err", err)
		return
	}
	if r.Table.Grown() || r.NewBlocks > r.OldBlocks {
		b.say("data grown from %d to %d MiB", r.OldBlocks*r.BlockSize>>20, r.NewBlocks*r.BlockSize>>20)
	}
	b.step("data size checked", "bytes", r.NewBlocks*r.BlockSize)
}

// openSlots takes over the A/B boot state on a UEFI box with slots: boot
// entries, the trial in progress and a trial that failed. A box booted
// without UEFI or from a bare kernel (QEMU -kernel) has no slots.
func (b *box) openSlots() {
	if _, err := os.Stat("/sys/firmware/efi"); err != nil {
		return
	}
	if err := unix.Mount("efivarfs", efivars, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		b.log.Warn("efivarfs", "err", err)
		return
	}
	m, err := slots.Open(slots.Config{Arch: b.prof.Arch, Log: b.log})
	if err != nil {
		if !errors.Is(err, slots.ErrNoSlots) {
			b.log.Error("boot slots", "err", err)
		}
		return
	}
	b.slots = m
	st := m.State()
	trial := ""
	if st.Trial {
		trial = " (trial boot: not committed)"
	}
	b.say("slot %s booted, slot %s committed%s", st.Booted, st.Committed, trial)
	if st.RolledBack {
		b.say("ROLLBACK: %s", st.LastRollback)
	}
}
