package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/edgepbx/edgepbx/firmware/update"
	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/control"
	initupdate "github.com/edgepbx/edgepbx/init/update"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

type signable interface {
	ClearSignatures()
	Sign(signature.Signer) (*metadata.Signature, error)
	ToBytes(bool) ([]byte, error)
}

// tufRepo writes a one-target TUF repository (plain files) to dir and
// returns its root.json.
func tufRepo(t *testing.T, dir, target string, data []byte, o update.Offer) []byte {
	t.Helper()
	exp := time.Now().Add(24 * time.Hour)
	root, targets, snap, ts := metadata.Root(exp), metadata.Targets(exp), metadata.Snapshot(exp), metadata.Timestamp(exp)
	root.Signed.ConsistentSnapshot = false
	signers := map[string]signature.Signer{}
	for _, role := range []string{"root", "targets", "snapshot", "timestamp"} {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		k, _ := metadata.KeyFromPublicKey(priv.Public())
		if err := root.Signed.AddKey(k, role); err != nil {
			t.Fatal(err)
		}
		signers[role], _ = signature.LoadSigner(priv, crypto.Hash(0))
	}
	tf, err := metadata.TargetFile().FromBytes(target, data, "sha256")
	if err != nil {
		t.Fatal(err)
	}
	c := update.MarshalOffer(o)
	tf.Custom = &c
	targets.Signed.Targets[target] = tf
	snap.Signed.Meta["targets.json"] = metadata.MetaFile(targets.Signed.Version)
	ts.Signed.Meta["snapshot.json"] = metadata.MetaFile(snap.Signed.Version)
	var rootJSON []byte
	for name, m := range map[string]signable{"1.root.json": root, "targets.json": targets, "snapshot.json": snap, "timestamp.json": ts} {
		role := map[string]string{"1.root.json": "root", "targets.json": "targets", "snapshot.json": "snapshot", "timestamp.json": "timestamp"}[name]
		m.ClearSignatures()
		if _, err := m.Sign(signers[role]); err != nil {
			t.Fatal(err)
		}
		b, err := m.ToBytes(false)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
		if role == "root" {
			rootJSON = b
		}
	}
	os.MkdirAll(filepath.Join(dir, "targets", filepath.Dir(target)), 0o755)
	os.WriteFile(filepath.Join(dir, "targets", target), data, 0o644)
	return rootJSON
}

type pullSlots struct {
	mu    sync.Mutex
	dir   string
	trial string
}

func (s *pullSlots) State() initupdate.BootState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return initupdate.BootState{Booted: "a", Trial: s.trial != "", TrialSlot: s.trial}
}
func (s *pullSlots) Inactive() (initupdate.Slot, error) {
	return initupdate.Slot{Name: "b", Path: filepath.Join(s.dir, "b.img"), Size: 1 << 20}, nil
}
func (s *pullSlots) MarkInvalid(string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trial = ""
	return nil
}
func (s *pullSlots) MarkTrial(n string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trial = n
	return nil
}
func (s *pullSlots) Commit() error         { return errors.New("not a trial boot") }
func (s *pullSlots) Rollback(string) error { return nil }

// TestProductionUpdatePull runs edgepbxd as PID 1 starts it, with
// --update-repo: it asks PID 1 (a real installer behind the control
// socket) which board and version run, looks at a TUF repository served
// over HTTPS by a plain file server, and by the default policy
// (security-only) reports a newer non-security bundle as available
// without installing it.
func TestProductionUpdatePull(t *testing.T) {
	netnstest.NeedRoot(t, "starting edgepbxd as an unprivileged uid")
	data := unprivDir(t)
	share := filepath.Dir(data) // readable by the unprivileged uid

	slots := &pullSlots{dir: t.TempDir()}
	os.WriteFile(filepath.Join(slots.dir, "b.img"), make([]byte, 1<<20), 0o600)
	rel, _ := bundle.GenerateKey(bundle.RoleRelease)
	kb, _ := bundle.MarshalKeyring([]bundle.KeyringKey{rel.Public()})
	keys, _ := bundle.ParseKeyring(kb)
	in := initupdate.NewInstaller(initupdate.Config{Slots: slots, Keys: keys,
		Running: initupdate.Release{Board: "pc-x86_64", Version: "1.1.0", VersionNumber: 110, Floor: 110}})
	sock := filepath.Join(share, "init.sock")
	hl := &healthLog{changed: make(chan struct{}, 1)}
	srv, err := control.Listen(control.Config{Path: sock, UID: unprivUID, GID: unprivUID, System: hl, Updater: &initupdate.Service{In: in}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	defer srv.Close()

	img := bytes.Repeat([]byte{7}, 64<<10)
	s256, s512, n, _ := bundle.HashImage(bytes.NewReader(img))
	var b bytes.Buffer
	if err := bundle.WriteHeader(&b, bundle.Manifest{Format: bundle.Format, Board: "pc-x86_64", Version: "1.2.0", VersionNumber: 120,
		Floor: 120, ImageSize: n, ImageSHA256: s256, ImageSHA512: s512, KeyID: rel.ID, Created: time.Now().UTC()}, rel); err != nil {
		t.Fatal(err)
	}
	b.Write(img)
	repoDir := t.TempDir()
	root := tufRepo(t, repoDir, "pc-x86_64/edgepbx-1.2.0.bundle", b.Bytes(),
		update.Offer{Board: "pc-x86_64", Version: "1.2.0", Number: 120})
	ts := httptest.NewTLSServer(http.FileServer(http.Dir(repoDir)))
	defer ts.Close()
	rootFile, caFile := filepath.Join(share, "update-root.json"), filepath.Join(share, "update-ca.pem")
	os.WriteFile(rootFile, root, 0o644)
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o644)

	p := startProc(t, procOpts{bootstrap: bootstrapJSON(nil), uid: unprivUID},
		"--data", data, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0", "--control", sock,
		"--update-repo", ts.URL+"/", "--update-root", rootFile, "--update-ca", caFile)
	p.waitLine(t, regexp.MustCompile(`msg="update: repository configured".*board=pc-x86_64 version=1\.1\.0`))
	p.waitLine(t, regexp.MustCompile(`msg="update: checked" action=available newest=1\.2\.0 policy=security-only`))
	if slots.State().Trial {
		t.Fatal("a non-security bundle was installed under the security-only policy")
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
}
