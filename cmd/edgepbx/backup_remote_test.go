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
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/backup"
	"github.com/edgepbx/edgepbx/firmware/backup/sftptest"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// TestBackupCLIRemote drives the CLI's remote-target commands against a real
// admin server and SFTP server: show the targets, push, list the target,
// restore a backup fetched from the target (the local copy deleted first).
// The HTTPS server has short timeouts, like edgepbxd's: a backup upload
// that takes longer than them still completes.
func TestBackupCLIRemote(t *testing.T) {
	peer := sftptest.Start(t)
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
	bk, err := backup.New(backup.Config{DB: db, Audit: al, Box: backup.Identity{Serial: "CLIR1", InstallID: "i1", Firmware: "test"},
		Dir: filepath.Join(dir, "backups"), BoxLocal: backup.DefaultBoxLocal("certs", nil), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := bk.GenerateKey(backup.Actor{Name: "root1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := bk.SetTarget(backup.TargetSFTP, backup.TargetConfig{Enabled: true, Host: "127.0.0.1", Port: peer.Port,
		User: peer.User, Path: peer.Dir, HostKey: peer.HostKey}, backup.TargetSecrets{Password: peer.Password}, backup.Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	srv, err := admin.NewServer(admin.Deps{Store: db, Audit: al, Auth: as, Logger: quiet, Backups: bk})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	const timeout = 2 * time.Second
	ts.Config.ReadTimeout, ts.Config.WriteTimeout = timeout, timeout
	ts.StartTLS()
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

	if out, err := run("targets"); err != nil || !strings.HasPrefix(out, "sftp\tenabled\tpbx@127.0.0.1:") || !strings.Contains(out, "never uploaded") {
		t.Fatalf("targets: %q %v", out, err)
	}
	name, err := run("create")
	if err != nil {
		t.Fatal(err)
	}
	name = strings.TrimSpace(name)
	out, err := run("push")
	if err != nil || !strings.Contains(out, " ok: ") || !strings.Contains(out, "uploaded to sftp://pbx@127.0.0.1:") {
		t.Fatalf("push: %q %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(peer.Dir, name)); err != nil {
		t.Fatalf("not on the SFTP server: %v", err)
	}
	if out, err := run("remote-list", "sftp"); err != nil || !strings.HasPrefix(out, name+"\tmanual\t") {
		t.Fatalf("remote-list: %q %v", out, err)
	}
	if out, err := run("remote-list", "ftp"); err == nil {
		t.Fatalf("remote-list of an unknown kind: %q", out)
	}

	// An upload slower than the server's timeouts: the file comes through
	// a pipe that stalls past them halfway.
	file := filepath.Join(dir, "dl.age")
	if _, err := run("download", name, "-o", file); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "slow.age")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		f.Write(raw[:len(raw)/2])
		time.Sleep(timeout + 500*time.Millisecond) // past both timeouts, whatever the machine's speed
		f.Write(raw[len(raw)/2:])
	}()
	if out, err := run("restore", fifo, "--key-file", keyFile, "--password-file", pwFile); err != nil || !strings.Contains(out, "restored") {
		t.Fatalf("slow upload restore: %q %v", out, err)
	}

	// Restore from the target, the box's own copy gone.
	if err := bk.Delete(name, backup.Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	if out, err := run("restore", name, "--from-target", "sftp", "--key-file", keyFile); err == nil || !strings.Contains(err.Error(), "re-authentication") {
		t.Fatalf("restore from the target without the password: %q %v", out, err)
	}
	if out, err := run("restore", name, "--from-target", "sftp", "--key-file", keyFile, "--password-file", pwFile); err != nil || !strings.Contains(out, "restored") {
		t.Fatalf("restore from the target: %q %v", out, err)
	}
	if out, err := run("restore", "../../etc/passwd", "--from-target", "sftp", "--key-file", keyFile, "--password-file", pwFile); err == nil ||
		!strings.Contains(err.Error(), "404") {
		t.Fatalf("restore of a traversal name: %q %v", out, err)
	}
}
