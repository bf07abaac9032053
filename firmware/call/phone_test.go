package call

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// phone is a real sipgo user agent on loopback: a caller (dialog client
// cache) and a callee whose INVITE handler the test scripts.
type phone struct {
	addr    string
	client  *sipgo.Client
	calls   *sipgo.DialogClientCache
	answers *sipgo.DialogServerCache

	mu       sync.Mutex
	invites  []*sip.Request // initial INVITEs received (as callee)
	reinvite []*sip.Request // re-INVITEs received
	byes     chan *sip.Request
	notifies chan *sip.Request
	infos    chan *sip.Request         // in-dialog INFOs received (answered 200)
	media    int                       // port in answers to re-INVITEs (0: 7000)
	reanswer func(*sip.Request) []byte // SDP answering a re-INVITE (nil: plain RTP on media)
	onInvite func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession)
}

func newPhone(t testing.TB, user string) *phone {
	t.Helper()
	return newPhoneAt(t, user, "127.0.0.1")
}

// newPhoneAt is newPhone on another local address.
func newPhoneAt(t testing.TB, user, ip string) *phone {
	t.Helper()
	conn, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	p := &phone{addr: conn.LocalAddr().String(), byes: make(chan *sip.Request, 16), notifies: make(chan *sip.Request, 16),
		infos: make(chan *sip.Request, 16)}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("phone-"+user+"-secret-build"),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(errLog())),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(errLog())))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(errLog()))
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(p.addr)
	var pn int
	fmt.Sscan(port, &pn)
	if p.client, err = sipgo.NewClient(ua, sipgo.WithClientHostname(host), sipgo.WithClientPort(pn), sipgo.WithClientLogger(errLog())); err != nil {
		t.Fatal(err)
	}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: host, Port: pn}}
	p.calls = sipgo.NewDialogClientCache(p.client, contact)
	p.answers = sipgo.NewDialogServerCache(p.client, contact)
	// reanswerTx answers an offer in a dialog (re-INVITE or UPDATE).
	reanswerTx := func(req *sip.Request, tx sip.ServerTransaction) {
		_, rem, err := media.ParseSDP(req.Body())
		dir := "sendrecv"
		if err == nil && rem.Direction == "sendonly" {
			dir = "recvonly"
		}
		p.mu.Lock()
		port, reanswer := p.media, p.reanswer
		p.mu.Unlock()
		if port == 0 {
			port = 7000
		}
		body := []byte(sdpBody(port, dir))
		if reanswer != nil {
			body = reanswer(req)
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", body)
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.AppendHeader(&contact)
		_ = tx.Respond(res)
	}
	srv.OnUpdate(reanswerTx)
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		if req.To().Params.Has("tag") {
			p.mu.Lock()
			p.reinvite = append(p.reinvite, req)
			p.mu.Unlock()
			reanswerTx(req, tx)
			return
		}
		p.mu.Lock()
		p.invites = append(p.invites, req)
		h := p.onInvite
		p.mu.Unlock()
		d, err := p.answers.ReadInvite(req, tx)
		if err != nil {
			return
		}
		if h != nil {
			h(req, tx, d)
		}
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = p.answers.ReadAck(req, tx) })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := p.calls.ReadBye(req, tx); err != nil {
			_ = p.answers.ReadBye(req, tx)
		}
		p.byes <- req
	})
	srv.OnNotify(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		p.notifies <- req
	})
	srv.OnInfo(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		p.infos <- req
	})
	go func() { _ = srv.ServeUDP(conn) }()
	t.Cleanup(func() { _ = ua.Close(); _ = conn.Close() })
	return p
}

func (p *phone) setOnInvite(f func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession)) {
	p.mu.Lock()
	p.onInvite = f
	p.mu.Unlock()
}

func sdpBody(port int, dir string) string {
	return "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=secret-session-name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		fmt.Sprintf("m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=%s\r\n", port, dir)
}

// dial places a call from p to number at the harness.
func (p *phone) dial(ctx context.Context, h *harness, number string, hs ...sip.Header) (*sipgo.DialogClientSession, error) {
	return p.dialAs(ctx, h, "101", number, 6000, hs...)
}

// dialAs places a call as extension user (the harness trusts the From
// user as the edge trusts digest auth), offering media on port.
func (p *phone) dialAs(ctx context.Context, h *harness, user, number string, port int, hs ...sip.Header) (*sipgo.DialogClientSession, error) {
	host, hport, _ := net.SplitHostPort(h.addr)
	var pn int
	fmt.Sscan(hport, &pn)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: "phone.invalid"}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	hs = append(hs, from, sip.NewHeader("Content-Type", "application/sdp"))
	return p.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: number, Host: host, Port: pn}, []byte(sdpBody(port, "sendrecv")), hs...)
}

func TestRejections(t *testing.T) {
	h := startHarness(t)
	caller := newPhone(t, "101")
	tests := []struct {
		name, dialled string
		code          int
	}{
		{"international blocked", "0044201234567", 403},
		{"international + blocked", "+1212555123", 403},
		{"premium blocked", "09001234567", 403},
		{"extension not registered", "103", 480},
		{"not a number", "abc", 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			d, err := caller.dial(ctx, h, tc.dialled)
			if err != nil {
				t.Fatal(err)
			}
			err = d.WaitAnswer(ctx, sipgo.AnswerOptions{})
			var e *sipgo.ErrDialogResponse
			if !errors.As(err, &e) || e.Res.StatusCode != tc.code {
				t.Fatalf("want %d, got %v", tc.code, err)
			}
			rec := waitEnded(t, h).rec
			if rec.SIPStatus != tc.code || rec.Result == cdr.Answered {
				t.Fatalf("CDR %+v", rec)
			}
		})
	}
	h.noStateLeft(t, false)
	if open, opens, _, _, _ := h.pins.state(); open != 0 || opens != 0 {
		t.Fatalf("pinholes for rejected calls: %d open, %d opened", open, opens)
	}
}

// TestCallFlow: early media, topology hiding, the concurrent-call bound,
// hold/resume by re-INVITE, callee BYE, CANCEL of a ringing call.
func TestCallFlow(t *testing.T) {
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) { c.MaxCalls = 2 })
	caller, callee := newPhone(t, "101"), newPhone(t, "102")
	h.dir.set("102", callee.addr)
	answer := make(chan chan struct{}, 4)
	answered := make(chan *sipgo.DialogServerSession, 1)
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_ = d.Respond(183, "Session Progress", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
		go_ := make(chan struct{})
		answer <- go_
		select {
		case <-go_:
			_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
			answered <- d
		case <-tx.Done():
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	type result struct {
		early *sip.Response
		err   error
	}
	// early sees each call's 183 as the caller's UA handled it: the test
	// answers only after it, since sipgo handles each datagram in its own
	// goroutine and a 183 processed after the 200 is dropped.
	start := func(ctx context.Context) (*sipgo.DialogClientSession, chan result, chan struct{}) {
		early := make(chan struct{}, 4)
		d, err := caller.dial(ctx, h, "102", sip.NewHeader("X-Internal-Secret", "caller-only"))
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan result, 1)
		go func() {
			var r result
			r.err = d.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
				if res.StatusCode == 183 {
					r.early = res
					early <- struct{}{}
				}
				return nil
			}})
			ch <- r
		}()
		return d, ch, early
	}
	d1, r1, early1 := start(ctx)
	ans1 := <-answer
	ctx2, cancel2 := context.WithCancel(ctx)
	_, r2, _ := start(ctx2)
	<-answer

	// The bound: a third call is refused while two ring.
	d3, err := caller.dial(ctx, h, "102")
	if err != nil {
		t.Fatal(err)
	}
	var e *sipgo.ErrDialogResponse
	if err := d3.WaitAnswer(ctx, sipgo.AnswerOptions{}); !errors.As(err, &e) || e.Res.StatusCode != 503 {
		t.Fatalf("third call: want 503, got %v", err)
	}
	if c := h.b.Counters(); c.Overload != 1 {
		t.Fatalf("counters %+v", c)
	}

	// Topology hiding on the callee's side.
	callee.mu.Lock()
	inv := callee.invites[0]
	callee.mu.Unlock()
	raw := inv.String()
	for _, leak := range []string{"X-Internal-Secret", "phone-101", "phone.invalid", "secret-session-name", d1.InviteRequest.CallID().Value()} {
		if strings.Contains(raw, leak) {
			t.Errorf("callee INVITE leaks %q:\n%s", leak, raw)
		}
	}
	if n := len(inv.GetHeaders("Via")); n != 1 {
		t.Errorf("callee INVITE has %d Via headers", n)
	}

	// Answer call 1; early media was relayed with the box's address.
	select {
	case <-early1:
	case <-ctx.Done():
		t.Fatal("183 to caller never handled")
	}
	close(ans1)
	res1 := <-r1
	if res1.err != nil {
		t.Fatal(res1.err)
	}
	if res1.early == nil || !strings.Contains(string(res1.early.Body()), "m=audio") || strings.Contains(string(res1.early.Body()), "secret-session-name") {
		t.Fatalf("183 to caller: %v", res1.early)
	}
	if strings.Contains(d1.InviteResponse.String(), "phone-102") || strings.Contains(d1.InviteResponse.String(), callee.addr) {
		t.Fatalf("200 to caller leaks the callee:\n%s", d1.InviteResponse.String())
	}
	if err := d1.Ack(ctx); err != nil {
		t.Fatal(err)
	}

	// Hold and resume.
	for _, tc := range []struct{ send, want string }{{"sendonly", "recvonly"}, {"sendrecv", "sendrecv"}} {
		req := sip.NewRequest(sip.INVITE, d1.InviteResponse.Contact().Address)
		req.SetBody([]byte(sdpBody(6000, tc.send)))
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res, err := d1.Do(ctx, req)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("re-INVITE %s: %v %v", tc.send, res, err)
		}
		if !strings.Contains(string(res.Body()), "a="+tc.want) {
			t.Fatalf("re-INVITE %s answered:\n%s", tc.send, res.Body())
		}
		ack := sip.NewRequest(sip.ACK, d1.InviteResponse.Contact().Address)
		ack.AppendHeader(&sip.CSeqHeader{SeqNo: res.CSeq().SeqNo, MethodName: sip.ACK})
		if err := d1.WriteRequest(ack); err != nil {
			t.Fatal(err)
		}
	}
	callee.mu.Lock()
	nre := len(callee.reinvite)
	heldSDP := ""
	if nre > 0 {
		heldSDP = string(callee.reinvite[0].Body())
	}
	callee.mu.Unlock()
	if nre != 2 || !strings.Contains(heldSDP, "a=sendonly") {
		t.Fatalf("callee saw %d re-INVITEs, first:\n%s", nre, heldSDP)
	}

	// Cancel call 2 while it rings.
	cancel2() // WaitAnswer sends the CANCEL
	if r := <-r2; r.err == nil {
		t.Fatal("cancelled call was answered")
	}
	if rec := waitEnded(t, h).rec; rec.Result != cdr.Cancelled {
		t.Fatalf("cancelled call CDR %+v", rec)
	}

	// The callee hangs up call 1: the caller gets a BYE from the box.
	var sess *sipgo.DialogServerSession
	select {
	case sess = <-answered:
	case <-ctx.Done():
		t.Fatal("callee never answered")
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case bye := <-caller.byes:
		if bye.CallID().Value() != d1.InviteRequest.CallID().Value() {
			t.Fatalf("BYE for the wrong dialog: %s", bye.CallID().Value())
		}
	case <-ctx.Done():
		t.Fatal("caller got no BYE")
	}
	rec := waitEnded(t, h).rec
	if rec.Result != cdr.Answered || rec.Cause != "callee BYE" {
		t.Fatalf("CDR %+v", rec)
	}
	h.noStateLeft(t, false)
	if open, _, outside, _, _ := h.pins.state(); open != 0 || outside != 0 {
		t.Fatalf("pinholes: %d left open, %d outside a call", open, outside)
	}
}

// errLog shows only errors, on stderr: the harness runs many calls, and
// their info lines would bury a failure.
func errLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// TestSessionTimer: the caller says it refreshes (RFC 4028) and then does
// not; the box refreshes the callee's leg itself and, when the caller's
// interval runs out, hangs up both legs and frees everything.
func TestSessionTimer(t *testing.T) {
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) {
		c.minSE, c.SessionExpires = time.Second, 2*time.Second
	})
	caller, callee := newPhone(t, "101"), newPhone(t, "102")
	h.dir.set("102", callee.addr)
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := caller.dial(ctx, h, "102", sip.NewHeader("Supported", "timer"), sip.NewHeader("Session-Expires", "2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if se := d.InviteResponse.GetHeader("Session-Expires"); se == nil || se.Value() != "2;refresher=uac" {
		t.Fatalf("200 Session-Expires %v", se)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-caller.byes:
	case <-ctx.Done():
		t.Fatal("caller got no BYE at session expiry")
	}
	select {
	case <-callee.byes:
	case <-ctx.Done():
		t.Fatal("callee got no BYE at session expiry")
	}
	rec := waitEnded(t, h).rec
	if rec.Cause != "session timer" || rec.Result != cdr.Answered {
		t.Fatalf("CDR %+v", rec)
	}
	callee.mu.Lock()
	refreshes := len(callee.reinvite)
	callee.mu.Unlock()
	if refreshes < 1 {
		t.Fatal("the box never refreshed the callee's leg")
	}
	if c := h.b.Counters(); c.SessionTimeouts != 1 {
		t.Fatalf("counters %+v", c)
	}
	h.noStateLeft(t, true)
}

// transferDone reads the NOTIFYs of p's REFER until the target answered
// (a 2xx sipfrag) and returns every sipfrag status line; a terminated
// subscription without a 2xx fails the test.
func (p *phone) transferDone(ctx context.Context, t *testing.T) []string {
	t.Helper()
	var frags []string
	for len(frags) == 0 || !strings.HasPrefix(frags[len(frags)-1], "SIP/2.0 2") {
		select {
		case n := <-p.notifies:
			frags = append(frags, strings.TrimSpace(string(n.Body())))
			if ss := n.GetHeader("Subscription-State"); ss != nil && strings.HasPrefix(ss.Value(), "terminated") &&
				!strings.HasPrefix(frags[len(frags)-1], "SIP/2.0 2") {
				t.Fatalf("transfer failed: %q", frags)
			}
		case <-ctx.Done():
			t.Fatalf("NOTIFYs so far %q", frags)
		}
	}
	return frags
}
