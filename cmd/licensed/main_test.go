package main_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// TestBinary builds the real licensed, makes a vendor key pair with
// `licensed keys`, issues a licence, serves on loopback and lets a box check
// in with the generated public key.
func TestBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "licensed")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("licensed %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	pubLine := strings.TrimSpace(run("keys", "-out", dir))
	pub, err := license.ParsePublicKey(pubLine)
	if err != nil {
		t.Fatalf("keys printed %q: %v", pubLine, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "vendor.key")); st.Mode().Perm() != 0o600 {
		t.Fatalf("vendor.key mode %v", st.Mode())
	}
	if out, err := exec.Command(bin, "keys", "-out", dir).CombinedOutput(); err == nil {
		t.Fatalf("keys overwrote an existing key: %s", out)
	}
	db := filepath.Join(dir, "licensed.db")
	run("issue", "-db", db, "-id", "LIC-BIN", "-days", "30")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ca := filepath.Join(dir, "ca.pem")
	cmd := exec.CommandContext(ctx, bin, "serve", "-db", db, "-key", filepath.Join(dir, "vendor.key"),
		"-listen", "127.0.0.1:0", "-dev-ca-out", ca)
	cmd.Stderr = os.Stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no listen line: %v", err)
	}
	go io.Copy(io.Discard, stdout)
	url := strings.TrimSpace(strings.TrimPrefix(line, "licensed: listening on "))

	caPEM, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(caPEM)
	caCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	key := make([]byte, 32)
	rand.Read(key)
	sdb, err := store.Open(filepath.Join(dir, "edgepbx.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	m, err := license.New(license.Config{ServerURL: url, DB: sdb, VendorKey: pub, RootCAs: roots,
		Identity: license.Identity{Serial: "EPX-B1", InstallID: "inst-b1", Fingerprint: license.Fingerprint("b1"),
			Firmware: "1.0.0", LicenceID: "LIC-BIN"}})
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	st, err := m.CheckNow(cctx)
	if err != nil || st.Mode != license.ModeFull || st.LicenceStatus != license.StatusOK {
		t.Fatalf("check-in against the binary: %v %+v", err, st)
	}
	if d := st.ValidUntil.Sub(time.Now()); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Fatalf("licence valid until %s", st.ValidUntil)
	}
}
