package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/init/control"
)

// plumbingText is what must never reach a person: Go error chains, package
// and control-request names, decoder internals.
var plumbingText = regexp.MustCompile(`netip\.|control:|refused:|bad request:|malformed JSON|strictjson|json:|invalid firewall policy|` +
	`Set(Policy|Network|Time)\b|\bParse(Prefix|Addr|AddrPort)\b|%!|<nil>|\b(dial|lookup) (tcp|udp)|^[a-z]+: [a-z]+: |dialplan:|telephony configuration|bad setting|settings invalid`)

// sentenceEnd is the end of a sentence followed by another one.
var sentenceEnd = regexp.MustCompile(`[a-z0-9)]\. [A-Z]`)

// TestRefusalsInWords walks the refusals of every settings form's API
// (extensions, trunks, routes, security and access lists, network, time,
// users) and checks each answer is problem+json with one sentence in
// words, no internal error chain, and the JSON pointer of the field the
// form shows it next to.
func TestRefusalsInWords(t *testing.T) {
	e, admin := claimed(t)
	if err := e.exts.Set("1002", "Ext-Password-1002-x"); err != nil {
		t.Fatal(err)
	}
	tel := func(edit func(*TelephonyRequest)) any {
		c := telephonyWithTrunk(0)
		edit(&c)
		return c
	}
	telRaw := func(old, repl string) string {
		b, err := json.Marshal(telephonyWithTrunk(0))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.Replace(string(b), old, repl, 1)
		if s == string(b) {
			t.Fatalf("%q not in %s", old, b)
		}
		return s
	}
	for _, tt := range []struct {
		name, method, path string
		body               any
		field              string // "" when the refusal is about no one field
	}{
		{"extension name", "POST", "/api/v1/extensions", `{"user":"bad user!"}`, "/user"},
		{"extension empty", "POST", "/api/v1/extensions", `{"user":""}`, "/user"},
		{"extension unknown key", "POST", "/api/v1/extensions", `{"user":"1003","pass":"x"}`, "/pass"},
		{"extension exists", "POST", "/api/v1/extensions", `{"user":"1002"}`, "/user"},
		{"trunk peers", "PUT", "/api/v1/telephony", telRaw(`"peers":null`, `"peers":["not-a-network"]`), "/trunks/0/peers/0"},
		{"trunk host", "PUT", "/api/v1/telephony", tel(func(c *TelephonyRequest) { c.Trunks[0].Host = "bad host" }), "/trunks/0/host"},
		{"trunk transport", "PUT", "/api/v1/telephony", tel(func(c *TelephonyRequest) { c.Trunks[0].Transport = "sctp" }), "/trunks/0/transport"},
		{"route trunk", "PUT", "/api/v1/telephony", tel(func(c *TelephonyRequest) { c.Routes[0].Trunk = "nope" }), "/routes/0/trunk"},
		{"route prefix", "PUT", "/api/v1/telephony", tel(func(c *TelephonyRequest) { c.Routes[0].Prefix = "12a" }), "/routes/0/prefix"},
		{"policy min length", "PUT", "/api/v1/security/policy", policyWith(t, e, func(p *auth.Policy) { p.MinLength = 3 }), "/min_length"},
		{"firewall zone", "PUT", "/api/v1/firewall/policy", `{"zones":[{"name":"admins","prefixes":["not-a-network"]}],"rules":[]}`, "/zones/0/prefixes/0"},
		{"firewall rule zone", "PUT", "/api/v1/firewall/policy", `{"zones":[{"name":"lan","prefixes":["10.0.0.0/8"]}],"rules":[{"service":"https-admin","zones":["nowhere"]}]}`, "/rules/0/zones/0"},
		{"metrics network", "PUT", "/api/v1/security/metrics", `{"networks":["0.0.0.0/0"]}`, "/networks/0"},
		{"metrics junk", "PUT", "/api/v1/security/metrics", `{"networks":["junk"]}`, "/networks/0"},
		{"syslog address", "PUT", "/api/v1/security/syslog", `{"enabled":true,"address":"no port here","transport":"tls","facility":"local0"}`, "/address"},
		{"origins", "PUT", "/api/v1/security/origins", `{"origins":["ftp://x"]}`, "/origins/0"},
		{"network address", "PUT", "/api/v1/system/network", `{"hostname":"box","interfaces":[{"name":"eth0","mode":"static","addresses":["not-a-network"]}]}`, "/interfaces/0/addresses/0"},
		{"network gateway", "PUT", "/api/v1/system/network", `{"hostname":"box","interfaces":[{"name":"eth0","mode":"static","addresses":["192.0.2.10/24"],"gateway4":"198.51.100.1"}]}`, "/interfaces/0/gateway4"},
		{"network hostname", "PUT", "/api/v1/system/network", `{"hostname":"bad_host!","interfaces":[{"name":"eth0","mode":"dhcp"}]}`, "/hostname"},
		{"network dns", "PUT", "/api/v1/system/network", `{"hostname":"box","interfaces":[{"name":"eth0","mode":"dhcp"}],"dns":["dns.example"]}`, "/dns/0"},
		{"network vlan", "PUT", "/api/v1/system/network", `{"hostname":"box","interfaces":[{"name":"eth0","mode":"dhcp"}],"vlans":[{"id":5000,"parent":"eth0","mode":"dhcp"}]}`, "/vlans/0/id"},
		{"time zone", "PUT", "/api/v1/system/time", `{"ntp":[],"time_zone":"Mars/Base"}`, "/time_zone"},
		{"ntp server", "PUT", "/api/v1/system/time", `{"ntp":["bad host!"],"time_zone":"UTC"}`, "/ntp/0"},
		{"user name", "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "bad user!", Role: auth.RoleOperator, Password: userPW}, "/username"},
		{"user role", "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "op2", Role: "king", Password: userPW}, "/role"},
		{"user password", "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "op2", Role: auth.RoleOperator, Password: "short"}, "/password"},
		{"user proof", "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: "wrong-password-1"}, Username: "op2", Role: auth.RoleOperator, Password: userPW}, "/current_password"},
		{"sip flood limit", "PUT", "/api/v1/sip/settings", sipWith(e, func(c *SIPSettingsRequest) { c.Guard.RateLimit = 0 }), "/guard"},
		{"sip zones", "PUT", "/api/v1/sip/settings", sipWith(e, func(c *SIPSettingsRequest) { c.AllowedZones = nil }), "/allowed_zones"},
		{"sip tls", "PUT", "/api/v1/sip/settings", sipWith(e, func(c *SIPSettingsRequest) { c.TLSMin = "1.1" }), "/tls_min"},
		{"syslog transport", "PUT", "/api/v1/security/syslog", `{"enabled":true,"address":"logs.example:6514","transport":"carrier-pigeon","facility":"local0"}`, "/transport"},
		{"privacy days", "PUT", "/api/v1/privacy/cdrs", `{"days":-1,"current_password":"` + adminPW + `"}`, "/days"},
		{"cdr retention", "PUT", "/api/v1/cdr/retention", `{"days":99999,"current_password":"` + adminPW + `"}`, "/days"},
		{"unban", "POST", "/api/v1/firewall/unban", `{"prefix":"nonsense"}`, "/prefix"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := admin.do(tt.method, tt.path, tt.body)
			d, f := r.str("detail"), r.str("field")
			t.Logf("%d field=%q detail=%q", r.code, f, d)
			if r.code < 400 || r.code >= 500 || r.hdr.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("answer %d %s: %s", r.code, r.hdr.Get("Content-Type"), r.body)
			}
			if f != tt.field {
				t.Errorf("field %q, want %q (%s)", f, tt.field, d)
			}
			if m := plumbingText.FindString(d); m != "" {
				t.Errorf("detail %q shows internals (%q)", d, m)
			}
			if d == "" || sentenceEnd.MatchString(d) {
				t.Errorf("detail %q is not one sentence", d)
			}
		})
	}
}

func policyWith(t *testing.T, e *env, f func(*auth.Policy)) auth.Policy {
	t.Helper()
	p, err := e.srv.auth.Policy()
	if err != nil {
		t.Fatal(err)
	}
	f(&p)
	return p
}

func sipWith(e *env, f func(*SIPSettingsRequest)) SIPSettingsRequest {
	c := e.sipset.Current()
	f(&c)
	return c
}

// TestHumanize: errors that reach writeError from elsewhere than the
// forms above (PID 1's refusals, a trunk's DNS lookup, wrapped chains)
// become one sentence and a field.
func TestHumanize(t *testing.T) {
	for _, tt := range []struct {
		name        string
		err         error
		detail, ptr string
	}{
		{"PID 1 names the field", fmt.Errorf("%w: %w", errPolicyRefused, &control.RemoteError{Type: control.TypeSetPolicy, Field: "zones[1].prefixes[0]",
			Message: "zones[1].prefixes[0]: prefix /4 is wider than the floor /8"}), "zone 2, network 1: prefix /4 is wider than the floor /8.", "/zones/1/prefixes/0"},
		{"PID 1 without a field", fmt.Errorf("%w: %w", errPolicyRefused, &control.RemoteError{Type: control.TypeSetPolicy, Message: "SetPolicy: invalid firewall policy: limits out of range"}),
			"limits out of range.", ""},
		{"unknown name", fmt.Errorf("%w: trunk itsp: %w", errBadRequest, &net.DNSError{Err: "no such host", Name: "sip.nowhere.example", IsNotFound: true}),
			`the name "sip.nowhere.example" does not exist in DNS (check the spelling, or use an address)`, ""},
		{"DNS silent", &net.DNSError{Err: "i/o timeout", Name: "sip.example.net", IsTimeout: true},
			`no DNS server answered for "sip.example.net": check the box's DNS servers on the System page.`, ""},
		{"netip chain", fmt.Errorf("%w: malformed JSON: netip.ParsePrefix(\"10.0.0.0/33\"): prefix length out of range", errBadRequest),
			`"10.0.0.0/33" is not a network: write an address and a prefix length, such as 192.0.2.0/24 or 2001:db8::/48.`, ""},
		{"joined", errors.Join(errBadRequest, errors.New("limit must be 1..1000")), "limit must be 1..1000.", ""},
		{"field error", withField("/trunks/1/limits/max_per_hour", fmt.Errorf("%w: must be 0..100000", errBadRequest)),
			"trunk 2, limits, calls per hour: must be 0..100000.", "/trunks/1/limits/max_per_hour"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, f := humanize(tt.err)
			if d != tt.detail || f != tt.ptr {
				t.Errorf("humanize = %q, %q; want %q, %q", d, f, tt.detail, tt.ptr)
			}
			if m := plumbingText.FindString(d); m != "" {
				t.Errorf("%q shows %q", d, m)
			}
		})
	}
}
