package call

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/srtp/v3"
)

// TestDTLSLongRinging: a DTLS-SRTP caller that starts DTLS only after the
// box's 200 (as many phones do) reaches a DTLS-SRTP callee that rings for
// longer than the relay's handshake timeout. The box answers the caller
// a=setup:active and sends its ClientHello only after the 200, so the
// handshake's limit counts from there; the caller then handshakes, and
// SRTP flows intact both ways. With early media the callee's 183 carries
// its answer, the box forwards its own to the caller and starts there;
// the caller stays silent until the 200 and the box tries again then.
func TestDTLSLongRinging(t *testing.T) {
	t.Run("ringing", func(t *testing.T) { testDTLSLongRinging(t, false) })
	t.Run("early media", func(t *testing.T) { testDTLSLongRinging(t, true) })
}

func testDTLSLongRinging(t *testing.T, early bool) {
	// Long enough for a handshake under -race on a loaded 2-core host
	// (500 ms was not), short enough to ring past it several times.
	limit := 1200 * time.Millisecond
	if early {
		// The callee's first ClientHello may beat the box's processing
		// of its 183 and be dropped; pion resends it after 1 s.
		limit = 2 * time.Second
	}
	h := startHarnessMedia(t, func(c *media.Config) { c.HandshakeTimeout = limit })
	caller, callee := newPhone(t, "101"), newPhone(t, "102")
	h.dir.set("102", callee.addr)
	ea, eb := newDTLSEnd(t), newDTLSEnd(t)
	offers := make(chan media.Remote, 1)
	ring := make(chan struct{})
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_, rem, err := media.ParseSDP(req.Body())
		if err != nil || rem.Fingerprint == nil {
			_ = d.Respond(488, "Not Acceptable Here", nil)
			return
		}
		if early {
			_ = d.Respond(183, "Session Progress", []byte(eb.sdp("active")), sip.NewHeader("Content-Type", "application/sdp"))
		} else {
			_ = d.Respond(180, "Ringing", nil)
		}
		offers <- rem
		<-ring
		_ = d.Respond(200, "OK", []byte(eb.sdp("active")), sip.NewHeader("Content-Type", "application/sdp"))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hp, pn, _ := net.SplitHostPort(h.addr)
	var port int
	fmt.Sscan(pn, &port)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "phone.invalid"}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	d, err := caller.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: "102", Host: hp, Port: port},
		[]byte(ea.sdp("actpass")), from, sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	var offer media.Remote
	select {
	case offer = <-offers:
	case <-ctx.Done():
		t.Fatal("callee got no DTLS-SRTP offer")
	}
	eb.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(offer.Addr, offer.RTPPort))
	type keys struct {
		enc, dec *srtp.Context
		err      error
	}
	kb := make(chan keys, 1)
	calleeDTLS := func() {
		var k keys
		k.enc, k.dec, k.err = eb.handshake(ctx, *offer.Fingerprint, true)
		kb <- k
	}
	if early {
		go calleeDTLS() // its answer is out: the callee handshakes at once
	}
	// The callee rings for more than twice the handshake limit.
	time.Sleep(5 * limit / 2)
	in := *ea.inbox.Load()
	if n := len(in); n != 0 && !early {
		t.Fatalf("the box sent the caller %d DTLS records before its answer", n)
	}
	for len(in) > 0 { // the caller ignores DTLS before the 200
		<-in
	}
	close(ring)
	d = connect(ctx, t, d, nil)
	_, ans, err := media.ParseSDP(d.InviteResponse.Body())
	if err != nil || ans.Fingerprint == nil || ans.Setup != "active" {
		t.Fatalf("caller's answer %+v %v", ans, err)
	}
	if ans.Fingerprint.String() != offer.Fingerprint.String() {
		t.Fatal("the relay shows different fingerprints on its two legs")
	}
	ea.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ans.Addr, ans.RTPPort))
	errs := make(chan error, 1)
	x := &dtlsCall{h: h, caller: caller, callee: callee, ea: ea, eb: eb, d: d, boxFP: *ans.Fingerprint}
	go func() { // only now, after the 200: the box is the caller's client
		var err error
		x.aEnc, x.aDec, err = ea.handshake(ctx, x.boxFP, false)
		errs <- err
	}()
	if !early {
		calleeDTLS()
	}
	kB := <-kb
	x.bEnc, x.bDec = kB.enc, kB.dec
	if errA, errB := <-errs, kB.err; errA != nil || errB != nil {
		t.Fatalf("handshakes: caller %v, callee %v", errA, errB)
	}
	sendUntil(ctx, t, ea, x.aEnc, eb, x.bDec, "caller-to-callee")
	sendUntil(ctx, t, eb, x.bEnc, ea, x.aDec, "callee-to-caller")
	e := x.hangup(ctx, t)
	if !e.rec.SRTPCaller || !e.rec.SRTPCallee {
		t.Fatalf("CDR SRTP caller/callee = %v/%v", e.rec.SRTPCaller, e.rec.SRTPCallee)
	}
	if f := e.st.Legs[media.A].HandshakeFailures + e.st.Legs[media.B].HandshakeFailures; f != 0 {
		t.Fatalf("%d handshake failures", f)
	}
}
