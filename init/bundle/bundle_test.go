package bundle

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type fixture struct {
	rel, emg PrivateKey
	keys     *Keyring
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	rel, err := GenerateKey(RoleRelease)
	if err != nil {
		t.Fatal(err)
	}
	emg, err := GenerateKey(RoleEmergency)
	if err != nil {
		t.Fatal(err)
	}
	b, err := MarshalKeyring([]KeyringKey{rel.Public(), emg.Public()})
	if err != nil {
		t.Fatal(err)
	}
	kr, err := ParseKeyring(b)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{rel: rel, emg: emg, keys: kr}
}

// build makes a bundle of image signed by k; edit may change the manifest first.
func build(t testing.TB, k PrivateKey, image []byte, edit func(*Manifest)) []byte {
	t.Helper()
	s256, s512, n, err := HashImage(bytes.NewReader(image))
	if err != nil {
		t.Fatal(err)
	}
	m := Manifest{Format: Format, Board: "pc-x86_64", Version: "1.2.0", VersionNumber: 120, Floor: 100,
		ImageSize: n, ImageSHA256: s256, ImageSHA512: s512, KeyID: k.ID, Created: time.Unix(1800000000, 0).UTC()}
	if edit != nil {
		edit(&m)
	}
	var b bytes.Buffer
	if err := WriteHeader(&b, m, k); err != nil {
		t.Fatal(err)
	}
	b.Write(image)
	return b.Bytes()
}

// readAll reads and verifies a whole bundle as PID 1 does.
func readAll(b []byte, keys *Keyring, box Box) (Manifest, []byte, error) {
	r := bytes.NewReader(b)
	h, err := ReadHeader(r)
	if err != nil {
		return Manifest{}, nil, err
	}
	k, err := h.Verify(keys)
	if err != nil {
		return h.Manifest, nil, err
	}
	if _, err := h.Check(k, box); err != nil {
		return h.Manifest, nil, err
	}
	out, err := io.ReadAll(NewImageReader(r, h.Manifest))
	return h.Manifest, out, err
}

var box = Box{Board: "pc-x86_64", Floor: 110, SlotSize: 1 << 20}

func TestBundleRoundTrip(t *testing.T) {
	f := newFixture(t)
	img := bytes.Repeat([]byte("slot image "), 5000)
	m, out, err := readAll(build(t, f.rel, img, nil), f.keys, box)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, img) || m.VersionNumber != 120 {
		t.Fatalf("got %d bytes, version %d", len(out), m.VersionNumber)
	}
}

func TestBundleRefusals(t *testing.T) {
	f := newFixture(t)
	img := bytes.Repeat([]byte{7}, 4096)
	other, _ := GenerateKey(RoleRelease)
	good := build(t, f.rel, img, nil)
	hdrLen := HeaderLen + int(binary.BigEndian.Uint32(good[len(Magic):])) + SignatureSize
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		return b
	}
	tests := []struct {
		name   string
		bundle []byte
		box    Box
		reason Reason
		field  string
	}{
		{"tampered image", flip(len(good) - 10), box, ReasonHash, "image_sha256"},
		{"tampered manifest", flip(HeaderLen + 20), box, "", ""}, // format or signature: either refuses
		{"tampered signature", flip(hdrLen - 1), box, ReasonSignature, ""},
		{"unknown key", build(t, other, img, nil), box, ReasonKey, "key_id"},
		{"older version", build(t, f.rel, img, func(m *Manifest) { m.VersionNumber, m.Floor = 105, 100 }), box, ReasonFloor, "version_number"},
		{"other board", build(t, f.rel, img, func(m *Manifest) { m.Board = "arm64-virt" }), box, ReasonBoard, "board"},
		{"too big for slot", good, Box{Board: box.Board, SlotSize: 100}, ReasonSpace, "image_size"},
		{"truncated image", good[:len(good)-1], box, ReasonSize, "image_size"},
		{"trailing data", append(bytes.Clone(good), 0), box, ReasonSize, "image_size"},
		{"downgrade by release key", build(t, f.rel, img, func(m *Manifest) { m.VersionNumber, m.Floor, m.Downgrade = 90, 0, true }), box, ReasonKey, "downgrade"},
		{"bad magic", append([]byte("XPXBNDL1"), good[8:]...), box, ReasonFormat, ""},
		{"huge manifest length", append(append([]byte(Magic), 0, 1, 0, 1), good[12:]...), box, ReasonFormat, ""},
		{"truncated header", good[:hdrLen-3], box, ReasonFormat, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readAll(tc.bundle, f.keys, tc.box)
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("err = %v, want a refusal", err)
			}
			var e *Error
			errors.As(err, &e)
			if tc.reason != "" && (e.Reason != tc.reason || e.Field != tc.field) {
				t.Fatalf("refusal %q field %q (%v), want %q field %q", e.Reason, e.Field, err, tc.reason, tc.field)
			}
		})
	}
}

func TestBundleEmergencyDowngrade(t *testing.T) {
	f := newFixture(t)
	img := []byte("old but safe")
	b := build(t, f.emg, img, func(m *Manifest) { m.VersionNumber, m.Floor, m.Downgrade = 90, 0, true })
	r := bytes.NewReader(b)
	h, err := ReadHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	k, err := h.Verify(f.keys)
	if err != nil {
		t.Fatal(err)
	}
	down, err := h.Check(k, box)
	if err != nil || !down {
		t.Fatalf("emergency downgrade: down=%v err=%v", down, err)
	}
	// Without the downgrade flag the emergency key is held to the floor too.
	b = build(t, f.emg, img, func(m *Manifest) { m.VersionNumber, m.Floor = 90, 0 })
	if _, _, err := readAll(b, f.keys, box); ReasonOf(err) != ReasonFloor {
		t.Fatalf("emergency key without downgrade flag: %v", err)
	}
}

func TestPrivateKeyFile(t *testing.T) {
	dir := t.TempDir()
	k, _ := GenerateKey(RoleRelease)
	p, err := WritePrivateKey(dir, k)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	got, err := ReadPrivateKey(p)
	if err != nil || got.ID != k.ID || !got.Private.Equal(k.Private) {
		t.Fatalf("read back: %v", err)
	}
	if _, err := WritePrivateKey(dir, k); err == nil {
		t.Fatal("overwrote an existing key")
	}
	os.Chmod(p, 0o644)
	if _, err := ReadPrivateKey(p); !errors.Is(err, ErrKeyMode) {
		t.Fatalf("world-readable key: %v", err)
	}
}

func TestKeyringRefusesForgedID(t *testing.T) {
	a, _ := GenerateKey(RoleRelease)
	b, _ := GenerateKey(RoleRelease)
	ka := a.Public()
	ka.ID = b.ID // claim b's id with a's key
	data, _ := MarshalKeyring([]KeyringKey{b.Public()})
	if _, err := ParseKeyring(data); err != nil {
		t.Fatal(err)
	}
	if _, err := MarshalKeyring([]KeyringKey{ka}); err == nil {
		t.Fatal("keyring with an id that is not its key's accepted")
	}
	if _, err := LoadKeyring(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("missing keyring accepted")
	}
}

func FuzzReadBundle(f *testing.F) {
	fx := newFixture(f)
	good := build(f, fx.rel, []byte("image bytes"), nil)
	f.Add(good)
	f.Add(good[:40])
	f.Add([]byte(Magic + "\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, out, err := readAll(b, fx.keys, box)
		if err == nil {
			// Only a correctly signed bundle can pass.
			if int64(len(out)) != m.ImageSize || m.KeyID != fx.rel.ID {
				t.Fatalf("accepted %d bytes for manifest %+v", len(out), m)
			}
			return
		}
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("error is not a refusal: %v", err)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"format":1,"board":"pc-x86_64"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err == nil {
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
		} else if ReasonOf(err) == "" {
			t.Fatalf("untyped refusal: %v", err)
		}
	})
}
