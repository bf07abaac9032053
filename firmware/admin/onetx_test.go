package admin

import (
	"slices"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/cdr"
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
	cases := []struct {
		name, method, path, action string
		body                       any
		code                       int
		applied                    func() bool
	}{
		{"telephony", "PUT", "/api/v1/telephony", "telephony.set", telephonyWithTrunk(0), 200,
			func() bool { return e.tel.Current().Version == 1 }},
		{"cdr retention", "PUT", "/api/v1/cdr/retention", "cdr.retention", map[string]any{"days": 400}, 200,
			func() bool {
				r, err := cdr.New(e.db).Retention()
				return err == nil && r.Days == 400
			}},
		{"sip settings", "PUT", "/api/v1/sip/settings", "sip.settings.set", sip, 200,
			func() bool { return e.sipset.Current().Guard.MaxFailsPerSource == 2 }},
		{"acme settings", "PUT", "/api/v1/certificates/acme", "certs.acme.set",
			ACMERequest{Enabled: true, Names: []string{"pbx.example.com"}, Email: "ops@example.com", DirectoryURL: "https://ca.example/dir"}, 200,
			func() bool { r, err := e.srv.acmeView(); return err == nil && r.Settings.Enabled }},
		{"extension create", "POST", "/api/v1/extensions", "telephony.extension.create", ExtensionRequest{User: "1003"}, 201,
			func() bool { return slices.Contains(e.exts.List(), "1003") }},
		{"extension password", "POST", "/api/v1/extensions/1003/password", "telephony.extension.password", nil, 200,
			func() bool { return slices.Contains(e.exts.List(), "1003") }},
		{"extension delete", "DELETE", "/api/v1/extensions/1003", "telephony.extension.delete", nil, 200,
			func() bool { return !slices.Contains(e.exts.List(), "1003") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, err := e.db.Commits()
			if err != nil {
				t.Fatal(err)
			}
			admin.must(c.code, c.method, c.path, c.body)
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
			if a := e.lastAudit(c.action); a.Outcome != audit.OK || a.Actor != "root1" {
				t.Errorf("%s: audit entry %+v", c.path, a)
			}
		})
	}
}
