package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/backup"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// TestBackupCLI drives `edgepbx backup` against a real admin server over
// TLS pinned by fingerprint: make, list, download and restore a backup.
func TestBackupCLI(t *testing.T) {
	dir := t.TempDir()
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
	ctx := context.Background()
	if _, err := as.Claim(ctx, auth.Client{}, "AAAA-BBBB-CCCC", "root1", pw); err != nil {
		t.Fatal(err)
	}
	root := auth.Principal{Username: "root1", Role: auth.RoleAdmin}
	tok, _, err := as.CreateToken(ctx, root, auth.Client{}, auth.Proof{Password: pw}, "cli", []string{auth.ScopeAdmin}, 1)
	if err != nil {
		t.Fatal(err)
	}
	bk, err := backup.New(backup.Config{DB: db, Audit: al, Box: backup.Identity{Serial: "CLI1", InstallID: "i1", Firmware: "test"},
		Dir: filepath.Join(dir, "backups"), BoxLocal: backup.DefaultBoxLocal("certs", nil), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := bk.GenerateKey(backup.Actor{Name: "root1"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := admin.NewServer(admin.Deps{Store: db, Audit: al, Auth: as, Logger: quiet, Backups: bk})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv)
	defer ts.Close()
	fp := fmt.Sprintf("%X", sha256.Sum256(ts.Certificate().Raw))

	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tokFile, keyFile, pwFile := write("token", tok), write("key", id), write("pw", pw)
	run := func(args ...string) (string, error) {
		cmd := newRoot()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(append([]string{"backup", "--box", ts.URL, "--fingerprint", fp, "--token-file", tokFile}, args...))
		err := cmd.Execute()
		return out.String(), err
	}
	name, err := run("create")
	if err != nil {
		t.Fatal(err)
	}
	name = strings.TrimSpace(name)
	if l, err := run("list"); err != nil || !strings.Contains(l, name) {
		t.Fatalf("list: %q %v", l, err)
	}
	file := filepath.Join(dir, "dl.age")
	if _, err := run("download", name, "-o", file); err != nil {
		t.Fatal(err)
	}
	if out, err := run("restore", file, "--key-file", keyFile); err == nil || !strings.Contains(err.Error(), "re-authentication") {
		t.Fatalf("restore without the password: %q %v", out, err)
	}
	out, err := run("restore", file, "--key-file", keyFile, "--password-file", pwFile)
	if err != nil || !strings.Contains(out, "restored") {
		t.Fatalf("restore: %q %v", out, err)
	}
	// A wrong pin refuses the box before any token is sent.
	cmd := newRoot()
	cmd.SetArgs([]string{"backup", "--box", ts.URL, "--fingerprint", strings.Repeat("00", 32), "--token-file", tokFile, "list"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("wrong fingerprint: %v", err)
	}
}
