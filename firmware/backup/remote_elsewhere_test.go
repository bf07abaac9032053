package backup

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
)

// TestRestoreElsewhereFromTarget: a replacement box (its own device key,
// serial and data) reaches the old box's SFTP target, finds the old box's
// backup there and restores it. The data comes back under the new box's
// key, the restore is recorded (in the audit chain and in what the licence
// check-in reports), and the new box does not take the old one's identity:
// its own target settings and backup key stay, its next backups carry its
// own serial, and its remote retention never touches the old box's files.
func TestRestoreElsewhereFromTarget(t *testing.T) {
	srv := startSFTP(t)
	ctx := context.Background()
	cfg := TargetConfig{Enabled: true, Host: srv.host, Port: srv.port, User: srv.user, Path: "/upload", HostKey: srv.hostKey}
	sec := TargetSecrets{Password: srv.password}

	a := newBox(t, "OLDBOX1")
	secret := a.fill(t, 20)
	idA := scheduled(t, a.backup)
	if err := a.backup.SetTarget(TargetSFTP, cfg, sec, admin); err != nil {
		t.Fatal(err)
	}
	if err := days(t, a, 1); err != nil {
		t.Fatal(err)
	}
	fromA := backupNames(srv.files(t))
	if len(fromA) != 1 || !strings.Contains(fromA[0], "-OLDBOX1-daily-") {
		t.Fatalf("old box uploaded %v", fromA)
	}

	b := newBox(t, "NEWBOX2")
	b.fill(t, 3)
	idB := scheduled(t, b.backup)
	if bytes.Equal(a.key, b.key) {
		t.Fatal("the boxes share a device key")
	}
	if err := b.backup.SetTarget(TargetSFTP, cfg, sec, admin); err != nil {
		t.Fatal(err)
	}
	settingsB, err := b.backup.Settings()
	if err != nil {
		t.Fatal(err)
	}
	list, err := b.backup.RemoteList(ctx, TargetSFTP)
	if err != nil || len(list) != 1 || list[0].Name != fromA[0] {
		t.Fatalf("new box lists %+v %v", list, err)
	}
	id, err := b.backup.RemoteFetch(ctx, TargetSFTP, list[0].Name, admin)
	if err != nil {
		t.Fatal(err)
	}
	// The new box's own backup key does not open the old box's backup.
	if _, err := b.backup.RestoreUpload(id, Decryption{Identity: idB}, admin); err == nil {
		t.Fatal("restored with the wrong key")
	}
	id, err = b.backup.RemoteFetch(ctx, TargetSFTP, list[0].Name, admin)
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.backup.RestoreUpload(id, Decryption{Identity: idA}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if m.Serial != "OLDBOX1" {
		t.Fatalf("manifest serial %q", m.Serial)
	}

	// Recorded: what edgepbxd hands the licence check-in (restored_from)
	// and the restore entry at the head of a chain that verifies.
	r, ok, err := b.backup.LastRestore()
	if err != nil || !ok || !r.OtherBox || r.FromSerial != "OLDBOX1" {
		t.Fatalf("last restore %+v %v %v", r, ok, err)
	}
	if _, err := b.audit.VerifyFull(); err != nil {
		t.Fatal(err)
	}
	head, err := b.audit.Head()
	if err != nil {
		t.Fatal(err)
	}
	es, err := b.audit.After(head.Seq-1, 10)
	if err != nil || len(es) != 1 || es[0].Action != "backup.restore" || es[0].Outcome != audit.OK ||
		!strings.Contains(es[0].Detail, "restored backup of box OLDBOX1") {
		t.Fatalf("chain head after the restore: %+v %v", es, err)
	}

	// The data works under the new box's device key.
	checkLogins(t, b, secret)
	checkDigest(t, b.db)
	checkSecrets(t, b)
	checkCDRs(t, a, b)

	// Not a clone: the new box keeps its target and backup key, and its
	// next backup goes up under its own serial beside the old box's file.
	if v, err := b.backup.Targets(); err != nil || len(v) != 1 || !v[0].PasswordSet || v[0].HostKey != srv.hostKey {
		t.Fatalf("targets after the restore: %+v %v", v, err)
	}
	if s, err := b.backup.Settings(); err != nil || s != settingsB {
		t.Fatalf("backup settings after the restore: %+v (was %+v) %v", s, settingsB, err)
	}
	// The old box (still running, say) uploads into the same directory
	// while the new one lists and pushes: its temporary file stays; the
	// new box's own leftover of an interrupted upload goes.
	theirs := tmpPrefix + "edgepbx-OLDBOX1-daily-20260310T120000Z.age.0123456789abcdef"
	stale := tmpPrefix + "edgepbx-NEWBOX2-daily-20260301T120000Z.age.fedcba9876543210"
	for _, n := range []string{theirs, stale} {
		if err := os.WriteFile(filepath.Join(srv.dir, n), []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := b.backup.TestTarget(ctx, TargetSFTP); err != nil || !res.OK {
		t.Fatalf("test target: %+v %v", res, err)
	}
	if err := days(t, b, 3); err != nil {
		t.Fatal(err)
	}
	if files := srv.files(t); !slices.Contains(files, theirs) || slices.Contains(files, stale) {
		t.Fatalf("temporary files after the new box's pushes: %v", files)
	}
	got := backupNames(srv.files(t))
	if !slices.Contains(got, fromA[0]) {
		t.Fatalf("the new box's retention removed the old box's backup: %v", got)
	}
	own := 0
	for _, n := range got {
		switch {
		case strings.Contains(n, "-NEWBOX2-daily-"):
			own++
		case n != fromA[0]:
			t.Fatalf("unexpected file %s on the target", n)
		}
	}
	if own != 2 {
		t.Fatalf("%d of the new box's dailies on the target, want 2: %v", own, got)
	}
}

// TestRemoteRetentionEveryKind: over 15 days of schedule checks across a
// month's end (three ISO weeks, two months), the target keeps exactly what
// the box keeps: the newest 2 daily, 2 weekly and 1 monthly backups.
func TestRemoteRetentionEveryKind(t *testing.T) {
	srv := startSFTP(t)
	b := newBox(t, "RET1")
	b.clk.t = time.Date(2026, 3, 20, 12, 0, 0, 0, time.UTC)
	_, rcpt, err := b.backup.GenerateKey(admin)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.backup.SetSettings(Settings{Recipient: rcpt, Daily: 2, Weekly: 2, Monthly: 1}, admin); err != nil {
		t.Fatal(err)
	}
	cfg := TargetConfig{Enabled: true, Host: srv.host, Port: srv.port, User: srv.user, Path: "/upload", HostKey: srv.hostKey}
	if err := b.backup.SetTarget(TargetSFTP, cfg, TargetSecrets{Password: srv.password}, admin); err != nil {
		t.Fatal(err)
	}
	if err := days(t, b, 15); err != nil {
		t.Fatal(err)
	}
	local, remote := localNames(t, b.backup), backupNames(srv.files(t))
	count := map[string]int{}
	for _, n := range local {
		count[fileRE.FindStringSubmatch(n)[2]]++
	}
	if !slices.Equal(local, remote) || count[Daily] != 2 || count[Weekly] != 2 || count[Monthly] != 1 {
		t.Fatalf("box keeps %v (%v), target %v", local, count, remote)
	}
}
