package admin

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
)

func telephonyWithTrunk(version int64) TelephonyRequest {
	c := pbxconfig.DefaultTelephony()
	c.Version = version
	c.Trunks = []pbxconfig.TelephonyTrunk{{Name: "itsp", Host: "sip.example.net:5060", Transport: "udp", Auth: pbxconfig.TrunkAuthRegister,
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
		admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: u.name, Role: u.role, Password: userPW})
	}
	op, aud := e.client("192.0.2.51"), e.client("192.0.2.52")
	op.must(200, "POST", "/api/v1/login", LoginRequest{Username: "op1", Password: userPW})
	aud.must(200, "POST", "/api/v1/login", LoginRequest{Username: "aud1", Password: userPW})

	var cur pbxconfig.Telephony
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

// TestTelephonyFieldErrors: every refusal of a single bad value names that
// value's field as a JSON pointer, so the editor shows it next to it.
func TestTelephonyFieldErrors(t *testing.T) {
	e, admin := claimed(t)
	if err := e.exts.Set("1002", "Ext-Password-1002-x"); err != nil {
		t.Fatal(err)
	}
	base := func() TelephonyRequest {
		c := telephonyWithTrunk(0)
		c.Routes = append(c.Routes, dialplan.Route{Prefix: "00", Trunk: "itsp", Strip: 2})
		return c
	}
	trunk2 := func(c *TelephonyRequest) *pbxconfig.TelephonyTrunk {
		c.Trunks = append(c.Trunks, pbxconfig.TelephonyTrunk{Name: "second", Host: "10.0.0.9:5060", Transport: "udp", Auth: pbxconfig.TrunkAuthIP,
			Peers: []netip.Prefix{netip.MustParsePrefix("10.0.0.9/32")}})
		return &c.Trunks[1]
	}
	for _, tc := range []struct {
		name, field string
		edit        func(c *TelephonyRequest)
	}{
		{"country", "/country", func(c *TelephonyRequest) { c.Country = "XX" }},
		{"no default classes", "/default_classes", func(c *TelephonyRequest) { c.DefaultClasses = nil }},
		{"default class", "/default_classes", func(c *TelephonyRequest) { c.DefaultClasses = []dialplan.Class{"gold"} }},
		{"trunk name", "/trunks/1/name", func(c *TelephonyRequest) { trunk2(c).Name = "bad name!" }},
		{"trunk repeated", "/trunks/1/name", func(c *TelephonyRequest) { trunk2(c).Name = "itsp" }},
		{"host", "/trunks/1/host", func(c *TelephonyRequest) { trunk2(c).Host = "no port" }},
		{"port", "/trunks/1/host", func(c *TelephonyRequest) { trunk2(c).Host = "10.0.0.9:99999" }},
		{"transport", "/trunks/1/transport", func(c *TelephonyRequest) { trunk2(c).Transport = "sctp" }},
		{"no peers", "/trunks/1/peers", func(c *TelephonyRequest) { trunk2(c).Peers = nil }},
		{"ip auth with user", "/trunks/1/username", func(c *TelephonyRequest) { trunk2(c).Username = "u" }},
		{"srtp", "/trunks/1/srtp", func(c *TelephonyRequest) { trunk2(c).SRTP = "sometimes" }},
		{"caller ID", "/trunks/1/caller_id", func(c *TelephonyRequest) { trunk2(c).CallerID = "+49 30" }},
		{"extension caller ID", "/caller_ids/1001", func(c *TelephonyRequest) { c.CallerIDs = map[string]string{"1001": "49-30"} }},
		{"auth", "/trunks/1/auth", func(c *TelephonyRequest) { trunk2(c).Auth = "magic" }},
		{"username", "/trunks/0/username", func(c *TelephonyRequest) { c.Trunks[0].Username = "" }},
		{"domain", "/trunks/0/domain", func(c *TelephonyRequest) { c.Trunks[0].Domain = "a b" }},
		{"password", "/trunks/0/password", func(c *TelephonyRequest) { c.Trunks[0].Password = "" }},
		{"password control", "/trunks/0/password", func(c *TelephonyRequest) { c.Trunks[0].Password = "a\x01b" }},
		{"trunk limit", "/trunks/0/limits/max_per_hour", func(c *TelephonyRequest) { c.Trunks[0].Limits.MaxPerHour = 200000 }},
		{"trunk concurrent", "/trunks/0/limits/max_concurrent", func(c *TelephonyRequest) { c.Trunks[0].Limits.MaxConcurrent = -1 }},
		{"route prefix", "/routes/1/prefix", func(c *TelephonyRequest) { c.Routes[1].Prefix = "0a" }},
		{"route trunk", "/routes/1/trunk", func(c *TelephonyRequest) { c.Routes[1].Trunk = "nope" }},
		{"route strip", "/routes/1/strip", func(c *TelephonyRequest) { c.Routes[1].Strip = 3 }},
		{"route add", "/routes/1/add", func(c *TelephonyRequest) { c.Routes[1].Add = "x1" }},
		{"DID extension", "/dids/0/extension", func(c *TelephonyRequest) { c.DIDs[0].Extension = "1999" }},
		{"DID number", "/dids/0/number", func(c *TelephonyRequest) { c.DIDs[0].Number = "49x" }},
		{"DID trunk", "/dids/0/trunk", func(c *TelephonyRequest) { c.DIDs[0].Trunk = "nope" }},
		{"extension number", "/extensions/0/number", func(c *TelephonyRequest) { c.Extensions[0].Number = "10a" }},
		{"extension repeated", "/extensions/1/number", func(c *TelephonyRequest) { c.Extensions = append(c.Extensions, c.Extensions[0]) }},
		{"extension emergency", "/extensions/1/number", func(c *TelephonyRequest) {
			c.Extensions = append(c.Extensions, dialplan.Extension{Number: "112"})
		}},
		{"extension class", "/extensions/0/classes", func(c *TelephonyRequest) { c.Extensions[0].Classes = []dialplan.Class{"gold"} }},
		{"extension limit", "/extensions/0/limits/max_concurrent", func(c *TelephonyRequest) { c.Extensions[0].Limits.MaxConcurrent = -2 }},
		{"premium prefix", "/premium_prefixes", func(c *TelephonyRequest) { c.PremiumPrefixes = []string{"9x"} }},
		{"premium blocks emergency", "/premium_prefixes", func(c *TelephonyRequest) { c.PremiumPrefixes = []string{"11"} }},
		{"emergency number", "/emergency", func(c *TelephonyRequest) { c.Emergency = []string{"1x"} }},
		{"emergency unrouted", "/emergency_trunk", func(c *TelephonyRequest) { c.Routes = c.Routes[1:] }},
		{"emergency trunk", "/emergency_trunk", func(c *TelephonyRequest) { c.EmergencyTrunk = "nope" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			r := admin.must(422, "PUT", "/api/v1/telephony", c)
			if got := r.str("field"); got != tc.field {
				t.Fatalf("field %q, want %q (%s)", got, tc.field, r.str("detail"))
			}
			if r.hdr.Get("Content-Type") != "application/problem+json" || r.str("title") != "telephony configuration refused" || r.js["status"] != float64(422) {
				t.Fatalf("not problem+json: %v %s", r.hdr, r.body)
			}
		})
	}
	// A source network that is no CIDR fails in the JSON decoder; the
	// answer still names it.
	raw, _ := json.Marshal(base())
	bad := strings.Replace(string(raw), `"peers":null`, `"peers":["10.0.0.0/8","10.1.2.3"]`, 1)
	if r := admin.must(400, "PUT", "/api/v1/telephony", bad); r.str("field") != "/trunks/0/peers/1" || !strings.Contains(r.str("detail"), `"10.1.2.3"`) {
		t.Fatalf("bad peer: %s", r.body)
	}
	if e.tel.Current().Version != 0 {
		t.Fatal("a refused change applied")
	}
	// The base itself is valid: the cases above fail for their one change.
	ok := base()
	trunk2(&ok).SRTP, ok.Trunks[1].CallerID = "required", "+4930555"
	admin.must(200, "PUT", "/api/v1/telephony", ok)
	if tr, _ := e.tel.Current().Trunk("second"); tr.SRTP != "required" || tr.CallerID != "+4930555" {
		t.Fatalf("trunk SRTP policy and caller ID not kept: %+v", tr)
	}
}

// FuzzTelephonyField: whatever body is refused, the field named is "" or a
// pointer to a value of that body (its parent when the value is omitted).
func FuzzTelephonyField(f *testing.F) {
	seed, _ := json.Marshal(telephonyWithTrunk(0))
	f.Add(seed)
	f.Add([]byte(`{"country":"DE","default_classes":["internal"],"trunks":[{"name":"a b","host":"x"}]}`))
	f.Add([]byte(`{"country":"DE","default_classes":["internal"],"routes":[{"prefix":"0\"1","trunk":"t\"x"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var c pbxconfig.Telephony
		if decodeBody(body, &c) != nil {
			badPeer(body)
			return
		}
		err := c.Validate(nil)
		if err == nil {
			return
		}
		ptr := telephonyField(c, err)
		if ptr == "" {
			return
		}
		raw, _ := json.Marshal(c)
		var doc any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(ptr, "/")[1:]
		for i, p := range parts {
			switch v := doc.(type) {
			case map[string]any:
				next, ok := v[p]
				if !ok && i == len(parts)-1 {
					return // omitted when empty (omitempty)
				}
				if !ok {
					t.Fatalf("%s: no %q in %s (%v)", ptr, p, raw, err)
				}
				doc = next
			case []any:
				n, err2 := strconv.Atoi(p)
				if err2 != nil || n < 0 || n >= len(v) {
					t.Fatalf("%s: index %q out of %d (%v)", ptr, p, len(v), err)
				}
				doc = v[n]
			default:
				t.Fatalf("%s: %q below a leaf (%v)", ptr, p, err)
			}
		}
	})
}
