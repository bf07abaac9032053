package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/edgepbx/edgepbx/firmware/update"
	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/control"
)

// TestRepoCLI: a repository made with `edgepbx repo init|add|timestamp`
// and served by a plain HTTPS file server is what a box's puller reads:
// it finds the published bundle by its manifest, through the root that
// init printed (the one images carry).
func TestRepoCLI(t *testing.T) {
	dir := t.TempDir()
	kdir, ring, repo := filepath.Join(dir, "keys"), filepath.Join(dir, "ring.json"), filepath.Join(dir, "repo")
	out, _, err := runCLI("keys", "--dir", kdir, "--keyring", ring, "create")
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "slot.img")
	os.WriteFile(img, make([]byte, 300<<10), 0o644)
	bun := filepath.Join(dir, "u.bundle")
	if _, _, err := runCLI("sign", "--key", filepath.Join(kdir, strings.Fields(out)[0]+".key"), "--board", "pc-x86_64",
		"--version", "1.2.0", "--version-number", "120", "--security", "-o", bun, img); err != nil {
		t.Fatal(err)
	}
	repoArgs := func(a ...string) []string { return append([]string{"repo", "--dir", repo, "--keys", kdir}, a...) }
	out, _, err = runCLI(repoArgs("init")...)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.ReadFile(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(repoArgs("init")...); err == nil {
		t.Fatal("init over an existing repository")
	}
	if out, _, err := runCLI(repoArgs("add", bun)...); err != nil || !strings.HasPrefix(out, "pc-x86_64/edgepbx-1.2.0.bundle") {
		t.Fatalf("add: %q %v", out, err)
	}
	ts := httptest.NewTLSServer(http.FileServer(http.Dir(repo)))
	defer ts.Close()
	p, err := update.New(update.Config{RepoURL: ts.URL + "/", Root: root, CacheDir: filepath.Join(dir, "cache"), Board: "pc-x86_64",
		Running: 110, Transport: ts.Client().Transport, Installer: (*control.Client)(nil)}) // Check installs nothing
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(bun)
	for range 2 {
		o, err := p.Check()
		if err != nil || o == nil || o.Version != "1.2.0" || o.Number != 120 || !o.Security || o.Length != fi.Size() {
			t.Fatalf("check: %+v %v", o, err)
		}
		if _, _, err := runCLI(repoArgs("timestamp")...); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(kdir, "tuf-timestamp.key"), 0o644)
	if _, _, err := runCLI(repoArgs("timestamp")...); !errors.Is(err, bundle.ErrKeyMode) {
		t.Fatalf("world-readable role key: %v", err)
	}
}

// TestRepoRotate: `edgepbx repo rotate` replaces a role's key. A box
// trusting only the root its image carries follows the new roots; metadata
// signed with a retired key (say, a stolen timestamp key) is refused.
func TestRepoRotate(t *testing.T) {
	dir := t.TempDir()
	kdir, ring, repo := filepath.Join(dir, "keys"), filepath.Join(dir, "ring.json"), filepath.Join(dir, "repo")
	out, _, err := runCLI("keys", "--dir", kdir, "--keyring", ring, "create")
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "slot.img")
	os.WriteFile(img, make([]byte, 64<<10), 0o644)
	bun := filepath.Join(dir, "u.bundle")
	if _, _, err := runCLI("sign", "--key", filepath.Join(kdir, strings.Fields(out)[0]+".key"), "--board", "pc-x86_64",
		"--version", "1.2.0", "--version-number", "120", "-o", bun, img); err != nil {
		t.Fatal(err)
	}
	repoArgs := func(a ...string) []string { return append([]string{"repo", "--dir", repo, "--keys", kdir}, a...) }
	out, _, err = runCLI(repoArgs("init")...)
	if err != nil {
		t.Fatal(err)
	}
	imageRoot, err := os.ReadFile(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(repoArgs("add", bun)...); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(http.FileServer(http.Dir(repo)))
	defer ts.Close()
	box := func(cache string) *update.Puller {
		p, err := update.New(update.Config{RepoURL: ts.URL + "/", Root: imageRoot, CacheDir: filepath.Join(dir, cache), Board: "pc-x86_64",
			Running: 110, Transport: ts.Client().Transport, Installer: (*control.Client)(nil)})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := box("old-box")
	check := func(p *update.Puller, what string) {
		t.Helper()
		if o, err := p.Check(); err != nil || o == nil || o.Version != "1.2.0" {
			t.Fatalf("%s: %+v %v", what, o, err)
		}
	}
	check(old, "before any rotation")

	for i, role := range []string{"timestamp", "root", "targets", "snapshot"} {
		out, _, err := runCLI(repoArgs("rotate", role)...)
		if err != nil {
			t.Fatalf("rotate %s: %v", role, err)
		}
		if want := fmt.Sprintf("%d.root.json", i+2); filepath.Base(strings.TrimSpace(out)) != want {
			t.Fatalf("rotate %s wrote %q, want %s", role, out, want)
		}
		if _, err := os.Stat(filepath.Join(kdir, fmt.Sprintf("tuf-%s.key.v%d", role, i+1))); err != nil {
			t.Fatalf("rotate %s: retired key not kept: %v", role, err)
		}
		check(old, "a box that saw the old root, after rotating "+role)
		check(box(fmt.Sprintf("new-box-%d", i)), "a box that never checked, after rotating "+role)
	}

	// The retired timestamp key signs a newer timestamp: refused.
	retired, _, err := tufSignerAt(filepath.Join(kdir, "tuf-timestamp.key.v1"), "timestamp", false)
	if err != nil {
		t.Fatal(err)
	}
	tsm, err := new(metadata.Metadata[metadata.TimestampType]).FromFile(filepath.Join(repo, "timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	tsm.Signed.Version++
	tsm.ClearSignatures()
	if _, err := tsm.Sign(retired); err != nil {
		t.Fatal(err)
	}
	b, _ := tsm.ToBytes(true)
	good, _ := os.ReadFile(filepath.Join(repo, "timestamp.json"))
	os.WriteFile(filepath.Join(repo, "timestamp.json"), b, 0o644)
	if o, err := old.Check(); err == nil {
		t.Fatalf("a timestamp signed with the retired key was accepted: %+v", o)
	}
	os.WriteFile(filepath.Join(repo, "timestamp.json"), good, 0o644)
	check(old, "the real timestamp again")

	if _, _, err := runCLI(repoArgs("rotate", "mirror")...); err == nil || !strings.Contains(err.Error(), "want one of") {
		t.Fatalf("unknown role: %v", err)
	}
}
