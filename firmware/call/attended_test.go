package call

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// rtpPeer is a phone's media socket on loopback.
type rtpPeer struct {
	conn *net.UDPConn
	seq  uint16
}

func newRTPPeer(t testing.TB) *rtpPeer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rtpPeer{conn: c}
}

func (p *rtpPeer) port() int { return p.conn.LocalAddr().(*net.UDPAddr).Port }

// send writes one G.711 RTP packet whose payload starts with mark.
func (p *rtpPeer) send(to netip.AddrPort, mark string) error {
	p.seq++
	pkt := make([]byte, 12+160)
	pkt[0], pkt[1] = 0x80, 0
	binary.BigEndian.PutUint16(pkt[2:], p.seq)
	binary.BigEndian.PutUint32(pkt[4:], uint32(p.seq)*160)
	binary.BigEndian.PutUint32(pkt[8:], 0x1234abcd)
	copy(pkt[12:], mark)
	_, err := p.conn.WriteToUDPAddrPort(pkt, to)
	return err
}

// flows sends from src to the box address to until dst receives a packet
// carrying mark (media relayed), or ctx ends.
func flows(ctx context.Context, src *rtpPeer, to netip.AddrPort, dst *rtpPeer, mark string) bool {
	buf := make([]byte, 2048)
	for ctx.Err() == nil {
		if err := src.send(to, mark); err != nil {
			return false
		}
		_ = dst.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		for {
			n, err := dst.conn.Read(buf)
			if err != nil {
				break
			}
			if n > 12 && bytes.HasPrefix(buf[12:n], []byte(mark)) {
				return true
			}
		}
	}
	return false
}

// boxMedia is the box's media address in an SDP body it sent.
func boxMedia(t testing.TB, body []byte) netip.AddrPort {
	t.Helper()
	_, r, err := media.ParseSDP(body)
	if err != nil {
		t.Fatalf("box SDP: %v\n%s", err, body)
	}
	return netip.AddrPortFrom(r.Addr, r.RTPPort)
}

// eventLog records security events as *logs.Log would.
type eventLog struct {
	mu sync.Mutex
	ev []logs.Event
}

func (e *eventLog) Record(ev logs.Event) {
	e.mu.Lock()
	e.ev = append(e.ev, ev)
	e.mu.Unlock()
}

func (e *eventLog) kinds() []logs.Kind {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ks []logs.Kind
	for _, ev := range e.ev {
		ks = append(ks, ev.Kind)
	}
	return ks
}

// answerWith makes p answer every new INVITE with 200 and media on port,
// handing the dialog to sess.
func answerWith(p *phone, port int, sess chan *sipgo.DialogServerSession) {
	p.mu.Lock()
	p.media = port
	p.mu.Unlock()
	p.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_ = d.Respond(180, "Ringing", nil)
		_ = d.Respond(200, "OK", []byte(sdpBody(port, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
		if sess != nil {
			sess <- d
		}
	})
}

func connect(ctx context.Context, t *testing.T, d *sipgo.DialogClientSession, err error) *sipgo.DialogClientSession {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

// replacesOf names the caller's dialog d as the caller sees it.
func replacesOf(d *sipgo.DialogClientSession) string {
	to, _ := d.InviteResponse.To().Params.Get("tag")
	from, _ := d.InviteRequest.From().Params.Get("tag")
	return d.InviteRequest.CallID().Value() + ";to-tag=" + to + ";from-tag=" + from
}

func inDialogRefer(ctx context.Context, t *testing.T, d *sipgo.DialogClientSession, referTo string) int {
	t.Helper()
	req := sip.NewRequest(sip.REFER, d.InviteResponse.Contact().Address)
	req.AppendHeader(sip.NewHeader("Refer-To", referTo))
	res, err := d.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode
}

// TestAttendedTransfer: 101 talks to 102 (call X), puts it aside and
// consults 103 (call Y), then REFERs X with Refer-To 103 plus Replaces
// naming its dialog of Y (RFC 5589). The box re-INVITEs 103 onto X's
// relay, ends Y, releases both of 101's legs, reports by NOTIFY; RTP then
// flows 102↔103 through the relay, and hang-up leaves nothing behind.
func TestAttendedTransfer(t *testing.T) {
	h := startHarness(t)
	transferor, transferee, target := newPhone(t, "101"), newPhone(t, "102"), newPhone(t, "103")
	h.dir.set("102", transferee.addr)
	h.dir.set("103", target.addr)
	m101x, m101y, m102, m103 := newRTPPeer(t), newRTPPeer(t), newRTPPeer(t), newRTPPeer(t)
	sess102 := make(chan *sipgo.DialogServerSession, 1)
	answerWith(transferee, m102.port(), sess102)
	answerWith(target, m103.port(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	dx, err := transferor.dialAs(ctx, h, "101", "102", m101x.port())
	dx = connect(ctx, t, dx, err)
	dy, err := transferor.dialAs(ctx, h, "101", "103", m101y.port())
	dy = connect(ctx, t, dy, err)
	// Before the transfer: 101 hears 102 on X.
	transferee.mu.Lock()
	box102 := boxMedia(t, transferee.invites[0].Body())
	transferee.mu.Unlock()
	if !flows(ctx, m102, box102, m101x, "before") {
		t.Fatal("no media 102→101 before the transfer")
	}

	referTo := "<sip:103@box.invalid?Replaces=" + url.QueryEscape(replacesOf(dy)) + ">"
	if code := inDialogRefer(ctx, t, dx, referTo); code != 202 {
		t.Fatalf("REFER with Replaces: %d", code)
	}
	frags := transferor.transferDone(ctx, t)
	if frags[0] != "SIP/2.0 100 Trying" || frags[len(frags)-1] != "SIP/2.0 200 OK" {
		t.Fatalf("NOTIFY sipfrags %q", frags)
	}
	// Both of the transferor's legs are released.
	got := map[string]bool{}
	for len(got) < 2 {
		select {
		case bye := <-transferor.byes:
			got[bye.CallID().Value()] = true
		case <-ctx.Done():
			t.Fatalf("transferor BYEs: %v", got)
		}
	}
	if !got[dx.InviteRequest.CallID().Value()] || !got[dy.InviteRequest.CallID().Value()] {
		t.Fatalf("BYEs for %v", got)
	}
	if rec := waitEnded(t, h).rec; rec.Cause != "attended transfer" || rec.To != "103" {
		t.Fatalf("consultation call's CDR %+v", rec)
	}
	if h.b.Active() != 1 {
		t.Fatalf("%d calls active after the transfer", h.b.Active())
	}

	// 103 was moved onto X's relay leg by a re-INVITE in its own dialog.
	target.mu.Lock()
	if len(target.reinvite) != 1 {
		target.mu.Unlock()
		t.Fatalf("target got %d re-INVITEs", len(target.reinvite))
	}
	re := target.reinvite[0]
	target.mu.Unlock()
	box103 := boxMedia(t, re.Body())
	for _, leak := range []string{"phone-101", "phone-102", transferee.addr, transferor.addr} {
		if strings.Contains(re.String(), leak) {
			t.Fatalf("target's re-INVITE leaks %q:\n%s", leak, re)
		}
	}
	if !flows(ctx, m102, box102, m103, "from-102") {
		t.Fatal("no media 102→103 after the transfer")
	}
	if !flows(ctx, m103, box103, m102, "from-103") {
		t.Fatal("no media 103→102 after the transfer")
	}

	// 102 hangs up: 103 gets the BYE from X, nothing is left.
	var s102 *sipgo.DialogServerSession
	select {
	case s102 = <-sess102:
	case <-ctx.Done():
		t.Fatal("102 never answered")
	}
	if err := s102.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-target.byes:
	case <-ctx.Done():
		t.Fatal("103 got no BYE")
	}
	rec := waitEnded(t, h).rec
	if rec.Result != cdr.Answered || rec.Cause != "callee BYE" {
		t.Fatalf("CDR %+v", rec)
	}
	if c := h.b.Counters(); c.Transfers != 1 || c.ReplaceDenied != 0 {
		t.Fatalf("counters %+v", c)
	}
	h.noStateLeft(t, true)
}

// TestReplaceHijack: 103 knows the identifiers of 101's dialog with the
// box (it guessed or sniffed them) and tries to take it over, by REFER
// with Replaces on its own call and by INVITE with Replaces. Both are
// refused with 403 and a security event, and 101's call goes on; 101's
// own second phone may pull the call (INVITE with Replaces), and media
// then flows between it and 102.
func TestReplaceHijack(t *testing.T) {
	ev := &eventLog{}
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) { c.Events = ev })
	victim, callee, attacker, desk := newPhone(t, "101"), newPhone(t, "102"), newPhone(t, "103"), newPhone(t, "101")
	h.dir.set("102", callee.addr)
	m101, m102, m103, mdesk := newRTPPeer(t), newRTPPeer(t), newRTPPeer(t), newRTPPeer(t)
	answerWith(callee, m102.port(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	dv, err := victim.dialAs(ctx, h, "101", "102", m101.port())
	dv = connect(ctx, t, dv, err)
	da, err := attacker.dialAs(ctx, h, "103", "102", m103.port())
	da = connect(ctx, t, da, err)

	if code := inDialogRefer(ctx, t, da, "<sip:102@box.invalid?Replaces="+url.QueryEscape(replacesOf(dv))+">"); code != 403 {
		t.Fatalf("REFER hijack: %d, want 403", code)
	}
	di, err := attacker.dialAs(ctx, h, "103", "102", m103.port(), sip.NewHeader("Replaces", replacesOf(dv)))
	if err != nil {
		t.Fatal(err)
	}
	var e *sipgo.ErrDialogResponse
	if err := di.WaitAnswer(ctx, sipgo.AnswerOptions{}); !errors.As(err, &e) || e.Res.StatusCode != 403 {
		t.Fatalf("INVITE hijack: want 403, got %v", err)
	}
	if ks := ev.kinds(); len(ks) != 2 || ks[0] != KindReplaceDenied || ks[1] != KindReplaceDenied {
		t.Fatalf("security events %v", ks)
	}
	if c := h.b.Counters(); c.ReplaceDenied != 2 || c.Transfers != 0 {
		t.Fatalf("counters %+v", c)
	}
	// Unknown dialogs: 481, not 403 (nothing to protect).
	if code := inDialogRefer(ctx, t, da, "<sip:102@box.invalid?Replaces="+url.QueryEscape("nope;to-tag=a;from-tag=b")+">"); code != 481 {
		t.Fatalf("REFER for an unknown dialog: %d", code)
	}
	// The victim's call is untouched.
	callee.mu.Lock()
	box102 := boxMedia(t, callee.invites[0].Body())
	callee.mu.Unlock()
	if !flows(ctx, m102, box102, m101, "still-101") {
		t.Fatal("victim lost its media")
	}
	if h.b.Active() != 2 {
		t.Fatalf("%d calls active", h.b.Active())
	}

	// The victim's own desk phone pulls the call.
	dd, err := desk.dialAs(ctx, h, "101", "102", mdesk.port(), sip.NewHeader("Replaces", replacesOf(dv)))
	dd = connect(ctx, t, dd, err)
	select {
	case bye := <-victim.byes:
		if bye.CallID().Value() != dv.InviteRequest.CallID().Value() {
			t.Fatalf("BYE for %s", bye.CallID().Value())
		}
	case <-ctx.Done():
		t.Fatal("replaced phone got no BYE")
	}
	if !flows(ctx, m102, box102, mdesk, "to-desk") || !flows(ctx, mdesk, boxMedia(t, dd.InviteResponse.Body()), m102, "from-desk") {
		t.Fatal("no media between the pulling phone and 102")
	}
	if h.b.Active() != 2 || h.b.Counters().Transfers != 1 {
		t.Fatalf("%d calls, counters %+v", h.b.Active(), h.b.Counters())
	}
	if err := dd.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	if rec := waitEnded(t, h).rec; rec.Result != cdr.Answered || rec.Cause != "caller BYE" {
		t.Fatalf("CDR %+v", rec)
	}
	if err := da.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	waitEnded(t, h)
	h.noStateLeft(t, false)
}

// TestSemiAttendedTransfer: 101 REFERs its call with 102 to 103 with
// Replaces naming its consultation call while 103 still rings. The box
// withdraws the consultation (CANCEL to 103, 487 to 101) and transfers
// 102 blind to 103, which then rings with 102 as the caller.
func TestSemiAttendedTransfer(t *testing.T) {
	h := startHarness(t)
	transferor, transferee, target := newPhone(t, "101"), newPhone(t, "102"), newPhone(t, "103")
	h.dir.set("102", transferee.addr)
	h.dir.set("103", target.addr)
	answerWith(transferee, 7000, nil)
	cancelled := make(chan struct{}, 1)
	bridged := make(chan *sipgo.DialogServerSession, 1)
	target.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		if req.From().Address.User == "101" { // the consultation: rings until withdrawn
			tx.OnCancel(func(*sip.Request) { cancelled <- struct{}{} })
			_ = d.Respond(180, "Ringing", nil)
			<-tx.Done()
			return
		}
		_ = d.Respond(200, "OK", []byte(sdpBody(7002, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
		bridged <- d
	})
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	dx, err := transferor.dialAs(ctx, h, "101", "102", 6000)
	dx = connect(ctx, t, dx, err)
	dy, err := transferor.dialAs(ctx, h, "101", "103", 6002)
	if err != nil {
		t.Fatal(err)
	}
	ringing := make(chan *sip.Response, 1)
	consult := make(chan error, 1)
	go func() {
		consult <- dy.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
			if res.StatusCode == 180 {
				select {
				case ringing <- res:
				default:
				}
			}
			return nil
		}})
	}()
	var r180 *sip.Response
	select {
	case r180 = <-ringing:
	case <-ctx.Done():
		t.Fatal("consultation never rang")
	}
	toTag, _ := r180.To().Params.Get("tag")
	fromTag, _ := dy.InviteRequest.From().Params.Get("tag")
	rp := dy.InviteRequest.CallID().Value() + ";to-tag=" + toTag + ";from-tag=" + fromTag
	if code := inDialogRefer(ctx, t, dx, "<sip:103@box.invalid?Replaces="+url.QueryEscape(rp)+">"); code != 202 {
		t.Fatalf("REFER: %d", code)
	}
	var e *sipgo.ErrDialogResponse
	if err := <-consult; !errors.As(err, &e) || e.Res.StatusCode != 487 {
		t.Fatalf("consultation: want 487, got %v", err)
	}
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("103 got no CANCEL for the consultation")
	}
	var sess *sipgo.DialogServerSession
	select {
	case sess = <-bridged:
	case <-ctx.Done():
		t.Fatal("103 was not called for the transfer")
	}
	select {
	case <-transferor.byes:
	case <-ctx.Done():
		t.Fatal("transferor's leg not released")
	}
	if rec := waitEnded(t, h).rec; rec.Cause != "transferred while ringing" {
		t.Fatalf("consultation CDR %+v", rec)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-transferee.byes:
	case <-ctx.Done():
		t.Fatal("102 got no BYE")
	}
	if rec := waitEnded(t, h).rec; rec.Result != cdr.Answered {
		t.Fatalf("CDR %+v", rec)
	}
	h.noStateLeft(t, false)
}
