package slots

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"
	"github.com/u-root/u-root/pkg/efivarfs"

	"github.com/edgepbx/edgepbx/board"
)

const mib = 1 << 20

// firmware models what the UEFI boot manager does with the variables
// (UEFI 2.10, 3.1): BootNext is deleted and booted once, otherwise the
// first loadable BootOrder entry boots; an empty NVRAM boots the first
// ESP's removable-media path. systemd-stub then sets LoaderDevicePartUUID.
// The real firmware (OVMF) runs in qemu/e2e's disk tests.
type firmware struct {
	t     *testing.T
	vars  map[efivarfs.VariableDescriptor][]byte
	parts map[uuid.UUID]string // partition GUID -> its file
	first uuid.UUID            // the first ESP (removable-media fallback)
	fail  string               // Set of this variable fails (a power cut)
}

func (f *firmware) Get(d efivarfs.VariableDescriptor) (efivarfs.VariableAttributes, []byte, error) {
	b, ok := f.vars[d]
	if !ok {
		return 0, nil, efivarfs.ErrVarNotExist
	}
	return attrs, slices.Clone(b), nil
}

func (f *firmware) List() ([]efivarfs.VariableDescriptor, error) {
	var ds []efivarfs.VariableDescriptor
	for d := range f.vars {
		ds = append(ds, d)
	}
	return ds, nil
}

func (f *firmware) Remove(d efivarfs.VariableDescriptor) error {
	if _, ok := f.vars[d]; !ok {
		return efivarfs.ErrVarNotExist
	}
	delete(f.vars, d)
	return nil
}

func (f *firmware) Set(d efivarfs.VariableDescriptor, a efivarfs.VariableAttributes, b []byte) error {
	if d.Name == f.fail {
		return errors.New("power cut")
	}
	if a != attrs {
		f.t.Errorf("variable %s written with attributes %#x", d.Name, a)
	}
	f.vars[d] = slices.Clone(b)
	return nil
}

func (f *firmware) loadable(u uuid.UUID) bool {
	p, ok := f.parts[u]
	if !ok {
		return false
	}
	b := make([]byte, 512)
	fh, err := os.Open(p)
	if err != nil {
		return false
	}
	defer fh.Close()
	fh.ReadAt(b, 0)
	return !bytes.Equal(b, make([]byte, 512))
}

// boot runs the boot manager and returns the partition it started.
func (f *firmware) boot() uuid.UUID {
	delete(f.vars, efivarfs.VariableDescriptor{Name: "LoaderDevicePartUUID", GUID: loaderGUID})
	delete(f.vars, global("BootCurrent"))
	var try []uint16
	if b, ok := f.vars[global("BootNext")]; ok {
		delete(f.vars, global("BootNext"))
		try = append(try, uint16(b[0])|uint16(b[1])<<8)
	}
	if b, ok := f.vars[global("BootOrder")]; ok {
		o, _ := parseOrder(b)
		try = append(try, o...)
	}
	for _, n := range try {
		o, err := parseLoadOption(f.vars[global(fmt.Sprintf("Boot%04X", n))])
		if err != nil || !o.HasHD || !f.loadable(o.PartGUID) {
			continue
		}
		f.vars[global("BootCurrent")] = encodeOrder([]uint16{n})
		f.started(o.PartGUID)
		return o.PartGUID
	}
	f.started(f.first)
	return f.first
}

func (f *firmware) started(u uuid.UUID) {
	f.vars[efivarfs.VariableDescriptor{Name: "LoaderDevicePartUUID", GUID: loaderGUID}] = utf16z(strings.ToUpper(u.String()))
}

type box struct {
	fw   *firmware
	cfg  Config
	part map[string]string // slot name -> partition file
	guid map[string]uuid.UUID
}

// newBox makes a GPT disk like the image's, a sysfs tree naming its
// partitions, partition files under dev, and an empty NVRAM.
func newBox(t *testing.T) *box {
	t.Helper()
	root := t.TempDir()
	sys, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")
	diskPath := filepath.Join(dev, "sda")
	os.MkdirAll(dev, 0o755)
	d, err := diskfs.Create(diskPath, 16*mib, diskfs.SectorSize512)
	if err != nil {
		t.Fatal(err)
	}
	b := &box{part: map[string]string{}, guid: map[string]uuid.UUID{}}
	fw := &firmware{t: t, vars: map[efivarfs.VariableDescriptor][]byte{}, parts: map[uuid.UUID]string{}}
	var parts []*gpt.Partition
	start := uint64(mib / 512)
	for i, label := range []string{board.SlotALabel, board.SlotBLabel, board.DataLabel} {
		g := uuid.New()
		n := uint64(4 * mib / 512)
		typ := gpt.EFISystemPartition
		if i == 2 {
			typ = gpt.LinuxFilesystem
		}
		parts = append(parts, &gpt.Partition{Index: i + 1, Start: start, End: start + n - 1, Size: 4 * mib, Type: typ, Name: label, GUID: strings.ToUpper(g.String())})
		start += n
		name := fmt.Sprintf("sda%d", i+1)
		dir := filepath.Join(sys, "devices/pci0/sda", name)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "uevent"), []byte("MAJOR=8\nMINOR=1\nDEVNAME="+name+"\nDEVTYPE=partition\nPARTN=1\nPARTNAME="+label+"\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "partition"), []byte(fmt.Sprintf("%d\n", i+1)), 0o644)
		os.MkdirAll(filepath.Join(sys, "class/block"), 0o755)
		if err := os.Symlink(dir, filepath.Join(sys, "class/block", name)); err != nil {
			t.Fatal(err)
		}
		pf := filepath.Join(dev, name)
		if i < 2 {
			// A slot with a "file system" the firmware can load.
			os.WriteFile(pf, append(bytes.Repeat([]byte{0xEB}, 2*mib), make([]byte, 2*mib)...), 0o644)
			s := string(rune('a' + i))
			b.part[s], b.guid[s] = pf, g
			fw.parts[g] = pf
			if i == 0 {
				fw.first = g
			}
		}
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	// Firmware junk the box must keep (a PXE entry in BootOrder).
	fw.vars[global("Boot0000")] = []byte{1, 0, 0, 0}
	fw.vars[global("BootOrder")] = encodeOrder([]uint16{0})
	b.fw, b.cfg = fw, Config{SysRoot: sys, DevRoot: dev, Vars: fw}
	return b
}

// reboot runs the firmware and PID 1's Open.
func (b *box) reboot(t *testing.T) *Manager {
	t.Helper()
	b.fw.boot()
	m, err := Open(b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (b *box) order(t *testing.T) []string {
	t.Helper()
	o, _ := parseOrder(b.fw.vars[global("BootOrder")])
	var s []string
	for _, n := range o {
		lo, err := parseLoadOption(b.fw.vars[global(fmt.Sprintf("Boot%04X", n))])
		if err != nil || !lo.HasHD {
			s = append(s, "other")
			continue
		}
		for name, g := range b.guid {
			if g == lo.PartGUID {
				s = append(s, name)
			}
		}
	}
	return s
}

func wantState(t *testing.T, m *Manager, booted, committed string, trial bool) {
	t.Helper()
	st := m.State()
	if st.Booted != booted || st.Committed != committed || st.Trial != trial {
		t.Fatalf("state = %+v, want booted %s committed %s trial %v", st, booted, committed, trial)
	}
}

// install does what bundle's installer does with the API.
func install(t *testing.T, m *Manager, image []byte) Slot {
	t.Helper()
	s, err := m.Inactive()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.MarkInvalid(s.Name); err != nil {
		t.Fatal(err)
	}
	f, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(image, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := m.MarkTrial(s.Name); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFreshBoxCreatesEntriesAndCommitsBootedSlot(t *testing.T) {
	b := newBox(t)
	m := b.reboot(t)
	wantState(t, m, "a", "a", false)
	if got := b.order(t); !slices.Equal(got, []string{"a", "b", "other"}) {
		t.Fatalf("BootOrder = %v", got)
	}
	// Entries are found again, not duplicated.
	entries := func() (n int) {
		for d := range b.fw.vars {
			if _, ok := bootNum(d); ok {
				n++
			}
		}
		return n
	}
	if n := entries(); n != 3 {
		t.Fatalf("%d boot entries, want the firmware's and one per slot", n)
	}
	m = b.reboot(t)
	wantState(t, m, "a", "a", false)
	if n := entries(); n != 3 {
		t.Fatalf("second boot: %d boot entries, want 3", n)
	}
	if s, _ := m.Inactive(); s.Name != "b" || s.Label != board.SlotBLabel || s.Size != 4*mib || s.Path != b.part["b"] {
		t.Fatalf("inactive = %+v", s)
	}
}

func TestUpdateCommitSticks(t *testing.T) {
	b := newBox(t)
	m := b.reboot(t)
	install(t, m, bytes.Repeat([]byte{0xB0}, mib))
	if got := b.order(t); !slices.Equal(got, []string{"a", "b", "other"}) {
		t.Fatalf("BootOrder after MarkTrial = %v (the old slot must stay first until commit)", got)
	}
	m = b.reboot(t)
	wantState(t, m, "b", "a", true)
	if _, err := m.Inactive(); !errors.Is(err, ErrTrial) {
		t.Fatalf("Inactive during a trial = %v, want ErrTrial (it is the fallback)", err)
	}
	if err := m.Commit(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		m = b.reboot(t)
		wantState(t, m, "b", "b", false)
	}
	if got := b.order(t); !slices.Equal(got, []string{"b", "a", "other"}) {
		t.Fatalf("BootOrder = %v", got)
	}
	if m.State().LastRollback != "" {
		t.Fatalf("rollback recorded: %q", m.State().LastRollback)
	}
}

func TestTrialWithoutCommitComesBack(t *testing.T) {
	for _, tc := range []struct {
		name       string
		onTrial    func(t *testing.T, m *Manager)
		wantReason string
		rolledBack bool
	}{
		{"crash", func(*testing.T, *Manager) {}, "trial boot of slot b did not become healthy", true},
		{"unhealthy", func(t *testing.T, m *Manager) {
			if err := m.Rollback("edgepbxd not healthy within 5m0s"); err != nil {
				t.Fatal(err)
			}
			// Until the reboot, the old slot is still the fallback.
			if _, err := m.Inactive(); !errors.Is(err, ErrTrial) {
				t.Fatalf("Inactive after Rollback = %v, want ErrTrial", err)
			}
			if err := m.Commit(); !errors.Is(err, ErrNotTrial) {
				t.Fatalf("Commit after Rollback = %v", err)
			}
		}, "edgepbxd not healthy within 5m0s", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBox(t)
			m := b.reboot(t)
			install(t, m, bytes.Repeat([]byte{0xB0}, mib))
			m = b.reboot(t)
			wantState(t, m, "b", "a", true)
			tc.onTrial(t, m)
			m = b.reboot(t)
			wantState(t, m, "a", "a", false)
			st := m.State()
			if !strings.Contains(st.LastRollback, tc.wantReason) || st.RolledBack != tc.rolledBack || st.TrialSlot != "" || st.FailedSlot != "b" {
				t.Fatalf("state = %+v, want reason %q", st, tc.wantReason)
			}
			if _, ok := b.fw.vars[vendor(varTrial)]; ok {
				t.Fatal("EdgepbxTrial left set")
			}
			// And it stays on a: the trial is never retried by itself.
			m = b.reboot(t)
			wantState(t, m, "a", "a", false)
			if m.State().RolledBack {
				t.Fatal("rollback reported twice")
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	b := newBox(t)
	m := b.reboot(t)
	before := maps(b.fw.vars)
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"invalidate running", m.MarkInvalid("a"), ErrActiveSlot},
		{"trial of running", m.MarkTrial("a"), ErrActiveSlot},
		{"unknown slot", m.MarkTrial("c"), ErrUnknownSlot},
		{"commit outside trial", m.Commit(), ErrNotTrial},
		{"rollback outside trial", m.Rollback("x"), ErrNotTrial},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if !equalVars(before, b.fw.vars) {
		t.Fatal("a refusal changed UEFI variables")
	}
	// During a trial, the old (committed) slot cannot be invalidated.
	install(t, m, bytes.Repeat([]byte{0xB0}, mib))
	m = b.reboot(t)
	if err := m.MarkInvalid("a"); !errors.Is(err, ErrActiveSlot) {
		t.Fatalf("invalidate the fallback during a trial: %v", err)
	}
}

// A power cut inside MarkTrial, after EdgepbxTrial and before BootNext:
// the old slot boots and reports the trial that never ran; nothing boots b.
func TestCutInsideMarkTrial(t *testing.T) {
	b := newBox(t)
	m := b.reboot(t)
	s, _ := m.Inactive()
	if err := m.MarkInvalid(s.Name); err != nil {
		t.Fatal(err)
	}
	b.fw.fail = "BootNext"
	if err := m.MarkTrial(s.Name); err == nil {
		t.Fatal("MarkTrial succeeded through a failed write")
	}
	b.fw.fail = ""
	m = b.reboot(t)
	wantState(t, m, "a", "a", false)
	if !m.State().RolledBack {
		t.Fatal("the cut trial is not reported")
	}
}

// A half-written slot is never booted: MarkInvalid takes it out of
// BootOrder and zeroes its head before the first byte of the image.
func TestMarkInvalidUnbootable(t *testing.T) {
	b := newBox(t)
	m := b.reboot(t)
	if err := m.MarkInvalid("b"); err != nil {
		t.Fatal(err)
	}
	if got := b.order(t); slices.Contains(got, "b") {
		t.Fatalf("BootOrder = %v still has the invalid slot", got)
	}
	head := make([]byte, mib)
	f, _ := os.Open(b.part["b"])
	f.ReadAt(head, 0)
	f.Close()
	if !bytes.Equal(head, make([]byte, mib)) {
		t.Fatal("slot head not zeroed")
	}
	// Even with slot a unloadable, the firmware cannot start b.
	if b.fw.loadable(b.guid["b"]) {
		t.Fatal("invalid slot loadable")
	}
	m = b.reboot(t)
	wantState(t, m, "a", "a", false)
	// Installing again works (MarkTrial puts it back second).
	install(t, m, bytes.Repeat([]byte{0xB0}, mib))
	if got := b.order(t); !slices.Equal(got, []string{"a", "b", "other"}) {
		t.Fatalf("BootOrder = %v", got)
	}
}

// The committed slot cannot load (disk damage): the firmware falls back
// to the second entry; that slot becomes the default and it is reported.
func TestFirmwareFallbackCommits(t *testing.T) {
	b := newBox(t)
	m := b.reboot(t)
	_ = m
	os.WriteFile(b.part["a"], make([]byte, 4*mib), 0o644)
	m = b.reboot(t)
	wantState(t, m, "b", "b", false)
	if !m.State().RolledBack || !strings.Contains(m.State().LastRollback, "slot a failed to load") || m.State().FailedSlot != "a" {
		t.Fatalf("state = %+v", m.State())
	}
}

func TestNoSlots(t *testing.T) {
	fw := &firmware{t: t, vars: map[efivarfs.VariableDescriptor][]byte{}}
	_, err := Open(Config{SysRoot: t.TempDir(), DevRoot: t.TempDir(), Vars: fw})
	if err == nil {
		t.Fatal("Open without slots succeeded")
	}
}

func maps(m map[efivarfs.VariableDescriptor][]byte) map[efivarfs.VariableDescriptor][]byte {
	c := map[efivarfs.VariableDescriptor][]byte{}
	for k, v := range m {
		c[k] = slices.Clone(v)
	}
	return c
}

func equalVars(a, b map[efivarfs.VariableDescriptor][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestLoadOptionRoundTrip(t *testing.T) {
	o := loadOption{Attributes: loadOptionActive, Description: "edgepbx slot b", HasHD: true, PartNumber: 2,
		PartStart: 264192, PartSize: 262144, PartGUID: uuid.MustParse("01234567-89ab-4def-8123-456789abcdef"), Path: `\EFI\BOOT\BOOTX64.EFI`}
	b := o.marshal()
	// The HD node's signature is in EFI byte order (mixed endian).
	if i := bytes.Index(b, []byte{0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0x4d, 0x81, 0x23}); i < 0 {
		t.Fatalf("GUID not in EFI byte order: % x", b)
	}
	got, err := parseLoadOption(b)
	if err != nil || got != o {
		t.Fatalf("round trip = %+v, %v", got, err)
	}
	for _, cut := range []int{0, 5, 10, len(b) - 3} {
		if _, err := parseLoadOption(b[:cut]); err == nil {
			t.Errorf("truncated to %d accepted", cut)
		}
	}
}

func FuzzParseLoadOption(f *testing.F) {
	f.Add(loadOption{Description: "x", HasHD: true, Path: `\a`}.marshal())
	f.Add([]byte{1, 0, 0, 0, 4, 0, 0, 0, 0x7f, 0xff, 4, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := parseLoadOption(b)
		if err != nil || !o.HasHD {
			return
		}
		// Whatever parses re-encodes to something that parses the same.
		o2, err := parseLoadOption(o.marshal())
		if err != nil || o2.PartGUID != o.PartGUID || o2.PartStart != o.PartStart {
			t.Fatalf("re-encoded %+v: %+v, %v", o, o2, err)
		}
	})
}

// A trial slot the firmware cannot load (or whose kernel dies before PID
// 1) is never started: the old slot comes back saying so.
func TestTrialNeverStarted(t *testing.T) {
	b := newBox(t)
	m := b.reboot(t)
	install(t, m, make([]byte, mib)) // zeros: the firmware cannot load it
	m = b.reboot(t)
	wantState(t, m, "a", "a", false)
	st := m.State()
	if !st.RolledBack || !strings.Contains(st.LastRollback, "trial boot of slot b never reached its PID 1") {
		t.Fatalf("state = %+v", st)
	}
	if _, ok := b.fw.vars[vendor(varStarted)]; ok {
		t.Fatal("EdgepbxTrialStarted left set")
	}
	// A later trial that does start and then crashes says that instead.
	install(t, m, bytes.Repeat([]byte{0xB1}, mib))
	m = b.reboot(t)
	wantState(t, m, "b", "a", true)
	m = b.reboot(t)
	if st := m.State(); !strings.Contains(st.LastRollback, "trial boot of slot b did not become healthy") {
		t.Fatalf("state = %+v", st)
	}
}
