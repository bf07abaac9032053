package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// TestDevModeCall runs the real binary: two extensions are created through
// the admin API, two sipgo phones register with digest, 1001 calls 1002,
// RTP flows both ways through the box's relay, BYE ends the call, and after
// the stop the CDR is in the store.
func TestDevModeCall(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	// The log line (stderr) and the banner (stdout) are read by separate
	// goroutines, so the line may land after the banner: wait for it.
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(p.output(), `msg="calls: ready"`); {
		if time.Now().After(deadline) { // a hang, not a performance limit
			t.Fatalf("B2BUA not wired:\n%s", p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	api := claimBox(t, base, fp, code)
	pw := map[string]string{}
	for _, u := range []string{"1001", "1002"} {
		var ans struct{ User, Password string }
		if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ans); err != nil || ans.Password == "" {
			t.Fatalf("create %s: %v", u, err)
		}
		pw[u] = ans.Password
	}
	udp, err := net.ResolveUDPAddr("udp", sipAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := newUAPhone(t, "1001", pw["1001"]), newUAPhone(t, "1002", pw["1002"])
	a.register(ctx, "127.0.0.1", udp.Port)
	b.register(ctx, "127.0.0.1", udp.Port)

	d, boxA, err := a.dial(ctx, "127.0.0.1", udp.Port, "1002")
	if err != nil {
		t.Fatalf("call 1001 -> 1002: %v\n%s", err, p.output())
	}
	var inv *sip.Request
	select {
	case inv = <-b.answered:
	case <-ctx.Done():
		t.Fatal("1002 never rang")
	}
	boxB, err := mediaAddr(inv.Body())
	if err != nil {
		t.Fatal(err)
	}
	if boxA.Port == boxB.Port {
		t.Fatalf("both legs on one relay port %d", boxA.Port)
	}
	sendRTPUntil(ctx, t, a, b, boxA, 25)
	sendRTPUntil(ctx, t, b, a, boxB, 25)
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.byes:
	case <-ctx.Done():
		t.Fatal("1002 got no BYE")
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}

	id, err := devIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(dir, "edgepbx.db"), id.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	recs, err := cdr.New(db).Range(time.Now().Add(-time.Hour), time.Now().Add(time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].From != "1001" || recs[0].To != "1002" || recs[0].Result != cdr.Answered || recs[0].Answer.IsZero() {
		t.Fatalf("CDRs %+v", recs)
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
