package update

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/strictjson"
	pid1 "github.com/edgepbx/edgepbx/init/update"
)

// repo is a vendor's TUF repository of plain files, served over HTTPS by
// a plain file server.
type repo struct {
	t         *testing.T
	dir       string
	keys      map[string]ed25519.PrivateKey
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	rootJSON  []byte
}

func newRepo(t *testing.T) *repo {
	t.Helper()
	year := time.Now().Add(365 * 24 * time.Hour)
	r := &repo{t: t, dir: t.TempDir(), keys: map[string]ed25519.PrivateKey{},
		root: metadata.Root(year), targets: metadata.Targets(year), snapshot: metadata.Snapshot(year), timestamp: metadata.Timestamp(year)}
	r.root.Signed.ConsistentSnapshot = false
	for _, role := range []string{"root", "targets", "snapshot", "timestamp"} {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		r.keys[role] = priv
		k, err := metadata.KeyFromPublicKey(priv.Public())
		if err != nil {
			t.Fatal(err)
		}
		if err := r.root.Signed.AddKey(k, role); err != nil {
			t.Fatal(err)
		}
	}
	r.sign(r.root, "root")
	b, err := r.root.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	r.rootJSON = b
	r.write("1.root.json", b)
	os.MkdirAll(filepath.Join(r.dir, "targets"), 0o755)
	return r
}

func (r *repo) sign(m interface {
	ClearSignatures()
	Sign(signature.Signer) (*metadata.Signature, error)
}, role string) {
	s, err := signature.LoadSigner(r.keys[role], crypto.Hash(0))
	if err != nil {
		r.t.Fatal(err)
	}
	m.ClearSignatures()
	if _, err := m.Sign(s); err != nil {
		r.t.Fatal(err)
	}
}

func (r *repo) write(name string, b []byte) {
	p := filepath.Join(r.dir, name)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// add puts a bundle file in the repository with its metadata (publish
// makes it visible).
func (r *repo) add(o Offer, data []byte) {
	tf, err := metadata.TargetFile().FromBytes(o.Path, data, "sha256")
	if err != nil {
		r.t.Fatal(err)
	}
	c := MarshalOffer(o)
	tf.Custom = &c
	r.targets.Signed.Targets[o.Path] = tf
	r.write("targets/"+o.Path, data)
}

// publish signs new targets, snapshot and timestamp versions; the
// timestamp expires at ts. It returns the timestamp's bytes.
func (r *repo) publish(ts time.Time) []byte {
	r.targets.Signed.Version++
	r.sign(r.targets, "targets")
	r.snapshot.Signed.Meta["targets.json"] = metadata.MetaFile(r.targets.Signed.Version)
	r.snapshot.Signed.Version++
	r.sign(r.snapshot, "snapshot")
	r.timestamp.Signed.Meta["snapshot.json"] = metadata.MetaFile(r.snapshot.Signed.Version)
	r.timestamp.Signed.Version++
	r.timestamp.Signed.Expires = ts
	r.sign(r.timestamp, "timestamp")
	for name, m := range map[string]interface{ ToBytes(bool) ([]byte, error) }{
		"targets.json": r.targets, "snapshot.json": r.snapshot, "timestamp.json": r.timestamp} {
		b, err := m.ToBytes(false)
		if err != nil {
			r.t.Fatal(err)
		}
		r.write(name, b)
	}
	b, _ := os.ReadFile(filepath.Join(r.dir, "timestamp.json"))
	return b
}

// boxSlots is the two slot files and marks of init/slots (UEFI
// variables, which a test process cannot drive).
type boxSlots struct {
	mu      sync.Mutex
	dir     string
	trial   string
	invalid bool
}

func (s *boxSlots) State() pid1.BootState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return pid1.BootState{Booted: "a", Trial: s.trial != "", TrialSlot: s.trial}
}
func (s *boxSlots) Inactive() (pid1.Slot, error) {
	return pid1.Slot{Name: "b", Path: filepath.Join(s.dir, "b.img"), Size: 1 << 20}, nil
}
func (s *boxSlots) MarkInvalid(string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalid, s.trial = true, ""
	return nil
}
func (s *boxSlots) MarkTrial(n string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalid, s.trial = false, n
	return nil
}
func (s *boxSlots) Commit() error         { return errors.New("not a trial boot") }
func (s *boxSlots) Rollback(string) error { return nil }

type nopSystem struct{}

func (nopSystem) Health(control.Health) {}
func (nopSystem) Reboot() error         { return nil }
func (nopSystem) Poweroff() error       { return nil }

// box is PID 1's real installer behind a real control socket.
type box struct {
	slots *boxSlots
	rel   bundle.PrivateKey
	ctrl  *control.Client
}

func newBox(t *testing.T) *box {
	t.Helper()
	dir := t.TempDir()
	b := &box{slots: &boxSlots{dir: dir}}
	os.WriteFile(filepath.Join(dir, "b.img"), make([]byte, 1<<20), 0o600)
	b.rel, _ = bundle.GenerateKey(bundle.RoleRelease)
	kb, _ := bundle.MarshalKeyring([]bundle.KeyringKey{b.rel.Public()})
	keys, err := bundle.ParseKeyring(kb)
	if err != nil {
		t.Fatal(err)
	}
	in := pid1.NewInstaller(pid1.Config{Slots: b.slots, Keys: keys, Floor: pid1.FileFloor{Path: filepath.Join(dir, "floor")},
		Running: pid1.Release{Board: "pc-x86_64", Version: "1.1.0", VersionNumber: 110, Floor: 110}})
	sock := filepath.Join(dir, "init.sock")
	srv, err := control.Listen(control.Config{Path: sock, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		System: nopSystem{}, Updater: &pid1.Service{In: in}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if b.ctrl, err = control.Dial(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.ctrl.Close() })
	return b
}

func (b *box) bundle(t *testing.T, version string, number uint64, img []byte) []byte {
	t.Helper()
	s256, s512, n, _ := bundle.HashImage(bytes.NewReader(img))
	m := bundle.Manifest{Format: bundle.Format, Board: "pc-x86_64", Version: version, VersionNumber: number, Floor: number,
		ImageSize: n, ImageSHA256: s256, ImageSHA512: s512, KeyID: b.rel.ID, Created: time.Unix(1800000000, 0).UTC()}
	var buf bytes.Buffer
	if err := bundle.WriteHeader(&buf, m, b.rel); err != nil {
		t.Fatal(err)
	}
	buf.Write(img)
	return buf.Bytes()
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

type rig struct {
	repo *repo
	box  *box
	ts   *httptest.Server
	now  time.Time
	p    *Puller
}

func newPullRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{repo: newRepo(t), box: newBox(t), now: time.Date(2026, 12, 7, 3, 30, 0, 0, time.UTC)}
	r.ts = httptest.NewTLSServer(http.FileServer(http.Dir(r.repo.dir)))
	t.Cleanup(r.ts.Close)
	var err error
	r.p, err = New(Config{RepoURL: r.ts.URL + "/", Root: r.repo.rootJSON, CacheDir: filepath.Join(t.TempDir(), "tuf"),
		Board: "pc-x86_64", Running: 110, Transport: r.ts.Client().Transport, Installer: r.box.ctrl,
		Now: func() time.Time { return r.now }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPullByPolicy: a repository served over HTTPS offers a newer
// security bundle; notify only reports it (with the vulnerable-version
// banner), security-only waits for the window and then installs it
// through PID 1's installer, which marks the slot for a trial.
func TestPullByPolicy(t *testing.T) {
	r := newPullRig(t)
	img := randBytes(300 << 10)
	good := r.box.bundle(t, "1.2.0", 120, img)
	r.repo.add(Offer{Path: "pc-x86_64/edgepbx-1.2.0.bundle", Board: "pc-x86_64", Version: "1.2.0", Number: 120, Security: true}, good)
	r.repo.add(Offer{Path: "apu2/edgepbx-1.3.0.bundle", Board: "apu2", Version: "1.3.0", Number: 130, Security: true}, []byte("other board"))
	r.repo.add(Offer{Path: "pc-x86_64/edgepbx-1.0.0.bundle", Board: "pc-x86_64", Version: "1.0.0", Number: 100}, []byte("older"))
	r.repo.publish(time.Now().Add(24 * time.Hour))
	ctx := context.Background()

	rep := r.p.Run(ctx, Policy{Mode: ModeNotify, Window: Window{Start: "03:00", Hours: 2}})
	if rep.Action != "available" || rep.Newest == nil || rep.Newest.Number != 120 || r.box.slots.State().Trial {
		t.Fatalf("notify: %+v", rep)
	}
	if b := r.p.Banner(); !strings.Contains(b, "1.2.0") {
		t.Fatalf("banner %q", b)
	}
	r.now = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	if rep := r.p.Run(ctx, DefaultPolicy); rep.Action != "waiting-for-window" || r.box.slots.State().Trial {
		t.Fatalf("outside the window: %+v", rep)
	}
	r.now = time.Date(2026, 12, 7, 4, 59, 0, 0, time.UTC)
	rep = r.p.Run(ctx, DefaultPolicy)
	if rep.Action != "installed" || rep.Result == nil || rep.Result.Slot != "b" {
		t.Fatalf("install: %+v", rep)
	}
	got, _ := os.ReadFile(filepath.Join(r.box.slots.dir, "b.img"))
	if !bytes.Equal(got[:len(img)], img) || r.box.slots.State().TrialSlot != "b" {
		t.Fatal("slot b does not hold the pulled image, or is not marked for trial")
	}
	if r.p.Banner() != "" {
		t.Fatal("banner still up after installing the fix")
	}
}

// TestPullRefusesBadRepository: a replayed (older) timestamp, a frozen
// repository (expired timestamp) and a file that is not the one the
// metadata names are refused, and nothing reaches a bootable slot.
func TestPullRefusesBadRepository(t *testing.T) {
	ctx := context.Background()
	pol := Policy{Mode: ModeAll, Window: Window{Start: "00:00", Hours: 24}}
	t.Run("replayed timestamp", func(t *testing.T) {
		r := newPullRig(t)
		old := r.repo.publish(time.Now().Add(24 * time.Hour))
		r.repo.publish(time.Now().Add(24 * time.Hour))
		if rep := r.p.Run(ctx, pol); rep.Action != "up-to-date" {
			t.Fatalf("first check: %+v", rep)
		}
		r.repo.write("timestamp.json", old) // a mirror serving yesterday's state
		rep := r.p.Run(ctx, pol)
		if rep.Action != "failed" || !strings.Contains(rep.Detail, "replayed") {
			t.Fatalf("replayed timestamp: %+v", rep)
		}
	})
	t.Run("frozen repository", func(t *testing.T) {
		r := newPullRig(t)
		r.now = time.Now()
		r.repo.publish(r.now.Add(-time.Hour))
		rep := r.p.Run(ctx, pol)
		if rep.Action != "failed" || !strings.Contains(rep.Detail, "frozen") {
			t.Fatalf("expired timestamp: %+v", rep)
		}
	})
	t.Run("substituted file", func(t *testing.T) {
		r := newPullRig(t)
		img := randBytes(200 << 10)
		r.repo.add(Offer{Path: "pc-x86_64/edgepbx-1.2.0.bundle", Board: "pc-x86_64", Version: "1.2.0", Number: 120}, r.box.bundle(t, "1.2.0", 120, img))
		r.repo.publish(time.Now().Add(24 * time.Hour))
		// Same length, validly signed by the vendor, but not the file the
		// metadata names (say, a bundle the vendor withdrew).
		other := r.box.bundle(t, "1.2.0", 120, randBytes(200<<10))
		r.repo.write("targets/pc-x86_64/edgepbx-1.2.0.bundle", other)
		rep := r.p.Run(ctx, pol)
		if rep.Action != "failed" || !strings.Contains(rep.Detail, "does not match the metadata") {
			t.Fatalf("substituted file: %+v", rep)
		}
		if st := r.box.slots.State(); st.Trial || !r.box.slots.invalid {
			t.Fatalf("after a substituted file: trial %v, invalid %v", st.Trial, r.box.slots.invalid)
		}
	})
}

func TestPolicy(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 12, 7, h, m, 0, 0, time.UTC) }
	for _, tc := range []struct {
		w    Window
		t    time.Time
		want bool
	}{
		{Window{"03:00", 2}, at(3, 0), true},
		{Window{"03:00", 2}, at(4, 59), true},
		{Window{"03:00", 2}, at(5, 0), false},
		{Window{"03:00", 2}, at(2, 59), false},
		{Window{"23:00", 3}, at(1, 30), true},
		{Window{"23:00", 3}, at(2, 0), false},
		{Window{"23:00", 3}, at(23, 10), true},
		{Window{"00:00", 24}, at(13, 0), true},
	} {
		if got := tc.w.Contains(tc.t); got != tc.want {
			t.Errorf("%+v at %s: %v", tc.w, tc.t.Format("15:04"), got)
		}
	}
	for _, bad := range []Policy{{Mode: "sometimes", Window: Window{"03:00", 2}}, {Mode: ModeAll, Window: Window{"3:00", 2}},
		{Mode: ModeAll, Window: Window{"25:00", 2}}, {Mode: ModeAll, Window: Window{"03:00", 0}}, {Mode: ModeAll, Window: Window{"03:00", 25}}} {
		if err := bad.Validate(); !errors.Is(err, ErrPolicy) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if err := DefaultPolicy.Validate(); err != nil {
		t.Fatal(err)
	}
	sec, plain := Offer{Security: true}, Offer{}
	for _, tc := range []struct {
		m         Mode
		sec, plan bool
	}{{ModeOff, false, false}, {ModeNotify, false, false}, {ModeSecurity, true, false}, {ModeAll, true, true}} {
		p := Policy{Mode: tc.m}
		if p.Wants(sec) != tc.sec || p.Wants(plain) != tc.plan {
			t.Errorf("mode %s", tc.m)
		}
	}
}

// FuzzOfferOf: a target's custom metadata from the repository is parsed
// strictly and never yields an offer for another board or a bad length.
func FuzzOfferOf(f *testing.F) {
	f.Add("pc-x86_64/edgepbx-1.2.0.bundle", []byte(`{"edgepbx":{"board":"pc-x86_64","version":"1.2.0","version_number":120,"security":true}}`), int64(10))
	f.Add("pc-x86_64/../x.bundle", []byte(`{"edgepbx":{"board":"pc-x86_64","version":"1","version_number":1}}`), int64(-1))
	f.Fuzz(func(t *testing.T, name string, custom []byte, length int64) {
		c := json.RawMessage(custom)
		tf := &metadata.TargetFiles{Length: length, Hashes: metadata.Hashes{"sha256": make([]byte, 32)}, Custom: &c}
		o, ok := offerOf(name, tf)
		if !ok {
			return
		}
		if !strings.HasPrefix(o.Path, o.Board+"/") || o.Length <= 0 || o.Length > control.MaxUpdateSize || o.Number == 0 || path.Clean(o.Path) != o.Path || strings.HasPrefix(o.Path, "../") {
			t.Fatalf("bad offer %+v", o)
		}
	})
}

// FuzzPolicy: an admin's policy body is decoded strictly and validated;
// a valid one has a window that contains some time of day, an invalid
// one never reaches the store.
func FuzzPolicy(f *testing.F) {
	f.Add([]byte(`{"mode":"security-only","window":{"start":"03:00","hours":2}}`))
	f.Add([]byte(`{"mode":"all","window":{"start":"23:59","hours":24}}`))
	f.Add([]byte(`{"mode":"all","window":{"start":"24:00","hours":1}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var p Policy
		if err := strictjson.Unmarshal(body, &p); err != nil {
			return
		}
		if p.Validate() != nil {
			return
		}
		s, _ := time.Parse("15:04", p.Window.Start)
		at := time.Date(2026, 12, 7, s.Hour(), s.Minute(), 0, 0, time.UTC)
		if !p.Window.Contains(at) {
			t.Fatalf("valid window %+v does not contain its own start", p.Window)
		}
	})
}
