package image

import (
	"bytes"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/update"
)

// TestWithUpdateTrust: an updatable image carries a release file PID 1
// parses, the keyring and the repository's root; inconsistent settings
// are refused at build time, naming what is wrong.
func TestWithUpdateTrust(t *testing.T) {
	k, _ := bundle.GenerateKey(bundle.RoleRelease)
	ring, _ := bundle.MarshalKeyring([]bundle.KeyringKey{k.Public()})
	root := []byte(`{"signed":{"_type":"root","spec_version":"1.0.31","version":1,"expires":"2030-01-01T00:00:00Z","keys":{},"roles":{},"consistent_snapshot":false},"signatures":[]}`)
	for _, tc := range []struct {
		name string
		u    UpdateTrust
		err  string
	}{
		{"no number", UpdateTrust{Keyring: ring}, "version number"},
		{"floor above", UpdateTrust{VersionNumber: 5, Floor: 6, Keyring: ring}, "floor"},
		{"bad keyring", UpdateTrust{VersionNumber: 5, Keyring: []byte("{}")}, "update keys"},
		{"repo without root", UpdateTrust{VersionNumber: 5, Keyring: ring, RepoURL: "https://updates.example/r/"}, "TUF root"},
		{"plain http", UpdateTrust{VersionNumber: 5, Keyring: ring, RepoURL: "http://updates.example/", TUFRoot: root}, "https"},
		{"bad root", UpdateTrust{VersionNumber: 5, Keyring: ring, RepoURL: "https://updates.example/", TUFRoot: []byte("[]")}, "root"},
		{"CA without repo", UpdateTrust{VersionNumber: 5, Keyring: ring, RepoCA: testCAPEM(t)}, "needs the repository"},
		{"CA not PEM", UpdateTrust{VersionNumber: 5, Keyring: ring, RepoURL: "https://updates.example/", TUFRoot: root, RepoCA: []byte("hello")}, "update repository CA has data that is not PEM"},
		{"CA with a key", UpdateTrust{VersionNumber: 5, Keyring: ring, RepoURL: "https://updates.example/", TUFRoot: root,
			RepoCA: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}, `update repository CA holds a "PRIVATE KEY" block`},
	} {
		if err := WithUpdateTrust(tc.u)(&options{}); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: want an error naming %q, got %v", tc.name, tc.err, err)
		}
	}
	var o options
	if err := WithUpdateTrust(UpdateTrust{VersionNumber: 120, Floor: 110, Keyring: ring, RepoURL: "https://updates.example/r", TUFRoot: root})(&o); err != nil {
		t.Fatal(err)
	}
	fs, err := o.update.files("pc-x86_64", "1.2.0")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := update.ParseRelease(fs["etc/edgepbx/release.json"])
	if err != nil || rel.Board != "pc-x86_64" || rel.VersionNumber != 120 || rel.Floor != 110 || rel.Repo != "https://updates.example/r/" {
		t.Fatalf("release %+v %v", rel, err)
	}
	if _, err := bundle.ParseKeyring(fs["etc/edgepbx/update-keys.json"]); err != nil || string(fs[UpdateRootPath]) != string(root) {
		t.Fatalf("keyring %v, root %q", err, fs[UpdateRootPath])
	}
	if rel.RepoCA || fs["etc/edgepbx/update-ca.pem"] != nil {
		t.Fatal("an image without a repository CA says it has one")
	}

	// A vendor's own CA: staged where PID 1 points edgepbxd, and named in the release.
	ca := testCAPEM(t)
	o = options{}
	if err := WithUpdateTrust(UpdateTrust{VersionNumber: 120, Keyring: ring, RepoURL: "https://updates.example/r/", TUFRoot: root, RepoCA: ca})(&o); err != nil {
		t.Fatal(err)
	}
	if fs, err = o.update.files("pc-x86_64", "1.2.0"); err != nil {
		t.Fatal(err)
	}
	if rel, err = update.ParseRelease(fs["etc/edgepbx/release.json"]); err != nil || !rel.RepoCA {
		t.Fatalf("release %+v %v: want repo_ca", rel, err)
	}
	if !bytes.Equal(fs[strings.TrimPrefix(update.RepoCAPath, "/")], ca) {
		t.Fatalf("CA staged as %q", fs[strings.TrimPrefix(update.RepoCAPath, "/")])
	}
}

// TestBuildWithUpdateTrust: an updatable image carries the release file,
// keyring and repository root where PID 1 and edgepbxd read them.
func TestBuildWithUpdateTrust(t *testing.T) {
	needTools(t)
	prof, err := board.Load("qemu-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	k, _ := bundle.GenerateKey(bundle.RoleRelease)
	ring, _ := bundle.MarshalKeyring([]bundle.KeyringKey{k.Public()})
	root := []byte(`{"signed":{"_type":"root","spec_version":"1.0.31","version":1,"expires":"2030-01-01T00:00:00Z","keys":{},"roles":{},"consistent_snapshot":false},"signatures":[]}`)
	img := build(t, prof, WithUpdateTrust(UpdateTrust{VersionNumber: 10203, Keyring: ring, RepoURL: "https://updates.example/", TUFRoot: root}))
	recs, data := readInitramfs(t, img.Initramfs)
	rel, err := update.ParseRelease(data["etc/edgepbx/release.json"])
	if err != nil || rel.Board != "qemu-x86_64" || rel.VersionNumber != 10203 || rel.Floor != 10203 || rel.Version != "1.2.3-test" {
		t.Fatalf("release %+v %v", rel, err)
	}
	if !bytes.Equal(data["etc/edgepbx/update-keys.json"], ring) || !bytes.Equal(data[UpdateRootPath], root) {
		t.Fatal("keyring or repository root not carried as given")
	}
	for _, p := range []string{"etc/edgepbx/release.json", "etc/edgepbx/update-keys.json", UpdateRootPath} {
		if m := recs[p].Mode & 0o777; m != 0o644 {
			t.Errorf("%s mode %o, want 644", p, m)
		}
	}
}
