package sip

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/config"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// holeLog records pinholes (PID 1's firewall is not part of this test;
// the netns tests of firmware/media cover the nft side).
type holeLog struct {
	mu   sync.Mutex
	open map[netfw.Pinhole]bool
}

func (h *holeLog) OpenPinhole(_ context.Context, p netfw.Pinhole) error {
	h.mu.Lock()
	h.open[p] = true
	h.mu.Unlock()
	return nil
}

func (h *holeLog) ClosePinhole(_ context.Context, p netfw.Pinhole) error {
	h.mu.Lock()
	delete(h.open, p)
	h.mu.Unlock()
	return nil
}

func (h *holeLog) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.open)
}

// startCalls builds a real B2BUA on the edge s (relay on loopback, dial
// plan with 101-103, CDRs in db).
func startCalls(t testing.TB, s *Server, db *store.DB) (*call.B2BUA, *holeLog, chan cdr.Record) {
	t.Helper()
	holes := &holeLog{open: map[netfw.Pinhole]bool{}}
	ports, err := media.NewPorts(42000, 42999)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	relay, err := media.NewRelay(media.Config{Addr: netip.MustParseAddr("127.0.0.1"), Ports: ports, Pinholes: holes, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := dialplan.New(dialplan.Plan{Country: "DE",
		Extensions: []dialplan.Extension{{Number: "101"}, {Number: "102"}, {Number: "103"}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan cdr.Record, 16)
	b, err := call.New(call.Config{Client: s.Client(), Contact: s.Contact("udp"), Relay: relay, Plan: plan,
		Directory: s.Directory(nil), CDR: cdr.New(db), Log: quiet,
		Ended: func(r cdr.Record, _ media.Stats) { ended <- r }})
	if err != nil {
		t.Fatal(err)
	}
	s.SetCalls(b)
	t.Cleanup(func() { _ = b.Close() })
	return b, holes, ended
}

// TestCallThroughEdge: two sipgo phones register with digest, 101 calls
// 102 through the edge and the B2BUA, RTP flows, BYE ends the call, the
// CDR is written and nothing is left open.
func TestCallThroughEdge(t *testing.T) {
	var db *store.DB
	var b *call.B2BUA
	var holes *holeLog
	var ended chan cdr.Record
	s := startServerTuned(t, nil, func(d *store.DB) { db = d }, nil, func(s *Server) { b, holes, ended = startCalls(t, s, db) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, c := newUAPhone(t, "101", testPassword), newUAPhone(t, "102", testPassword)
	a.register(ctx, "127.0.0.1", s.udp.Port)
	c.register(ctx, "127.0.0.1", s.udp.Port)

	d, boxA, err := a.dial(ctx, "127.0.0.1", s.udp.Port, "102")
	if err != nil {
		t.Fatal(err)
	}
	var inv *sip.Request
	select {
	case inv = <-c.answered:
	case <-ctx.Done():
		t.Fatal("callee never rang")
	}
	if strings.Contains(string(inv.Body()), "RTP/SAVP") {
		t.Fatalf("best-effort SRTP offer is RTP/SAVP (plain phones answer 488):\n%s", inv.Body())
	}
	boxC, err := mediaAddr(inv.Body())
	if err != nil {
		t.Fatal(err)
	}
	// Both directions: the relay learns each side's peer from the SDP.
	sendRTPUntil(ctx, t, a, c, boxA, 20)
	sendRTPUntil(ctx, t, c, a, boxC, 20)
	if holes.count() == 0 {
		t.Fatal("no pinholes open during the call")
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.byes:
	case <-ctx.Done():
		t.Fatal("callee got no BYE")
	}
	select {
	case r := <-ended:
		if r.From != "101" || r.To != "102" || r.Result != cdr.Answered {
			t.Fatalf("CDR %+v", r)
		}
	case <-ctx.Done():
		t.Fatal("no CDR")
	}
	if b.Active() != 0 || holes.count() != 0 {
		t.Fatalf("left: %d calls, %d pinholes", b.Active(), holes.count())
	}
}

// TestInviteChallenged: an INVITE without credentials, or with a wrong
// password or an unknown user, gets the same 401 as a REGISTER would.
func TestInviteChallenged(t *testing.T) {
	for _, tc := range []struct{ name, user, pass string }{
		{"wrong password", "101", "wrong-password-1"}, {"unknown user", "999", testPassword},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var db *store.DB
			s := startServerTuned(t, nil, func(d *store.DB) { db = d }, nil, func(s *Server) { startCalls(t, s, db) })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			p := newUAPhone(t, tc.user, tc.pass)
			_, _, err := p.dial(ctx, "127.0.0.1", s.udp.Port, "102")
			var e *sipgo.ErrDialogResponse
			if !errors.As(err, &e) || e.Res.StatusCode != 401 {
				t.Fatalf("want 401, got %v", err)
			}
		})
	}
	var db *store.DB
	s := startServerTuned(t, nil, func(d *store.DB) { db = d }, nil, func(s *Server) { startCalls(t, s, db) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// In-dialog requests of unknown dialogs are not challenged: 481.
	p := newUAPhone(t, "101", testPassword)
	bye := sip.NewRequest(sip.BYE, sip.Uri{Scheme: "sip", User: "102", Host: "127.0.0.1", Port: s.udp.Port})
	bye.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "102", Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: "nope"}}})
	bye.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: "x"}}})
	res, err := p.client.Do(ctx, bye)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 481 {
		t.Fatalf("BYE of an unknown dialog: %s", res.StartLine())
	}
}

// uaPhone is a real sipgo phone on loopback that registers with digest,
// answers calls with plain RTP/AVP PCMU and counts RTP arriving at its
// media socket.
type uaPhone struct {
	t        testing.TB
	user     string
	pass     string
	host     string
	port     int
	client   *sipgo.Client
	calls    *sipgo.DialogClientCache
	answers  *sipgo.DialogServerCache
	rtp      *net.UDPConn
	answered chan *sip.Request // INVITEs answered with 200
	byes     chan *sip.Request
	rtpIn    chan []byte
}

func newUAPhone(t testing.TB, user, pass string) *uaPhone {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rtp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ua_ := conn.LocalAddr().(*net.UDPAddr)
	p := &uaPhone{t: t, user: user, pass: pass, host: "127.0.0.1", port: ua_.Port, rtp: rtp,
		answered: make(chan *sip.Request, 4), byes: make(chan *sip.Request, 4), rtpIn: make(chan []byte, 256)}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-phone"),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if p.client, err = sipgo.NewClient(ua, sipgo.WithClientHostname(p.host), sipgo.WithClientPort(p.port), sipgo.WithClientLogger(quiet)); err != nil {
		t.Fatal(err)
	}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: p.host, Port: p.port}}
	p.calls = sipgo.NewDialogClientCache(p.client, contact)
	p.answers = sipgo.NewDialogServerCache(p.client, contact)
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		d, err := p.answers.ReadInvite(req, tx)
		if err != nil {
			return
		}
		_ = d.Respond(200, "OK", p.sdp(), sip.NewHeader("Content-Type", "application/sdp"))
		p.answered <- req
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = p.answers.ReadAck(req, tx) })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := p.calls.ReadBye(req, tx); err != nil {
			_ = p.answers.ReadBye(req, tx)
		}
		p.byes <- req
	})
	go func() { _ = srv.ServeUDP(conn) }()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, err := rtp.Read(buf)
			if err != nil {
				return
			}
			select {
			case p.rtpIn <- append([]byte(nil), buf[:n]...):
			default:
			}
		}
	}()
	t.Cleanup(func() { _ = ua.Close(); _ = conn.Close(); _ = rtp.Close() })
	return p
}

func (p *uaPhone) sdp() []byte {
	return []byte("v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		fmt.Sprintf("m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", p.rtp.LocalAddr().(*net.UDPAddr).Port))
}

// register binds p's contact at the edge (host:port), answering the
// digest challenge.
func (p *uaPhone) register(ctx context.Context, edgeHost string, edgePort int) {
	p.t.Helper()
	aor := sip.Uri{Scheme: "sip", User: p.user, Host: edgeHost}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: edgeHost, Port: edgePort})
	req.AppendHeader(&sip.ToHeader{Address: aor})
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(sip.NewHeader("Contact", fmt.Sprintf("<sip:%s@%s:%d>", p.user, p.host, p.port)))
	req.AppendHeader(sip.NewHeader("Expires", "300"))
	res, err := p.client.Do(ctx, req)
	if err != nil {
		p.t.Fatal(err)
	}
	if res.StatusCode == 401 {
		if res, err = p.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: p.user, Password: p.pass}); err != nil {
			p.t.Fatal(err)
		}
	}
	if res.StatusCode != 200 {
		p.t.Fatalf("register %s: %s", p.user, res.StartLine())
	}
}

// dial calls number at the edge with digest credentials and waits for the
// answer; it returns the dialog and the box's media address from the SDP.
func (p *uaPhone) dial(ctx context.Context, edgeHost string, edgePort int, number string) (*sipgo.DialogClientSession, *net.UDPAddr, error) {
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: p.user, Host: edgeHost}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	d, err := p.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: number, Host: edgeHost, Port: edgePort}, p.sdp(),
		from, sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		return nil, nil, err
	}
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{Username: p.user, Password: p.pass}); err != nil {
		return d, nil, err
	}
	if err := d.Ack(ctx); err != nil {
		return d, nil, err
	}
	a, err := mediaAddr(d.InviteResponse.Body())
	return d, a, err
}

// mediaAddr reads c= and m=audio of an SDP.
func mediaAddr(body []byte) (*net.UDPAddr, error) {
	var ip net.IP
	port := 0
	for _, l := range strings.Split(string(body), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "c=IN IP4 ") {
			ip = net.ParseIP(strings.TrimPrefix(l, "c=IN IP4 "))
		}
		if strings.HasPrefix(l, "m=audio ") {
			fmt.Sscanf(l, "m=audio %d", &port)
		}
	}
	if ip == nil || port == 0 {
		return nil, fmt.Errorf("no audio address in SDP %q", body)
	}
	return &net.UDPAddr{IP: ip, Port: port}, nil
}

// rtpPacket is a PCMU packet with seq and a payload that names it.
func rtpPacket(seq uint16) []byte {
	b := make([]byte, 12+160)
	b[0], b[1] = 0x80, 0
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[4:], uint32(seq)*160)
	binary.BigEndian.PutUint32(b[8:], 0x1234abcd)
	for i := 12; i < len(b); i++ {
		b[i] = byte(i * 7)
	}
	return b
}

// sendRTPUntil sends packets from p's media socket to dst until want
// packets arrived at q with intact payloads (or ctx ends).
func sendRTPUntil(ctx context.Context, t testing.TB, p, q *uaPhone, dst *net.UDPAddr, want int) {
	t.Helper()
	got := 0
	for seq := uint16(1); got < want; seq++ {
		if ctx.Err() != nil {
			t.Fatalf("RTP: %d of %d packets arrived", got, want)
		}
		if _, err := p.rtp.WriteToUDP(rtpPacket(seq), dst); err != nil {
			t.Fatal(err)
		}
		select {
		case pkt := <-q.rtpIn:
			if len(pkt) != 172 || pkt[1]&0x7f != 0 {
				t.Fatalf("RTP arrived altered: %x", pkt[:12])
			}
			for i := 12; i < len(pkt); i++ {
				if pkt[i] != byte(i*7) {
					t.Fatalf("RTP payload altered at byte %d", i)
				}
			}
			got++
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestDirectoryTrunk (the registrar is loopback's discard port: nothing
// answers): calls over a trunk go to its registrar, or to its
// single peer address; a trunk known only by a peer network has no target.
func TestDirectoryTrunk(t *testing.T) {
	s := startServer(t, func(c *config.SIP) {
		c.Trunks = []config.Trunk{
			{Name: "reg", Register: &config.TrunkRegistration{Registrar: "127.0.0.1:9", Transport: "tcp", Username: "u", Domain: "itsp.example", Expires: 5 * time.Minute}},
			{Name: "peer", Peers: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("198.51.100.7/32")}},
			{Name: "net", Peers: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
		}
	})
	dir := s.Directory(nil)
	tests := []struct {
		name, dest, transport string
		ok                    bool
	}{
		{"reg", "127.0.0.1:9", "tcp", true},
		{"peer", "198.51.100.7:5060", "udp", true},
		{"net", "", "", false},
		{"unknown", "", "", false},
	}
	for _, tc := range tests {
		tg, ok := dir.Trunk(tc.name)
		if ok != tc.ok || tg.Dest != tc.dest || tg.Transport != tc.transport {
			t.Errorf("Trunk(%s) = %+v, %v", tc.name, tg, ok)
		}
	}
	if p := dir.Policy(call.Identity{Extension: "101"}); p != media.SRTPOptional {
		t.Errorf("default policy %v", p)
	}
}
