package sipedge

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
)

func TestRespCacheBounded(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name             string
		entries, bytes   int
		puts             int
		wantLen          int
		wantFirstLive    int // index of the oldest key still cached
		wantEvictedEarly uint64
	}{
		{"entries bound", 4, 1 << 20, 10, 4, 6, 6},
		{"byte bound", 100, 3 * (len("k0") + 10), 10, 3, 7, 7},
		{"under both", 100, 1 << 20, 10, 10, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newRespCache(tt.entries, tt.bytes, time.Minute)
			for i := 0; i < tt.puts; i++ {
				c.put(t0, fmt.Sprintf("k%d", i), []byte(fmt.Sprintf("answer-%03d", i)))
			}
			if n, _ := c.size(); n != tt.wantLen || len(c.m) != tt.wantLen {
				t.Fatalf("len %d (map %d), want %d", n, len(c.m), tt.wantLen)
			}
			for i := 0; i < tt.puts; i++ {
				res, ok := c.get(t0, fmt.Sprintf("k%d", i))
				if want := i >= tt.wantFirstLive; ok != want {
					t.Fatalf("k%d cached=%v, want %v", i, ok, want)
				}
				if ok && string(res) != fmt.Sprintf("answer-%03d", i) {
					t.Fatalf("k%d: got %q", i, res)
				}
			}
			if got := c.Counters.Evicted.Load(); got != tt.wantEvictedEarly {
				t.Fatalf("evicted %d, want %d", got, tt.wantEvictedEarly)
			}
			if _, b := c.size(); b > tt.bytes {
				t.Fatalf("%d bytes cached, bound %d", b, tt.bytes)
			}
		})
	}
	t.Run("expiry", func(t *testing.T) {
		c := newRespCache(8, 1<<20, time.Minute)
		c.put(t0, "old", []byte("a"))
		if _, ok := c.get(t0.Add(time.Minute), "old"); ok {
			t.Fatal("expired answer returned")
		}
		// An expired entry makes room without counting as an early eviction.
		c.put(t0.Add(2*time.Minute), "new", []byte("b"))
		if n, _ := c.size(); n != 1 || c.Counters.Evicted.Load() != 0 {
			t.Fatalf("len %d evicted %d", n, c.Counters.Evicted.Load())
		}
	})
	t.Run("oversize answer not kept", func(t *testing.T) {
		c := newRespCache(8, 16, time.Minute)
		c.put(t0, "k", make([]byte, 64))
		if _, ok := c.get(t0, "k"); ok || len(c.m) != 0 {
			t.Fatal("answer larger than the budget cached")
		}
	})
}

// authedRegister runs a challenge and returns the authenticated REGISTER
// (not yet sent) for password pw.
func authedRegister(t *testing.T, p *phone, pw string) string {
	t.Helper()
	msg, _ := p.register(regOpts{})
	p.send(msg)
	_, r := p.mustRecv()
	if r.StatusCode != 401 {
		t.Fatalf("challenge: %d", r.StatusCode)
	}
	auth, _ := p.register(regOpts{auth: authHeader(AlgMD5, p.user, pw, "edgepbx", challengeOf(t, r, AlgMD5), "sip:127.0.0.1", "00000001", randHex(4))})
	return auth
}

func countKind(l *logs.Log, k logs.Kind) int {
	n := 0
	for _, e := range l.Recent(1000) {
		if e.Kind == k {
			n++
		}
	}
	return n
}

// TestRetransmissionCachedAnswer: a retransmitted REGISTER gets the answer
// the first copy got, byte for byte, and is neither verified nor counted
// (or logged) again; this holds for a 200 and for a wrong password's 401.
func TestRetransmissionCachedAnswer(t *testing.T) {
	tests := []struct {
		name     string
		password string
		want     int
	}{
		{"accepted", testPassword, 200},
		{"wrong password", "wrong-password-1", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, func(c *pbxconfig.SIP) { c.Algorithms = []string{AlgMD5} })
			p := newPhone(t, s.udp, "127.0.0.21", "101")
			msg := authedRegister(t, p, tt.password)
			p.send(msg)
			first, r := p.mustRecv()
			if r.StatusCode != tt.want {
				t.Fatalf("first: %d, want %d", r.StatusCode, tt.want)
			}
			for i := 0; i < 3; i++ {
				p.send(msg)
				if again, _ := p.mustRecv(); again != first {
					t.Fatalf("retransmission %d answered differently:\n%s\nfirst:\n%s", i, again, first)
				}
			}
			c := s.Counters()
			if c["retrans_hits"] != 3 || c["auth_ok"]+c["auth_failed"] != 1 || c["stateful_requests"] != 0 {
				t.Fatalf("counters: %v", c)
			}
			if got := countKind(s.log, logs.KindRegister) + countKind(s.log, logs.KindAuthFailure); got != 1 {
				t.Fatalf("%d register/failure events, want 1", got)
			}
		})
	}
}

// TestRetransmissionAfterEviction: with the cache too small to keep the
// answer, a retransmission is recognised through the nonce table and gets
// the same outcome (200, binding unchanged), not a replay failure.
func TestRetransmissionAfterEviction(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) { c.Algorithms = []string{AlgMD5}; c.RetransmitCache = 1 })
	a := newPhone(t, s.udp, "127.0.0.22", "101")
	b := newPhone(t, s.udp, "127.0.0.23", "102")
	msgA := authedRegister(t, a, testPassword)
	a.send(msgA)
	if _, r := a.mustRecv(); r.StatusCode != 200 {
		t.Fatalf("A: %d", r.StatusCode)
	}
	msgB := authedRegister(t, b, testPassword)
	b.send(msgB)
	if _, r := b.mustRecv(); r.StatusCode != 200 {
		t.Fatalf("B: %d", r.StatusCode)
	}
	a.send(msgA)
	if _, r := a.mustRecv(); r.StatusCode != 200 {
		t.Fatalf("A's retransmission after eviction: %d, want 200", r.StatusCode)
	}
	c := s.Counters()
	if c["retrans_evicted"] == 0 || c["retrans_hits"] != 0 || c["auth_replayed"] != 0 || c["auth_failed"] != 0 {
		t.Fatalf("counters: %v", c)
	}
	if bs := s.Location().Lookup(s.now(), "101"); len(bs) != 1 || bs[0].CSeq != 2 {
		t.Fatalf("A's bindings: %+v", bs)
	}
	if n := countKind(s.log, logs.KindRegister); n != 2 {
		t.Fatalf("%d register events, want 2 (one per phone)", n)
	}
}

// TestRetransmissionAfterExpiry: once the answer and the retransmission
// window are gone (here shortened to 1 ns), the same bytes are a replay:
// challenged, logged, counted, and the binding is not touched.
func TestRetransmissionAfterExpiry(t *testing.T) {
	s := startServerTuned(t, func(c *pbxconfig.SIP) { c.Algorithms = []string{AlgMD5} }, nil, nil, func(s *Server) {
		s.retrans.ttl = time.Nanosecond
		s.auth.Nonces.retrans = time.Nanosecond
	})
	p := newPhone(t, s.udp, "127.0.0.24", "101")
	msg := authedRegister(t, p, testPassword)
	p.send(msg)
	if _, r := p.mustRecv(); r.StatusCode != 200 {
		t.Fatalf("first: %d", r.StatusCode)
	}
	before := s.Location().Lookup(s.now(), "101")
	p.send(msg)
	if _, r := p.mustRecv(); r.StatusCode != 401 {
		t.Fatalf("late retransmission: %d, want 401 (replay)", r.StatusCode)
	}
	if c := s.Counters(); c["auth_replayed"] != 1 || c["retrans_hits"] != 0 {
		t.Fatalf("counters: %v", c)
	}
	if countKind(s.log, logs.KindNonceReplay) != 1 || countKind(s.log, logs.KindRegister) != 1 {
		t.Fatal("replay not logged, or registered twice")
	}
	if after := s.Location().Lookup(s.now(), "101"); len(after) != 1 || after[0].Expires != before[0].Expires {
		t.Fatalf("binding changed by a replay: %+v -> %+v", before, after)
	}
}

// TestOutOfOrderStillRefused: a new transaction (new branch, fresh
// credentials) with the CSeq of the current binding is refused (RFC 3261
// §10.3 step 7); only a retransmission of the same transaction may repeat it.
func TestOutOfOrderStillRefused(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) { c.Algorithms = []string{AlgMD5} })
	p := newPhone(t, s.udp, "127.0.0.25", "101")
	if r, ok := p.registerAuth(AlgMD5, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("register: %v", r)
	}
	p.cseq = 0 // the next challenged REGISTER reuses CSeq 2 in the same Call-ID
	if r, ok := p.registerAuth(AlgMD5, testPassword); !ok || r.StatusCode != 500 {
		t.Fatalf("same CSeq, new transaction: %v, want 500", r)
	}
	p.cseq = 0
	msg, _ := p.register(regOpts{}) // CSeq 1 challenge
	p.send(msg)
	_, r := p.mustRecv()
	p.cseq = -1 // authenticated CSeq 0: below the binding's
	msg, _ = p.register(regOpts{auth: authHeader(AlgMD5, "101", testPassword, "edgepbx", challengeOf(t, r, AlgMD5), "sip:127.0.0.1", "00000001", "x")})
	p.send(msg)
	if _, r = p.mustRecv(); r.StatusCode != 500 {
		t.Fatalf("lower CSeq: %d, want 500", r.StatusCode)
	}
}

func TestContainsFold(t *testing.T) {
	tests := []struct {
		h, needle string
		want      bool
	}{
		{"friendly-scanner", "friendly-scanner", true},
		{"Friendly-SCANNER 1.0", "friendly-scanner", true},
		{"x VaxSIPUserAgent/3.1", "vaxsipuseragent", true},
		{"Yealink SIP-T46U", "sipvicious", false},
		{"sipviciou", "sipvicious", false},
		{"", "a", false},
		{"anything", "", true},
		{"ÜBER-Scanner", "über-scanner", true}, // non-ASCII needle: Unicode folding
	}
	for _, tt := range tests {
		if got := containsFold([]byte(tt.h), []byte(tt.needle)); got != tt.want {
			t.Errorf("containsFold(%q, %q) = %v, want %v", tt.h, tt.needle, got, tt.want)
		}
		// Same answer as the allocating form it replaces.
		if ref := strings.Contains(strings.ToLower(tt.h), tt.needle); ref != tt.want {
			t.Errorf("table wrong for %q/%q", tt.h, tt.needle)
		}
	}
}

// FuzzStatelessUDP feeds arbitrary datagrams to the stateless REGISTER path
// of a real server: it must not panic, must leave everything but REGISTERs
// to sipgo, and the retransmission cache must stay within its bounds.
func FuzzStatelessUDP(f *testing.F) {
	f.Add([]byte(benchRegister))
	f.Add([]byte(strings.Replace(benchRegister, "Authorization: Digest", "Authorization: Basic", 1)))
	f.Add([]byte("REGISTER sip:127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nf: <sip:1@127.0.0.1>;tag=1\r\nt: <sip:1@127.0.0.1>\r\ni: c\r\nCSeq: 1 REGISTER\r\nl: 0\r\n\r\n"))
	f.Add([]byte("OPTIONS sip:a SIP/2.0\r\n\r\n"))
	s := startServer(f, func(c *pbxconfig.SIP) {
		c.Allowlist = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		c.RetransmitCache = 8
	})
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sink.Close() })
	raddr, src := sink.LocalAddr(), netip.MustParseAddr("127.0.0.1")
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > s.cfg.MaxMessageBytes {
			return // stage 1 drops these before this path
		}
		done := s.statelessUDP(raddr, src, data)
		if done && !bytes.HasPrefix(data, registerPrefix) {
			t.Fatal("took a non-REGISTER datagram")
		}
		if n, b := s.retrans.size(); n > 8 || b > 8*retransEntryBytes {
			t.Fatalf("cache holds %d entries, %d bytes", n, b)
		}
	})
}
