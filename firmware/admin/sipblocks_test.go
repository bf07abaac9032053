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
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/netfw"
)

// edgeBlocks adapts the SIP edge as edgepbxd does.
type edgeBlocks struct{ s *sipedge.Server }

func (b edgeBlocks) Blocks() []SIPBlock {
	var out []SIPBlock
	for _, x := range b.s.Blocks() {
		out = append(out, SIPBlock{Source: x.Source, User: x.User, Reason: x.Reason, Since: x.Since, Until: x.Until, Registered: x.Registered})
	}
	return out
}

func (b edgeBlocks) Lift(p netip.Prefix, user string) (int, int) { return b.s.Lift(p, user) }

var nonceRE = regexp.MustCompile(`nonce="([^"]+)", algorithm=MD5`)

// mistype sends one REGISTER for user from conn with a wrong password on a
// fresh challenge and returns the status code of the answer (0: none, the
// source was banned).
func mistype(t *testing.T, conn *net.UDPConn, srv *net.UDPAddr, user string, cseq int) int {
	t.Helper()
	local := conn.LocalAddr().String()
	msg := func(auth string) string {
		cseq++
		h := fmt.Sprintf("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%d%d;rport\r\nMax-Forwards: 70\r\n"+
			"From: <sip:%s@127.0.0.1>;tag=t%d\r\nTo: <sip:%s@127.0.0.1>\r\nCall-ID: c%d@x\r\nCSeq: %d REGISTER\r\n"+
			"Contact: <sip:%s@%s>\r\nExpires: 600\r\n", local, cseq, time.Now().UnixNano(), user, cseq, user, cseq, cseq, user, local)
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
			return "" // dropped: a banned source gets no answer
		}
		return string(buf[:n])
	}
	ans := roundTrip(msg(""))
	m := nonceRE.FindStringSubmatch(ans)
	if m == nil {
		t.Fatalf("no MD5 challenge:\n%s", ans)
	}
	hx := func(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }
	resp := hx(hx(user+":edgepbx:wrong-password") + ":" + m[1] + ":00000001:c:auth:" + hx("REGISTER:sip:127.0.0.1"))
	ans = roundTrip(msg(fmt.Sprintf(`Digest username="%s", realm="edgepbx", nonce="%s", uri="sip:127.0.0.1", response="%s", algorithm=MD5, cnonce="c", qop=auth, nc=00000001`, user, m[1], resp)))
	var code int
	fmt.Sscanf(ans, "SIP/2.0 %d", &code)
	return code
}

// TestSIPBlocksShownAndLifted: a phone that mistyped its password three
// times is throttled for its extension; the admin sees it on the
// dashboard (amber, not a green count), on the extensions page and in the
// API, lifts it with one request (audited), and the dashboard is green
// again. A firewall ban shows which hosts it covers.
func TestSIPBlocksShownAndLifted(t *testing.T) {
	e, admin := claimed(t)
	edge, _ := startEdge(t, e)
	e.srv.sipblk, e.srv.exts = edgeBlocks{edge}, edge.Extensions()
	if err := edge.Extensions().Set("101", "right-password-123"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- edge.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.9")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv := edge.Addr("udp").(*net.UDPAddr)
	for i, want := range []int{401, 401, 403} {
		if got := mistype(t, conn, srv, "101", 10*i); got != want {
			t.Fatalf("try %d: %d, want %d", i+1, got, want)
		}
	}

	r := admin.must(200, "GET", "/api/v1/sip/blocks", nil)
	if !contains(r.body, `"source": "127.0.0.9/32"`) || !contains(r.body, `"user": "101"`) {
		t.Fatalf("blocks: %s", r.body)
	}
	page := admin.must(200, "GET", "/", nil)
	if !contains(page.body, `data-level="warn"><span class="name">SIP bans and throttles</span>`) {
		t.Fatalf("dashboard does not show the throttle in amber:\n%s", page.body)
	}
	page = admin.must(200, "GET", "/extensions", nil)
	if !contains(page.body, "throttled from 127.0.0.9/32") || !contains(page.body, `data-api="/api/v1/sip/blocks/lift"`) {
		t.Fatalf("extensions page does not show the throttle with a lift:\n%s", page.body)
	}
	admin.must(400, "POST", "/api/v1/sip/blocks/lift", LiftRequest{Source: "not-an-address"})
	r = admin.must(200, "POST", "/api/v1/sip/blocks/lift", LiftRequest{Source: "127.0.0.9", User: "101"})
	if !contains(r.body, `"throttles": 1`) || !e.auditHas("sip.lift", "") {
		t.Fatalf("lift: %s", r.body)
	}
	if bl := edge.Blocks(); len(bl) != 0 {
		t.Fatalf("still blocked: %+v", bl)
	}
	page = admin.must(200, "GET", "/", nil)
	if !contains(page.body, `data-level="ok"><span class="name">SIP bans and throttles</span>`) {
		t.Fatalf("dashboard after lift:\n%s", page.body)
	}

	// A firewall ban: red on the dashboard, and the page says what it covers.
	e.pid1.mu.Lock()
	e.pid1.bans = append(e.pid1.bans, netfw.Ban{Prefix: netip.MustParsePrefix("2001:db8::/64"), Reason: "sip-flood", Expires: e.clock.Now().Add(time.Hour)},
		netfw.Ban{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Reason: "sip-scan", Expires: e.clock.Now().Add(time.Hour)})
	e.pid1.mu.Unlock()
	page = admin.must(200, "GET", "/firewall", nil)
	for _, want := range []string{"18446744073709551616 addresses, 2001:db8:: to 2001:db8::ffff:ffff:ffff:ffff", "1 host (192.0.2.7)"} {
		if !strings.Contains(string(page.body), want) {
			t.Errorf("firewall page lacks %q", want)
		}
	}
	page = admin.must(200, "GET", "/", nil)
	if !contains(page.body, `data-level="warn"><span class="name">Firewall bans</span>`) || !contains(page.body, `<span class="value">2</span>`) {
		t.Fatalf("dashboard firewall bans not amber:\n%s", page.body)
	}
}

func TestCovers(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"192.0.2.7/32", "1 host (192.0.2.7)"},
		{"fd00::1/128", "1 host (fd00::1)"},
		{"192.0.2.0/24", "256 addresses, 192.0.2.0 to 192.0.2.255"},
		{"192.0.2.9/24", "256 addresses, 192.0.2.0 to 192.0.2.255"},
	} {
		if got := Covers(netip.MustParsePrefix(tt.in)); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.in, got, tt.want)
		}
	}
}

// pid1Bans is PID 1's ban list as the SIP edge reaches it (its Banner):
// the edge's bans land in the recorder the admin side lists and lifts.
type pid1Bans struct{ p *pid1Recorder }

func (b pid1Bans) Ban(_ context.Context, ban netfw.Ban) error {
	b.p.mu.Lock()
	defer b.p.mu.Unlock()
	b.p.bans = append(b.p.bans, ban)
	return nil
}

// TestSIPBanLiftReachesPID1: a source that fails for five extensions is a
// scan: the edge bans it and hands the ban to PID 1's firewall. One lift on
// the SIP bans list ends both copies (the firewall's through PID 1's
// Unban), and the audit entry counts them.
func TestSIPBanLiftReachesPID1(t *testing.T) {
	e, admin := claimed(t)
	lg, err := logs.New(e.db, 100)
	if err != nil {
		t.Fatal(err)
	}
	base := pbxconfig.DefaultSIP()
	base.UDP, base.TCP, base.TLS = "127.0.0.1:0", "127.0.0.1:0", ""
	edge, err := sipedge.New(e.sipset.Current().Apply(base), sipedge.Deps{Store: e.db, Security: lg, Banner: pid1Bans{e.pid1},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { edge.Close() })
	e.srv.sipblk, e.srv.exts = edgeBlocks{edge}, edge.Extensions()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- edge.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.11")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv := edge.Addr("udp").(*net.UDPAddr)
	for i := range 5 {
		u := fmt.Sprintf("20%d", i)
		if err := edge.Extensions().Set(u, "right-password-123"); err != nil {
			t.Fatal(err)
		}
		mistype(t, conn, srv, u, 10*i)
	}
	banned := func() (edgeBan, fwBan bool) {
		for _, b := range edge.Blocks() {
			edgeBan = edgeBan || (b.User == "" && b.Source.Contains(netip.MustParseAddr("127.0.0.11")))
		}
		bans, _ := e.pid1.ListBans(context.Background())
		for _, b := range bans {
			fwBan = fwBan || b.Prefix.Contains(netip.MustParseAddr("127.0.0.11"))
		}
		return
	}
	if eb, fb := banned(); !eb || !fb {
		t.Fatalf("after a scan: edge ban %v, firewall ban %v; blocks %+v", eb, fb, edge.Blocks())
	}
	r := admin.must(200, "POST", "/api/v1/sip/blocks/lift", LiftRequest{Source: "127.0.0.11"})
	if !contains(r.body, `"firewall_bans": 1`) || !contains(r.body, `"bans": 1`) {
		t.Fatalf("lift: %s", r.body)
	}
	if eb, fb := banned(); eb || fb {
		t.Fatalf("after the lift: edge ban %v, firewall ban %v", eb, fb)
	}
	l, err := e.srv.audit.Query(audit.Filter{Action: "sip.lift"})
	if err != nil || len(l) != 1 || !strings.Contains(l[0].Detail, "1 firewall bans") {
		t.Fatalf("audit %+v %v", l, err)
	}
}
