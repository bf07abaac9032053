package sipedge

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/emiago/sipgo/sip"
)

// recordingBanner records bans as PID 1's control client would receive them.
type recordingBanner struct {
	mu   sync.Mutex
	bans []netfw.Ban
	got  chan netfw.Ban
}

func newRecordingBanner() *recordingBanner { return &recordingBanner{got: make(chan netfw.Ban, 64)} }

func (b *recordingBanner) Ban(_ context.Context, ban netfw.Ban) error {
	b.mu.Lock()
	b.bans = append(b.bans, ban)
	b.mu.Unlock()
	b.got <- ban
	return nil
}

type testServer struct {
	*Server
	banner *recordingBanner
	log    *logs.Log
	udp    *net.UDPAddr
}

const testPassword = "correct-horse-battery"

func testConfig() pbxconfig.SIP {
	c := pbxconfig.DefaultSIP()
	c.UDP, c.TCP, c.TLS, c.WSS = "127.0.0.1:0", "127.0.0.1:0", "", ""
	return c
}

func startServer(t testing.TB, mod func(*pbxconfig.SIP)) *testServer {
	t.Helper()
	return startServerWith(t, mod, nil)
}

// startServerWith also lets the test prepare the store (e.g. trunk secrets).
func startServerWith(t testing.TB, mod func(*pbxconfig.SIP), pre func(*store.DB)) *testServer {
	t.Helper()
	return startServerFull(t, mod, pre, nil)
}

func startServerWithTLS(t testing.TB, mod func(*pbxconfig.SIP), tc *tls.Config) *testServer {
	t.Helper()
	return startServerFull(t, mod, nil, tc)
}

func startServerFull(t testing.TB, mod func(*pbxconfig.SIP), pre func(*store.DB), tc *tls.Config) *testServer {
	t.Helper()
	return startServerTuned(t, mod, pre, tc, nil)
}

// startServerTuned also lets the test adjust the server between New and
// Serve (nothing reads it concurrently yet).
func startServerTuned(t testing.TB, mod func(*pbxconfig.SIP), pre func(*store.DB), tc *tls.Config, tune func(*Server)) *testServer {
	t.Helper()
	cfg := testConfig()
	if mod != nil {
		mod(&cfg)
	}
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(t.TempDir(), "edgepbx.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if pre != nil {
		pre(db)
	}
	lg, err := logs.New(db, 1000)
	if err != nil {
		t.Fatal(err)
	}
	b := newRecordingBanner()
	s, err := New(cfg, Deps{Store: db, Banner: b, Security: lg, TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"101", "102", "103"} {
		if err := s.Extensions().Set(u, testPassword); err != nil {
			t.Fatal(err)
		}
	}
	if tune != nil {
		tune(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{Server: s, banner: b, log: lg, udp: s.Addr("udp").(*net.UDPAddr)}
}

// phone is a minimal raw-UDP SIP client (siptest.Raw), so tests see the
// exact bytes.
type phone struct {
	t     testing.TB
	raw   *siptest.Raw
	srv   *net.UDPAddr
	user  string
	tag   string
	call  string
	cseq  int
	local string
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newPhone opens a UDP socket on localIP (any 127/8 address is local on Linux).
func newPhone(t testing.TB, srv *net.UDPAddr, localIP, user string) *phone {
	t.Helper()
	raw := siptest.NewRaw(t, "UDP", netip.MustParseAddr(localIP), srv.AddrPort())
	return &phone{t: t, raw: raw, srv: srv, user: user, tag: randHex(4), call: randHex(8), local: raw.Local()}
}

type regOpts struct {
	toUser    string
	expires   string
	auth      string
	userAgent string
	branch    string
}

func (p *phone) register(o regOpts) (msg, branch string) {
	p.cseq++
	to := p.user
	if o.toUser != "" {
		to = o.toUser
	}
	if o.expires == "" {
		o.expires = "600"
	}
	if o.userAgent == "" {
		o.userAgent = "testphone/1.0"
	}
	branch = o.branch
	if branch == "" {
		branch = "z9hG4bK" + randHex(8)
	}
	host := p.srv.IP.String()
	var b strings.Builder
	fmt.Fprintf(&b, "REGISTER sip:%s SIP/2.0\r\n", host)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=%s;rport\r\n", p.local, branch)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: \"Phone %s\" <sip:%s@%s>;tag=%s\r\n", p.user, p.user, host, p.tag)
	fmt.Fprintf(&b, "To: <sip:%s@%s>\r\n", to, host)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", p.call)
	fmt.Fprintf(&b, "CSeq: %d REGISTER\r\n", p.cseq)
	fmt.Fprintf(&b, "Contact: <sip:%s@%s>\r\n", p.user, p.local)
	fmt.Fprintf(&b, "Expires: %s\r\n", o.expires)
	fmt.Fprintf(&b, "User-Agent: %s\r\n", o.userAgent)
	if o.auth != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", o.auth)
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String(), branch
}

func (p *phone) send(msg string) {
	p.t.Helper()
	p.raw.Send(msg)
}

// recv returns the next response; ok is false when none came within the
// deadline (used only to avoid hanging, never to judge speed).
func (p *phone) recv() (raw string, res *sip.Response, ok bool) {
	p.t.Helper()
	b, _, err := p.raw.Read(3 * time.Second)
	if err != nil {
		return "", nil, false
	}
	m, err := sip.ParseMessage(b)
	if err != nil {
		p.t.Fatalf("unparsable answer: %v\n%s", err, b)
	}
	r, isRes := m.(*sip.Response)
	if !isRes {
		p.t.Fatalf("got a request, want a response:\n%s", b)
	}
	return string(b), r, true
}

func (p *phone) mustRecv() (string, *sip.Response) {
	p.t.Helper()
	raw, r, ok := p.recv()
	if !ok {
		p.t.Fatal("no answer from the server")
	}
	return raw, r
}

// exchange sends msg and retransmits it like RFC 3261 timer E (500 ms,
// doubling) until an answer comes; UDP under a flood may lose packets.
func (p *phone) exchange(msg string) (*sip.Response, bool) {
	p.t.Helper()
	wait := 500 * time.Millisecond
	for try := 0; try < 5; try++ {
		p.send(msg)
		b, _, err := p.raw.Read(wait)
		if err == nil {
			m, err := sip.ParseMessage(b)
			if r, ok := m.(*sip.Response); err == nil && ok {
				return r, true
			}
		}
		wait *= 2
	}
	return nil, false
}

// registerAuthRetrans is registerAuth with retransmissions.
func (p *phone) registerAuthRetrans(alg string) (*sip.Response, bool) {
	p.t.Helper()
	msg, _ := p.register(regOpts{})
	r, ok := p.exchange(msg)
	if !ok || r.StatusCode != 401 {
		return r, false
	}
	msg, _ = p.register(regOpts{auth: authHeader(alg, p.user, testPassword, "edgepbx", challengeOf(p.t, r, alg), "sip:"+p.srv.IP.String(), "00000001", randHex(4))})
	return p.exchange(msg)
}

// challengeOf extracts (nonce, algorithm) from the first challenge offering alg.
func challengeOf(t testing.TB, r *sip.Response, alg string) string {
	t.Helper()
	for _, h := range r.GetHeaders("WWW-Authenticate") {
		v := h.Value()
		if strings.Contains(v, "algorithm="+alg+",") || strings.HasSuffix(v, "algorithm="+alg) {
			i := strings.Index(v, `nonce="`)
			rest := v[i+7:]
			return rest[:strings.IndexByte(rest, '"')]
		}
	}
	t.Fatalf("no %s challenge in\n%s", alg, r)
	return ""
}

func authHeader(alg, user, password, realm, nonce, uri, nc, cnonce string) string {
	ha1 := HA1(alg, user, realm, password)
	c := Credentials{Username: user, Realm: realm, Nonce: nonce, URI: uri, NC: nc, CNonce: cnonce, QOP: "auth"}
	resp := digestResponse(alg, ha1, "REGISTER", c)
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=%s, cnonce="%s", qop=auth, nc=%s`,
		user, realm, nonce, uri, resp, alg, cnonce, nc)
}

// registerOK runs the full challenge/answer exchange and returns the final response.
func (p *phone) registerAuth(alg, password string) (*sip.Response, bool) {
	p.t.Helper()
	msg, _ := p.register(regOpts{})
	p.send(msg)
	_, r := p.mustRecv()
	if r.StatusCode != 401 {
		p.t.Fatalf("first REGISTER: got %d, want 401", r.StatusCode)
	}
	nonce := challengeOf(p.t, r, alg)
	msg, _ = p.register(regOpts{auth: authHeader(alg, p.user, password, "edgepbx", nonce, "sip:"+p.srv.IP.String(), "00000001", randHex(4))})
	p.send(msg)
	_, r, ok := p.recv()
	return r, ok
}

func srcAddr(ip string) netip.Addr { return netip.MustParseAddr(ip) }
