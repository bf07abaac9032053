// Package slots is PID 1's A/B boot layer on UEFI boxes: which system slot
// is running, which one is committed, and the trial boot of a freshly
// written slot (docs/architecture.md, "Disk image and A/B slots").
//
// All state is in UEFI variables (u-root's pkg/efivarfs), none on disk:
//   - one Boot#### entry per slot (HD(partition)/\EFI\BOOT\BOOT*.EFI);
//   - BootOrder: the committed slot first, the other second;
//   - BootNext: the slot under trial; the firmware deletes it before it
//     boots it, so a trial is tried exactly once and any failed trial boot
//     (panic, watchdog reset, power cut, reboot before Commit) comes back
//     to BootOrder[0], the old slot;
//   - EdgepbxTrial: the slot under trial, so the old slot, booted again,
//     knows the trial failed and says so (EdgepbxLastRollback).
//
// The slot that is running comes from LoaderDevicePartUUID, which the UKI's
// systemd-stub sets, or else from BootCurrent's entry.
package slots

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"
	"github.com/u-root/u-root/pkg/efivarfs"

	"github.com/edgepbx/edgepbx/board"
)

// Refusals.
var (
	ErrNoEFI       = errors.New("no UEFI variables (efivarfs not mounted or not a UEFI boot)")
	ErrNotTrial    = errors.New("not running a trial boot")
	ErrTrial       = errors.New("a trial boot is running: commit or roll back first")
	ErrActiveSlot  = errors.New("slot is the running or committed slot")
	ErrUnknownSlot = errors.New("unknown slot")
	ErrNoSlots     = errors.New("disk has no edgepbx slots")
	ErrUnknownBoot = errors.New("cannot tell which slot booted")
)

// GUIDs of the variables edgepbx reads and writes.
var (
	globalGUID = uuid.MustParse("8be4df61-93ca-11d2-aa0d-00e098032b8c")
	loaderGUID = uuid.MustParse("4a67b082-0a4c-41cf-b6c7-440b29bb8c4f") // systemd-stub
	// VendorGUID owns EdgepbxTrial and EdgepbxLastRollback.
	VendorGUID = uuid.MustParse("5e0c6d1a-7b7f-4c2b-9a3e-3d1f0e6b2a51")
)

const (
	attrs = efivarfs.AttributeNonVolatile | efivarfs.AttributeBootserviceAccess | efivarfs.AttributeRuntimeAccess

	varTrial    = "EdgepbxTrial"
	varRollback = "EdgepbxLastRollback"
	// varEnded names the trial Rollback ended: the old slot reports that
	// reason instead of a crash.
	varEnded = "EdgepbxTrialEnded"
	// varStarted names the trial slot whose PID 1 took over: a failed
	// trial without it never got that far (the firmware could not load
	// the slot, or its kernel died first), and the old slot says so.
	varStarted = "EdgepbxTrialStarted"
	// maxReason bounds what is kept in NVRAM (small, shared with the firmware).
	maxReason = 256
	// invalidBytes is what MarkInvalid zeroes: the FAT boot sector, FATs
	// and root directory of a slot image are inside it.
	invalidBytes = 1 << 20
)

// Slot is one system slot partition.
type Slot struct {
	Name  string // "a" or "b"
	Label string // GPT partition name (board.SlotALabel …)
	Path  string // block device of the partition
	Size  int64  // bytes
	// From the GPT: what a Boot#### entry names.
	Index    int
	Start    uint64 // LBA
	Sectors  uint64
	PartUUID uuid.UUID
}

// Open opens the partition for writing an image (never through a mount).
func (s Slot) Open() (*os.File, error) {
	f, err := os.OpenFile(s.Path, os.O_RDWR|os.O_EXCL, 0)
	if err != nil {
		return nil, fmt.Errorf("slot %s: %w", s.Name, err)
	}
	return f, nil
}

// State is what the boot layer knows after boot.
type State struct {
	Booted    string // slot running now
	Committed string // slot the firmware boots by default
	// Trial: running a slot that is not committed (after MarkTrial).
	Trial     bool
	TrialSlot string
	// RolledBack: this boot found that the trial of another slot failed
	// without a Rollback (panic, watchdog reset, power cut).
	RolledBack   bool
	LastRollback string // why the last trial ended without commit
	FailedSlot   string // with RolledBack: the slot that did not come up
}

// Config locates the box's pieces; zero values are the real box.
type Config struct {
	SysRoot string          // "/sys"
	DevRoot string          // "/dev"
	Vars    efivarfs.EFIVar // efivarfs at /sys/firmware/efi/efivars
	Arch    string          // board arch: names the UKI (default amd64)
	Log     *slog.Logger
}

// Manager is the boot layer. Its methods are durable when they return
// (efivarfs writes go to the firmware's NVRAM synchronously).
type Manager struct {
	vars   efivarfs.EFIVar
	log    *slog.Logger
	slots  [2]Slot
	entry  [2]uint16 // Boot#### of each slot
	loader string
	st     State
}

// Open finds the slots and the boot state and takes over at boot: it
// creates missing Boot#### entries, puts them into BootOrder on a fresh
// box, and records a failed trial. PID 1 calls it once per boot.
func Open(cfg Config) (*Manager, error) {
	if cfg.SysRoot == "" {
		cfg.SysRoot = "/sys"
	}
	if cfg.DevRoot == "" {
		cfg.DevRoot = "/dev"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Vars == nil {
		v, err := openSysVars()
		if err != nil {
			return nil, fmt.Errorf("slots: %w: %w", ErrNoEFI, err)
		}
		cfg.Vars = v
	}
	arch := cfg.Arch
	if arch == "" {
		arch = board.ArchAMD64
	}
	m := &Manager{vars: cfg.Vars, log: cfg.Log, loader: strings.ReplaceAll(board.UKIPath(arch), "/", `\`)}
	var err error
	if m.slots, err = findSlots(cfg.SysRoot, cfg.DevRoot); err != nil {
		return nil, fmt.Errorf("slots: %w", err)
	}
	if err := m.takeOver(); err != nil {
		return nil, fmt.Errorf("slots: %w", err)
	}
	return m, nil
}

// findSlots resolves both slot partitions through sysfs (there is no
// udev: no /dev/disk/by-partlabel) and reads their GUIDs from the GPT.
func findSlots(sys, dev string) ([2]Slot, error) {
	var s [2]Slot
	ents, err := os.ReadDir(filepath.Join(sys, "class/block"))
	if err != nil {
		return s, err
	}
	disk := ""
	for i, label := range board.SlotLabels {
		s[i] = Slot{Name: string(rune('a' + i)), Label: label}
		for _, e := range ents {
			ue, err := os.ReadFile(filepath.Join(sys, "class/block", e.Name(), "uevent"))
			if err != nil {
				continue
			}
			var name, devname string
			for _, l := range strings.Split(string(ue), "\n") {
				if v, ok := strings.CutPrefix(l, "PARTNAME="); ok {
					name = v
				}
				if v, ok := strings.CutPrefix(l, "DEVNAME="); ok {
					devname = v
				}
			}
			if name != label || devname == "" || strings.Contains(devname, "..") {
				continue
			}
			if s[i].Path != "" {
				return s, fmt.Errorf("two partitions named %q (%s, %s)", label, s[i].Path, devname)
			}
			real, err := filepath.EvalSymlinks(filepath.Join(sys, "class/block", e.Name()))
			if err != nil {
				return s, err
			}
			pno, err := readInt(filepath.Join(real, "partition"))
			if err != nil {
				return s, fmt.Errorf("%s: %w", devname, err)
			}
			parent := filepath.Base(filepath.Dir(real))
			if disk != "" && disk != parent {
				return s, fmt.Errorf("slots on two disks (%s, %s)", disk, parent)
			}
			disk = parent
			s[i].Path, s[i].Index = filepath.Join(dev, devname), int(pno)
		}
		if s[i].Path == "" {
			return s, fmt.Errorf("%q: %w", label, ErrNoSlots)
		}
	}
	d, err := diskfs.Open(filepath.Join(dev, disk), diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return s, fmt.Errorf("disk %s: %w", disk, err)
	}
	defer d.Close()
	t, ok := d.Table.(*gpt.Table)
	if !ok {
		return s, fmt.Errorf("disk %s: no GPT", disk)
	}
	sector := uint64(t.LogicalSectorSize)
	for i := range s {
		var p *gpt.Partition
		for _, q := range t.Partitions {
			if q != nil && q.Index == s[i].Index {
				p = q
			}
		}
		if p == nil || p.Name != s[i].Label {
			return s, fmt.Errorf("disk %s: GPT partition %d is not %q", disk, s[i].Index, s[i].Label)
		}
		g, err := uuid.Parse(p.GUID)
		if err != nil {
			return s, fmt.Errorf("disk %s: partition %d GUID %q: %w", disk, p.Index, p.GUID, err)
		}
		s[i].Start, s[i].Sectors, s[i].PartUUID = p.Start, p.End-p.Start+1, g
		s[i].Size = int64(s[i].Sectors * sector)
	}
	return s, nil
}

func readInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

func (m *Manager) idx(name string) (int, error) {
	for i, s := range m.slots {
		if s.Name == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("%q: %w", name, ErrUnknownSlot)
}

// takeOver reads the boot state and repairs what a fresh box or a cut
// between two variable writes left.
func (m *Manager) takeOver() error {
	if err := m.ensureEntries(); err != nil {
		return err
	}
	booted, err := m.booted()
	if err != nil {
		return err
	}
	order, err := m.order()
	if err != nil {
		return err
	}
	committed := -1
	for _, n := range order {
		if n == m.entry[0] || n == m.entry[1] {
			committed = slices.Index(m.entry[:], n)
			break
		}
	}
	if committed < 0 {
		// Fresh box (or NVRAM cleared): the slot that booted is committed.
		if err := m.writeOrder(booted); err != nil {
			return err
		}
		committed = booted
	}
	trial, err := m.getString(varTrial)
	if err != nil {
		return err
	}
	m.st = State{Booted: m.slots[booted].Name, Committed: m.slots[committed].Name, TrialSlot: trial}
	switch {
	case booted != committed && trial == m.st.Booted:
		m.st.Trial = true
		if err := m.setString(varStarted, trial); err != nil {
			return err
		}
	case booted != committed:
		// Not a trial, yet not the committed slot: the firmware could not
		// load the committed slot and fell back to the second entry.
		// What runs is all there is: make it the default.
		reason := fmt.Sprintf("slot %s failed to load; the firmware started slot %s", m.st.Committed, m.st.Booted)
		if err := m.setString(varRollback, reason); err != nil {
			return err
		}
		if err := m.writeOrder(booted); err != nil {
			return err
		}
		m.st.FailedSlot = m.st.Committed
		m.st.Committed, m.st.RolledBack = m.st.Booted, true
		m.log.Warn("boot slot fallback", "reason", reason)
	case trial != "" && trial != m.st.Booted:
		// The trial slot booted once (BootNext) and the box came back
		// here without Commit or Rollback: it crashed, hung (watchdog)
		// or lost power.
		ended, err := m.getString(varEnded)
		if err != nil {
			return err
		}
		started, err := m.getString(varStarted)
		if err != nil {
			return err
		}
		reason := fmt.Sprintf("trial boot of slot %s did not become healthy (crash, watchdog reset, power loss or reboot before commit)", trial)
		if started != trial {
			reason = fmt.Sprintf("trial boot of slot %s never reached its PID 1 (the firmware could not load the slot, its kernel failed, or the power went first)", trial)
		}
		if ended == trial {
			reason, _ = m.getString(varRollback) // Rollback recorded why
		} else if err := m.setString(varRollback, reason); err != nil {
			return err
		}
		m.st.RolledBack, m.st.FailedSlot = true, trial
		m.log.Warn("trial boot failed, back on the old slot", "slot", trial, "reason", reason)
	}
	if !m.st.Trial && trial != "" {
		// Commit cut after BootOrder was written, or the failure above
		// is recorded: the trial is over.
		if err := m.remove(vendor(varTrial)); err != nil {
			return err
		}
		if err := m.remove(vendor(varEnded)); err != nil {
			return err
		}
		if err := m.remove(vendor(varStarted)); err != nil {
			return err
		}
		m.st.TrialSlot = ""
	}
	if m.st.LastRollback, err = m.getString(varRollback); err != nil {
		return err
	}
	return nil
}

// State returns the boot state found at Open and changed since.
func (m *Manager) State() State { return m.st }

// Slot returns a slot by name.
func (m *Manager) Slot(name string) (Slot, error) {
	i, err := m.idx(name)
	if err != nil {
		return Slot{}, err
	}
	return m.slots[i], nil
}

// Active is the slot running now.
func (m *Manager) Active() (Slot, error) { return m.Slot(m.st.Booted) }

// Inactive is the slot to write an update into. During a trial boot the
// other slot is the fallback: it is not offered.
func (m *Manager) Inactive() (Slot, error) {
	if m.st.Trial || m.st.Booted != m.st.Committed {
		return Slot{}, ErrTrial
	}
	for _, s := range m.slots {
		if s.Name != m.st.Booted {
			return s, nil
		}
	}
	return Slot{}, ErrNoSlots
}

// MarkInvalid takes a slot out of the boot path and destroys its file
// system's head, before an image is written to it: a half-written slot
// never boots.
func (m *Manager) MarkInvalid(name string) error {
	i, err := m.idx(name)
	if err != nil {
		return err
	}
	if name == m.st.Booted || name == m.st.Committed {
		return fmt.Errorf("mark %s invalid: %w", name, ErrActiveSlot)
	}
	order, err := m.order()
	if err != nil {
		return err
	}
	if j := slices.Index(order, m.entry[i]); j >= 0 {
		if err := m.setOrder(slices.Delete(order, j, j+1)); err != nil {
			return err
		}
	}
	if n, ok, err := m.bootNext(); err != nil {
		return err
	} else if ok && n == m.entry[i] {
		if err := m.remove(global("BootNext")); err != nil {
			return err
		}
	}
	if t, err := m.getString(varTrial); err != nil {
		return err
	} else if t == name {
		if err := m.remove(vendor(varTrial)); err != nil {
			return err
		}
	}
	f, err := m.slots[i].Open()
	if err != nil {
		return err
	}
	defer f.Close()
	n := min(int64(invalidBytes), m.slots[i].Size)
	if _, err := f.WriteAt(make([]byte, n), 0); err != nil {
		return fmt.Errorf("mark %s invalid: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("mark %s invalid: %w", name, err)
	}
	return nil
}

// MarkTrial makes the next boot, and only that one, boot the slot. The
// caller has written and verified it.
func (m *Manager) MarkTrial(name string) error {
	i, err := m.idx(name)
	if err != nil {
		return err
	}
	if name == m.st.Booted || name == m.st.Committed {
		return fmt.Errorf("trial of %s: %w", name, ErrActiveSlot)
	}
	// EdgepbxTrial first: a cut before BootNext is written boots the old
	// slot, which then reports the trial as failed (honestly: it never ran).
	if err := m.remove(vendor(varStarted)); err != nil {
		return err
	}
	if err := m.setString(varTrial, name); err != nil {
		return err
	}
	c, _ := m.idx(m.st.Committed)
	if err := m.writeOrder(c); err != nil {
		return err
	}
	if err := m.set(global("BootNext"), encodeOrder([]uint16{m.entry[i]})); err != nil {
		return err
	}
	m.st.TrialSlot = name
	return nil
}

// Commit makes the running trial slot the default.
func (m *Manager) Commit() error {
	if !m.st.Trial {
		return ErrNotTrial
	}
	b, _ := m.idx(m.st.Booted)
	if err := m.writeOrder(b); err != nil {
		return err
	}
	// A cut here: the next boot finds booted == committed and clears it.
	if err := m.remove(vendor(varTrial)); err != nil {
		return err
	}
	m.st.Committed, m.st.Trial, m.st.TrialSlot = m.st.Booted, false, ""
	return nil
}

// Rollback ends the trial and records why; the caller reboots and the
// firmware boots the committed (old) slot, which reports the reason.
func (m *Manager) Rollback(reason string) error {
	if !m.st.Trial {
		return ErrNotTrial
	}
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	if err := m.setString(varRollback, reason); err != nil {
		return err
	}
	if err := m.remove(global("BootNext")); err != nil {
		return err
	}
	// EdgepbxTrial stays: the old slot, booted next, ends the trial.
	if err := m.setString(varEnded, m.st.Booted); err != nil {
		return err
	}
	m.st.Trial, m.st.LastRollback = false, reason
	return nil
}

// booted finds the running slot.
func (m *Manager) booted() (int, error) {
	// systemd-stub: the partition the UKI was loaded from (UTF-16 GUID).
	if _, b, err := m.vars.Get(efivarfs.VariableDescriptor{Name: "LoaderDevicePartUUID", GUID: loaderGUID}); err == nil {
		if u, err := uuid.Parse(decodeUTF16(b)); err == nil {
			for i, s := range m.slots {
				if s.PartUUID == u {
					return i, nil
				}
			}
		}
	}
	if _, b, err := m.vars.Get(global("BootCurrent")); err == nil && len(b) == 2 {
		if o, err := m.loadOption(uint16(b[0]) | uint16(b[1])<<8); err == nil && o.HasHD {
			for i, s := range m.slots {
				if s.PartUUID == o.PartGUID {
					return i, nil
				}
			}
		}
	}
	return 0, ErrUnknownBoot
}

// ensureEntries finds each slot's Boot#### entry and creates it if missing.
func (m *Manager) ensureEntries() error {
	used := map[uint16]bool{}
	found := [2]bool{}
	ds, err := m.vars.List()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoEFI, err)
	}
	for _, d := range ds {
		n, ok := bootNum(d)
		if !ok {
			continue
		}
		used[n] = true
		o, err := m.loadOption(n)
		if err != nil {
			continue
		}
		for i, s := range m.slots {
			if !found[i] && o.HasHD && o.PartGUID == s.PartUUID && strings.EqualFold(o.Path, m.loader) {
				m.entry[i], found[i] = n, true
			}
		}
	}
	for i, s := range m.slots {
		if found[i] {
			continue
		}
		var n uint16
		for used[n] {
			n++
		}
		used[n] = true
		o := loadOption{Attributes: loadOptionActive, Description: "edgepbx slot " + s.Name, HasHD: true,
			PartNumber: uint32(s.Index), PartStart: s.Start, PartSize: s.Sectors, PartGUID: s.PartUUID, Path: m.loader}
		if err := m.set(global(fmt.Sprintf("Boot%04X", n)), o.marshal()); err != nil {
			return err
		}
		m.entry[i] = n
		m.log.Info("boot entry created", "slot", s.Name, "entry", fmt.Sprintf("Boot%04X", n))
	}
	return nil
}

func bootNum(d efivarfs.VariableDescriptor) (uint16, bool) {
	if d.GUID != globalGUID || len(d.Name) != 8 || !strings.HasPrefix(d.Name, "Boot") {
		return 0, false
	}
	n, err := strconv.ParseUint(d.Name[4:], 16, 16)
	if err != nil || strings.ToUpper(d.Name[4:]) != d.Name[4:] {
		return 0, false
	}
	return uint16(n), true
}

func (m *Manager) loadOption(n uint16) (loadOption, error) {
	_, b, err := m.vars.Get(global(fmt.Sprintf("Boot%04X", n)))
	if err != nil {
		return loadOption{}, err
	}
	return parseLoadOption(b)
}

// writeOrder puts slot first's entry first, the other slot's second and
// keeps the firmware's other entries after them.
func (m *Manager) writeOrder(first int) error {
	order, err := m.order()
	if err != nil {
		return err
	}
	o := []uint16{m.entry[first], m.entry[1-first]}
	for _, n := range order {
		if n != m.entry[0] && n != m.entry[1] {
			o = append(o, n)
		}
	}
	return m.setOrder(o)
}

func (m *Manager) order() ([]uint16, error) {
	_, b, err := m.vars.Get(global("BootOrder"))
	if errors.Is(err, efivarfs.ErrVarNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("BootOrder: %w", err)
	}
	return parseOrder(b)
}

func (m *Manager) setOrder(o []uint16) error { return m.set(global("BootOrder"), encodeOrder(o)) }

func (m *Manager) bootNext() (uint16, bool, error) {
	_, b, err := m.vars.Get(global("BootNext"))
	if errors.Is(err, efivarfs.ErrVarNotExist) {
		return 0, false, nil
	}
	if err != nil || len(b) != 2 {
		return 0, false, fmt.Errorf("BootNext: %d bytes, %v", len(b), err)
	}
	return uint16(b[0]) | uint16(b[1])<<8, true, nil
}

func global(name string) efivarfs.VariableDescriptor {
	return efivarfs.VariableDescriptor{Name: name, GUID: globalGUID}
}

func vendor(name string) efivarfs.VariableDescriptor {
	return efivarfs.VariableDescriptor{Name: name, GUID: VendorGUID}
}

func (m *Manager) set(d efivarfs.VariableDescriptor, b []byte) error {
	if err := m.vars.Set(d, attrs, b); err != nil {
		return fmt.Errorf("write EFI variable %s: %w", d.Name, err)
	}
	return nil
}

func (m *Manager) remove(d efivarfs.VariableDescriptor) error {
	if err := m.vars.Remove(d); err != nil && !errors.Is(err, efivarfs.ErrVarNotExist) {
		return fmt.Errorf("remove EFI variable %s: %w", d.Name, err)
	}
	return nil
}

// Vendor strings are short UTF-8 text.
func (m *Manager) getString(name string) (string, error) {
	_, b, err := m.vars.Get(vendor(name))
	if errors.Is(err, efivarfs.ErrVarNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read EFI variable %s: %w", name, err)
	}
	if len(b) > maxReason {
		b = b[:maxReason]
	}
	return strings.ToValidUTF8(string(b), "?"), nil
}

func (m *Manager) setString(name, v string) error { return m.set(vendor(name), []byte(v)) }
