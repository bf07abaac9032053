package sipedge

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/emiago/sipgo/sip"
)

// fastSeeds are REGISTERs in and just outside the fast path's subset.
var fastSeeds = []string{
	benchRegister,
	"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:101@127.0.0.1>;tag=a\r\nTo: <sip:101@127.0.0.1>\r\nCall-ID: x@y\r\nCSeq: 1 REGISTER\r\nContact: <sip:101@10.0.0.5:5060;transport=udp>;expires=120\r\nContent-Length: 0\r\n\r\n",
	"REGISTER sip:pbx.example.com;transport=udp SIP/2.0\r\nVia: SIP/2.0/UDP host.example:5070;rport=5070;branch=z9hG4bKab.c\r\nFrom: \"A B\" <sip:a@pbx.example.com>;tag=1\r\nTo: \"A B\" <sip:a@pbx.example.com>;tag=2\r\nCall-ID: 1\r\nCSeq: 2147483647 REGISTER\r\nExpires: 0\r\nAllow: INVITE, ACK\r\nContent-Length: 0\r\n\r\n",
	// Outside: compact form, two Vias, wildcard, body, folding, bare cookie.
	"REGISTER sip:127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nf: <sip:1@127.0.0.1>;tag=1\r\nt: <sip:1@127.0.0.1>\r\ni: c\r\nCSeq: 1 REGISTER\r\nl: 0\r\n\r\n",
	strings.Replace(benchRegister, "Via:", "Via: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKq\r\nVia:", 1),
	strings.Replace(benchRegister, "Contact: <sip:101@127.0.0.1:5099>", "Contact: *", 1),
	strings.Replace(benchRegister, "Content-Length: 0\r\n\r\n", "Content-Length: 2\r\n\r\nhi", 1),
	strings.Replace(benchRegister, "Max-Forwards: 70", "Max-Forwards:\r\n 70", 1),
	strings.Replace(benchRegister, "branch=z9hG4bK776asdhds", "branch=z9hG4bK", 1),
}

var toTagRE = regexp.MustCompile(`;tag=[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\r\n`)

// FuzzFastRegister is the differential check of the fast path: whatever
// scanRegister accepts, sipgo's parser and the validator must accept, with
// the same fields, and the answer's head must be byte for byte what
// sip.NewResponseFromRequest and StringWrite produce.
func FuzzFastRegister(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	p, v := NewParser(65535), newValidator()
	const source = "192.0.2.7:5099"
	f.Fuzz(func(t *testing.T, data []byte) {
		var sc fastScratch
		if !scanRegister(data, &sc.req) {
			return
		}
		fr := &sc.req
		m, err := p.ParseSIP(data)
		if err != nil {
			t.Fatalf("fast path took what sipgo refuses: %v", err)
		}
		req, ok := m.(*sip.Request)
		if !ok || req.Method != sip.REGISTER {
			t.Fatal("not a REGISTER request for sipgo")
		}
		if vd := v.Check(req); vd.Status != 0 || vd.Drop {
			t.Fatalf("fast path took what the validator refuses: %d %s", vd.Status, vd.Reason)
		}
		req.SetTransport("UDP")
		req.SetSource(source)
		via := req.Via()
		branch, _ := via.Params.Get("branch")
		rport, hasRport := via.Params.Get("rport")
		cseq := req.CSeq()
		same := []struct {
			name      string
			fast, ref string
		}{
			{"request-URI host", string(fr.ruriHost), req.Recipient.Host},
			{"Via host", string(fr.viaHost), via.Host},
			{"Via port", fmt.Sprint(fr.viaPort), fmt.Sprint(via.Port)},
			{"branch", string(fr.branch), branch},
			{"rport", fmt.Sprint(fr.rport), fmt.Sprint(hasRport && rport == "")},
			{"From display", string(fr.fromDisplay), req.From().DisplayName},
			{"From user", string(fr.fromUser), req.From().Address.User},
			{"To user", string(fr.toUser), req.To().Address.User},
			{"To host", string(fr.toHost), req.To().Address.Host},
			{"To tag", fmt.Sprint(fr.toTag), fmt.Sprint(req.To().Params.Has("tag"))},
			{"Call-ID", string(fr.callID), req.CallID().Value()},
			{"CSeq", fmt.Sprint(fr.cseq), fmt.Sprint(cseq.SeqNo)},
			{"Authorization", string(fr.auth), headerValue(req, "Authorization")},
			{"User-Agent", string(fr.ua), headerValue(req, "User-Agent")},
			{"Expires", fmt.Sprint(fr.expires), expiresOf(headerValue(req, "Expires"))},
		}
		contacts := headersNamed(req, "Contact")
		if (fr.contact != nil) != (len(contacts) == 1) || len(contacts) > 1 {
			t.Fatalf("contacts: fast %q, sipgo %d", fr.contact, len(contacts))
		}
		if len(contacts) == 1 {
			c, ok := contacts[0].(*sip.ContactHeader)
			if !ok || c.Address.Wildcard {
				t.Fatal("contact not a plain ContactHeader")
			}
			exp := "-1"
			if e, ok := c.Params.Get("expires"); ok {
				exp = expiresOf(e)
			}
			same = append(same, struct{ name, fast, ref string }{"Contact", string(fr.contact), c.Address.String()},
				struct{ name, fast, ref string }{"Contact expires", fmt.Sprint(fr.contactExp), exp})
		}
		for _, c := range same {
			if c.fast != c.ref {
				t.Fatalf("%s: fast %q, sipgo %q", c.name, c.fast, c.ref)
			}
		}
		// The answer's head, with one extra header as the registrar adds.
		sc.src = append(sc.src[:0], source...)
		fast := append(fastHead(&sc, 401, "Unauthorized"), "WWW-Authenticate: x\r\n\r\n"...)
		res := sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
		res.AppendHeader(sip.NewHeader("WWW-Authenticate", "x"))
		var ref bytes.Buffer
		res.StringWrite(&ref)
		got, want := string(fast), ref.String()
		if !fr.toTag {
			got, want = toTagRE.ReplaceAllString(got, "\r\n"), toTagRE.ReplaceAllString(want, "\r\n")
		}
		if got != want {
			t.Fatalf("answers differ\nfast:\n%s\nsipgo:\n%s", got, want)
		}
	})
}

func expiresOf(v string) string {
	if v == "" {
		return "-1"
	}
	n, ok := parseUint32(v)
	if !ok {
		return "bad:" + v
	}
	return fmt.Sprint(n)
}

// TestFastPathTakesCommonRegisters: the REGISTERs of sipp, the test phone
// and a typical desk phone take the fast path; the odd ones do not.
func TestFastPathTakesCommonRegisters(t *testing.T) {
	p := &phone{t: t, srv: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060}, user: "101", tag: "t", call: "c@h", local: "127.0.0.1:5099"}
	withAuth, _ := p.register(regOpts{auth: authHeader(AlgMD5, "101", "pw", "edgepbx", "n", "sip:127.0.0.1", "00000001", "c")})
	plain, _ := p.register(regOpts{})
	sipp := "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0\r\nMax-Forwards: 70\r\n" +
		"From: \"sipp 101\" <sip:101@127.0.0.1>;tag=1SIPpTag001\r\nTo: <sip:101@127.0.0.1>\r\nCall-ID: 1-1@127.0.0.1\r\nCSeq: 1 REGISTER\r\n" +
		"Contact: <sip:101@127.0.0.1:5061>\r\nExpires: 600\r\nUser-Agent: edgepbx-sipp-test\r\nContent-Length: 0\r\n\r\n"
	tests := []struct {
		name string
		msg  string
		fast bool
	}{
		{"bench", benchRegister, true},
		{"test phone", plain, true},
		{"test phone with credentials", withAuth, true},
		{"sipp", sipp, true},
		{"seed 1", fastSeeds[1], true},
		{"seed 2", fastSeeds[2], true},
		{"compact", fastSeeds[3], false},
		{"two vias", fastSeeds[4], false},
		{"wildcard", fastSeeds[5], false},
		{"body", fastSeeds[6], false},
		{"folding", fastSeeds[7], false},
		{"bare cookie", fastSeeds[8], false},
		{"lower-case header", strings.Replace(benchRegister, "Call-ID:", "call-id:", 1), false},
		{"unknown header", strings.Replace(benchRegister, "Expires: 600", "Require: foo", 1), false},
		{"IPv6 Via", strings.Replace(benchRegister, "127.0.0.1:5099;", "[::1]:5099;", 1), false},
		{"zero Max-Forwards", strings.Replace(benchRegister, "Max-Forwards: 70", "Max-Forwards: 0", 1), false},
		{"sips", strings.Replace(benchRegister, "REGISTER sip:", "REGISTER sips:", 1), false},
	}
	for _, tt := range tests {
		var r fastReq
		if got := scanRegister([]byte(tt.msg), &r); got != tt.fast {
			t.Errorf("%s: fast=%v, want %v", tt.name, got, tt.fast)
		}
	}
}

// TestFastPathMatchesSlowPath runs the same REGISTER exchanges through
// the fast path and through the sipgo-parsed stateless path of two
// servers: the answers (apart from nonces, tags and dates) and the
// registrations are the same, for every registrar outcome.
func TestFastPathMatchesSlowPath(t *testing.T) {
	type server struct {
		s    *testServer
		path func(net.Addr, netip.Addr, []byte) bool
	}
	mod := func(c *pbxconfig.SIP) { c.Algorithms = []string{AlgSHA256, AlgMD5}; c.Guard.MaxFailsPerSource = 100 }
	fastSrv, slowSrv := startServer(t, mod), startServer(t, mod)
	servers := []server{{fastSrv, fastSrv.statelessUDP}, {slowSrv, slowSrv.statelessSlow}}
	tests := []struct {
		name     string
		user     string // credentials
		password string
		opts     regOpts
		want     int
	}{
		{"register", "101", testPassword, regOpts{}, 200},
		{"unknown user", "nosuch", testPassword, regOpts{}, 401},
		{"wrong password", "101", "bad-password-1", regOpts{}, 401},
		{"other AOR", "101", testPassword, regOpts{toUser: "102"}, 403},
		{"too brief", "101", testPassword, regOpts{expires: "5"}, 423},
		{"unregister", "101", testPassword, regOpts{expires: "0"}, 200},
		{"baresip 1.x", "102", testPassword, regOpts{userAgent: "baresip v1.0.0 (x86_64/linux)"}, 200},
	}
	norm := regexp.MustCompile(`(nonce="[^"]*"|tag=[0-9a-f-]{36}|Date: [^\r]*|;expires=\d+|branch=[^;\r]*|Call-ID: [^\r]*)`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var answers [2][2]string
			for i, sv := range servers {
				sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				defer sink.Close()
				p := &phone{t: t, srv: sv.s.udp, user: tt.user, tag: "t1", call: "call-" + tt.name, local: sink.LocalAddr().String()}
				src := netip.MustParseAddr("127.0.0.1")
				recv := func() string {
					sink.SetReadDeadline(time.Now().Add(2 * time.Second))
					buf := make([]byte, 4096)
					n, _, err := sink.ReadFrom(buf)
					if err != nil {
						t.Fatalf("no answer: %v", err)
					}
					return string(buf[:n])
				}
				o := tt.opts
				msg, _ := p.register(o)
				if !sv.path(sink.LocalAddr(), src, []byte(msg)) {
					t.Fatal("not handled statelessly")
				}
				answers[i][0] = recv()
				r, err := sip.ParseMessage([]byte(answers[i][0]))
				if err != nil {
					t.Fatal(err)
				}
				alg := AlgSHA256
				if strings.HasPrefix(o.userAgent, "baresip") {
					alg = AlgMD5
				}
				o.auth = authHeader(alg, tt.user, tt.password, "edgepbx", challengeOf(t, r.(*sip.Response), alg), "sip:127.0.0.1", "00000001", "c")
				msg, _ = p.register(o)
				if !sv.path(sink.LocalAddr(), src, []byte(msg)) {
					t.Fatal("not handled statelessly")
				}
				answers[i][1] = recv()
				if !strings.HasPrefix(answers[i][1], fmt.Sprintf("SIP/2.0 %d ", tt.want)) {
					t.Fatalf("server %d: got\n%s", i, answers[i][1])
				}
			}
			for j := range answers[0] {
				// Source ports differ (one sink per server and exchange).
				f := norm.ReplaceAllString(portRE.ReplaceAllString(answers[0][j], ":P"), "")
				s := norm.ReplaceAllString(portRE.ReplaceAllString(answers[1][j], ":P"), "")
				if f != s {
					t.Fatalf("answer %d differs\nfast:\n%s\nslow:\n%s", j, answers[0][j], answers[1][j])
				}
			}
			fb, sb := fastSrv.Location().Lookup(time.Now(), tt.user), slowSrv.Location().Lookup(time.Now(), tt.user)
			if len(fb) != len(sb) {
				t.Fatalf("bindings: fast %+v, slow %+v", fb, sb)
			}
		})
	}
	fc, sc := fastSrv.Counters(), slowSrv.Counters()
	for _, k := range []string{"auth_ok", "auth_failed", "auth_challenged", "validate_passed"} {
		if fc[k] != sc[k] {
			t.Errorf("counter %s: fast %d, slow %d", k, fc[k], sc[k])
		}
	}
}

var portRE = regexp.MustCompile(`(:|rport=)\d+`)

// TestFastPathAllocations bounds the allocations of a challenge on the
// fast path (the nonce and the answer are written into reused buffers).
func TestFastPathAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	s := startServer(t, func(c *pbxconfig.SIP) {
		c.Algorithms = []string{AlgMD5}
		c.Allowlist = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	raddr, src := sink.LocalAddr(), netip.MustParseAddr("127.0.0.1")
	p := &phone{t: t, srv: s.udp, user: "101", tag: "t1", call: "c1", local: raddr.String()}
	msg, _ := p.register(regOpts{})
	data := []byte(msg)
	allocs := testing.AllocsPerRun(200, func() {
		if !s.statelessUDP(raddr, src, data) {
			t.Fatal("not handled")
		}
	})
	// WriteTo on a net.Addr converts it (1); nothing else may allocate.
	if allocs > 2 {
		t.Fatalf("%.1f allocations per challenge, want at most 2", allocs)
	}
}
