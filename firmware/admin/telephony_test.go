package admin

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/config"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
)

func telephonyWithTrunk(version int64) TelephonyRequest {
	c := config.DefaultTelephony()
	c.Version = version
	c.Trunks = []config.TelephonyTrunk{{Name: "itsp", Host: "sip.example.net:5060", Transport: "udp", Auth: config.TrunkAuthRegister,
		Username: "u1", Domain: "sip.example.net", Password: "trunk-Secret-77"}}
	c.Routes = []dialplan.Route{{Prefix: "", Trunk: "itsp"}}
	c.Extensions = []dialplan.Extension{{Number: "1001", Classes: []dialplan.Class{dialplan.Internal}}}
	c.DIDs = []dialplan.DID{{Number: "4930555", Extension: "1002"}}
	return c
}

func TestTelephonyAPI(t *testing.T) {
	e, admin := claimed(t)
	for _, u := range []struct {
		name string
		role auth.Role
	}{{"op1", auth.RoleOperator}, {"aud1", auth.RoleAuditor}} {
		admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Username: u.name, Role: u.role, Password: userPW})
	}
	op, aud := e.client("192.0.2.51"), e.client("192.0.2.52")
	op.must(200, "POST", "/api/v1/login", LoginRequest{Username: "op1", Password: userPW})
	aud.must(200, "POST", "/api/v1/login", LoginRequest{Username: "aud1", Password: userPW})

	var cur config.Telephony
	if err := json.Unmarshal(aud.must(200, "GET", "/api/v1/telephony", nil).body, &cur); err != nil || cur.Version != 0 || cur.Country != "DE" {
		t.Fatalf("initial %+v %v", cur, err)
	}
	// The DID names extension 1002, which must exist as a SIP extension.
	if r := op.must(422, "PUT", "/api/v1/telephony", telephonyWithTrunk(0)); !strings.Contains(r.str("detail"), "unknown extension") {
		t.Fatalf("unknown DID target: %s", r.body)
	}
	if err := e.exts.Set("1002", "Ext-Password-1002-x"); err != nil {
		t.Fatal(err)
	}
	// Auditors read only.
	aud.must(403, "PUT", "/api/v1/telephony", telephonyWithTrunk(0))
	r := op.must(200, "PUT", "/api/v1/telephony", telephonyWithTrunk(0))
	if strings.Contains(string(r.body), "trunk-Secret-77") {
		t.Fatal("trunk password in the answer")
	}
	if err := json.Unmarshal(r.body, &cur); err != nil || cur.Version != 1 || !cur.Trunks[0].PasswordSet {
		t.Fatalf("saved %s", r.body)
	}
	if pw, err := e.tel.TrunkPassword("itsp"); err != nil || string(pw) != "trunk-Secret-77" {
		t.Fatalf("sealed password %q %v", pw, err)
	}
	a := e.lastAudit("telephony.set")
	if a.Actor != "op1" || a.Outcome != audit.OK || a.Target != "version 1" || !strings.Contains(string(a.Before), `"version":0`) ||
		!strings.Contains(string(a.After), `"itsp"`) || strings.Contains(string(a.Before)+string(a.After), "trunk-Secret-77") {
		t.Fatalf("audit %+v before=%s after=%s", a, a.Before, a.After)
	}
	if !strings.Contains(a.Source, "192.0.2.51") {
		t.Fatalf("audit source %q", a.Source)
	}

	// A stale version is a conflict, an emergency number made blockable a
	// refusal; both audited as failed and neither changes anything.
	op.must(409, "PUT", "/api/v1/telephony", telephonyWithTrunk(0))
	bad := cur
	bad.PremiumPrefixes = []string{"11"}
	if r := op.must(422, "PUT", "/api/v1/telephony", bad); !strings.Contains(r.str("detail"), "emergency number 112") {
		t.Fatalf("blockable emergency number: %s", r.body)
	}
	if a := e.lastAudit("telephony.set"); a.Outcome != audit.Failed {
		t.Fatalf("refusal audit %+v", a)
	}
	admin.must(400, "PUT", "/api/v1/telephony", `{"version":1,"country":"DE","bogus":1}`)
	if e.tel.Current().Version != 1 {
		t.Fatal("a refused change applied")
	}
	// An edit without the password keeps it.
	cur.Extensions[0].Classes = append(cur.Extensions[0].Classes, dialplan.National)
	cur.Trunks[0].Peers = []netip.Prefix{}
	admin.must(200, "PUT", "/api/v1/telephony", cur)
	if pw, _ := e.tel.TrunkPassword("itsp"); string(pw) != "trunk-Secret-77" {
		t.Fatalf("password lost: %q", pw)
	}

	// The page: everyone with telephony.read sees it, only writers get the editor.
	if p := aud.must(200, "GET", "/telephony", nil); !contains(p.body, "itsp") || contains(p.body, `id="tel-edit"`) || !contains(p.body, "112") {
		t.Fatalf("auditor page: %s", p.body)
	}
	if p := op.must(200, "GET", "/telephony", nil); !contains(p.body, `id="tel-edit"`) || contains(p.body, "trunk-Secret-77") {
		t.Fatal("operator page lacks the editor or shows the password")
	}
}
