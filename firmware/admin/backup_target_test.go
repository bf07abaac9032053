package admin

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/backup"
)

// TestBackupTargetAPI: target settings need re-authentication, refusals
// name the field, credentials are never answered, and "test target"
// answers in words. (Uploads to real SFTP and S3 servers are tested in
// firmware/backup.)
func TestBackupTargetAPI(t *testing.T) {
	e, c := claimed(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there now

	cfg := backup.TargetConfig{Enabled: true, Host: "127.0.0.1", Port: port, User: "pbx", Path: "/upload"}
	const pw = "target-password-needle"
	r := c.must(422, "PUT", "/api/v1/backups/targets/sftp", BackupTargetRequest{TargetConfig: cfg, Password: pw})
	if r.str("title") != "re-authentication failed" {
		t.Fatalf("no proof: %s", r.body)
	}
	if g := c.must(200, "GET", "/api/v1/backups/targets", nil); strings.Contains(string(g.body), "127.0.0.1") {
		t.Fatalf("refused target stored: %s", g.body)
	}
	proof := auth.Proof{Password: adminPW}
	bad := cfg
	bad.Host = "sftp://evil"
	r = c.must(422, "PUT", "/api/v1/backups/targets/sftp", BackupTargetRequest{TargetConfig: bad, Password: pw, Proof: proof})
	if r.str("title") != "backup refused" || !strings.Contains(r.str("detail"), "field host") {
		t.Fatalf("bad host: %s", r.body)
	}
	r = c.must(422, "PUT", "/api/v1/backups/targets/ftp", BackupTargetRequest{TargetConfig: cfg, Password: pw, Proof: proof})
	if !strings.Contains(r.str("detail"), "field kind") {
		t.Fatalf("bad kind: %s", r.body)
	}
	c.must(400, "PUT", "/api/v1/backups/targets/sftp", map[string]any{"host": "x", "insecure_ignore_host_key": true,
		"current_password": adminPW})

	r = c.must(200, "PUT", "/api/v1/backups/targets/sftp", BackupTargetRequest{TargetConfig: cfg, Password: pw, Proof: proof})
	g := c.must(200, "GET", "/api/v1/backups/targets", nil)
	for _, b := range [][]byte{r.body, g.body} {
		if strings.Contains(string(b), pw) || !strings.Contains(string(b), `"password_set": true`) {
			t.Fatalf("target answer: %s", b)
		}
	}
	res := c.must(200, "POST", "/api/v1/backups/targets/sftp/test", nil)
	if strings.Contains(string(res.body), `"ok": true`) ||
		!strings.Contains(res.str("message"), "cannot connect to sftp://pbx@127.0.0.1:"+strconv.Itoa(port)) {
		t.Fatalf("test answer: %s", res.body)
	}
	f := c.must(502, "GET", "/api/v1/backups/targets/sftp/files", nil)
	if f.str("title") != "backup target failed" || !strings.Contains(f.str("detail"), "cannot connect") {
		t.Fatalf("files: %s", f.body)
	}
	c.must(404, "GET", "/api/v1/backups/targets/s3/files", nil)
	// An upload now says why it failed, and the target's status keeps it.
	ps := c.must(502, "POST", "/api/v1/backups/targets/push", nil)
	if ps.str("title") != "backup target failed" || !strings.Contains(ps.str("detail"), "cannot connect") {
		t.Fatalf("push: %s", ps.body)
	}
	if g := c.must(200, "GET", "/api/v1/backups/targets", nil); !strings.Contains(string(g.body), "tried again at the next schedule") {
		t.Fatalf("status after a failed push: %s", g.body)
	}
	if ups, err := e.srv.audit.Query(audit.Filter{Action: "backup.upload"}); err != nil || len(ups) != 1 ||
		ups[0].Actor != "root1" || ups[0].Source != "192.0.2.50" || ups[0].Outcome != audit.Failed {
		t.Fatalf("audit of the push: %+v %v", ups, err)
	}
	c.must(404, "POST", "/api/v1/backups/targets/sftp/fetch", BackupFetchRequest{Name: "../../etc/passwd"})
	pg := c.must(200, "GET", "/system", nil)
	if !strings.Contains(string(pg.body), `id="sftp-host" name="host" value="127.0.0.1"`) || strings.Contains(string(pg.body), pw) ||
		!strings.Contains(string(pg.body), "(set; empty keeps it)") || !strings.Contains(string(pg.body), `id="targets-push"`) {
		t.Fatalf("system page targets: %s", pg.body)
	}
	c.must(200, "DELETE", "/api/v1/backups/targets/sftp", proof)
	c.must(404, "DELETE", "/api/v1/backups/targets/sftp", proof)
}
