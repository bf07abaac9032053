package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
