// Package siptest holds a real sipgo phone for tests of the SIP edge and
// the daemon: it registers with digest, places and answers calls with plain
// RTP/AVP PCMU, and checks RTP arriving intact. Only tests import it.
package siptest

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Phone is a real sipgo phone on loopback that registers with digest,
// answers calls with plain RTP/AVP PCMU and counts RTP arriving at its
// media socket.
type Phone struct {
	t        testing.TB
	user     string
	pass     string
	host     string
	Port     int           // SIP port on host (127.0.0.1 unless NewPhoneAt)
	Client   *sipgo.Client // sends the phone's requests
	calls    *sipgo.DialogClientCache
	answers  *sipgo.DialogServerCache
	rtp      *net.UDPConn
	Answered chan *sip.Request // INVITEs answered with 200
	// Dialogs are the calls the phone answered (to send in-dialog
	// requests as the callee: a REFER).
	Dialogs chan *sipgo.DialogServerSession
	Byes    chan *sip.Request // BYEs received
	Invites chan *sip.Request // every INVITE received (reply.go), whatever the answer
	Cancels chan *sip.Request // CANCELs of INVITEs left ringing (Reply(Ring))
	reply   atomic.Int32      // 0: answer 200; else reply.go
	pick    chan struct{}     // Pick: answer the ringing INVITE
	rtpIn   chan []byte
}

func NewPhone(t testing.TB, user, pass string) *Phone {
	t.Helper()
	return NewPhoneAt(t, "127.0.0.1", user, pass)
}

// NewPhoneAt is NewPhone on another loopback address (e.g. 127.0.0.2), so
// a test can tell a trunk's source address from the phones'.
func NewPhoneAt(t testing.TB, host, user, pass string) *Phone {
	t.Helper()
	conn, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	rtp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(host)})
	if err != nil {
		t.Fatal(err)
	}
	ua_ := conn.LocalAddr().(*net.UDPAddr)
	p := &Phone{t: t, user: user, pass: pass, host: host, Port: ua_.Port, rtp: rtp,
		Answered: make(chan *sip.Request, 4), Dialogs: make(chan *sipgo.DialogServerSession, 4), Byes: make(chan *sip.Request, 4), Invites: make(chan *sip.Request, 64), Cancels: make(chan *sip.Request, 64), rtpIn: make(chan []byte, 256), pick: make(chan struct{}, 1)}
	quiet := slog.New(slog.DiscardHandler)
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
	opts := []sipgo.ClientOption{sipgo.WithClientHostname(p.host), sipgo.WithClientPort(p.Port), sipgo.WithClientLogger(quiet)}
	if host != "127.0.0.1" {
		// Send from the phone's own address (sipgo would pick 127.0.0.1),
		// since tests tell trunks from phones by source address.
		opts = append(opts, sipgo.WithClientConnectionAddr(conn.LocalAddr().String()))
	}
	if p.Client, err = sipgo.NewClient(ua, opts...); err != nil {
		t.Fatal(err)
	}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: p.host, Port: p.Port}}
	p.calls = sipgo.NewDialogClientCache(p.Client, contact)
	p.answers = sipgo.NewDialogServerCache(p.Client, contact)
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		d, err := p.answers.ReadInvite(req, tx)
		if err != nil {
			return
		}
		if p.replyOther(req, tx, d) {
			return
		}
		_ = d.Respond(200, "OK", p.sdp(), sip.NewHeader("Content-Type", "application/sdp"))
		select {
		case p.Dialogs <- d:
		default:
		}
		p.Answered <- req
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = p.answers.ReadAck(req, tx) })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := p.calls.ReadBye(req, tx); err != nil {
			_ = p.answers.ReadBye(req, tx)
		}
		p.Byes <- req
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

func (p *Phone) sdp() []byte {
	return []byte("v=0\r\no=phone 1 1 IN IP4 " + p.host + "\r\ns=-\r\nc=IN IP4 " + p.host + "\r\nt=0 0\r\n" +
		fmt.Sprintf("m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", p.rtp.LocalAddr().(*net.UDPAddr).Port))
}

// Register binds p's contact at the edge (host:port), answering the
// digest challenge.
func (p *Phone) Register(ctx context.Context, edgeHost string, edgePort int) {
	p.t.Helper()
	aor := sip.Uri{Scheme: "sip", User: p.user, Host: edgeHost}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: edgeHost, Port: edgePort})
	req.AppendHeader(&sip.ToHeader{Address: aor})
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(sip.NewHeader("Contact", fmt.Sprintf("<sip:%s@%s:%d>", p.user, p.host, p.Port)))
	req.AppendHeader(sip.NewHeader("Expires", "300"))
	res, err := p.Client.Do(ctx, req)
	if err != nil || res == nil { // sipgo's Do can end with neither
		p.t.Fatalf("register %s: no answer: %v", p.user, err)
	}
	if res.StatusCode == 401 {
		if res, err = p.Client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: p.user, Password: p.pass}); err != nil || res == nil {
			p.t.Fatalf("register %s with digest: no answer: %v", p.user, err)
		}
	}
	if res.StatusCode != 200 {
		p.t.Fatalf("register %s: %s", p.user, res.StartLine())
	}
}

// Dial calls number at the edge with digest credentials and waits for the
// answer; it returns the dialog and the box's media address from the SDP.
func (p *Phone) Dial(ctx context.Context, edgeHost string, edgePort int, number string) (*sipgo.DialogClientSession, *net.UDPAddr, error) {
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
	a, err := MediaAddr(d.InviteResponse.Body())
	return d, a, err
}

// MediaAddr reads c= and m=audio of an SDP.
func MediaAddr(body []byte) (*net.UDPAddr, error) {
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

// RTP delivers the packets arriving at p's media socket (those
// SendRTPUntil does not take), so a test can decode what p hears.
func (p *Phone) RTP() <-chan []byte { return p.rtpIn }

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

// SendRTPUntil sends packets from p's media socket to dst until want
// packets arrived at q with intact payloads (or ctx ends).
func SendRTPUntil(ctx context.Context, t testing.TB, p, q *Phone, dst *net.UDPAddr, want int) {
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
