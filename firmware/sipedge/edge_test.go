package sipedge

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/emiago/sipgo/sip"
)

func TestRegisterDigest(t *testing.T) {
	for _, alg := range []string{AlgSHA256, AlgMD5} {
		t.Run(alg, func(t *testing.T) {
			s := startServer(t, nil)
			p := newPhone(t, s.udp, "127.0.0.1", "101")
			r, ok := p.registerAuth(alg, testPassword)
			if !ok || r.StatusCode != 200 {
				t.Fatalf("REGISTER with %s: %v", alg, r)
			}
			if b := s.Location().Lookup(s.now(), "101"); len(b) != 1 || b[0].UserAgent != "testphone/1.0" {
				t.Fatalf("bindings: %+v", b)
			}
			// Re-register, then unregister with Expires: 0.
			if r, ok := p.registerAuth(alg, testPassword); !ok || r.StatusCode != 200 {
				t.Fatalf("re-REGISTER: %v", r)
			}
			msg, _ := p.register(regOpts{expires: "0"})
			p.send(msg)
			_, r = p.mustRecv()
			nonce := challengeOf(t, r, alg)
			msg, _ = p.register(regOpts{expires: "0", auth: authHeader(alg, "101", testPassword, "edgepbx", nonce, "sip:127.0.0.1", "00000001", "c1")})
			p.send(msg)
			if _, r = p.mustRecv(); r.StatusCode != 200 {
				t.Fatalf("unregister: %d", r.StatusCode)
			}
			if b := s.Location().Lookup(s.now(), "101"); len(b) != 0 {
				t.Fatalf("still bound after unregister: %+v", b)
			}
			kinds := map[logs.Kind]int{}
			for _, e := range s.log.Recent(100) {
				kinds[e.Kind]++
				if e.Kind == logs.KindRegister && (e.User != "101" || e.Display != "Phone 101" || e.Transport != "UDP") {
					t.Errorf("register event incomplete: %+v", e)
				}
			}
			if kinds[logs.KindRegister] != 2 || kinds[logs.KindUnregister] != 1 {
				t.Fatalf("security log: %v", kinds)
			}
		})
	}
}

func TestRegisterExpiryBounds(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) { c.MaxContacts = 2 })
	p := newPhone(t, s.udp, "127.0.0.1", "102")
	exchange := func(o regOpts) int {
		msg, _ := p.register(o)
		p.send(msg)
		_, r := p.mustRecv()
		o.auth = authHeader(AlgSHA256, "102", testPassword, "edgepbx", challengeOf(t, r, AlgSHA256), "sip:127.0.0.1", "00000001", "c")
		msg, _ = p.register(o)
		p.send(msg)
		_, r = p.mustRecv()
		return r.StatusCode
	}
	if got := exchange(regOpts{expires: "5"}); got != 423 {
		t.Fatalf("expires 5: got %d, want 423", got)
	}
	if got := exchange(regOpts{expires: "999999"}); got != 200 {
		t.Fatalf("expires 999999: got %d", got)
	}
	b := s.Location().Lookup(s.now(), "102")
	if len(b) != 1 || b[0].Expires.Sub(s.now()) > s.cfg.MaxExpires {
		t.Fatalf("expiry not clamped: %+v", b)
	}
	// Another extension's AOR with 102's credentials is refused.
	if got := exchange(regOpts{toUser: "101"}); got != 403 {
		t.Fatalf("foreign AOR: got %d, want 403", got)
	}
}

var perRequest = regexp.MustCompile(`(?m)^(Via|From|To|Call-ID|CSeq): .*\r\n`)
var nonceRE = regexp.MustCompile(`nonce="[^"]*"`)

func normalize(raw string) string {
	return nonceRE.ReplaceAllString(perRequest.ReplaceAllString(raw, ""), `nonce="N"`)
}

// TestEnumerationIdentical: svwar and friends compare the answers for a
// known and an unknown extension; they must not differ.
func TestEnumerationIdentical(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) { c.Allowlist = nil; c.Guard.MaxFailsPerSource = 100 })
	answers := func(user string) (noAuth, wrongPw string) {
		p := newPhone(t, s.udp, "127.0.0.1", user)
		msg, _ := p.register(regOpts{})
		p.send(msg)
		raw, r := p.mustRecv()
		nonce := challengeOf(t, r, AlgSHA256)
		msg, _ = p.register(regOpts{auth: authHeader(AlgSHA256, user, "wrong-password-123", "edgepbx", nonce, "sip:127.0.0.1", "00000001", "c")})
		p.send(msg)
		raw2, _ := p.mustRecv()
		return raw, raw2
	}
	k1, k2 := answers("101")
	u1, u2 := answers("nosuchuser")
	// The stateless challenge (no credentials) and the stateful one (wrong
	// password) have the same form too.
	for _, c := range []struct{ name, known, unknown string }{{"no credentials", k1, u1}, {"wrong password", k2, u2}, {"stateless vs stateful", k1, k2}} {
		if normalize(c.known) != normalize(c.unknown) {
			t.Errorf("%s: answers differ\nknown:\n%s\nunknown:\n%s", c.name, c.known, c.unknown)
		}
		if !strings.HasPrefix(c.known, "SIP/2.0 401 ") {
			t.Errorf("%s: not a 401:\n%s", c.name, c.known)
		}
	}
}

func TestNonceReplayRejected(t *testing.T) {
	s := startServer(t, nil)
	p := newPhone(t, s.udp, "127.0.0.1", "101")
	msg, _ := p.register(regOpts{})
	p.send(msg)
	_, r := p.mustRecv()
	nonce := challengeOf(t, r, AlgMD5)
	auth := authHeader(AlgMD5, "101", testPassword, "edgepbx", nonce, "sip:127.0.0.1", "00000001", "cn")
	msg, _ = p.register(regOpts{auth: auth})
	p.send(msg)
	if _, r = p.mustRecv(); r.StatusCode != 200 {
		t.Fatalf("first use: %d", r.StatusCode)
	}
	// Same nonce and nc in a new transaction: svcrack --reusenonce, or a replayed capture.
	msg, _ = p.register(regOpts{auth: auth})
	p.send(msg)
	if _, r = p.mustRecv(); r.StatusCode != 401 {
		t.Fatalf("replay: got %d, want 401", r.StatusCode)
	}
	// The same nonce with a higher nc is legitimate (RFC 7616 §3.4).
	msg, _ = p.register(regOpts{auth: authHeader(AlgMD5, "101", testPassword, "edgepbx", nonce, "sip:127.0.0.1", "00000002", "cn")})
	p.send(msg)
	if _, r = p.mustRecv(); r.StatusCode != 200 {
		t.Fatalf("nc=2: got %d, want 200", r.StatusCode)
	}
	found := false
	for _, e := range s.log.Recent(50) {
		found = found || e.Kind == logs.KindNonceReplay
	}
	if !found {
		t.Fatal("no nonce_replay event")
	}
}

// guess sends one REGISTER for user with a wrong password on a fresh
// challenge and returns the answer (ok false: silence).
func (p *phone) guess(user string) (*sip.Response, bool) {
	p.t.Helper()
	msg, _ := p.register(regOpts{toUser: user})
	p.send(msg)
	_, r := p.mustRecv()
	nonce := challengeOf(p.t, r, AlgMD5)
	msg, _ = p.register(regOpts{toUser: user, auth: authHeader(AlgMD5, user, "guess-"+randHex(3), "edgepbx", nonce, "sip:"+p.srv.IP.String(), "00000001", "c")})
	p.send(msg)
	_, r, ok := p.recv()
	return r, ok
}

// TestMistypedPasswordThrottles: a phone with a mistyped password, three
// times, is throttled for that extension from that address (403), not
// banned: nothing reaches the firewall, another extension registers from
// the same address (an office NAT), and the admin sees the throttle and
// lifts it.
func TestMistypedPasswordThrottles(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) { c.Allowlist = nil })
	if err := s.Extensions().Set("102", testPassword); err != nil {
		t.Fatal(err)
	}
	p := newPhone(t, s.udp, "127.0.0.4", "101")
	for i, want := range []int{401, 401, 403} {
		r, ok := p.guess("101")
		if !ok || r.StatusCode != want {
			t.Fatalf("try %d: %v, want %d", i+1, r, want)
		}
	}
	// Now even the right password is refused for 101 from here, without
	// telling whether it was right.
	if r, ok := p.registerAuth(AlgMD5, testPassword); !ok || r.StatusCode != 403 {
		t.Fatalf("throttled extension: %v", r)
	}
	if c := s.Counters(); c["auth_failed"] != 3 || c["guard_auth_bans"] != 0 || c["guard_throttles"] != 1 {
		t.Fatalf("counters: %v", c)
	}
	select {
	case b := <-s.banner.got:
		t.Fatalf("banned %v", b)
	default:
	}
	other := newPhone(t, s.udp, "127.0.0.4", "102")
	if r, ok := other.registerAuth(AlgMD5, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("other extension from the same address: %v", r)
	}
	bl := s.Blocks()
	if len(bl) != 1 || bl[0].User != "101" || bl[0].Source.String() != "127.0.0.4/32" {
		t.Fatalf("blocks: %+v", bl)
	}
	if _, n := s.Lift(bl[0].Source, "101"); n != 1 {
		t.Fatalf("lift ended %d throttles", n)
	}
	if r, ok := p.registerAuth(AlgMD5, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("after lift: %v", r)
	}
}

// TestScanBanned: one address failing for many extensions is a scan: it
// is banned as one host (Banner gets the /32), while a phone from another
// address keeps registering, and the admin sees and lifts the ban.
func TestScanBanned(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) { c.Allowlist = nil })
	atk := newPhone(t, s.udp, "127.0.0.6", "101")
	for i := 0; i < 5; i++ {
		r, ok := atk.guess(fmt.Sprint(200 + i))
		if i < 4 && (!ok || r.StatusCode != 401) {
			t.Fatalf("guess %d: %v", i, r)
		}
		if i == 4 && ok {
			t.Fatalf("fifth extension answered (%d); want silence and a ban", r.StatusCode)
		}
	}
	b := <-s.banner.got
	if b.Prefix.String() != "127.0.0.6/32" || b.Reason != "sip-scan" || b.Timeout != s.cfg.Guard.AuthBan {
		t.Fatalf("ban: %+v", b)
	}
	msg, _ := atk.register(regOpts{})
	atk.send(msg)
	if _, r, ok := atk.recv(); ok {
		t.Fatalf("banned source answered: %d", r.StatusCode)
	}
	good := newPhone(t, s.udp, "127.0.0.5", "101")
	if r, ok := good.registerAuth(AlgSHA256, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("legitimate phone: %v", r)
	}
	if bl := s.Blocks(); len(bl) != 1 || bl[0].Reason != "sip-scan" || bl[0].User != "" {
		t.Fatalf("blocks: %+v", bl)
	}
	if n, _ := s.Lift(netip.MustParsePrefix("127.0.0.6/32"), ""); n != 1 {
		t.Fatalf("lift ended %d bans", n)
	}
	if r, ok := atk.exchange(func() string { m, _ := atk.register(regOpts{}); return m }()); !ok || r.StatusCode != 401 {
		t.Fatalf("after lift: %v", r)
	}
}

// TestForgedNonceNotCharged: REGISTERs with made-up nonces, nonces issued
// to another address and stale nonces, any number of them, neither ban nor
// throttle the address they carry; the phone there still registers.
func TestForgedNonceNotCharged(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) { c.Allowlist = nil })
	victim := newPhone(t, s.udp, "127.0.0.7", "101")
	foreign := s.auth.Nonces.Issue(time.Now(), srcAddr("127.0.0.8"))
	old := s.auth.Nonces.Issue(time.Now().Add(-time.Hour), srcAddr("127.0.0.7"))
	for i := 0; i < 10; i++ {
		for _, nonce := range []string{strings.Repeat("A", nonceLen), foreign, old} {
			msg, _ := victim.register(regOpts{auth: authHeader(AlgMD5, "101", "guess", "edgepbx", nonce, "sip:127.0.0.1", "00000001", "c")})
			victim.send(msg)
			if _, r := victim.mustRecv(); r.StatusCode != 401 {
				t.Fatalf("forged nonce answered %d", r.StatusCode)
			}
		}
	}
	if c := s.Counters(); c["auth_failed"] != 0 || c["guard_throttles"] != 0 || c["guard_auth_bans"] != 0 || c["auth_forged"] != 20 || c["auth_stale"] != 10 {
		t.Fatalf("counters: %v", c)
	}
	if r, ok := victim.registerAuth(AlgMD5, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("victim: %v", r)
	}
}

// TestScannerDropped: a friendly-scanner packet gets no answer; the next
// packet's answer is the first thing the socket sees.
func TestScannerDropped(t *testing.T) {
	s := startServer(t, nil)
	p := newPhone(t, s.udp, "127.0.0.1", "101")
	msg, _ := p.register(regOpts{userAgent: "friendly-scanner"})
	p.send(msg)
	p.cseq = 10
	msg, probe := p.register(regOpts{})
	p.send(msg)
	_, r := p.mustRecv()
	if v := r.Via(); v == nil || v.Params.GetOr("branch", "") != probe {
		t.Fatalf("first answer is not for the probe: %s", r)
	}
	if got := s.filter.Counters.Scanner.Load(); got != 1 {
		t.Fatalf("scanner counter %d, want 1", got)
	}
}

// TestFloodLimitedOfficeNot: an office of 100 phones behind one NAT
// address registering together is not limited; one UDP source inside the
// zones flooding is limited in process, not banned (a UDP address is no
// evidence: see TestSpoofedFloodNotBanned), and other phones register.
func TestFloodLimitedOfficeNot(t *testing.T) {
	s := startServer(t, nil)
	office := newPhone(t, s.udp, "127.0.0.6", "101")
	for i := 0; i < 100; i++ {
		if r, ok := office.registerAuth(AlgSHA256, testPassword); !ok || r.StatusCode != 200 {
			t.Fatalf("office phone %d: %v", i, r)
		}
		office.call = randHex(8) // next phone: new dialog
	}
	if s.bans.Banned(s.now(), srcAddr("127.0.0.6")) {
		t.Fatal("office NAT address banned")
	}

	flood := newPhone(t, s.udp, "127.0.0.7", "103")
	opts := "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.7:9;branch=z9hG4bKflood\r\nMax-Forwards: 70\r\nFrom: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: f\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	// 127.0.0.7 is inside the zones and speaks UDP: its address proves
	// nothing, so its flood is limited in process, never banned.
	for i := 0; i < 50 && s.guard.Counters.FloodLimited.Load() == 0; i++ {
		for j := 0; j < 100; j++ {
			flood.send(opts)
		}
		// A probe whose answer (401) orders us after the batch in the reader.
		msg, _ := flood.register(regOpts{})
		flood.send(msg)
		flood.recv()
	}
	if s.guard.Counters.FloodLimited.Load() == 0 || s.guard.Counters.FloodDropped.Load() == 0 {
		t.Fatalf("flood not limited: %v", s.Counters())
	}
	select {
	case b := <-s.banner.got:
		t.Fatalf("UDP flood from inside the zones banned: %+v", b)
	default:
	}
	if s.bans.Banned(s.now(), srcAddr("127.0.0.7")) {
		t.Fatal("UDP flood from inside the zones banned in process")
	}
	good := newPhone(t, s.udp, "127.0.0.8", "102")
	if r, ok := good.registerAuth(AlgMD5, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("legitimate phone during the flood: %v", r)
	}
}

func TestOptionsOnlyToRegisteredOrTrunk(t *testing.T) {
	s := startServer(t, nil)
	p := newPhone(t, s.udp, "127.0.0.9", "101")
	opts := func() string {
		return "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP " + p.local + ";branch=z9hG4bK" + randHex(6) +
			"\r\nMax-Forwards: 70\r\nFrom: <sip:101@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: " + randHex(6) +
			"\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	}
	p.send(opts())
	msg, probe := p.register(regOpts{})
	p.send(msg)
	_, r := p.mustRecv()
	if r.Via().Params.GetOr("branch", "") != probe {
		t.Fatalf("unregistered source got an OPTIONS answer: %s", r)
	}
	if r, ok := p.registerAuth(AlgSHA256, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("register: %v", r)
	}
	p.send(opts())
	if _, r := p.mustRecv(); r.StatusCode != 200 {
		t.Fatalf("registered source OPTIONS: %d", r.StatusCode)
	}
}

func TestForeignDomainIgnored(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) { c.Domains = []string{"pbx.example.com"} })
	p := newPhone(t, s.udp, "127.0.0.1", "101")
	foreign := "REGISTER sip:evil.example.net SIP/2.0\r\nVia: SIP/2.0/UDP " + p.local + ";branch=z9hG4bKforeign\r\nMax-Forwards: 70\r\nFrom: <sip:101@evil.example.net>;tag=1\r\nTo: <sip:101@evil.example.net>\r\nCall-ID: fd\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
	p.send(foreign)
	ours := strings.NewReplacer("evil.example.net", "pbx.example.com", "z9hG4bKforeign", "z9hG4bKours").Replace(foreign)
	p.send(ours)
	_, r := p.mustRecv()
	if r.Via().Params.GetOr("branch", "") != "z9hG4bKours" || r.StatusCode != 401 {
		t.Fatalf("want only the served domain answered, got %s", r)
	}
	if s.policy.Counters.ForeignDomain.Load() != 1 {
		t.Fatal("foreign domain not counted")
	}
}

// TestNonceFloodOtherPhonesRegister: one valid credential taking fresh
// nonces without pause (far more than the nonce-count table holds) while
// other phones keep registering: every REGISTER of every phone succeeds,
// and nothing is banned or throttled. The table here is tiny (32 slots) so
// the flood overfills it many times; before, a full table answered every
// new nonce as a replay, charged it as a failure and banned the phones.
func TestNonceFloodOtherPhonesRegister(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) { c.Allowlist = nil; c.Guard.MaxTracked = 16 })
	const phones, rounds, flood = 6, 5, 300
	for i := 0; i < phones; i++ {
		if err := s.Extensions().Set(fmt.Sprint(110+i), testPassword); err != nil {
			t.Fatal(err)
		}
	}
	fl := newPhone(t, s.udp, "127.0.0.30", "101")
	done := make(chan error, 1)
	go func() {
		for i := 0; i < flood; i++ {
			if r, ok := fl.registerAuthRetrans(AlgMD5); !ok || r.StatusCode != 200 {
				done <- fmt.Errorf("flooding extension, REGISTER %d: %v", i, r)
				return
			}
		}
		done <- nil
	}()
	ps := make([]*phone, phones)
	for i := range ps {
		ps[i] = newPhone(t, s.udp, fmt.Sprintf("127.0.1.%d", 10+i), fmt.Sprint(110+i))
	}
	for round := 0; round < rounds; round++ {
		for _, p := range ps {
			if r, ok := p.registerAuthRetrans(AlgMD5); !ok || r.StatusCode != 200 {
				t.Fatalf("round %d, phone %s: %v (counters %v)", round, p.user, r, s.Counters())
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c := s.Counters()
	if c["auth_failed"] != 0 || c["auth_replayed"] != 0 || c["guard_auth_bans"] != 0 || c["guard_throttles"] != 0 || len(s.Blocks()) != 0 {
		t.Fatalf("counters: %v, blocks %v", c, s.Blocks())
	}
	if c["auth_nonce_evicted"] == 0 {
		t.Fatalf("the flood never filled the table: %v", c)
	}
}
