package admin

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/certs"
)

// kickLog stands in for edgepbxd's ACME loop (package main, which this
// package cannot import); the loop itself runs in cmd/edgepbxd's test
// against pebble.
type kickLog struct {
	mu     sync.Mutex
	kicks  []bool
	status certs.ACMEStatus
}

func (k *kickLog) Kick(force bool) { k.mu.Lock(); k.kicks = append(k.kicks, force); k.mu.Unlock() }
func (k *kickLog) Status() certs.ACMEStatus {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.status
}
func (k *kickLog) got() []bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]bool(nil), k.kicks...)
}

func TestACMEAPI(t *testing.T) {
	e, admin := claimed(t)
	loop := &kickLog{status: certs.ACMEStatus{State: certs.ACMEFailed, LastError: "pebble said no", Failures: 2}}
	admin.must(409, "POST", "/api/v1/certificates/acme/renew", nil) // no loop on this box
	e.srv.acme = loop

	for _, u := range []struct {
		name string
		role auth.Role
	}{{"op1", auth.RoleOperator}, {"aud1", auth.RoleAuditor}} {
		admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: u.name, Role: u.role, Password: userPW})
	}
	op, aud := e.client("192.0.2.51"), e.client("192.0.2.52")
	op.must(200, "POST", "/api/v1/login", LoginRequest{Username: "op1", Password: userPW})
	aud.must(200, "POST", "/api/v1/login", LoginRequest{Username: "aud1", Password: userPW})

	var v ACMEView
	if err := json.Unmarshal(aud.must(200, "GET", "/api/v1/certificates/acme", nil).body, &v); err != nil ||
		v.Settings.Enabled || v.Settings.DirectoryURL != certs.DefaultACMEDirectory || v.Settings.Challenge != certs.ChallengeTLSALPN01 ||
		!v.Running || v.Status.State != certs.ACMEFailed {
		t.Fatalf("initial %+v %v", v, err)
	}
	op.must(403, "GET", "/api/v1/certificates/acme", nil)

	want := ACMERequest{Enabled: true, Names: []string{"PBX.Example.com"}, Email: "ops@example.com", DirectoryURL: "https://ca.example/dir"}
	op.must(403, "PUT", "/api/v1/certificates/acme", want)
	aud.must(403, "PUT", "/api/v1/certificates/acme", want)
	aud.must(403, "POST", "/api/v1/certificates/acme/renew", nil)
	admin.must(409, "POST", "/api/v1/certificates/acme/renew", nil) // still off
	if len(loop.got()) != 0 {
		t.Fatalf("refused requests kicked the loop: %v", loop.got())
	}

	if err := json.Unmarshal(admin.must(200, "PUT", "/api/v1/certificates/acme", want).body, &v); err != nil ||
		!v.Settings.Enabled || v.Settings.Names[0] != "pbx.example.com" {
		t.Fatalf("saved %+v %v", v, err)
	}
	a := e.lastAudit("certs.acme.set")
	if a.Actor != "root1" || a.Outcome != audit.OK || a.Target != "pbx.example.com" || !strings.Contains(string(a.After), `"enabled":true`) ||
		!strings.Contains(string(a.Before), `"enabled":false`) {
		t.Fatalf("audit %+v before=%s after=%s", a, a.Before, a.After)
	}
	if k := loop.got(); len(k) != 1 || k[0] {
		t.Fatalf("kicks after saving: %v, want one unforced", k)
	}

	tests := []struct {
		name   string
		req    ACMERequest
		detail string
	}{
		{"no names", ACMERequest{Enabled: true}, "public DNS name"},
		{"wildcard", ACMERequest{Enabled: true, Names: []string{"*.example.com"}}, "not a public DNS name"},
		{"plain http CA", ACMERequest{Enabled: true, Names: []string{"a.example.com"}, DirectoryURL: "http://ca.example/dir"}, "https"},
		{"dns-01", ACMERequest{Enabled: true, Names: []string{"a.example.com"}, Challenge: "dns-01"}, "challenge"},
	}
	for _, tc := range tests {
		r := admin.must(400, "PUT", "/api/v1/certificates/acme", tc.req)
		if !strings.Contains(r.str("detail"), tc.detail) {
			t.Errorf("%s: %s", tc.name, r.body)
		}
		if a := e.lastAudit("certs.acme.set"); a.Outcome != audit.Failed || !strings.Contains(a.Detail, tc.detail) {
			t.Errorf("%s: audit %+v", tc.name, a)
		}
	}
	if got, _ := certs.LoadACMESettings(e.db); got.Names[0] != "pbx.example.com" || got.DirectoryURL != "https://ca.example/dir" {
		t.Fatalf("refused changes changed the settings: %+v", got)
	}

	admin.must(202, "POST", "/api/v1/certificates/acme/renew", nil)
	if k := loop.got(); len(k) != 2 || !k[1] {
		t.Fatalf("kicks after renew now: %v", k)
	}
	if a := e.lastAudit("certs.acme.renew"); a.Actor != "root1" || a.Target != "pbx.example.com" {
		t.Fatalf("renew audit %+v", a)
	}

	// The certificates page shows the settings and the failure; the form
	// is there for admins only.
	page := string(admin.must(200, "GET", "/certificates", nil).body)
	for _, s := range []string{"Automatic certificate (ACME)", "pbx.example.com", "pebble said no", "/api/v1/certificates/acme/renew"} {
		if !strings.Contains(page, s) {
			t.Errorf("certificates page lacks %q", s)
		}
	}
	page = string(aud.must(200, "GET", "/certificates", nil).body)
	if !strings.Contains(page, "pebble said no") || strings.Contains(page, "/api/v1/certificates/acme/renew") {
		t.Errorf("auditor's certificates page: status missing or renew offered")
	}
}
