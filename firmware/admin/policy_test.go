package admin

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/netfw"
)

// The admin client of the env comes from 192.0.2.50, outside the default
// "lan" zone (private ranges).
func policyFor(adminNet string) PolicyRequest {
	return PolicyRequest{
		Zones: []netfw.Zone{
			{Name: "lan", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
			{Name: "admins", Prefixes: []netip.Prefix{netip.MustParsePrefix(adminNet)}},
		},
		Rules: []netfw.Rule{
			{Service: netfw.SvcHTTPS, Zones: []string{"admins"}},
			{Service: netfw.SvcSIPUDP, Zones: []string{"lan"}},
		},
	}
}

func (e *env) lastAudit(action string) audit.Entry {
	e.t.Helper()
	l, err := e.srv.audit.Query(audit.Filter{Action: action, Limit: 1})
	if err != nil || len(l) == 0 {
		e.t.Fatalf("no audit entry %s: %v", action, err)
	}
	return l[0]
}

func TestFirewallPolicyChangeAndConfirm(t *testing.T) {
	e, admin := claimed(t)
	v := admin.must(200, "GET", "/api/v1/firewall/policy", nil)
	var st PolicyView
	if err := json.Unmarshal(v.body, &st); err != nil || st.Pending != nil || len(st.Confirmed.Zones) != 1 || len(st.Services) == 0 {
		t.Fatalf("initial policy %s (%v)", v.body, err)
	}

	// From 192.0.2.50 this change would lock the admin out: refused with
	// PID 1's reason, audited, nothing applied.
	applies := e.pid1.ruleset.applies
	r := admin.must(422, "PUT", "/api/v1/firewall/policy", policyFor("192.168.7.0/24"))
	if !strings.Contains(r.str("detail"), "lock the admin out") {
		t.Fatalf("refusal detail %q", r.str("detail"))
	}
	if a := e.lastAudit("firewall.policy.set"); a.Outcome != audit.Failed || !strings.Contains(a.Detail, "lock the admin out") {
		t.Fatalf("refusal audit %+v", a)
	}
	if e.pid1.ruleset.applies != applies {
		t.Fatal("refused policy applied")
	}
	// Admin open to everyone needs the override.
	anyAdmin := policyFor("192.0.2.0/24")
	anyAdmin.Rules[0].Zones = []string{netfw.ZoneAny}
	if r := admin.must(422, "PUT", "/api/v1/firewall/policy", anyAdmin); !strings.Contains(r.str("detail"), "without override") {
		t.Fatalf("admin to any: %s", r.body)
	}
	admin.must(400, "PUT", "/api/v1/firewall/policy", `{"zones":[{"name":"x","prefixes":["10.0.0.1/33"]}]}`)
	admin.must(400, "PUT", "/api/v1/firewall/policy", `{"zones":[],"services":[{"name":"telnet"}]}`)

	// A connection that was open before the change.
	oldConn := e.srv.ConnContext(context.Background(), nil)
	r = admin.must(202, "PUT", "/api/v1/firewall/policy", policyFor("192.0.2.0/24"))
	if r.hdr.Get("Connection") != "close" {
		t.Fatal("the change's answer must close its connection")
	}
	id := r.str("id")
	if !netfw.ValidPendingID(id) || r.js["revert_in_seconds"].(float64) <= 0 {
		t.Fatalf("pending answer %s", r.body)
	}
	if z := e.pid1.ruleset.zones(); !slices.Equal(z, []string{"lan", "admins"}) {
		t.Fatalf("pending policy not applied: %v", z)
	}
	set := e.lastAudit("firewall.policy.set")
	if set.Outcome != audit.OK || set.Target != id || !strings.Contains(string(set.After), "192.0.2.0/24") || !strings.Contains(string(set.Before), "172.16.0.0/12") {
		t.Fatalf("change audit %+v", set)
	}
	v = admin.must(200, "GET", "/api/v1/firewall/policy", nil)
	st = PolicyView{}
	json.Unmarshal(v.body, &st)
	if st.Pending == nil || st.Pending.ID != id || st.RevertIn <= 0 || st.RevertIn > 120 {
		t.Fatalf("pending view %s", v.body)
	}

	// Confirmations that prove nothing are refused: no connection number,
	// or a connection older than the change.
	admin.must(409, "POST", "/api/v1/firewall/policy/confirm", ConfirmRequest{ID: id})
	admin.conn = oldConn
	if r := admin.must(409, "POST", "/api/v1/firewall/policy/confirm", ConfirmRequest{ID: id}); !strings.Contains(r.str("detail"), "new connection") {
		t.Fatalf("stale connection: %s", r.body)
	}
	admin.conn = e.srv.ConnContext(context.Background(), nil)
	admin.must(400, "POST", "/api/v1/firewall/policy/confirm", ConfirmRequest{ID: "nope"})
	admin.must(409, "POST", "/api/v1/firewall/policy/confirm", ConfirmRequest{ID: strings.Repeat("ab", 16)})
	admin.must(200, "POST", "/api/v1/firewall/policy/confirm", ConfirmRequest{ID: id})
	conf := e.lastAudit("firewall.policy.confirm")
	if conf.Outcome != audit.OK || conf.Target != id || !strings.Contains(string(conf.After), "192.0.2.0/24") {
		t.Fatalf("confirm audit %+v", conf)
	}
	v = admin.must(200, "GET", "/api/v1/firewall/policy", nil)
	st = PolicyView{}
	json.Unmarshal(v.body, &st)
	if st.Pending != nil || len(st.Confirmed.Zones) != 2 {
		t.Fatalf("after confirm %s", v.body)
	}
	// Confirming again finds nothing pending.
	admin.must(409, "POST", "/api/v1/firewall/policy/confirm", ConfirmRequest{ID: id})

	// The page shows zones and rules.
	page := admin.must(200, "GET", "/firewall", nil)
	for _, want := range []string{"Zones and rules", "admins 192.0.2.0/24", netfw.SvcHTTPS} {
		if !strings.Contains(string(page.body), want) {
			t.Errorf("firewall page lacks %q", want)
		}
	}
}

func TestFirewallPolicyRoles(t *testing.T) {
	e, admin := claimed(t)
	for _, u := range []struct {
		name string
		role auth.Role
	}{{"op1", auth.RoleOperator}, {"aud1", auth.RoleAuditor}} {
		admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: u.name, Role: u.role, Password: userPW})
	}
	op, aud := e.client("192.0.2.51"), e.client("192.0.2.52")
	op.must(200, "POST", "/api/v1/login", LoginRequest{Username: "op1", Password: userPW})
	aud.must(200, "POST", "/api/v1/login", LoginRequest{Username: "aud1", Password: userPW})
	op.must(403, "GET", "/api/v1/firewall/policy", nil)
	aud.must(200, "GET", "/api/v1/firewall/policy", nil)
	aud.must(403, "PUT", "/api/v1/firewall/policy", policyFor("192.0.2.0/24"))
	aud.must(403, "POST", "/api/v1/firewall/policy/confirm", ConfirmRequest{ID: strings.Repeat("ab", 16)})
	page := aud.must(200, "GET", "/firewall", nil)
	if strings.Contains(string(page.body), `data-policy`) {
		t.Error("auditor sees the policy editor")
	}
	// Cross-origin and CSRF-less changes are refused before reaching PID 1.
	applies := e.pid1.ruleset.applies
	admin.origin = "https://evil.example"
	admin.must(403, "PUT", "/api/v1/firewall/policy", policyFor("192.0.2.0/24"))
	admin.origin = ""
	csrf := admin.csrf
	admin.csrf = ""
	admin.must(403, "PUT", "/api/v1/firewall/policy", policyFor("192.0.2.0/24"))
	admin.csrf = csrf
	if e.pid1.ruleset.applies != applies {
		t.Fatal("refused request reached PID 1")
	}
}
