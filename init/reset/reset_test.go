package reset

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRequested(t *testing.T) {
	for _, c := range []struct {
		cmdline string
		want    bool
	}{
		{"console=ttyS0 edgepbx.factory_reset=1 quiet", true},
		{"edgepbx.factory_reset=1\n", true},
		{"edgepbx.factory_reset=0", false},
		{"edgepbx.factory_reset=11", false},
		{"xedgepbx.factory_reset=1", false},
		{"edgepbx.factory_reset", false},
		{"", false},
	} {
		if got := Requested(c.cmdline); got != c.want {
			t.Errorf("Requested(%q) = %v, want %v", c.cmdline, got, c.want)
		}
	}
}

// TestEraseKeyFileOverwritesInPlace checks the blocks the key occupied hold
// other bytes afterwards: a hard link made before the erase still reaches
// the same inode, so it shows what is on the disk, not a new file.
func TestEraseKeyFileOverwritesInPlace(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "identity", "device.key")
	os.MkdirAll(filepath.Dir(key), 0o700)
	old := bytes.Repeat([]byte{0xA5}, 32)
	if err := os.WriteFile(key, old, 0o600); err != nil {
		t.Fatal(err)
	}
	spy := filepath.Join(dir, "spy")
	if err := os.Link(key, spy); err != nil {
		t.Fatal(err)
	}
	if err := EraseKeyFile(key); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(key); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("key file still there: %v", err)
	}
	got, err := os.ReadFile(spy)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(old) || bytes.Contains(got, old[:8]) {
		t.Fatalf("key blocks after erase: %x", got)
	}
	// A second run (resumed reset) has nothing to do.
	if err := EraseKeyFile(key); err != nil {
		t.Fatalf("erase of a missing key: %v", err)
	}
}

func TestWipe(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	outside := filepath.Join(root, "outside")
	secret := []byte("SECRET-CDR-+4915112345678")
	files := map[string][]byte{
		"edgepbx.db":            bytes.Repeat(secret, 200_000), // several MiB, several copy rounds
		"identity/serial":       []byte("EPX123\n"),
		"backups/edgepbx-x.age": secret,
		"netfw/bans.json":       secret,
		"lost+found/#123":       secret,
		"deep/a/b/c/d.txt":      secret,
		"empty":                 nil,
		MarkerName:              []byte("keep me"),
	}
	for name, b := range files {
		p := filepath.Join(data, name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, b, 0o400); err != nil { // read-only files too
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(outside, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	// A link planted in /data by edgepbxd must not make PID 1 overwrite
	// or remove a file elsewhere.
	if err := os.Symlink(outside, filepath.Join(data, "evil")); err != nil {
		t.Fatal(err)
	}
	spy := filepath.Join(root, "spy")
	if err := os.Link(filepath.Join(data, "edgepbx.db"), spy); err != nil {
		t.Fatal(err)
	}
	n, err := Wipe(data, MarkerName)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(files)-1 {
		t.Errorf("overwrote %d files, want %d", n, len(files)-1)
	}
	ents, _ := os.ReadDir(data)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if len(left) != 2 || left[0] != MarkerName || left[1] != "lost+found" {
		t.Errorf("left in data dir: %v", left)
	}
	if sub, _ := os.ReadDir(filepath.Join(data, "lost+found")); len(sub) != 0 {
		t.Errorf("lost+found not emptied: %d entries", len(sub))
	}
	db, _ := os.ReadFile(spy)
	if len(db) != len(files["edgepbx.db"]) || bytes.Contains(db, secret) || bytes.ContainsFunc(db, func(r rune) bool { return r != 0 }) {
		t.Errorf("store blocks not zeroed (len %d)", len(db))
	}
	if b, _ := os.ReadFile(outside); !bytes.Equal(b, secret) {
		t.Errorf("file behind a symlink changed: %q", b)
	}
}

func TestPlanRunResumes(t *testing.T) {
	data := t.TempDir()
	key := filepath.Join(data, "identity", "device.key")
	os.MkdirAll(filepath.Dir(key), 0o700)
	os.WriteFile(key, bytes.Repeat([]byte{1}, 32), 0o600)
	os.WriteFile(filepath.Join(data, "edgepbx.db"), []byte("store"), 0o600)

	// A failing erase (TPM gone, I/O error) stops before anything else is
	// touched and leaves the marker, so the next boot tries again.
	boom := errors.New("tpm: evict failed")
	err := Plan{DataDir: data, EraseKeys: func() error { return boom }}.Run()
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v", err)
	}
	if !Pending(data) {
		t.Fatal("no marker after a failed reset")
	}
	if _, err := os.Stat(filepath.Join(data, "edgepbx.db")); err != nil {
		t.Fatalf("store touched before the key erase: %v", err)
	}

	var steps []string
	p := Plan{DataDir: data, EraseKeys: func() error { return EraseKeyFile(key) }, Progress: func(s string) { steps = append(steps, s) }}
	if err := p.Run(); err != nil {
		t.Fatal(err)
	}
	if Pending(data) {
		t.Fatal("marker left after a finished reset")
	}
	if ents, _ := os.ReadDir(data); len(ents) != 0 {
		t.Fatalf("%d entries left", len(ents))
	}
	if len(steps) == 0 || steps[0] != "erasing keys" {
		t.Errorf("steps %v: the key erase must come first", steps)
	}
	if err := (Plan{DataDir: data}).Run(); err == nil {
		t.Fatal("a plan without a key erase ran")
	}
}

func TestGate(t *testing.T) {
	now := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	g := NewGate(GateConfig{Now: func() time.Time { return now }, TTL: time.Minute, Window: time.Hour, Burst: 3})

	if err := g.Confirm("00000000000000000000000000000000"); !errors.Is(err, ErrNoTicket) {
		t.Fatalf("confirm without begin: %v", err)
	}
	tok, exp, err := g.Begin()
	if err != nil || len(tok) != 32 || !exp.Equal(now.Add(time.Minute)) {
		t.Fatalf("Begin = %q %v %v", tok, exp, err)
	}
	if err := g.Confirm(tok); err != nil {
		t.Fatalf("confirm: %v", err)
	}
	if err := g.Confirm(tok); !errors.Is(err, ErrNoTicket) {
		t.Fatalf("token used twice: %v", err)
	}

	// One wrong guess voids the request: the right token no longer works.
	tok, _, _ = g.Begin()
	if err := g.Confirm("ffffffffffffffffffffffffffffffff"); !errors.Is(err, ErrBadToken) {
		t.Fatalf("wrong token: %v", err)
	}
	if err := g.Confirm(tok); !errors.Is(err, ErrNoTicket) {
		t.Fatalf("right token after a wrong guess: %v", err)
	}

	// Three per hour, then refused until the window moves on.
	if _, _, err := g.Begin(); err != nil {
		t.Fatalf("third begin: %v", err)
	}
	if _, _, err := g.Begin(); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("fourth begin in an hour: %v", err)
	}
	now = now.Add(61 * time.Minute)
	tok, _, err = g.Begin()
	if err != nil {
		t.Fatalf("begin after the window: %v", err)
	}
	now = now.Add(time.Minute) // expired exactly at the deadline
	if err := g.Confirm(tok); !errors.Is(err, ErrNoTicket) {
		t.Fatalf("expired token: %v", err)
	}
}
