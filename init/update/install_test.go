package update

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/init/bundle"
)

const slotSize = 256 << 10

type rig struct {
	slots  *fileSlots
	rel    bundle.PrivateKey
	emg    bundle.PrivateKey
	keys   *bundle.Keyring
	floor  FileFloor
	mu     sync.Mutex
	events []Event
	in     *Installer
}

func newRig(t testing.TB) *rig { return newRigSize(t, slotSize) }

func newRigSize(t testing.TB, size int64) *rig {
	t.Helper()
	rel, _ := bundle.GenerateKey(bundle.RoleRelease)
	emg, _ := bundle.GenerateKey(bundle.RoleEmergency)
	b, err := bundle.MarshalKeyring([]bundle.KeyringKey{rel.Public(), emg.Public()})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := bundle.ParseKeyring(b)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{slots: newFileSlots(t, size), rel: rel, emg: emg, keys: keys,
		floor: FileFloor{Path: filepath.Join(t.TempDir(), "floor")}}
	r.in = NewInstaller(Config{Slots: r.slots, Keys: keys, Floor: r.floor,
		Running: Release{Board: "pc-x86_64", Version: "1.1.0", VersionNumber: 110, Floor: 100},
		Audit:   r.audit})
	return r
}

func (r *rig) audit(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *rig) lastEvent() Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return Event{}
	}
	return r.events[len(r.events)-1]
}

func image(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func makeBundle(t testing.TB, k bundle.PrivateKey, img []byte, edit func(*bundle.Manifest)) []byte {
	t.Helper()
	s256, s512, n, _ := bundle.HashImage(bytes.NewReader(img))
	m := bundle.Manifest{Format: bundle.Format, Board: "pc-x86_64", Version: "1.2.0", VersionNumber: 120, Floor: 115,
		ImageSize: n, ImageSHA256: s256, ImageSHA512: s512, KeyID: k.ID, Created: time.Unix(1800000000, 0).UTC()}
	if edit != nil {
		edit(&m)
	}
	var b bytes.Buffer
	if err := bundle.WriteHeader(&b, m, k); err != nil {
		t.Fatal(err)
	}
	b.Write(img)
	return b.Bytes()
}

func TestInstallWritesVerifiedSlot(t *testing.T) {
	r := newRig(t)
	img := image(200<<10, 3)
	res, err := r.in.Install(context.Background(), bytes.NewReader(makeBundle(t, r.rel, img, nil)))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(r.slots.path("b"))
	if res.Slot != "b" || !bytes.Equal(got[:len(img)], img) {
		t.Fatalf("slot %s not written", res.Slot)
	}
	if want := []string{"invalid b", "trial b"}; !slices.Equal(r.slots.calls, want) {
		t.Fatalf("slot calls %v, want %v", r.slots.calls, want)
	}
	if res.BytesWritten != int64(len(img)) || res.BytesRead != int64(len(img)) {
		t.Fatalf("bytes written %d read %d", res.BytesWritten, res.BytesRead)
	}
	if e := r.lastEvent(); e.Action != "installed" || e.Number != 120 {
		t.Fatalf("audit %+v", e)
	}
}

// TestInstallRefusesAndChangesNothing: a bundle refused on its header
// (tampered, unknown key, older version, other board, too big) leaves both
// slots and the boot state exactly as they were, and is audited with its
// reason.
func TestInstallRefusesAndChangesNothing(t *testing.T) {
	r := newRig(t)
	stranger, _ := bundle.GenerateKey(bundle.RoleRelease)
	img := image(64<<10, 9)
	good := makeBundle(t, r.rel, img, nil)
	tampered := bytes.Clone(good)
	tampered[bundle.HeaderLen+30] ^= 0x20 // inside the signed manifest
	tests := []struct {
		name   string
		bundle []byte
		reason bundle.Reason
	}{
		{"unknown key", makeBundle(t, stranger, img, nil), bundle.ReasonKey},
		{"older version", makeBundle(t, r.rel, img, func(m *bundle.Manifest) { m.VersionNumber, m.Floor, m.Version = 90, 90, "0.9.0" }), bundle.ReasonFloor},
		{"other board", makeBundle(t, r.rel, img, func(m *bundle.Manifest) { m.Board = "qemu-arm64" }), bundle.ReasonBoard},
		{"bigger than the slot", makeBundle(t, r.rel, image(slotSize+1, 1), nil), bundle.ReasonSpace},
		{"release key asks for downgrade", makeBundle(t, r.rel, img, func(m *bundle.Manifest) { m.VersionNumber, m.Floor, m.Downgrade = 90, 90, true }), bundle.ReasonKey},
		{"tampered manifest", tampered, ""},
		{"not a bundle", []byte("PK\x03\x04 a zip file"), bundle.ReasonFormat},
	}
	before := map[string][]byte{}
	for _, n := range []string{"a", "b"} {
		before[n], _ = os.ReadFile(r.slots.path(n))
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.in.Install(context.Background(), bytes.NewReader(tc.bundle))
			if !errors.Is(err, bundle.ErrRefused) {
				t.Fatalf("err = %v, want refusal", err)
			}
			reason := bundle.ReasonOf(err)
			if tc.reason != "" && reason != tc.reason {
				t.Fatalf("reason %q (%v), want %q", reason, err, tc.reason)
			}
			if tc.reason == "" && reason != bundle.ReasonSignature && reason != bundle.ReasonFormat {
				t.Fatalf("tampered manifest refused for %q: %v", reason, err)
			}
			if e := r.lastEvent(); e.Action != "refused" || e.Reason != reason || e.Detail != err.Error() {
				t.Fatalf("audit %+v", e)
			}
		})
	}
	for _, n := range []string{"a", "b"} {
		if now, _ := os.ReadFile(r.slots.path(n)); !bytes.Equal(now, before[n]) {
			t.Errorf("slot %s changed", n)
		}
	}
	if len(r.slots.calls) != 0 {
		t.Fatalf("boot state touched: %v", r.slots.calls)
	}
}

// cutReader ends the stream after n bytes, like an upload that stops.
type cutReader struct {
	r io.Reader
	n int
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	p = p[:min(len(p), c.n)]
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}

// TestInstallStoppedHalfwayLeavesSlotInvalid: an upload cut at any point
// after the header, or an image whose hash is wrong, leaves the inactive
// slot invalid and never marked for a trial.
func TestInstallStoppedHalfwayLeavesSlotInvalid(t *testing.T) {
	img := image(200<<10, 5)
	for _, tc := range []struct {
		name string
		cut  func(b []byte) io.Reader
		want bundle.Reason
	}{
		{"cut in the image", func(b []byte) io.Reader { return &cutReader{bytes.NewReader(b), len(b) / 2} }, bundle.ReasonIO},
		{"clean EOF in the image", func(b []byte) io.Reader { return bytes.NewReader(b[:len(b)-1000]) }, bundle.ReasonSize},
		{"tampered image", func(b []byte) io.Reader { b = bytes.Clone(b); b[len(b)-5] ^= 1; return bytes.NewReader(b) }, bundle.ReasonHash},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			// The inactive slot held a good trial before: the new upload must take it away.
			if err := r.slots.MarkTrial("b"); err != nil {
				t.Fatal(err)
			}
			_, err := r.in.Install(context.Background(), tc.cut(makeBundle(t, r.rel, img, nil)))
			if bundle.ReasonOf(err) != tc.want {
				t.Fatalf("err = %v, want reason %q", err, tc.want)
			}
			if r.slots.bootable("b") || r.slots.State().Trial {
				t.Fatalf("slot b still bootable after a failed upload: %v", r.slots.calls)
			}
			if got := r.slots.boot(); got != "a" {
				t.Fatalf("booted %s", got)
			}
			if e := r.lastEvent(); e.Action != "refused" || e.Slot != "b" {
				t.Fatalf("audit %+v", e)
			}
		})
	}
}

func TestInstallEmergencyDowngradeAudited(t *testing.T) {
	r := newRig(t)
	img := image(10<<10, 1)
	b := makeBundle(t, r.emg, img, func(m *bundle.Manifest) { m.VersionNumber, m.Floor, m.Version, m.Downgrade = 90, 90, "0.9.0", true })
	res, err := r.in.Install(context.Background(), bytes.NewReader(b))
	if err != nil || !res.Downgrade {
		t.Fatalf("downgrade: %+v %v", res, err)
	}
	var saw bool
	for _, e := range r.events {
		saw = saw || (e.Action == "downgrade" && e.KeyID == r.emg.ID && e.Number == 90)
	}
	if !saw {
		t.Fatalf("downgrade not audited: %+v", r.events)
	}
}

func TestInstallBusy(t *testing.T) {
	r := newRig(t)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := r.in.Install(context.Background(), pr)
		done <- err
	}()
	b := makeBundle(t, r.rel, image(100<<10, 2), nil)
	pw.Write(b[:1000]) // the first install is now inside ReadHeader or later
	_, err := r.in.Install(context.Background(), bytes.NewReader(b))
	if bundle.ReasonOf(err) != bundle.ReasonBusy {
		t.Fatalf("second install: %v", err)
	}
	pw.Write(b[1000:])
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestFloorNeverBelowImage(t *testing.T) {
	r := newRig(t)
	if f := r.in.EffectiveFloor(); f != 100 {
		t.Fatalf("floor %d", f)
	}
	r.floor.Raise(118)
	r.floor.Raise(105) // never lowers
	if f := r.in.EffectiveFloor(); f != 118 {
		t.Fatalf("floor %d", f)
	}
	// An owner who deletes or garbles the file gets the image's floor, not 0.
	os.WriteFile(r.floor.Path, []byte("garbage"), 0o600)
	if f := r.in.EffectiveFloor(); f != 100 {
		t.Fatalf("floor %d after garbling", f)
	}
}
