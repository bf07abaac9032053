package admin

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/provision"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/netfw"
)

// edgeLive adapts a running SIP edge without calls, as edgepbxd's
// liveView does (the calls half runs against the real B2BUA in
// firmware/call's and cmd/edgepbxd's tests).
type edgeLive struct{ s *sipedge.Server }

func (v edgeLive) Registrations() []Registration {
	var out []Registration
	for _, u := range v.s.Extensions().List() {
		for _, b := range v.s.Location().Lookup(time.Now(), u) {
			out = append(out, Registration{User: u, Contact: b.Contact, Source: b.Source, Transport: b.Transport, UserAgent: b.UserAgent, Expires: b.Expires})
		}
	}
	return out
}
func (edgeLive) Calls() []LiveCall     { return nil }
func (edgeLive) Hangup(id string) bool { return false }
func (v edgeLive) Endpoint() SIPEndpoint {
	ep := SIPEndpoint{Realm: v.s.Settings().Realm}
	if a, ok := v.s.Addr("udp").(*net.UDPAddr); ok {
		ep.UDP = a.Port
	}
	if a, ok := v.s.Addr("tcp").(*net.TCPAddr); ok {
		ep.TCP = a.Port
	}
	return ep
}

// liveEdge starts a real SIP edge on loopback (UDP and TCP) and attaches
// it to e's server as its extensions and live view.
func liveEdge(t *testing.T, e *env) *sipedge.Server {
	t.Helper()
	base := pbxconfig.DefaultSIP()
	base.UDP, base.TCP, base.TLS = "127.0.0.1:0", "127.0.0.1:0", ""
	lg, err := logs.New(e.db, 100)
	if err != nil {
		t.Fatal(err)
	}
	edge, err := sipedge.New(e.sipset.Current().Apply(base), sipedge.Deps{Store: e.db, Security: lg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { edge.Close() })
	e.srv.exts, e.srv.live = edge.Extensions(), edgeLive{edge}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- edge.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return edge
}

var realmRE = regexp.MustCompile(`realm="([^"]+)"`)

// register registers user with password from conn as a phone whose
// User-Agent is ua, and returns the final status code.
func register(t *testing.T, conn *net.UDPConn, srv *net.UDPAddr, user, password, ua string) int {
	t.Helper()
	local := conn.LocalAddr().String()
	cseq := 0
	msg := func(auth string) string {
		cseq++
		h := fmt.Sprintf("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%d%d;rport\r\nMax-Forwards: 70\r\n"+
			"From: <sip:%s@127.0.0.1>;tag=t1\r\nTo: <sip:%s@127.0.0.1>\r\nCall-ID: reg-%s@x\r\nCSeq: %d REGISTER\r\n"+
			"User-Agent: %s\r\nContact: <sip:%s@%s>\r\nExpires: 600\r\n", local, cseq, time.Now().UnixNano(), user, user, user, cseq, ua, user, local)
		if auth != "" {
			h += "Authorization: " + auth + "\r\n"
		}
		return h + "Content-Length: 0\r\n\r\n"
	}
	roundTrip := func(m string) string {
		if _, err := conn.WriteToUDP([]byte(m), srv); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8192)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		return string(buf[:n])
	}
	ans := roundTrip(msg(""))
	nonce, realm := nonceRE.FindStringSubmatch(ans), realmRE.FindStringSubmatch(ans)
	if nonce == nil || realm == nil {
		t.Fatalf("no MD5 challenge:\n%s", ans)
	}
	hx := func(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }
	resp := hx(hx(user+":"+realm[1]+":"+password) + ":" + nonce[1] + ":00000001:c:auth:" + hx("REGISTER:sip:127.0.0.1"))
	ans = roundTrip(msg(fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="sip:127.0.0.1", response="%s", algorithm=MD5, cnonce="c", qop=auth, nc=00000001`,
		user, realm[1], nonce[1], resp)))
	var code int
	fmt.Sscanf(ans, "SIP/2.0 %d", &code)
	return code
}

// TestConnectCard: the connect-a-phone answer of a new extension carries
// what a phone needs (the box's names and addresses, the ports the edge
// really bound, user, auth ID, realm, the certificate's fingerprint, a
// sip: URI for the QR code) and never the password; unknown or malformed
// extensions are 404; the QR code is SVG that is not cached. A phone that
// registers shows in the card, the registrations list and the Extensions
// page with its source and User-Agent.
func TestConnectCard(t *testing.T) {
	e, admin := claimed(t)
	edge := liveEdge(t, e)
	pw := admin.must(201, "POST", "/api/v1/extensions", ExtensionRequest{User: "1001"}).str("password")
	if len(pw) < 16 {
		t.Fatalf("password %q", pw)
	}
	udp := edge.Addr("udp").(*net.UDPAddr)
	tcp := edge.Addr("tcp").(*net.TCPAddr)

	r := admin.must(200, "GET", "/api/v1/extensions/1001/connect", nil)
	if strings.Contains(string(r.body), pw) {
		t.Fatal("the connect answer contains the password")
	}
	want := []string{`"user": "1001"`, `"auth_id": "1001"`, `"realm": "` + edge.Settings().Realm + `"`, `"domain": "box.example"`,
		`"names": [` + "\n" + `    "box.example"`, `"192.0.2.10"`, fmt.Sprintf(`"port": %d`, udp.Port), fmt.Sprintf(`"port": %d`, tcp.Port),
		`"tls_fingerprint": "` + e.certs.Fingerprint() + `"`, fmt.Sprintf(`"qr": "sip:1001@box.example:%d"`, udp.Port), `"qr_kind": "sip"`, `"registered": []`}
	for _, w := range want {
		if !strings.Contains(string(r.body), w) {
			t.Errorf("connect answer lacks %s:\n%s", w, r.body)
		}
	}
	for _, p := range []string{"nobody", "bad%20name", strings.Repeat("9", 65)} {
		admin.must(404, "GET", "/api/v1/extensions/"+p+"/connect", nil)
		admin.must(404, "GET", "/api/v1/extensions/"+p+"/qr.svg", nil)
	}
	q := admin.must(200, "GET", "/api/v1/extensions/1001/qr.svg", nil)
	if q.hdr.Get("Content-Type") != "image/svg+xml" || q.hdr.Get("Cache-Control") != "no-store" || !strings.Contains(string(q.body), "<svg") {
		t.Fatalf("QR answer %v %.80s", q.hdr, q.body)
	}

	// A phone registers: the card, the list and the page say so.
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if code := register(t, conn, udp, "1001", pw, "Yealink SIP-T46U 108.86"); code != 200 {
		t.Fatalf("REGISTER answered %d", code)
	}
	src := conn.LocalAddr().String()
	r = admin.must(200, "GET", "/api/v1/registrations", nil)
	for _, w := range []string{`"user": "1001"`, `"source": "` + src + `"`, `"user_agent": "Yealink SIP-T46U 108.86"`, `"transport": "UDP"`} {
		if !strings.Contains(string(r.body), w) {
			t.Errorf("registrations lack %s:\n%s", w, r.body)
		}
	}
	if r := admin.must(200, "GET", "/api/v1/extensions/1001/connect", nil); !strings.Contains(string(r.body), `"source": "`+src+`"`) {
		t.Errorf("card's registrations: %s", r.body)
	}
	page := admin.must(200, "GET", "/extensions", nil)
	if !strings.Contains(string(page.body), "registered</span> from "+src+" (UDP), Yealink SIP-T46U 108.86") {
		t.Errorf("extensions page does not show the registration:\n%s", page.body)
	}
	// A firewall ban over the phone's network names the phone it cuts off.
	e.pid1.mu.Lock()
	e.pid1.bans = append(e.pid1.bans, netfw.Ban{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Reason: "sip-scan", Expires: time.Now().Add(time.Hour)},
		netfw.Ban{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Reason: "sip-scan", Expires: time.Now().Add(time.Hour)})
	e.pid1.mu.Unlock()
	fw := string(admin.must(200, "GET", "/firewall", nil).body)
	if !regexp.MustCompile(`<td>127\.0\.0\.0/8</td>.*<td>sip-scan</td><td>1001</td>`).MatchString(fw) ||
		!regexp.MustCompile(`<td>198\.51\.100\.0/24</td>.*<td>sip-scan</td><td>none</td>`).MatchString(fw) {
		t.Errorf("firewall page does not name the phones a ban cuts off:\n%s", fw)
	}
}

// TestHangupRefusals: a hang-up of a call that is not in progress is 404
// and not audited as done; an over-long id is refused before any lookup;
// the live list is an empty array, not null.
func TestHangupRefusals(t *testing.T) {
	e, admin := claimed(t)
	liveEdge(t, e)
	if r := admin.must(200, "GET", "/api/v1/calls/live", nil); !strings.Contains(string(r.body), `"calls": []`) {
		t.Fatalf("live calls: %s", r.body)
	}
	admin.must(404, "POST", "/api/v1/calls/c-123/hangup", nil)
	admin.must(400, "POST", "/api/v1/calls/"+strings.Repeat("a", 65)+"/hangup", nil)
	if l, err := e.srv.audit.Query(audit.Filter{Action: "telephony.call.hangup"}); err != nil || len(l) != 0 {
		t.Fatalf("audit %+v %v", l, err)
	}
}

func TestSIPURI(t *testing.T) {
	for _, tc := range []struct {
		domain string
		ports  []Port
		want   string
	}{
		{"box.example", []Port{{"udp", 5060}, {"tcp", 5060}}, "sip:1001@box.example"},
		{"box.example", []Port{{"udp", 5080}}, "sip:1001@box.example:5080"},
		{"box.example", []Port{{"tls", 5061}}, "sip:1001@box.example:5061;transport=tls"},
		{"2001:db8::1", []Port{{"udp", 5060}}, "sip:1001@[2001:db8::1]"},
		{"", nil, "sip:1001"},
	} {
		if got := sipURI("1001", tc.domain, tc.ports); got != tc.want {
			t.Errorf("sipURI(%q, %v) = %q, want %q", tc.domain, tc.ports, got, tc.want)
		}
	}
}

// TestConnectCardProvisioningLink: while a provisioned phone of the
// extension can enrol, the card's QR code is its one-time link for an
// admin; an auditor (read only) gets the sip: URI instead, as the phone's
// enrolment card is refused to it: the link hands out the password.
func TestConnectCardProvisioningLink(t *testing.T) {
	e, admin := claimed(t)
	liveEdge(t, e)
	ps, err := provision.New(provision.Deps{Store: e.db, Audit: e.srv.audit, Extensions: e.srv.exts.(provision.Extensions), Host: "box.example", Clock: e.clock.Now,
		DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	e.srv.phones = ps
	admin.must(201, "POST", "/api/v1/extensions", ExtensionRequest{User: "201"})
	admin.must(201, "POST", "/api/v1/phones", provision.AddRequest{MAC: "80:5E:C0:11:22:33", Vendor: provision.Yealink, Extensions: []string{"201"}, Approve: true})
	en, err := ps.Enrolment("805ec0112233")
	if err != nil || !strings.Contains(en.URL, "/t/") {
		t.Fatalf("enrolment %+v %v", en, err)
	}
	if r := admin.must(200, "GET", "/api/v1/extensions/201/connect", nil); r.str("qr") != en.URL || r.str("qr_kind") != "provisioning" {
		t.Fatalf("admin's card: %s", r.body)
	}
	admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "aud1", Role: auth.RoleAuditor, Password: userPW})
	aud := e.client("192.0.2.52")
	aud.must(200, "POST", "/api/v1/login", LoginRequest{Username: "aud1", Password: userPW})
	r := aud.must(200, "GET", "/api/v1/extensions/201/connect", nil)
	if strings.Contains(string(r.body), en.URL) || r.str("qr_kind") != "sip" {
		t.Fatalf("auditor's card: %s", r.body)
	}
	link, err := provision.QRSVG(en.URL)
	if err != nil {
		t.Fatal(err)
	}
	if q := aud.must(200, "GET", "/api/v1/extensions/201/qr.svg", nil); string(q.body) == string(link) {
		t.Fatal("auditor's QR code carries the one-time link")
	}
}
