package keys

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/edgepbx/edgepbx/init/keys/swtpmtest"
)

// box is one simulated appliance: a TPM (or none) and a /data/identity dir.
type box struct {
	dir string
	tpm *swtpmtest.TPM
}

func newBox(t *testing.T, withTPM bool) *box {
	t.Helper()
	b := &box{dir: filepath.Join(t.TempDir(), "identity")}
	if withTPM {
		b.tpm = swtpmtest.Start(t, filepath.Join(t.TempDir(), "tpmstate"))
	}
	return b
}

func (b *box) opts() Options {
	if b.tpm == nil {
		return Options{}
	}
	return Options{TPM: DeviceTPM(b.tpm.Sock)}
}

func (b *box) open(t *testing.T) *Ring {
	t.Helper()
	r, err := Open(b.dir, b.opts())
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return r
}

// snapshot copies every file under dir (the "copy of /data").
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}

// grepDir fails if any file under dir contains one of the needles.
func grepDir(t *testing.T, dir string, needles map[string][]byte) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for what, n := range needles {
			if bytes.Contains(b, n) {
				t.Errorf("%s found in %s", what, p)
			}
		}
		return nil
	})
}

func dataKeys(r *Ring) map[string][]byte {
	m := map[string][]byte{}
	for _, p := range Purposes {
		m[string(p)+" data key"] = r.DataKey(p)
	}
	return m
}

func TestTPMSealSameBoxAcrossRestart(t *testing.T) {
	b := newBox(t, true)
	r1 := b.open(t)
	if r1.Protection != ProtTPM || !r1.Created {
		t.Fatalf("first boot: protection %s created %v, want tpm, true", r1.Protection, r1.Created)
	}
	for _, f := range []string{PlainFile, LegacyFile, PassFile} {
		if exists(b.dir, f) {
			t.Errorf("%s left on disk", f)
		}
	}
	// Power cycle: the same TPM state, a new swtpm process.
	b.tpm.Stop()
	b.tpm = swtpmtest.Start(t, b.tpm.State)
	r2 := b.open(t)
	if r2.Created || r2.Protection != ProtTPM {
		t.Fatalf("second boot: created %v protection %s", r2.Created, r2.Protection)
	}
	for _, p := range Purposes {
		if !bytes.Equal(r1.DataKey(p), r2.DataKey(p)) {
			t.Errorf("%s key changed across a reboot", p)
		}
	}
	if bytes.Equal(r1.DataKey(Store), r1.DataKey(Media)) {
		t.Error("store and media share a key")
	}
	// The /data copy alone holds no key in clear.
	grepDir(t, b.dir, dataKeys(r1))
}

func TestTPMDiskInAnotherBox(t *testing.T) {
	a := newBox(t, true)
	a.open(t)
	other := newBox(t, true)
	other.open(t) // the other box has its own key at the same handle
	moved := &box{dir: snapshot(t, a.dir), tpm: other.tpm}
	before := snapshot(t, moved.dir)
	_, err := Open(moved.dir, moved.opts())
	if !errors.Is(err, ErrWrongTPM) {
		t.Fatalf("disk in another box: %v, want ErrWrongTPM", err)
	}
	// Nothing was replaced: putting the disk back still works.
	if out, err := exec.Command("diff", "-r", before, moved.dir).CombinedOutput(); err != nil {
		t.Fatalf("a refused open changed the disk: %s", out)
	}
	// A box without the TPM refuses too, rather than making a new key.
	if _, err := Open(snapshot(t, a.dir), Options{}); !errors.Is(err, ErrNoTPM) {
		t.Fatalf("no TPM: %v, want ErrNoTPM", err)
	}
	// A fresh TPM (cleared, or a new board) has no object at all.
	fresh := &box{dir: snapshot(t, a.dir), tpm: swtpmtest.Start(t, filepath.Join(t.TempDir(), "fresh"))}
	if _, err := Open(fresh.dir, fresh.opts()); !errors.Is(err, ErrWrongTPM) {
		t.Fatalf("fresh TPM: %v, want ErrWrongTPM", err)
	}
}

func TestMigrateLegacyPlaintextKey(t *testing.T) {
	for _, withTPM := range []bool{true, false} {
		t.Run(map[bool]string{true: "tpm", false: "none"}[withTPM], func(t *testing.T) {
			b := newBox(t, withTPM)
			legacy := bytes.Repeat([]byte{0xA5, 0x5A, 0x3C, 0xC3}, 8)
			os.MkdirAll(b.dir, 0o700)
			if err := os.WriteFile(filepath.Join(b.dir, LegacyFile), legacy, 0o600); err != nil {
				t.Fatal(err)
			}
			r := b.open(t)
			if !r.Migrated || !bytes.Equal(r.DataKey(Store), legacy) {
				t.Fatalf("migrated %v, store key %x: want the legacy key", r.Migrated, r.DataKey(Store))
			}
			if exists(b.dir, LegacyFile) {
				t.Fatal("legacy plaintext key not removed")
			}
			if withTPM {
				if r.Protection != ProtTPM {
					t.Fatalf("protection %s", r.Protection)
				}
				grepDir(t, b.dir, map[string][]byte{"legacy key": legacy})
			}
			r2 := b.open(t)
			if r2.Migrated || !bytes.Equal(r2.DataKey(Store), legacy) {
				t.Fatalf("second boot: migrated %v store %x", r2.Migrated, r2.DataKey(Store))
			}
		})
	}
}

// A power cut after the device key was sealed but before the data keys
// were written: the next boot finishes the migration with the same keys.
func TestMigrateInterrupted(t *testing.T) {
	b := newBox(t, true)
	legacy := bytes.Repeat([]byte{7}, keyLen)
	os.MkdirAll(filepath.Join(b.dir, DataKeyDir), 0o700)
	os.WriteFile(filepath.Join(b.dir, LegacyFile), legacy, 0o600)
	var r Ring
	if _, err := r.openDevice(b.dir, b.opts(), true); err != nil { // the boot that lost power
		t.Fatal(err)
	}
	got := b.open(t)
	if !got.Migrated || !bytes.Equal(got.DataKey(Store), legacy) || exists(b.dir, LegacyFile) {
		t.Fatalf("interrupted migration not finished: migrated %v", got.Migrated)
	}
}

func TestEraseKillsEveryCopy(t *testing.T) {
	b := newBox(t, true)
	old := b.open(t)
	copyBefore := snapshot(t, b.dir)
	if err := Erase(b.dir, b.opts().TPM); err != nil {
		t.Fatalf("erase: %v", err)
	}
	if err := Erase(b.dir, b.opts().TPM); err != nil {
		t.Fatalf("erase twice: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(b.dir, DataKeyDir))
	for _, e := range ents {
		t.Errorf("left after erase: %s", e.Name())
	}
	for _, f := range []string{TPMFile, PlainFile, PassFile, LegacyFile} {
		if exists(b.dir, f) {
			t.Errorf("left after erase: %s", f)
		}
	}
	// An earlier copy of /data, put back on the same box, opens nothing.
	if _, err := Open(copyBefore, b.opts()); !errors.Is(err, ErrWrongTPM) {
		t.Fatalf("old /data copy after erase: %v, want ErrWrongTPM", err)
	}
	// The erased box starts over with new keys.
	n := b.open(t)
	if !n.Created || bytes.Equal(n.DataKey(Store), old.DataKey(Store)) {
		t.Fatal("after erase the box did not get new keys")
	}
}

func TestEraseOneDataKey(t *testing.T) {
	b := newBox(t, false)
	r1 := b.open(t)
	if err := EraseDataKey(b.dir, Media); err != nil {
		t.Fatal(err)
	}
	r2 := b.open(t)
	if !bytes.Equal(r1.DataKey(Store), r2.DataKey(Store)) || !bytes.Equal(r1.DataKey(Backup), r2.DataKey(Backup)) {
		t.Error("erasing the media key changed another key")
	}
	if bytes.Equal(r1.DataKey(Media), r2.DataKey(Media)) {
		t.Error("media key survived its erase")
	}
}

func TestNoTPMPlainThenProtected(t *testing.T) {
	defer func(k kdf) { defaultKDF = k }(defaultKDF)
	defaultKDF = kdf{Time: 1, MemKiB: 64, Threads: 1}
	b := newBox(t, false)
	r := b.open(t)
	if r.Protection != ProtNone || !exists(b.dir, PlainFile) {
		t.Fatalf("no TPM: protection %s", r.Protection)
	}
	pw := func(s string) func() (string, error) { return func() (string, error) { return s, nil } }
	// Opt in to a passphrase: too short is refused and changes nothing.
	if _, err := Open(b.dir, Options{Passphrase: pw("short"), NewPassphrase: true}); !errors.Is(err, ErrWeakPassphrase) {
		t.Fatalf("short passphrase: %v", err)
	}
	p, err := Open(b.dir, Options{Passphrase: pw("correct horse battery"), NewPassphrase: true})
	if err != nil || p.Protection != ProtPassphrase || exists(b.dir, PlainFile) {
		t.Fatalf("opt-in: %v protection %v plain left %v", err, p, exists(b.dir, PlainFile))
	}
	if _, err := Open(b.dir, Options{Passphrase: pw("wrong horse battery")}); !errors.Is(err, ErrPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if _, err := Open(b.dir, Options{}); !errors.Is(err, ErrPassphrase) {
		t.Fatalf("no way to ask: %v", err)
	}
	again, err := Open(b.dir, Options{Passphrase: pw("correct horse battery")})
	if err != nil || !bytes.Equal(again.DataKey(Store), r.DataKey(Store)) {
		t.Fatalf("right passphrase: %v", err)
	}
	grepDir(t, b.dir, dataKeys(r))

	// A plain box that gains a TPM is sealed and its clear key removed.
	c := newBox(t, false)
	rc := c.open(t)
	c.tpm = swtpmtest.Start(t, filepath.Join(t.TempDir(), "tpm"))
	sealed := c.open(t)
	if sealed.Protection != ProtTPM || exists(c.dir, PlainFile) || !bytes.Equal(sealed.DataKey(Store), rc.DataKey(Store)) {
		t.Fatalf("upgrade to TPM: protection %s plain left %v", sealed.Protection, exists(c.dir, PlainFile))
	}
}

func TestRefusals(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(t *testing.T, dir string)
		want   error
	}{
		{"legacy key of the wrong size", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, LegacyFile), []byte("short"), 0o600)
		}, ErrCorrupt},
		{"data keys swapped between purposes", func(t *testing.T, dir string) {
			k := filepath.Join(dir, DataKeyDir)
			s, _ := os.ReadFile(filepath.Join(k, "store.key"))
			os.WriteFile(filepath.Join(k, "media.key"), s, 0o600)
		}, ErrWrongKey},
		{"device key deleted, data keys kept", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, PlainFile))
		}, ErrCorrupt},
		{"truncated data key", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, DataKeyDir, "backup.key"), []byte(wrapMagic), 0o600)
		}, ErrWrongKey},
		{"hostile passphrase cost", func(t *testing.T, dir string) {
			b := append([]byte(passMagic), 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 1)
			os.WriteFile(filepath.Join(dir, PassFile), append(b, make([]byte, 80)...), 0o600)
		}, ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newBox(t, false)
			b.open(t)
			c.break_(t, b.dir)
			before := snapshot(t, b.dir)
			_, err := Open(b.dir, Options{Passphrase: func() (string, error) { return "correct horse battery", nil }})
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if out, err := exec.Command("diff", "-r", before, b.dir).CombinedOutput(); err != nil {
				t.Fatalf("a refused open changed the disk: %s", out)
			}
		})
	}
}

func TestFloors(t *testing.T) {
	for _, withTPM := range []bool{true, false} {
		t.Run(map[bool]string{true: "tpm", false: "file"}[withTPM], func(t *testing.T) {
			b := newBox(t, withTPM)
			os.MkdirAll(b.dir, 0o700)
			f, err := OpenFloors(b.dir, b.opts().TPM)
			if err != nil {
				t.Fatal(err)
			}
			if f.Hardware() != withTPM {
				t.Fatalf("hardware %v", f.Hardware())
			}
			oldData := snapshot(t, b.dir) // /data before the floors moved
			for _, step := range []struct {
				name string
				v    uint64
				want error
			}{
				{"update.version", 3, nil},
				{"license.offline", 100, nil},
				{"update.version", 3, nil}, // retry: no-op
				{"update.version", 2, ErrBackwards},
				{"update.version", 5, nil},
				{"Bad Name", 1, ErrFloorName},
			} {
				if err := f.Raise(step.name, step.v); !errors.Is(err, step.want) {
					t.Fatalf("raise %s=%d: %v, want %v", step.name, step.v, err, step.want)
				}
			}
			// Reboot, with the old /data restored over the new one.
			os.RemoveAll(b.dir)
			os.Rename(oldData, b.dir)
			if withTPM {
				b.tpm.Stop()
				b.tpm = swtpmtest.Start(t, b.tpm.State)
			}
			g, err := OpenFloors(b.dir, b.opts().TPM)
			if err != nil {
				t.Fatal(err)
			}
			got := g.All()
			if withTPM {
				if got["update.version"] != 5 || got["license.offline"] != 100 {
					t.Fatalf("TPM floors after restoring old /data: %v, want version 5, offline 100", got)
				}
			} else if len(got) != 0 {
				// Documented weakness without a TPM: the file rewinds with /data.
				t.Fatalf("file floors after restoring old /data: %v", got)
			}
		})
	}
}

func FuzzDecodeFloors(f *testing.F) {
	f.Add(encodeFloors(map[string]uint64{"a": 1, "update.version": 9}, []string{"update.version", "a"}))
	f.Add(make([]byte, floorsSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		vals, order, err := decodeFloors(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeFloors(vals, order), b) {
			t.Fatal("decode/encode not a round trip")
		}
	})
}

func BenchmarkUnseal(b *testing.B) {
	bx := &box{dir: filepath.Join(b.TempDir(), "identity")}
	bx.tpm = swtpmtest.Start(b, filepath.Join(b.TempDir(), "tpm"))
	if _, err := Open(bx.dir, bx.opts()); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Open(bx.dir, bx.opts()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPlantedKeyNotSealedOverTPM: someone with the disk of a TPM box
// removes its key files and plants a key they know (plain or legacy file).
// The box must not seal that key over the one in its TPM (every secret
// entered afterwards would be theirs to read): it refuses, the TPM keeps
// the real key, and the real disk still opens. A new disk in a used box,
// and a power cut between persisting the object and writing its record,
// still work.
func TestPlantedKeyNotSealedOverTPM(t *testing.T) {
	b := newBox(t, true)
	real := b.open(t)
	orig := snapshot(t, b.dir)
	known := bytes.Repeat([]byte{0x42}, keyLen)
	for _, planted := range []string{PlainFile, LegacyFile} {
		t.Run(planted, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "identity")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, planted), known, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(dir, b.opts()); !errors.Is(err, ErrTPMInUse) {
				t.Fatalf("planted %s: %v, want ErrTPMInUse", planted, err)
			}
			if r, err := Open(snapshot(t, orig), b.opts()); err != nil || !bytes.Equal(r.DataKey(Store), real.DataKey(Store)) {
				t.Fatalf("the real disk no longer opens after the refusal: %v", err)
			}
		})
	}
	t.Run("new disk in a used box", func(t *testing.T) {
		r, err := Open(filepath.Join(t.TempDir(), "identity"), b.opts())
		if err != nil || !r.Created || r.Protection != ProtTPM {
			t.Fatalf("blank disk: %v", err)
		}
	})
	t.Run("power cut before the record", func(t *testing.T) {
		c := newBox(t, false)
		plain := c.open(t)
		c.tpm = swtpmtest.Start(t, filepath.Join(t.TempDir(), "tpm"))
		dev, err := os.ReadFile(filepath.Join(c.dir, PlainFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := tpmSeal(c.dir, c.opts().TPM, dev, false); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(c.dir, TPMFile)) // the record never reached the disk
		r := c.open(t)
		if r.Protection != ProtTPM || !bytes.Equal(r.DataKey(Store), plain.DataKey(Store)) || exists(c.dir, PlainFile) {
			t.Fatalf("interrupted upgrade: protection %s", r.Protection)
		}
	})
}
