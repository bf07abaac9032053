package sipedge

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
)

// waitFor polls cond until it holds; the deadline only keeps a broken
// build from hanging, it judges nothing about speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// applyMod applies the running settings changed by mod.
func applyMod(t *testing.T, s *testServer, mod func(*pbxconfig.SIP)) []string {
	t.Helper()
	c := s.Settings()
	mod(&c)
	restart, err := s.Apply(c)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return restart
}

// TestApplyScannerAgent: a User-Agent listed while the edge runs is
// dropped from the next packet on.
func TestApplyScannerAgent(t *testing.T) {
	s := startServer(t, nil)
	p := newPhone(t, s.udp, "127.0.0.1", "101")
	msg, _ := p.register(regOpts{userAgent: "Evil-Dialer 2.0"})
	p.send(msg)
	if _, r := p.mustRecv(); r.StatusCode != 401 {
		t.Fatalf("before Apply: %d, want 401", r.StatusCode)
	}
	if r := applyMod(t, s, func(c *pbxconfig.SIP) { c.ScannerUserAgents = append(c.ScannerUserAgents, "evil-dialer") }); len(r) != 0 {
		t.Fatalf("scanner list reported as needing a restart: %v", r)
	}
	msg, _ = p.register(regOpts{userAgent: "Evil-Dialer 2.0"})
	p.send(msg)
	waitFor(t, "the scanner drop", func() bool { return s.filter.Counters.Scanner.Load() == 1 })
	// A phone keeps registering.
	if r, ok := newPhone(t, s.udp, "127.0.0.1", "102").registerAuth(AlgSHA256, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("phone after Apply: %v", r)
	}
}

// TestApplyGuardThreshold: a lowered failure threshold throttles a source
// for the extension on its next failure, counting the failures it made
// before the change, for the new time; throttles made are kept across a
// later Apply.
func TestApplyGuardThreshold(t *testing.T) {
	s := startServer(t, nil) // 3 failures per source and extension
	p := newPhone(t, s.udp, "127.0.0.7", "101")
	if r, ok := p.registerAuth(AlgSHA256, "wrong-password-1"); !ok || r.StatusCode != 401 {
		t.Fatalf("first failure: %v", r)
	}
	applyMod(t, s, func(c *pbxconfig.SIP) { c.Guard.MaxFailsPerSource = 2; c.Guard.AuthBan = 2 * time.Hour })
	if s.guard.Config().MaxFailsPerSource != 2 {
		t.Fatalf("guard config %+v", s.guard.Config())
	}
	if r, ok := p.registerAuth(AlgSHA256, "wrong-password-2"); !ok || r.StatusCode != 403 {
		t.Fatalf("second failure under the lowered threshold: %v", r)
	}
	th := s.guard.Throttles(time.Now())
	if len(th) != 1 || th[0].Source != netip.MustParsePrefix("127.0.0.7/32") || th[0].Until.Sub(th[0].Since) != 2*time.Hour {
		t.Fatalf("throttles %+v", th)
	}
	applyMod(t, s, func(c *pbxconfig.SIP) { c.Guard.MaxFailsPerSource = 5 })
	if !s.guard.Throttled(time.Now(), netip.MustParseAddr("127.0.0.7"), "101") {
		t.Fatal("throttle lost by Apply")
	}
}

// TestApplyPolicy: zones and domains switch for the next request.
func TestApplyPolicy(t *testing.T) {
	s := startServer(t, nil)
	p := newPhone(t, s.udp, "127.0.0.1", "101")
	applyMod(t, s, func(c *pbxconfig.SIP) { c.AllowedZones = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} })
	msg, _ := p.register(regOpts{})
	p.send(msg)
	waitFor(t, "the zone drop", func() bool { return s.policy.Counters.OutsideZone.Load() == 1 })
	applyMod(t, s, func(c *pbxconfig.SIP) {
		c.AllowedZones = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		c.Domains = []string{"pbx.example.org"}
	})
	p.send(msg)
	waitFor(t, "the domain drop", func() bool { return s.policy.Counters.ForeignDomain.Load() == 1 })
	applyMod(t, s, func(c *pbxconfig.SIP) { c.Domains = nil })
	if r, ok := p.registerAuth(AlgSHA256, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("after restoring the policy: %v", r)
	}
}

// TestApplyRegistrarBounds: bindings made stay; new bounds apply when the
// phone next registers.
func TestApplyRegistrarBounds(t *testing.T) {
	s := startServer(t, nil)
	p := newPhone(t, s.udp, "127.0.0.1", "101")
	if r, ok := p.registerAuth(AlgSHA256, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("register: %v", r)
	}
	applyMod(t, s, func(c *pbxconfig.SIP) { c.MinExpires = 15 * time.Minute; c.MaxExpires = 2 * time.Hour })
	if b := s.Location().Lookup(time.Now(), "101"); len(b) != 1 {
		t.Fatalf("binding lost by Apply: %+v", b)
	}
	// The phone's next refresh asks for 600 s: now too brief.
	msg, _ := p.register(regOpts{})
	p.send(msg)
	_, r := p.mustRecv()
	msg, _ = p.register(regOpts{auth: authHeader(AlgSHA256, "101", testPassword, "edgepbx", challengeOf(t, r, AlgSHA256), "sip:127.0.0.1", "00000001", "c3")})
	p.send(msg)
	if _, r = p.mustRecv(); r.StatusCode != 423 || r.GetHeader("Min-Expires").Value() != "900" {
		t.Fatalf("refresh under the new minimum: %d %v", r.StatusCode, r.GetHeader("Min-Expires"))
	}
	if got := s.Location().Limits(); got.MinExpires != 15*time.Minute || got.MaxExpires != 2*time.Hour || got.MaxContacts != 5 {
		t.Fatalf("limits %+v", got)
	}
}

// TestApplyMaxContacts: a lowered cap trims an extension's bindings at its
// next registration, oldest first.
func TestApplyMaxContacts(t *testing.T) {
	l := newLocation(5)
	now := time.Unix(1000, 0)
	src := netip.MustParseAddr("192.0.2.1")
	for i, c := range []string{"sip:a@x", "sip:b@x", "sip:c@x"} {
		l.Register(now.Add(time.Duration(i)*time.Second), "101", Binding{CallID: c, CSeq: 1}, []ContactUpdate{{Contact: c, Expires: time.Hour}}, false, src)
	}
	l.SetLimits(RegLimits{MinExpires: time.Minute, MaxExpires: time.Hour, MaxContacts: 2})
	if got := len(l.Lookup(now.Add(5*time.Second), "101")); got != 3 {
		t.Fatalf("bindings before the next REGISTER: %d, want 3 (kept)", got)
	}
	l.Register(now.Add(5*time.Second), "101", Binding{CallID: "d", CSeq: 1}, []ContactUpdate{{Contact: "sip:d@x", Expires: time.Hour}}, false, src)
	var got []string
	for _, b := range l.Lookup(now.Add(5*time.Second), "101") {
		got = append(got, b.Contact)
	}
	if !slices.Equal(got, []string{"sip:c@x", "sip:d@x"}) {
		t.Fatalf("after the next REGISTER: %v", got)
	}
}

// TestApplyTLSVersions: a raised minimum refuses TLS 1.2 on new
// connections while a TLS 1.2 connection made before stays up and served.
func TestApplyTLSVersions(t *testing.T) {
	cfg := testConfig()
	cfg.TLS = "127.0.0.1:0"
	s := startServerTLS(t, cfg, selfSigned(t))
	addr := s.Addr("tls").String()
	tls12 := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12}
	old, err := tls.Dial("tcp", addr, tls12)
	if err != nil {
		t.Fatalf("TLS 1.2 before Apply: %v", err)
	}
	defer old.Close()
	applyMod(t, s, func(c *pbxconfig.SIP) { c.TLSMin = "1.3" })
	if c, err := tls.Dial("tcp", addr, tls12); err == nil {
		c.Close()
		t.Fatal("TLS 1.2 handshake accepted after the minimum became 1.3")
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS 1.3 after Apply: %v", err)
	}
	defer c.Close()
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("negotiated %s", tls.VersionName(v))
	}
	if got := registerOverStream(t, old, "TLS"); got != "SIP/2.0 401 Unauthorized" {
		t.Fatalf("connection made before Apply: %q", got)
	}
	// And back: 1.2 is accepted again.
	applyMod(t, s, func(c *pbxconfig.SIP) { c.TLSMin = "1.2" })
	c2, err := tls.Dial("tcp", addr, tls12)
	if err != nil {
		t.Fatalf("TLS 1.2 after lowering the minimum again: %v", err)
	}
	c2.Close()
}

// TestApplyConnectionCaps: a lowered per-source cap refuses the next
// connection and leaves those already up alone.
func TestApplyConnectionCaps(t *testing.T) {
	s := startServer(t, nil)
	addr := s.Addr("tcp").String()
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if got := registerOverStream(t, first, "TCP"); got != "SIP/2.0 401 Unauthorized" {
		t.Fatalf("first connection: %q", got)
	}
	applyMod(t, s, func(c *pbxconfig.SIP) { c.MaxConnsPerSource = 1 })
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := second.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("second connection: read err %v, want EOF (refused)", err)
	}
	if got := registerOverStream(t, first, "TCP"); got != "SIP/2.0 401 Unauthorized" {
		t.Fatalf("first connection after Apply: %q", got)
	}
}

// TestApplyRefused: what cannot change live is refused or reported, and a
// refused Apply changes nothing.
func TestApplyRefused(t *testing.T) {
	s := startServer(t, nil)
	before := s.Settings()
	tests := []struct {
		name string
		mod  func(*pbxconfig.SIP)
		want error
	}{
		{"listen address", func(c *pbxconfig.SIP) { c.UDP = "127.0.0.1:5999"; c.ScannerUserAgents = []string{"evil"} }, ErrNeedsRestart},
		{"invalid", func(c *pbxconfig.SIP) { c.Guard.RateLimit = 0; c.ScannerUserAgents = []string{"evil"} }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := s.Settings()
			tc.mod(&c)
			_, err := s.Apply(c)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Apply: %v, want %v", err, tc.want)
			}
			if got := s.filter.Check(netip.MustParseAddr("127.0.0.1"), "UDP", []byte("OPTIONS sip:x SIP/2.0\r\nUser-Agent: evil\r\n\r\n")); got == nil {
				t.Fatal("refused Apply changed the read filter")
			}
			if got := s.Settings(); !slices.Equal(got.ScannerUserAgents, before.ScannerUserAgents) || got.Guard != before.Guard {
				t.Fatal("refused Apply changed the settings")
			}
		})
	}
	restart := applyMod(t, s, func(c *pbxconfig.SIP) {
		c.Algorithms = []string{AlgSHA256}
		c.NonceTTL = time.Minute
		c.MaxMessageBytes = 4096
		c.Guard.RateLimit = 500
	})
	if !slices.Equal(restart, []string{"max_message_bytes", "algorithms", "nonce_ttl"}) {
		t.Fatalf("restart fields %v", restart)
	}
	if s.guard.Config().RateLimit != 500 {
		t.Fatal("live part not applied alongside restart-only fields")
	}
	// Back to the start values: nothing pending any more.
	if restart := applyMod(t, s, func(c *pbxconfig.SIP) { *c = before }); len(restart) != 0 {
		t.Fatalf("restart fields after reverting: %v", restart)
	}
}

// TestApplyUnderTraffic switches settings back and forth while phones
// register over UDP and TCP: under -race this checks that every stage
// reads its settings safely, and every phone keeps registering.
func TestApplyUnderTraffic(t *testing.T) {
	s := startServer(t, nil)
	a, b := s.Settings(), s.Settings()
	b.ScannerUserAgents = append(b.ScannerUserAgents, "other-dialer")
	b.Guard.RateLimit, b.MaxContacts, b.MaxConnsPerSource, b.IdleTimeout = 900, 4, 32, time.Minute
	b.Domains = []string{"127.0.0.1"}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			next := a
			if i%2 == 1 {
				next = b
			}
			if _, err := s.Apply(next); err != nil {
				done <- err
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		p := newPhone(t, s.udp, "127.0.0.1", "101")
		if r, ok := p.registerAuthRetrans(AlgSHA256); !ok || r.StatusCode != 200 {
			close(stop)
			t.Fatalf("register %d during Apply: %v", i, r)
		}
		c, err := net.Dial("tcp", s.Addr("tcp").String())
		if err != nil {
			t.Fatal(err)
		}
		if got := registerOverStream(t, c, "TCP"); got != "SIP/2.0 401 Unauthorized" {
			t.Fatalf("TCP %d during Apply: %q", i, got)
		}
		c.Close()
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
