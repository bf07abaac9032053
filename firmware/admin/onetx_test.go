package admin

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/certs"
)

// TestChangeAndAuditCommitTogether: each configuration change below writes
// its own bucket and the audit chain. Both must be one bbolt transaction,
// or a power cut between two commits leaves a change that nobody is
// recorded to have made (or an audit entry for a change that never
// happened). The store's transaction counter must grow by exactly one for
// the request, and that one commit holds the change and its entry.
func TestChangeAndAuditCommitTogether(t *testing.T) {
	e, admin := claimed(t)
	if err := e.exts.Set("1002", "Ext-Password-1002-x"); err != nil {
		t.Fatal(err)
	}
	sip := e.sipset.Current()
	sip.Guard.MaxFailsPerSource = 2
	now := e.clock.Now()
	chain, key := testPEM(t, []string{"box.example"}, now.Add(-time.Hour), now.AddDate(0, 3, 0))
	self := e.certs.Current()
	var confirm ConfirmRequest // the upload's pending id, for the confirm case
	cases := []struct {
		name, method, path, action string
		body                       any
		code                       int
		applied                    func() bool
		answered                   func(resp) // reads the answer for a later case
	}{
		{"telephony", "PUT", "/api/v1/telephony", "telephony.set", telephonyWithTrunk(0), 200,
			func() bool { return e.tel.Current().Version == 1 }, nil},
		{"cdr retention", "PUT", "/api/v1/cdr/retention", "cdr.retention", map[string]any{"days": 400}, 200,
			func() bool {
				r, err := cdr.New(e.db).Retention()
				return err == nil && r.Days == 400
			}, nil},
		{"sip settings", "PUT", "/api/v1/sip/settings", "sip.settings.set", sip, 200,
			func() bool { return e.sipset.Current().Guard.MaxFailsPerSource == 2 }, nil},
		{"acme settings", "PUT", "/api/v1/certificates/acme", "certs.acme.set",
			ACMERequest{Enabled: true, Names: []string{"pbx.example.com"}, Email: "ops@example.com", DirectoryURL: "https://ca.example/dir"}, 200,
			func() bool { r, err := e.srv.acmeView(); return err == nil && r.Settings.Enabled }, nil},
		{"extension create", "POST", "/api/v1/extensions", "telephony.extension.create", ExtensionRequest{User: "1003"}, 201,
			func() bool { return slices.Contains(e.exts.List(), "1003") }, nil},
		{"extension password", "POST", "/api/v1/extensions/1003/password", "telephony.extension.password", nil, 200,
			func() bool { return slices.Contains(e.exts.List(), "1003") }, nil},
		{"extension delete", "DELETE", "/api/v1/extensions/1003", "telephony.extension.delete", nil, 200,
			func() bool { return !slices.Contains(e.exts.List(), "1003") }, nil},
		{"certificate upload", "POST", "/api/v1/certificates", "certs.upload", CertificateRequest{ChainPEM: chain, KeyPEM: key}, 202,
			func() bool { return e.certs.Current().Source == certs.SourceUpload },
			func(r resp) { confirm.ID = r.str("id") }},
		{"certificate confirm", "POST", "/api/v1/certificates/confirm", "certs.confirm", &confirm, 200,
			func() bool {
				_, pending := e.certs.Pending()
				return !pending && e.certs.Current().Source == certs.SourceUpload
			}, nil},
		{"certificate rollback", "POST", "/api/v1/certificates/rollback", "certs.rollback", "{}", 200,
			func() bool { return e.certs.Current().Fingerprint == self.Fingerprint }, nil},
		{"certificate upload again", "POST", "/api/v1/certificates", "certs.upload", CertificateRequest{ChainPEM: chain, KeyPEM: key}, 202,
			func() bool { _, pending := e.certs.Pending(); return pending }, nil},
		{"certificate revert", "POST", "/api/v1/certificates/revert", "certs.revert", nil, 200,
			func() bool {
				_, pending := e.certs.Pending()
				return !pending
			}, nil},
		// These keep their change in memory until confirmed (TLS versions) or
		// for good (key log): the audit entry is their only commit. Guarded
		// here so that a later store write does not add a second one.
		{"tls versions", "PUT", "/api/v1/certificates/tls", "tls.versions.update", TLSSettings{MinVersion: "1.2", MaxVersion: "1.2"}, 202,
			func() bool { return e.srv.tlsc.cur != nil && e.srv.tlsc.cur.Kind == changeTLSVersions },
			func(r resp) { confirm.ID = r.str("id") }},
		{"tls versions confirm", "POST", "/api/v1/certificates/confirm", "tls.versions.confirm", &confirm, 200,
			func() bool { v, err := e.srv.tlsSettings(); return err == nil && v.MaxVersion == "1.2" }, nil},
		{"keylog on", "POST", "/api/v1/certificates/keylog", "tls.keylog.enable", KeyLogRequest{Minutes: 5}, 200,
			func() bool { on, _, _ := e.keylog.Status(); return on }, nil},
		{"keylog off", "DELETE", "/api/v1/certificates/keylog", "tls.keylog.disable", nil, 200,
			func() bool { on, _, _ := e.keylog.Status(); return !on }, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, err := e.db.Commits()
			if err != nil {
				t.Fatal(err)
			}
			admin.conn = e.srv.ConnContext(context.Background(), nil) // a confirmation must come on a new connection
			r := admin.must(c.code, c.method, c.path, c.body)
			if c.answered != nil {
				c.answered(r)
			}
			after, err := e.db.Commits()
			if err != nil {
				t.Fatal(err)
			}
			if after-before != 1 {
				t.Errorf("%s committed in %d transactions, want 1 (change and audit entry together)", c.path, after-before)
			}
			if !c.applied() {
				t.Errorf("%s: change not stored", c.path)
			}
			want := audit.OK
			if c.action == "certs.revert" || c.action == "tls.keylog.enable" {
				want = audit.Warning // always a warning
			}
			if a := e.lastAudit(c.action); a.Outcome != want || a.Actor != "root1" {
				t.Errorf("%s: audit entry %+v", c.path, a)
			}
		})
	}
}
