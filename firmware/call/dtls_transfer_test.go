package call

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/srtp/v3"
)

// dtlsDial places a DTLS-SRTP call from caller (media on ea, offering
// actpass) to callee number (media on eb, answering active), handshakes
// both legs and returns the dialog with each phone's SRTP contexts; the
// callee's dialog goes to sess.
func dtlsDial(ctx context.Context, t *testing.T, h *harness, caller, callee *phone, number string, ea, eb *dtlsEnd,
	sess chan<- *sipgo.DialogServerSession) (d *sipgo.DialogClientSession, boxFP media.Fingerprint, aEnc, aDec, bEnc, bDec *srtp.Context) {
	t.Helper()
	offers := make(chan media.Remote, 1)
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, ds *sipgo.DialogServerSession) {
		_, rem, err := media.ParseSDP(req.Body())
		if err != nil || rem.Fingerprint == nil {
			_ = ds.Respond(488, "Not Acceptable Here", nil)
			return
		}
		offers <- rem
		_ = ds.Respond(200, "OK", []byte(eb.sdp("active")), sip.NewHeader("Content-Type", "application/sdp"))
		sess <- ds
	})
	host, hport, _ := net.SplitHostPort(h.addr)
	var pn int
	for _, ch := range hport {
		pn = pn*10 + int(ch-'0')
	}
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "phone.invalid"}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	d, err := caller.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: number, Host: host, Port: pn},
		[]byte(ea.sdp("actpass")), from, sip.NewHeader("Content-Type", "application/sdp"))
	d = connect(ctx, t, d, err)
	offer := <-offers
	_, ans, err := media.ParseSDP(d.InviteResponse.Body())
	if err != nil || ans.Fingerprint == nil || ans.Setup != "active" || offer.Fingerprint == nil ||
		offer.Fingerprint.String() != ans.Fingerprint.String() {
		t.Fatalf("caller's answer %+v %v", ans, err)
	}
	boxFP = *ans.Fingerprint
	ea.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ans.Addr, ans.RTPPort))
	eb.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(offer.Addr, offer.RTPPort))
	errs := make(chan error, 1)
	go func() { // the box is the caller's client
		var err error
		aEnc, aDec, err = ea.handshake(ctx, boxFP, false)
		errs <- err
	}()
	var errB error
	bEnc, bDec, errB = eb.handshake(ctx, boxFP, true)
	if errA := <-errs; errA != nil || errB != nil {
		t.Fatalf("handshakes to %s: caller %v, callee %v", number, errA, errB)
	}
	sendUntil(ctx, t, ea, aEnc, eb, bDec, "to-"+number)
	sendUntil(ctx, t, eb, bEnc, ea, aDec, "from-"+number)
	return d, boxFP, aEnc, aDec, bEnc, bDec
}

// TestDTLSAttendedTransfer: 101 talks to 102 (call X) and consults 103
// (call Y), all three with DTLS-SRTP, then REFERs X to 103 with Replaces
// naming Y. The box re-INVITEs 103 onto X's relay leg with a new DTLS
// association (its fingerprint, a=setup:actpass: a new dialog for that
// leg); 103 answers from a new media port with its own certificate and
// handshakes, and SRTP then flows intact between 102 (keeping its
// association and keys) and 103. Hang-up leaves nothing behind.
func TestDTLSAttendedTransfer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	h := startHarness(t)
	transferor, transferee, target := newPhone(t, "101"), newPhone(t, "102"), newPhone(t, "103")
	h.dir.set("102", transferee.addr)
	h.dir.set("103", target.addr)
	e101x, e101y, e102, e103 := newDTLSEnd(t), newDTLSEnd(t), newDTLSEnd(t), newDTLSEnd(t)
	sess102, sess103 := make(chan *sipgo.DialogServerSession, 1), make(chan *sipgo.DialogServerSession, 1)
	dx, boxFP, _, _, enc102, dec102 := dtlsDial(ctx, t, h, transferor, transferee, "102", e101x, e102, sess102)
	dy, boxFPy, _, _, _, _ := dtlsDial(ctx, t, h, transferor, target, "103", e101y, e103, sess103)
	if boxFPy.String() != boxFP.String() {
		t.Fatal("the relay's fingerprint differs between calls")
	}
	// 103 answers the box's re-INVITE from a new media port, same
	// certificate (a phone keeps its identity across dialogs).
	e103n := newDTLSEnd(t)
	e103n.cert, e103n.fp = e103.cert, e103.fp
	reoffers103, reoffers102 := make(chan media.Remote, 4), make(chan media.Remote, 4)
	target.mu.Lock()
	target.reanswer = dtlsReanswer(e103n, reoffers103, "active")
	target.mu.Unlock()
	transferee.mu.Lock()
	transferee.reanswer = dtlsReanswer(e102, reoffers102, "active")
	transferee.mu.Unlock()

	referTo := "<sip:103@box.invalid?Replaces=" + url.QueryEscape(replacesOf(dy)) + ">"
	if code := inDialogRefer(ctx, t, dx, referTo); code != 202 {
		t.Fatalf("REFER with Replaces: %d", code)
	}
	transferor.transferDone(ctx, t)
	for got := 0; got < 2; got++ {
		select {
		case <-transferor.byes:
		case <-ctx.Done():
			t.Fatal("the transferor's legs were not both released")
		}
	}
	if rec := waitEnded(t, h).rec; rec.Cause != "attended transfer" || rec.To != "103" {
		t.Fatalf("consultation call's CDR %+v", rec)
	}

	// 103 was offered a new association on X's leg: the box's
	// fingerprint, roles open.
	var off media.Remote
	select {
	case off = <-reoffers103:
	case <-ctx.Done():
		t.Fatal("103 got no re-INVITE")
	}
	if off.Proto != media.ProtoDTLS || len(off.Crypto) != 0 || off.Fingerprint == nil ||
		off.Fingerprint.String() != boxFP.String() || off.Setup != "actpass" {
		t.Fatalf("re-offer to 103: %s, setup %q, fingerprint %v", off.Proto, off.Setup, off.Fingerprint)
	}
	// 102 keeps its association: if re-offered at all, with its role.
	select {
	case r := <-reoffers102:
		if r.Fingerprint == nil || r.Fingerprint.String() != boxFP.String() || r.Setup != "passive" {
			t.Fatalf("re-offer to 102: setup %q fingerprint %v", r.Setup, r.Fingerprint)
		}
	default:
	}
	e103n.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(off.Addr, off.RTPPort))
	enc103, dec103, err := e103n.handshake(ctx, boxFP, true) // 103 answered active
	if err != nil {
		t.Fatal("103's handshake on X:", err)
	}
	sendUntil(ctx, t, e102, enc102, e103n, dec103, "102-to-103")
	sendUntil(ctx, t, e103n, enc103, e102, dec102, "103-to-102")

	// 103 hangs up in its dialog: 102 gets the BYE, nothing is left.
	var s103 *sipgo.DialogServerSession
	select {
	case s103 = <-sess103:
	case <-ctx.Done():
		t.Fatal("103 never answered")
	}
	if err := s103.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-transferee.byes:
	case <-ctx.Done():
		t.Fatal("102 got no BYE")
	}
	e := waitEnded(t, h)
	if e.rec.Result != cdr.Answered || !e.rec.SRTPCaller || !e.rec.SRTPCallee {
		t.Fatalf("CDR %+v", e.rec)
	}
	if f := e.st.Legs[media.A].HandshakeFailures + e.st.Legs[media.B].HandshakeFailures; f != 0 {
		t.Fatalf("%d handshake failures on X", f)
	}
	if c := h.b.Counters(); c.Transfers != 1 {
		t.Fatalf("counters %+v", c)
	}
	h.noStateLeft(t, true)
}

// TestDTLSInviteReplaces: 101 talks to 102 with DTLS-SRTP on both legs;
// 101's desk phone, DTLS-SRTP with its own certificate, pulls the call
// with an INVITE with Replaces. The box answers it with its fingerprint
// and a new association (a=setup:active: the box's ClientHello follows
// the 200), the desk handshakes checking that fingerprint, SRTP flows
// intact between the desk and 102 (which keeps its keys), and the
// replaced phone gets its BYE.
func TestDTLSInviteReplaces(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	x := newDTLSCall(ctx, t)
	desk, edesk := newPhone(t, "101"), newDTLSEnd(t)
	host, hport, _ := net.SplitHostPort(x.h.addr)
	var pn int
	for _, ch := range hport {
		pn = pn*10 + int(ch-'0')
	}
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "phone.invalid"}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	dd, err := desk.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: "102", Host: host, Port: pn},
		[]byte(edesk.sdp("actpass")), from, sip.NewHeader("Content-Type", "application/sdp"),
		sip.NewHeader("Replaces", replacesOf(x.d)))
	dd = connect(ctx, t, dd, err)
	_, ans, err := media.ParseSDP(dd.InviteResponse.Body())
	if err != nil || ans.Proto != media.ProtoDTLS || ans.Fingerprint == nil ||
		ans.Fingerprint.String() != x.boxFP.String() || ans.Setup != "active" {
		t.Fatalf("answer to the desk: %+v %v", ans, err)
	}
	select {
	case bye := <-x.caller.byes:
		if bye.CallID().Value() != x.d.InviteRequest.CallID().Value() {
			t.Fatalf("BYE for %s", bye.CallID().Value())
		}
	case <-ctx.Done():
		t.Fatal("replaced phone got no BYE")
	}
	edesk.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ans.Addr, ans.RTPPort))
	enc, dec, err := edesk.handshake(ctx, x.boxFP, false)
	if err != nil {
		t.Fatal("desk's handshake:", err)
	}
	sendUntil(ctx, t, x.eb, x.bEnc, edesk, dec, "102-to-desk")
	sendUntil(ctx, t, edesk, enc, x.eb, x.bDec, "desk-to-102")
	if err := dd.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	e := waitEnded(t, x.h)
	if e.rec.Result != cdr.Answered || !e.rec.SRTPCaller || !e.rec.SRTPCallee {
		t.Fatalf("CDR %+v", e.rec)
	}
	if f := e.st.Legs[media.A].HandshakeFailures + e.st.Legs[media.B].HandshakeFailures; f != 0 {
		t.Fatalf("%d handshake failures", f)
	}
	if x.h.b.Active() != 0 || x.h.b.dialogCount() != 0 || x.h.b.Counters().Transfers != 1 {
		t.Fatalf("state left: %d calls, %d dialogs, counters %+v", x.h.b.Active(), x.h.b.dialogCount(), x.h.b.Counters())
	}
}

// plainCallee makes p answer new INVITEs as a phone without SRTP: DTLS-SRTP
// and RTP/SAVP offers are refused with 488, a plain one is answered with
// RTP on port; its dialogs go to sess.
func plainCallee(p *phone, port int, sess chan<- *sipgo.DialogServerSession) {
	p.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_, rem, err := media.ParseSDP(req.Body())
		if err != nil || rem.Fingerprint != nil || rem.Secure() {
			_ = d.Respond(488, "Not Acceptable Here", nil)
			return
		}
		_ = d.Respond(200, "OK", []byte(sdpBody(port, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
		sess <- d
	})
}

// dtlsCaller calls number from p with DTLS-SRTP on e (actpass) and
// handshakes as the server the box's a=setup:active answer makes it.
func dtlsCaller(ctx context.Context, t *testing.T, h *harness, p *phone, user, number string, e *dtlsEnd) (*sipgo.DialogClientSession, media.Fingerprint, *srtp.Context, *srtp.Context) {
	t.Helper()
	host, hport, _ := net.SplitHostPort(h.addr)
	var pn int
	for _, ch := range hport {
		pn = pn*10 + int(ch-'0')
	}
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: "phone.invalid"}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	d, err := p.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: number, Host: host, Port: pn},
		[]byte(e.sdp("actpass")), from, sip.NewHeader("Content-Type", "application/sdp"))
	d = connect(ctx, t, d, err)
	_, ans, err := media.ParseSDP(d.InviteResponse.Body())
	if err != nil || ans.Fingerprint == nil || ans.Setup != "active" {
		t.Fatalf("answer to %s: %+v %v", user, ans, err)
	}
	e.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ans.Addr, ans.RTPPort))
	enc, dec, err := e.handshake(ctx, *ans.Fingerprint, false)
	if err != nil {
		t.Fatalf("%s's handshake: %v", user, err)
	}
	return d, *ans.Fingerprint, enc, dec
}

// TestDTLSAttendedTransferPlainTransferor: 102 and 103, both DTLS-SRTP,
// each call 101, a phone without SRTP (its legs are plain RTP after the
// box's DTLS-SRTP and SDES offers are refused). 101 transfers 102 to 103
// with REFER and Replaces from its side of the calls (the callee's). The
// leg that was plain RTP to 101 becomes DTLS-SRTP to 103 (the box's
// fingerprint, a new association), and SRTP flows intact 102↔103.
func TestDTLSAttendedTransferPlainTransferor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	h := startHarness(t)
	transferor, transferee, target := newPhone(t, "101"), newPhone(t, "102"), newPhone(t, "103")
	h.dir.set("101", transferor.addr)
	m101 := newRTPPeer(t)
	sess101 := make(chan *sipgo.DialogServerSession, 2)
	plainCallee(transferor, m101.port(), sess101)
	e102, e103 := newDTLSEnd(t), newDTLSEnd(t)
	dx, boxFP, enc102, dec102 := dtlsCaller(ctx, t, h, transferee, "102", "101", e102)
	sx := <-sess101
	dtlsCaller(ctx, t, h, target, "103", "101", e103)
	sy := <-sess101
	e103n := newDTLSEnd(t)
	e103n.cert, e103n.fp = e103.cert, e103.fp
	reoffers103 := make(chan media.Remote, 4)
	target.mu.Lock()
	target.reanswer = dtlsReanswer(e103n, reoffers103, "active")
	target.mu.Unlock()

	// Replaces names Y as the box sees it: its tag (the INVITE's From
	// tag, the box was the UAC) is the to-tag, 101's the from-tag.
	boxTag, _ := sy.InviteRequest.From().Params.Get("tag")
	myTag, _ := sy.InviteResponse.To().Params.Get("tag")
	replaces := sy.InviteRequest.CallID().Value() + ";to-tag=" + boxTag + ";from-tag=" + myTag
	req := sip.NewRequest(sip.REFER, sx.InviteRequest.Contact().Address)
	req.AppendHeader(sip.NewHeader("Refer-To", "<sip:103@box.invalid?Replaces="+url.QueryEscape(replaces)+">"))
	res, err := sx.Do(ctx, req)
	if err != nil || res.StatusCode != 202 {
		t.Fatalf("REFER with Replaces: %v %v", res, err)
	}
	transferor.transferDone(ctx, t)
	var off media.Remote
	select {
	case off = <-reoffers103:
	case <-ctx.Done():
		t.Fatal("103 got no re-INVITE")
	}
	if off.Proto != media.ProtoDTLS || len(off.Crypto) != 0 || off.Fingerprint == nil ||
		off.Fingerprint.String() != boxFP.String() || off.Setup != "actpass" {
		t.Fatalf("re-offer to 103: %s, setup %q, fingerprint %v", off.Proto, off.Setup, off.Fingerprint)
	}
	e103n.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(off.Addr, off.RTPPort))
	enc103, dec103, err := e103n.handshake(ctx, boxFP, true)
	if err != nil {
		t.Fatal("103's handshake on X:", err)
	}
	sendUntil(ctx, t, e102, enc102, e103n, dec103, "102-to-103")
	sendUntil(ctx, t, e103n, enc103, e102, dec102, "103-to-102")

	for got := 0; got < 2; got++ {
		select {
		case <-transferor.byes:
		case <-ctx.Done():
			t.Fatal("the transferor's legs were not both released")
		}
	}
	if rec := waitEnded(t, h).rec; rec.Cause != "attended transfer" {
		t.Fatalf("consultation call's CDR %+v", rec)
	}
	if err := dx.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-target.byes:
	case <-ctx.Done():
		t.Fatal("103 got no BYE")
	}
	e := waitEnded(t, h)
	if e.rec.Result != cdr.Answered || !e.rec.SRTPCaller || !e.rec.SRTPCallee {
		t.Fatalf("CDR %+v", e.rec)
	}
	h.noStateLeft(t, true)
}
