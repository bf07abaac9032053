package call

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/srtp/v3"
)

// dtlsCall is a connected call whose two legs are DTLS-SRTP, with each
// phone's SRTP contexts from its handshake with the relay.
type dtlsCall struct {
	h              *harness
	caller, callee *phone
	ea, eb         *dtlsEnd
	d              *sipgo.DialogClientSession
	ds             *sipgo.DialogServerSession // the callee's dialog
	boxFP          media.Fingerprint
	aEnc, aDec     *srtp.Context
	bEnc, bDec     *srtp.Context
	reoffers       chan media.Remote // offers the callee got in re-INVITEs
	callerReoffers chan media.Remote // offers the caller got in re-INVITEs
}

// dtlsReanswer answers a re-INVITE offer with e's DTLS-SRTP SDP, keeping
// the phone's role (active, the role it has with the box in these calls,
// unless the box pins it), and reports the offer on ch.
func dtlsReanswer(e *dtlsEnd, ch chan<- media.Remote, role string) func(*sip.Request) []byte {
	return func(req *sip.Request) []byte {
		_, rem, err := media.ParseSDP(req.Body())
		if err != nil {
			return nil
		}
		select {
		case ch <- rem:
		default:
		}
		setup := role
		switch rem.Setup {
		case "active":
			setup = "passive"
		case "passive":
			setup = "active"
		}
		dir := "sendrecv"
		if rem.Direction == "sendonly" {
			dir = "recvonly"
		}
		return []byte(e.sdpWith(setup, dir, e.fp))
	}
}

// newDTLSCall sets up a DTLS-SRTP call as in TestDTLSBothLegs (the caller
// offers actpass, the box answers active; the callee is offered actpass
// and answers active), with a callee that answers re-INVITEs with
// DTLS-SRTP keeping its role.
func newDTLSCall(ctx context.Context, t *testing.T, opts ...harnessOpt) *dtlsCall {
	t.Helper()
	x := &dtlsCall{h: startHarness(t, opts...), caller: newPhone(t, "101"), callee: newPhone(t, "102"),
		ea: newDTLSEnd(t), eb: newDTLSEnd(t), reoffers: make(chan media.Remote, 8), callerReoffers: make(chan media.Remote, 8)}
	x.h.dir.set("102", x.callee.addr)
	offers := make(chan media.Remote, 1)
	sess := make(chan *sipgo.DialogServerSession, 1)
	x.callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_, rem, err := media.ParseSDP(req.Body())
		if err != nil || rem.Fingerprint == nil {
			_ = d.Respond(488, "Not Acceptable Here", nil)
			return
		}
		offers <- rem
		_ = d.Respond(200, "OK", []byte(x.eb.sdp("active")), sip.NewHeader("Content-Type", "application/sdp"))
		sess <- d // after Respond, which sets the dialog's InviteResponse
	})
	x.callee.mu.Lock()
	x.callee.reanswer = dtlsReanswer(x.eb, x.reoffers, "active") // the callee was the client
	x.callee.mu.Unlock()
	x.caller.mu.Lock()
	x.caller.reanswer = dtlsReanswer(x.ea, x.callerReoffers, "passive") // the caller was the server
	x.caller.mu.Unlock()
	hp, pn, _ := net.SplitHostPort(x.h.addr)
	var port int
	fmt.Sscan(pn, &port)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "phone.invalid"}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	d, err := x.caller.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: "102", Host: hp, Port: port},
		[]byte(x.ea.sdp("actpass")), from, sip.NewHeader("Content-Type", "application/sdp"))
	x.d = connect(ctx, t, d, err)
	offer := <-offers
	x.ds = <-sess
	_, ans, err := media.ParseSDP(x.d.InviteResponse.Body())
	if err != nil || ans.Fingerprint == nil || ans.Setup != "active" || offer.Fingerprint == nil {
		t.Fatalf("caller's answer %+v %v", ans, err)
	}
	x.boxFP = *ans.Fingerprint
	x.ea.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ans.Addr, ans.RTPPort))
	x.eb.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(offer.Addr, offer.RTPPort))
	errs := make(chan error, 1)
	go func() { // the box is the caller's client
		var err error
		x.aEnc, x.aDec, err = x.ea.handshake(ctx, x.boxFP, false)
		errs <- err
	}()
	var errB error
	x.bEnc, x.bDec, errB = x.eb.handshake(ctx, *offer.Fingerprint, true)
	if errA := <-errs; errA != nil || errB != nil {
		t.Fatalf("handshakes: caller %v, callee %v", errA, errB)
	}
	sendUntil(ctx, t, x.ea, x.aEnc, x.eb, x.bDec, "caller-to-callee")
	sendUntil(ctx, t, x.eb, x.bEnc, x.ea, x.aDec, "callee-to-caller")
	return x
}

// reinvite sends the caller's re-INVITE with body, ACKs its 2xx and
// returns the box's answer.
func (x *dtlsCall) reinvite(ctx context.Context, t *testing.T, body string) media.Remote {
	t.Helper()
	req := sip.NewRequest(sip.INVITE, x.d.InviteResponse.Contact().Address)
	req.SetBody([]byte(body))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res, err := x.d.Do(ctx, req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("re-INVITE: %v %v", res, err)
	}
	ack := sip.NewRequest(sip.ACK, x.d.InviteResponse.Contact().Address)
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: res.CSeq().SeqNo, MethodName: sip.ACK})
	if err := x.d.WriteRequest(ack); err != nil {
		t.Fatal(err)
	}
	_, ans, err := media.ParseSDP(res.Body())
	if err != nil {
		t.Fatalf("answer to re-INVITE: %v\n%s", err, res.Body())
	}
	return ans
}

// checkDTLS fails unless r is DTLS-SRTP with the box's fingerprint, setup
// and direction.
func (x *dtlsCall) checkDTLS(t *testing.T, what string, r media.Remote, setup, dir string) {
	t.Helper()
	if r.Proto != media.ProtoDTLS || len(r.Crypto) != 0 || r.Fingerprint == nil ||
		r.Fingerprint.String() != x.boxFP.String() || r.Setup != setup || (dir != "" && r.Direction != dir) {
		fp := "none"
		if r.Fingerprint != nil {
			fp = r.Fingerprint.String()
		}
		t.Fatalf("%s: %s, %d a=crypto, fingerprint %s (box %s), setup %q (want %q), direction %q (want %q)",
			what, r.Proto, len(r.Crypto), fp, x.boxFP, r.Setup, setup, r.Direction, dir)
	}
}

func (x *dtlsCall) hangup(ctx context.Context, t *testing.T) ended {
	t.Helper()
	if err := x.d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	e := waitEnded(t, x.h)
	if x.h.b.Active() != 0 || x.h.b.dialogCount() != 0 {
		t.Fatalf("state left: %d calls, %d dialogs", x.h.b.Active(), x.h.b.dialogCount())
	}
	return e
}

// TestDTLSHoldResume: the caller of a call with DTLS-SRTP on both legs
// holds and resumes with re-INVITEs (a=setup:actpass, as many phones send).
// The box answers keeping its role, re-offers the callee DTLS-SRTP with
// the same fingerprint and its established role (not SDES), and after the
// resume SRTP flows intact both ways with the keys of the first
// handshakes: one handshake per leg in the whole call.
func TestDTLSHoldResume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x := newDTLSCall(ctx, t)
	for _, tc := range []struct{ send, want string }{{"sendonly", "recvonly"}, {"sendrecv", "sendrecv"}} {
		ans := x.reinvite(ctx, t, x.ea.sdpWith("actpass", tc.send, x.ea.fp))
		x.checkDTLS(t, "answer to the caller's "+tc.send+" re-INVITE", ans, "active", tc.want)
		select {
		case off := <-x.reoffers: // answered before the caller's 200
			// The callee took active on the first offer: the box stays passive.
			x.checkDTLS(t, "re-offer to the callee", off, "passive", tc.send)
		default:
			t.Fatal("the callee got no re-INVITE")
		}
	}
	sendUntil(ctx, t, x.ea, x.aEnc, x.eb, x.bDec, "caller-to-callee after resume")
	sendUntil(ctx, t, x.eb, x.bEnc, x.ea, x.aDec, "callee-to-caller after resume")
	e := x.hangup(ctx, t)
	for i, l := range e.st.Legs {
		if l.Handshakes != 1 || l.HandshakeFailures != 0 {
			t.Errorf("leg %d: %d handshakes (%d failed), want 1", i, l.Handshakes, l.HandshakeFailures)
		}
	}
	if !e.rec.SRTPCaller || !e.rec.SRTPCallee {
		t.Fatalf("CDR SRTP caller/callee = %v/%v", e.rec.SRTPCaller, e.rec.SRTPCallee)
	}
}

// TestDTLSReofferNewFingerprint: the caller re-offers with a new
// certificate. The box starts a new handshake on that leg only (the
// callee is re-offered the established association); until it finishes,
// media keeps flowing with the old keys, packets still in flight with the
// old keys pass after it, and then the new keys carry media both ways.
func TestDTLSReofferNewFingerprint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x := newDTLSCall(ctx, t)
	cert2, fp2, err := media.NewDTLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	x.ea.renew()
	ans := x.reinvite(ctx, t, x.ea.sdpWith("actpass", "sendrecv", fp2))
	x.checkDTLS(t, "answer to the new fingerprint", ans, "active", "sendrecv")
	x.checkDTLS(t, "re-offer to the callee", <-x.reoffers, "passive", "sendrecv")
	// The new handshake waits for the phone: the old keys still carry media.
	sendUntil(ctx, t, x.ea, x.aEnc, x.eb, x.bDec, "caller old keys while re-keying")
	enc2, dec2, err := x.ea.handshakeAs(ctx, cert2, x.boxFP, false)
	if err != nil {
		t.Fatalf("new handshake: %v", err)
	}
	// Packets the caller sent with the old keys just before switching
	// still pass, until the first one under the new keys.
	sendUntil(ctx, t, x.ea, x.aEnc, x.eb, x.bDec, "caller old keys in flight after re-keying")
	sendUntil(ctx, t, x.ea, enc2, x.eb, x.bDec, "caller-to-callee new keys")
	sendUntil(ctx, t, x.eb, x.bEnc, x.ea, dec2, "callee-to-caller new keys")
	e := x.hangup(ctx, t)
	if a, b := e.st.Legs[media.A], e.st.Legs[media.B]; a.Handshakes != 2 || b.Handshakes != 1 || a.HandshakeFailures+b.HandshakeFailures != 0 {
		t.Fatalf("handshakes caller %d (%d failed), callee %d (%d failed); want 2 and 1",
			a.Handshakes, a.HandshakeFailures, b.Handshakes, b.HandshakeFailures)
	}
}

// TestDTLSReofferWrongFingerprint: the caller re-offers a fingerprint that
// does not match the certificate it then presents. The box's handshake
// fails, the leg carries nothing (never plain RTP), and the call ends
// with a BYE to both phones.
func TestDTLSReofferWrongFingerprint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x := newDTLSCall(ctx, t)
	_, claimed, err := media.NewDTLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	presented, _, err := media.NewDTLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	x.ea.renew()
	x.checkDTLS(t, "answer", x.reinvite(ctx, t, x.ea.sdpWith("actpass", "sendrecv", claimed)), "active", "sendrecv")
	hs := make(chan error, 1)
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	defer hcancel()
	go func() {
		_, _, err := x.ea.handshakeAs(hctx, presented, x.boxFP, false)
		hs <- err
	}()
	// The caller keeps talking with the keys it has while the box fails.
	const marker = "must-never-arrive-in-clear"
	for sent := 0; ; sent++ {
		select {
		case <-x.caller.byes:
		case <-time.After(20 * time.Millisecond):
			ct, err := x.aEnc.EncryptRTP(nil, x.ea.rtp(marker), nil)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = x.ea.conn.WriteTo(ct, x.ea.to)
			if ctx.Err() != nil {
				t.Fatal("the caller got no BYE")
			}
			continue
		}
		break
	}
	select {
	case <-x.callee.byes:
	case <-ctx.Done():
		t.Fatal("the callee got no BYE")
	}
	e := waitEnded(t, x.h)
	if !strings.Contains(e.rec.Cause, "DTLS-SRTP failed") || e.st.Legs[media.A].HandshakeFailures != 1 {
		t.Fatalf("call ended with cause %q, caller leg %d handshake failures", e.rec.Cause, e.st.Legs[media.A].HandshakeFailures)
	}
	if err := <-hs; err == nil {
		t.Fatal("the phone's handshake with the wrong certificate succeeded")
	}
	for {
		select {
		case p := <-x.eb.media:
			if bytes.Contains(p, []byte(marker)) {
				t.Fatal("the callee received RTP in clear")
			}
			continue
		default:
		}
		break
	}
	if x.h.b.Active() != 0 || x.h.b.dialogCount() != 0 {
		t.Fatalf("state left: %d calls, %d dialogs", x.h.b.Active(), x.h.b.dialogCount())
	}
}

// TestDTLSSessionRefresh: neither phone refreshes (RFC 4028), so the box
// re-INVITEs both DTLS-SRTP legs with SDP. Each refresh offers DTLS-SRTP
// with the box's fingerprint and its established role (active toward the
// caller, passive toward the callee), so the phones' answers keep the
// associations: after several refreshes SRTP still flows with the first
// keys and no leg handshook again.
func TestDTLSSessionRefresh(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Refreshes every 2 s: a refresh that must wait for the other leg's
	// still has most of the interval left on loaded CI machines.
	x := newDTLSCall(ctx, t, func(c *Config, _ *dialplan.Plan) {
		c.minSE, c.SessionExpires = time.Second, 4*time.Second
	})
	for i := range 2 {
		for _, leg := range []struct {
			ch    chan media.Remote
			setup string
		}{{x.callerReoffers, "active"}, {x.reoffers, "passive"}} {
			select {
			case off := <-leg.ch:
				x.checkDTLS(t, fmt.Sprintf("refresh %d", i), off, leg.setup, "")
			case e := <-x.h.ended:
				t.Fatalf("refresh %d: the call ended (%q) before the box refreshed the %s leg", i, e.rec.Cause, leg.setup)
			}
		}
	}
	sendUntil(ctx, t, x.ea, x.aEnc, x.eb, x.bDec, "caller-to-callee after refreshes")
	sendUntil(ctx, t, x.eb, x.bEnc, x.ea, x.aDec, "callee-to-caller after refreshes")
	e := x.hangup(ctx, t)
	if e.rec.Cause == "session refresh failed" || e.rec.Cause == "session timer" {
		t.Fatalf("call ended by %q", e.rec.Cause)
	}
	for i, l := range e.st.Legs {
		if l.Handshakes != 1 || l.HandshakeFailures != 0 {
			t.Errorf("leg %d: %d handshakes (%d failed), want 1", i, l.Handshakes, l.HandshakeFailures)
		}
	}
}
