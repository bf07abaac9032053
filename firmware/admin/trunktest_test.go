package admin

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/telephony"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// TestTrunkTestWords: each outcome of a trunk test reads as a sentence
// that says what happened and what to check, never a Go error chain.
func TestTrunkTestWords(t *testing.T) {
	target := netip.MustParseAddrPort("203.0.113.5:5060")
	reg := TrunkState{Name: "itsp", State: "registered", Registrar: "sip.itsp.example:5060", Expires: time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC)}
	base := TrunkTestResult{Name: "itsp", Host: "sip.itsp.example:5060", Transport: "udp", Auth: pbxconfig.TrunkAuthRegister,
		Addrs: []netip.Addr{target.Addr()}, DNS: testOK, Target: target, Options: testOK, Status: 200, Reason: "OK", RTT: 42 * time.Millisecond, State: reg}
	for _, tc := range []struct {
		name string
		mod  func(*TrunkTestResult)
		ok   bool
		want []string
	}{
		{"all good", func(*TrunkTestResult) {}, true, []string{"sip.itsp.example resolves to 203.0.113.5.", "answered at 203.0.113.5:5060 over UDP in 42 ms (200 OK)", "Registered at sip.itsp.example:5060 until 2026-12-07 13:00 UTC."}},
		{"no such name", func(r *TrunkTestResult) { r.DNS, r.Addrs, r.Options = testDNSNotFound, nil, "" }, false, []string{"The name sip.itsp.example does not exist in DNS"}},
		{"DNS silent", func(r *TrunkTestResult) { r.DNS, r.Addrs, r.Options = testDNSTimeout, nil, "" }, false, []string{"No DNS answer for sip.itsp.example"}},
		{"refused", func(r *TrunkTestResult) { r.Options, r.Transport = testRefused, "tcp" }, false, []string{"203.0.113.5:5060 refused the TCP connection"}},
		{"silent", func(r *TrunkTestResult) { r.Options = testNoAnswer }, false, []string{"No answer from 203.0.113.5:5060 over UDP within 5 s"}},
		{"TLS", func(r *TrunkTestResult) { r.Options, r.Transport = testTLS, "tls" }, false, []string{"TLS handshake with 203.0.113.5:5060 failed"}},
		{"refuses OPTIONS", func(r *TrunkTestResult) { r.Status, r.Reason = 403, "Forbidden" }, true, []string{"with 403 Forbidden: it is reachable"}},
		{"registration fails", func(r *TrunkTestResult) { r.State.State, r.State.LastError = "failed", "403 Forbidden" }, false, []string{"Registration fails: 403 Forbidden."}},
		{"by address", func(r *TrunkTestResult) {
			r.Auth, r.Host, r.Peers = pbxconfig.TrunkAuthIP, "203.0.113.5:5060", []netip.Prefix{netip.MustParsePrefix("203.0.113.0/28")}
		}, true, []string{"Address 203.0.113.5.", "recognised by its addresses (203.0.113.0/28)"}},
	} {
		r := base
		tc.mod(&r)
		a := trunkTestWords(r)
		if a.OK != tc.ok {
			t.Errorf("%s: ok %v, want %v: %s", tc.name, a.OK, tc.ok, a.Status)
		}
		for _, w := range tc.want {
			if !strings.Contains(a.Status, w) {
				t.Errorf("%s: %q lacks %q", tc.name, a.Status, w)
			}
		}
		if strings.Contains(a.Status, "%!") || strings.Contains(a.Status, ": dial ") {
			t.Errorf("%s: %q", tc.name, a.Status)
		}
	}
}

// TestFirewallHint: a trunk's address outside every zone its SIP service
// is open to gets a hint naming it; inside, or the service open to any,
// none; a closed service says so.
func TestFirewallHint(t *testing.T) {
	pol := fwspec.Access{
		Zones: []fwspec.Zone{{Name: "lan", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}},
			{Name: "itsp", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}},
		Rules: []fwspec.Rule{{Service: fwspec.SvcSIPUDP, Zones: []string{"lan", "itsp"}}, {Service: fwspec.SvcSIPTLS, Zones: []string{fwspec.ZoneAny}}},
	}
	a := func(s string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(s)} }
	p := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	for _, tc := range []struct {
		name      string
		transport string
		addrs     []netip.Addr
		peers     []netip.Prefix
		want      string
	}{
		{"inside", "udp", a("203.0.113.5"), p("203.0.113.0/28"), ""},
		{"outside", "udp", a("198.51.100.7"), nil, "does not let 198.51.100.7 reach SIP over UDP (service sip-udp is open to zones lan, itsp only)"},
		{"peer wider than the zone", "udp", nil, p("203.0.112.0/23"), "does not let 203.0.112.0/23 reach"},
		{"open to any", "tls", a("198.51.100.7"), nil, ""},
		{"closed", "tcp", a("203.0.113.5"), nil, "keeps SIP over TCP closed to everyone"},
		{"IPv6 outside", "udp", a("2001:db8::5"), nil, "does not let 2001:db8::5 reach"},
	} {
		got := firewallHint(pol, tc.transport, tc.addrs, tc.peers)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestTrunkTemplates: every provider template decodes strictly and, once
// the installer's part is filled in, is a trunk the configuration accepts.
func TestTrunkTemplates(t *testing.T) {
	dec := json.NewDecoder(strings.NewReader(trunkTemplatesJSON))
	dec.DisallowUnknownFields()
	var tpls []TrunkTemplate
	if err := dec.Decode(&tpls); err != nil || len(tpls) < 4 {
		t.Fatalf("templates: %d, %v", len(tpls), err)
	}
	e := newEnv(t)
	seen := map[string]bool{}
	for _, tp := range tpls {
		if tp.ID == "" || seen[tp.ID] || tp.Name == "" || tp.Note == "" {
			t.Errorf("template %+v: id, name and note are required, ids unique", tp)
		}
		seen[tp.ID] = true
		host := tp.Host
		if host == "" {
			host = "sip.provider.example"
		}
		tr := pbxconfig.TelephonyTrunk{Name: "t", Host: host + ":" + strconv.Itoa(tp.Port), Transport: tp.Transport, Auth: tp.Auth, SRTP: tp.SRTP}
		if tp.Auth == pbxconfig.TrunkAuthRegister {
			tr.Username, tr.Domain, tr.Password = "user1", tp.Domain, "provider-Secret-1"
			if tr.Domain == "" {
				tr.Domain = host
			}
		} else {
			tr.Peers = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28")}
		}
		next := e.tel.Current()
		next.Trunks, next.EmergencyTrunk = []pbxconfig.TelephonyTrunk{tr}, "t"
		if _, err := e.tel.Save(next, nil); err != nil {
			t.Errorf("template %s: %v", tp.ID, err)
		}
	}
}

// realTrunks adapts telephony's trunk test as edgepbxd does.
type realTrunks struct{ t *telephony.Trunks }

func (r realTrunks) TrunkStates() []TrunkState {
	var out []TrunkState
	for _, s := range r.t.States() {
		out = append(out, TrunkState(s))
	}
	return out
}

func (r realTrunks) TestTrunk(ctx context.Context, name string) (TrunkTestResult, error) {
	x, err := r.t.Test(ctx, name, 2*time.Second)
	if err != nil {
		return TrunkTestResult{}, err
	}
	return TrunkTestResult{Name: x.Name, Host: x.Host, Transport: x.Transport, Auth: x.Auth, Peers: x.Peers, Addrs: x.Addrs,
		DNS: x.DNS, Target: x.Target, Options: x.Options, Status: x.Probe.Status, Reason: x.Probe.Reason, RTT: x.Probe.RTT, State: TrunkState(x.State)}, nil
}

// TestTrunkTestAPI: the trunk test runs against the real SIP edge and
// trunks: a provider that does not answer is said in words and audited
// as failed; a third test while two run is refused (busy) rather than
// queued; an unknown trunk is 404.
func TestTrunkTestAPI(t *testing.T) {
	e, admin := claimed(t)
	edge := liveEdge(t, e)
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := c.LocalAddr().String()
	c.Close()
	next := e.tel.Current()
	next.Trunks = []pbxconfig.TelephonyTrunk{{Name: "silent", Host: silent, Transport: "udp", Auth: pbxconfig.TrunkAuthIP,
		Peers: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}}
	next.EmergencyTrunk = "silent"
	if _, err := e.tel.Save(next, nil); err != nil {
		t.Fatal(err)
	}
	e.srv.trunks = realTrunks{telephony.NewTrunks(e.tel, edge, slog.New(slog.DiscardHandler))}
	admin.must(404, "POST", "/api/v1/telephony/trunks/nope/test", nil)

	answers := make(chan resp, 2)
	for range 2 {
		go func() { answers <- admin.do("POST", "/api/v1/telephony/trunks/silent/test", nil) }()
	}
	for e.srv.trunkTests.Load() < 2 {
		runtime.Gosched()
	}
	admin.must(503, "POST", "/api/v1/telephony/trunks/silent/test", nil)
	for range 2 {
		r := <-answers
		if r.code != 200 || r.js["ok"] != false || !strings.Contains(r.str("status"), "No answer from "+silent+" over UDP") {
			t.Fatalf("test answered %d %s", r.code, r.body)
		}
	}
	l, err := e.srv.audit.Query(audit.Filter{Action: "telephony.trunk.test"})
	if err != nil || len(l) != 2 || l[0].Outcome != audit.Failed || !strings.Contains(l[0].Detail, "No answer") {
		t.Fatalf("audit %+v %v", l, err)
	}
}
