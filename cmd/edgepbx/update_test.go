package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/store"
	fwupdate "github.com/edgepbx/edgepbx/firmware/update"
	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/update"
)

func runCLI(args ...string) (string, string, error) {
	cmd := newRoot()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

// TestKeysAndSign drives `edgepbx keys` and `edgepbx sign` as a vendor
// would: the bundles they make verify against the keyring they wrote, a
// rotated key is trusted next to the old one until retired, a downgrade
// needs the emergency key, and a key file others can read is refused.
func TestKeysAndSign(t *testing.T) {
	dir := t.TempDir()
	kdir, ring := filepath.Join(dir, "keys"), filepath.Join(dir, "update-keys.json")
	keyArgs := func(a ...string) []string { return append([]string{"keys", "--dir", kdir, "--keyring", ring}, a...) }
	out, _, err := runCLI(keyArgs("create")...)
	if err != nil {
		t.Fatal(err)
	}
	relID := strings.Fields(out)[0]
	if _, _, err := runCLI(keyArgs("create", "--role", "emergency")...); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "slot.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("edgepbx slot "), 40000), 0o644); err != nil {
		t.Fatal(err)
	}
	sign := func(key string, a ...string) (string, error) {
		out := filepath.Join(dir, fmt.Sprintf("b%d.bundle", len(a)))
		_, _, err := runCLI(append([]string{"sign", "--key", filepath.Join(kdir, key+".key"), "--board", "pc-x86_64",
			"--version", "1.2.0", "-o", out, img}, a...)...)
		return out, err
	}
	verify := func(path string) (bundle.Manifest, error) {
		kr, err := bundle.LoadKeyring(ring)
		if err != nil {
			return bundle.Manifest{}, err
		}
		f, err := os.Open(path)
		if err != nil {
			return bundle.Manifest{}, err
		}
		defer f.Close()
		h, err := bundle.ReadHeader(f)
		if err != nil {
			return h.Manifest, err
		}
		if _, err := h.Verify(kr); err != nil {
			return h.Manifest, err
		}
		_, err = io.Copy(io.Discard, bundle.NewImageReader(f, h.Manifest))
		return h.Manifest, err
	}
	b, err := sign(relID, "--version-number", "120")
	if err != nil {
		t.Fatal(err)
	}
	m, err := verify(b)
	if err != nil || m.VersionNumber != 120 || m.Floor != 120 || m.KeyID != relID || m.ImageSize != 13*40000 {
		t.Fatalf("signed bundle: %+v %v", m, err)
	}
	if _, err := sign(relID, "--version-number", "90", "--downgrade"); err == nil || !strings.Contains(err.Error(), "emergency") {
		t.Fatalf("downgrade with a release key: %v", err)
	}

	// Rotation: the successor is trusted next to the old key; after
	// retiring, the old key's bundles no longer verify.
	out, _, err = runCLI(keyArgs("rotate", relID)...)
	if err != nil {
		t.Fatal(err)
	}
	newID := strings.Fields(out)[0]
	b2, err := sign(newID, "--version-number", "130", "--security")
	if err != nil {
		t.Fatal(err)
	}
	if m, err := verify(b2); err != nil || !m.Security {
		t.Fatalf("bundle of the rotated key: %+v %v", m, err)
	}
	if _, err := verify(b); err != nil {
		t.Fatalf("old key's bundle before retiring: %v", err)
	}
	if _, _, err := runCLI(keyArgs("retire", relID)...); err != nil {
		t.Fatal(err)
	}
	if _, err := verify(b); bundle.ReasonOf(err) != bundle.ReasonKey {
		t.Fatalf("retired key's bundle: %v", err)
	}
	if _, _, err := runCLI(keyArgs("retire", newID)...); err == nil || !strings.Contains(err.Error(), "without a release key") {
		t.Fatalf("retiring the last release key: %v", err)
	}
	os.Chmod(filepath.Join(kdir, newID+".key"), 0o644)
	if _, err := sign(newID, "--version-number", "131"); !errors.Is(err, bundle.ErrKeyMode) {
		t.Fatalf("world-readable key: %v", err)
	}
}

// boxSlots is two slot files with the boot layer's marks, standing in
// for init/slots (UEFI variables) which a test process cannot drive.
type boxSlots struct {
	mu            sync.Mutex
	dir           string
	trial, booted string
	invalid       map[string]bool
}

func (s *boxSlots) path(n string) string { return filepath.Join(s.dir, n+".img") }

func (s *boxSlots) State() update.BootState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return update.BootState{Booted: s.booted, Trial: s.trial != "", TrialSlot: s.trial}
}

func (s *boxSlots) Inactive() (update.Slot, error) {
	return update.Slot{Name: "b", Path: s.path("b"), Size: 1 << 20}, nil
}

func (s *boxSlots) MarkInvalid(n string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalid[n], s.trial = true, ""
	return nil
}

func (s *boxSlots) MarkTrial(n string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalid[n], s.trial = false, n
	return nil
}

func (s *boxSlots) Commit() error         { return errors.New("not a trial boot") }
func (s *boxSlots) Rollback(string) error { return nil }

type nopSystem struct{}

func (nopSystem) Health(control.Health) {}
func (nopSystem) Reboot() error         { return nil }
func (nopSystem) Poweroff() error       { return nil }

// TestUpdateCLI installs bundles with `edgepbx update --box` through the
// real chain: CLI → admin API (TLS, API token) → control socket → PID 1's
// installer → slot file. Refusals reach the CLI naming what is wrong, are
// in edgepbxd's audit log, and leave the slot as it was.
func TestUpdateCLI(t *testing.T) {
	dir := t.TempDir()
	slots := &boxSlots{dir: dir, booted: "a", invalid: map[string]bool{}}
	old := bytes.Repeat([]byte{0xee}, 1<<20)
	for _, n := range []string{"a", "b"} {
		if err := os.WriteFile(slots.path(n), old, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rel, _ := bundle.GenerateKey(bundle.RoleRelease)
	stranger, _ := bundle.GenerateKey(bundle.RoleRelease)
	kb, _ := bundle.MarshalKeyring([]bundle.KeyringKey{rel.Public()})
	keys, err := bundle.ParseKeyring(kb)
	if err != nil {
		t.Fatal(err)
	}
	in := update.NewInstaller(update.Config{Slots: slots, Keys: keys, Floor: update.FileFloor{Path: filepath.Join(dir, "floor")},
		Running: update.Release{Board: "pc-x86_64", Version: "1.1.0", VersionNumber: 110, Floor: 110}})
	sock := filepath.Join(dir, "init.sock")
	ctrl, err := control.Listen(control.Config{Path: sock, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		System: nopSystem{}, Updater: &update.Service{In: in}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ctrl.Serve(ctx) }()
	defer func() { cancel(); <-served }()
	cc, err := control.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(dir, "edgepbx.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	al := audit.New(db, auth.SystemClock{})
	as, err := auth.New(auth.Config{DB: db, Clock: auth.SystemClock{}, Audit: al, SetupCode: auth.SetupCode("AAAA-BBBB-CCCC"),
		Hasher: auth.NewHasher(auth.Params{Time: 1, MemoryKiB: 1024, Threads: 1}, 2, 8), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	const pw = "Vz4#mq9!Tr2$kw"
	if _, err := as.Claim(ctx, auth.Client{}, "AAAA-BBBB-CCCC", "root1", pw); err != nil {
		t.Fatal(err)
	}
	tok, _, err := as.CreateToken(ctx, auth.Principal{Username: "root1", Role: auth.RoleAdmin}, auth.Client{}, auth.Proof{Password: pw},
		"cli", []string{auth.ScopeAdmin}, 1)
	if err != nil {
		t.Fatal(err)
	}
	pullSvc := &fwupdate.Service{DB: db, Audit: al} // no repository configured
	srv, err := admin.NewServer(admin.Deps{Store: db, Audit: al, Auth: as, Logger: quiet, Updates: cc, Pull: pullSvc})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	// Shorter whole-request timeouts than the slow upload below takes (as
	// edgepbxd's 30 s against a slow link): the update route must not be
	// cut by them. They also bound every TLS handshake, so they stay well
	// above what a handshake takes under -race on a loaded 2-core machine
	// (300 ms failed there: "TLS handshake error ... i/o timeout").
	const reqTimeout = 3 * time.Second
	ts.Config.ReadTimeout, ts.Config.WriteTimeout = reqTimeout, reqTimeout
	ts.StartTLS()
	defer ts.Close()
	fp := fmt.Sprintf("%X", sha256.Sum256(ts.Certificate().Raw))
	tokFile := filepath.Join(dir, "token")
	os.WriteFile(tokFile, []byte(tok+"\n"), 0o600)

	img := make([]byte, 700<<10)
	rand.Read(img)
	write := func(name string, k bundle.PrivateKey, edit func(*bundle.Manifest), tamper func([]byte)) string {
		s256, s512, n, _ := bundle.HashImage(bytes.NewReader(img))
		m := bundle.Manifest{Format: bundle.Format, Board: "pc-x86_64", Version: "1.2.0", VersionNumber: 120, Floor: 120,
			ImageSize: n, ImageSHA256: s256, ImageSHA512: s512, KeyID: k.ID, Created: time.Unix(1800000000, 0).UTC()}
		if edit != nil {
			edit(&m)
		}
		var b bytes.Buffer
		if err := bundle.WriteHeader(&b, m, k); err != nil {
			t.Fatal(err)
		}
		b.Write(img)
		raw := b.Bytes()
		if tamper != nil {
			tamper(raw)
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, raw, 0o644)
		return p
	}
	upd := func(a ...string) (string, error) {
		out, _, err := runCLI(append([]string{"update", "--box", ts.URL, "--fingerprint", fp, "--token-file", tokFile}, a...)...)
		return out, err
	}
	slotIs := func(want []byte) bool {
		got, err := os.ReadFile(slots.path("b"))
		return err == nil && bytes.Equal(got[:len(want)], want)
	}

	// Refused before a byte is written: the slot keeps its content and
	// no mark changes.
	for _, tc := range []struct {
		name, file, reason string
	}{
		{"unknown key", write("stranger.bundle", stranger, nil, nil), "(key)"},
		{"older version", write("old.bundle", rel, func(m *bundle.Manifest) { m.Version, m.VersionNumber, m.Floor = "1.0.0", 100, 100 }, nil), "(version-floor)"},
		{"other board", write("board.bundle", rel, func(m *bundle.Manifest) { m.Board = "apu2" }, nil), "(board)"},
		{"bad signature", write("sig.bundle", rel, nil, func(b []byte) { b[12+int(binary.BigEndian.Uint32(b[8:12]))] ^= 1 }), "(signature)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := upd(tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("want a refusal naming %s, got %v", tc.reason, err)
			}
			if !slotIs(old) || slots.State().Trial || slots.invalid["b"] {
				t.Fatal("a refused bundle changed the slot")
			}
		})
	}
	// A tampered image is found only while writing: the slot is left
	// invalid, never bootable.
	if _, err := upd(write("tampered.bundle", rel, nil, func(b []byte) { b[len(b)-100] ^= 1 })); err == nil || !strings.Contains(err.Error(), "(hash)") {
		t.Fatalf("tampered image: %v", err)
	}
	if st := slots.State(); st.Trial || !slots.invalid["b"] {
		t.Fatalf("after a tampered image: trial %v invalid %v", st.Trial, slots.invalid["b"])
	}

	out, err := upd(write("good.bundle", rel, nil, nil))
	if err != nil || !strings.Contains(out, "installed 1.2.0 in slot b") {
		t.Fatalf("install: %q %v", out, err)
	}
	if !slotIs(img) || slots.State().TrialSlot != "b" {
		t.Fatal("slot b does not hold the image or is not marked for trial")
	}
	st, err := upd()
	if err != nil || !strings.Contains(st, `"version": "1.1.0"`) || !strings.Contains(st, `"floor": 110`) {
		t.Fatalf("status: %q %v", st, err)
	}

	// A slow upload, longer than the server's request timeouts, completes.
	slow := write("slow.bundle", rel, func(m *bundle.Manifest) { m.Version, m.VersionNumber = "1.3.0", 130 }, nil)
	raw, _ := os.ReadFile(slow)
	// 32 KiB every 250 ms: about 5.5 s for the 700 KiB image, beyond reqTimeout.
	req, _ := http.NewRequest("POST", ts.URL+"/api/v1/update", &slowReader{r: bytes.NewReader(raw), chunk: 32 << 10, pause: 250 * time.Millisecond})
	req.ContentLength = int64(len(raw))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/octet-stream")
	began := time.Now()
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("slow upload: %v", err)
	}
	if took := time.Since(began); took <= reqTimeout {
		t.Fatalf("the slow upload took %v, not longer than the server's timeouts (%v): it proves nothing", took, reqTimeout)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "installed 1.3.0") {
		t.Fatalf("slow upload: %d %s", res.StatusCode, body)
	}

	// Policy and pull over the API.
	if out, err := upd("--policy", "all", "--window", "22:30/3"); err != nil || !strings.Contains(out, "policy all, window 22:30 for 3 h") {
		t.Fatalf("policy: %q %v", out, err)
	}
	if p, _ := pullSvc.Policy(); p.Mode != fwupdate.ModeAll || p.Window.Start != "22:30" || p.Window.Hours != 3 {
		t.Fatalf("stored policy %+v", p)
	}
	if _, err := upd("--policy", "weekly"); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Fatalf("bad policy: %v", err)
	}
	if _, err := upd("--pull"); err == nil || !strings.Contains(err.Error(), "no update repository") {
		t.Fatalf("pull without a repository: %v", err)
	}

	// edgepbxd's audit log has every attempt, refusals as denied.
	es, err := al.Query(audit.Filter{Action: "update.install"})
	if err != nil {
		t.Fatal(err)
	}
	var denied, ok int
	for _, e := range es {
		switch e.Outcome {
		case audit.Denied:
			denied++
		case audit.OK:
			ok++
		}
	}
	if denied != 5 || ok != 2 {
		t.Fatalf("audit: %d denied, %d ok", denied, ok)
	}
}

// slowReader hands out chunk bytes per read, pausing before each: an
// upload over a slow link.
type slowReader struct {
	r     io.Reader
	chunk int
	pause time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.pause)
	return s.r.Read(p[:min(len(p), s.chunk)])
}
