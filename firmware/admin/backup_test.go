package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/store"
)

func TestBackupAPI(t *testing.T) {
	e, c := claimed(t)
	if err := e.exts.Set("101", "ext-secret-101x"); err != nil {
		t.Fatal(err)
	}
	// No key yet: a backup to the box's key is a conflict, not a 500.
	c.must(409, "POST", "/api/v1/backups", BackupCreateRequest{})
	// Key generation, settings and passphrase backups need the password.
	c.must(422, "POST", "/api/v1/backups/key", auth.Proof{Password: "wrong password"})
	c.must(422, "POST", "/api/v1/backups", BackupCreateRequest{Passphrase: "correct horse battery"})
	c.must(422, "PUT", "/api/v1/backups/settings", BackupSettingsRequest{Daily: 7})
	// Three failed proofs end the session (a thief's session dies).
	c.must(401, "GET", "/api/v1/backups", nil)
	e.clock.Advance(time.Hour)
	c.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	k := c.must(200, "POST", "/api/v1/backups/key", auth.Proof{Password: adminPW})
	id := k.str("identity")
	if !strings.HasPrefix(id, "AGE-SECRET-KEY-1") || !strings.HasPrefix(k.str("recipient"), "age1") {
		t.Fatalf("key answer %s", k.body)
	}
	st := c.must(200, "GET", "/api/v1/backups/settings", nil)
	if strings.Contains(string(st.body), id) {
		t.Fatal("settings hold the secret identity")
	}
	c.must(200, "PUT", "/api/v1/backups/settings", BackupSettingsRequest{Daily: 7, Weekly: 4, Monthly: 12, Proof: auth.Proof{Password: adminPW}})
	c.must(422, "PUT", "/api/v1/backups/settings", BackupSettingsRequest{Daily: 99, Proof: auth.Proof{Password: adminPW}})
	// This test box has no recording store: media is refused with the reason.
	if r := c.must(422, "PUT", "/api/v1/backups/settings", BackupSettingsRequest{Daily: 7, Media: true, Proof: auth.Proof{Password: adminPW}}); !strings.Contains(r.str("detail"), "no media store") {
		t.Fatalf("media setting without recordings: %s", r.body)
	}
	if r := c.must(422, "POST", "/api/v1/backups", BackupCreateRequest{Media: true}); !strings.Contains(r.str("detail"), "no media store") {
		t.Fatalf("backup with media without recordings: %s", r.body)
	}

	made := c.must(201, "POST", "/api/v1/backups", BackupCreateRequest{})
	name := made.str("name")
	l := c.must(200, "GET", "/api/v1/backups", nil)
	if !strings.Contains(string(l.body), name) {
		t.Fatalf("list %s", l.body)
	}
	pg := c.must(200, "GET", "/system", nil)
	if !strings.Contains(string(pg.body), name) || !strings.Contains(string(pg.body), "Generate a new backup key") ||
		strings.Contains(string(pg.body), id) || strings.Contains(string(pg.body), "<script>") {
		t.Fatalf("system page backup section: %s", pg.body)
	}
	dl := c.must(200, "GET", "/api/v1/backups/"+name, nil)
	if dl.hdr.Get("Content-Type") != "application/octet-stream" || !strings.HasPrefix(string(dl.body), "age-encryption.org/v1") {
		t.Fatalf("download: %v %.40q", dl.hdr, dl.body)
	}
	c.must(404, "GET", "/api/v1/backups/..%2fedgepbx.db", nil)

	// The extension changes after the backup; a restore brings it back.
	if err := e.exts.Delete("101"); err != nil {
		t.Fatal(err)
	}
	up := c.must(201, "POST", "/api/v1/backups/upload", string(dl.body))
	r := c.must(422, "POST", "/api/v1/backups/restore", BackupRestoreRequest{Upload: up.str("upload"), Identity: id,
		Proof: auth.Proof{Password: "wrong password"}})
	if r.str("title") != "re-authentication failed" {
		t.Fatalf("restore without re-authentication: %s", r.body)
	}
	r = c.must(422, "POST", "/api/v1/backups/restore", BackupRestoreRequest{Name: name, Passphrase: "not the passphrase",
		Proof: auth.Proof{Password: adminPW}})
	if r.str("title") != "backup refused" || !strings.Contains(r.str("detail"), "wrong key or passphrase") {
		t.Fatalf("wrong passphrase: %s", r.body)
	}
	c.must(200, "POST", "/api/v1/backups/restore", BackupRestoreRequest{Upload: up.str("upload"), Identity: id,
		Proof: auth.Proof{Password: adminPW}})
	if !e.auditHas("backup.restore", "ok") || !e.auditHas("backup.key.generate", "ok") {
		t.Fatal("backup actions not audited")
	}
	var found bool
	if err := e.db.View(func(tx *store.Tx) error {
		var v map[string]any
		var err error
		found, err = tx.Get("sip.extensions", "101", &v)
		return err
	}); err != nil || !found {
		t.Fatalf("extension not restored: %v", err)
	}
	c.must(200, "DELETE", "/api/v1/backups/"+name, nil)
	c.must(404, "DELETE", "/api/v1/backups/"+name, nil)
}
