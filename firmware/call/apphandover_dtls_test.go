package call

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
)

// TestHandOverAfterRingingDTLS: a DTLS-SRTP caller rings 102, whose 183
// carries a DTLS-SRTP early answer (the callee handshakes with the relay's
// B leg at once); the ring time passes and the box hands the caller over
// to the application. The caller's 200 keeps the relay's fingerprint; the
// caller handshakes after it, its SRTP tone reaches the application
// decoded, and the application's audio reaches the caller under the new
// association's keys (the application plays for longer than the
// handshake takes: what it sends before the caller's keys exist is
// dropped, as on any DTLS-SRTP leg).
func TestHandOverAfterRingingDTLS(t *testing.T) {
	apps := &testApps{app: &listenApp{started: make(chan struct{}), extra: 3 * time.Second}}
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) {
		c.Apps = apps
		c.Hunter = stagesHunter{ring: 1500 * time.Millisecond}
	})
	caller, callee := newPhone(t, "101"), newPhone(t, "102")
	h.dir.setContacts("102", callee.addr)
	ea, eb := newDTLSEnd(t), newDTLSEnd(t)
	offers := make(chan media.Remote, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_, rem, err := media.ParseSDP(req.Body())
		if err != nil || rem.Fingerprint == nil {
			_ = d.Respond(488, "Not Acceptable Here", nil)
			return
		}
		_ = d.Respond(183, "Session Progress", []byte(eb.sdp("active")), sip.NewHeader("Content-Type", "application/sdp"))
		offers <- rem
		<-tx.Done() // rings until CANCELled
	})
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
	go func() { _, _, _ = eb.handshake(ctx, *offer.Fingerprint, true) }() // the branch's early association
	d = connect(ctx, t, d, nil)
	_, ans, err := media.ParseSDP(d.InviteResponse.Body())
	if err != nil || ans.Fingerprint == nil || ans.Setup != "active" || ans.Fingerprint.String() != offer.Fingerprint.String() {
		t.Fatalf("caller's answer %+v %v", ans, err)
	}
	ea.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ans.Addr, ans.RTPPort))
	for in := *ea.inbox.Load(); len(in) > 0; { // DTLS before the 200 is ignored, as phones do
		<-in
	}
	enc, dec, err := ea.handshake(ctx, *ans.Fingerprint, false)
	if err != nil {
		t.Fatalf("caller handshake after the hand-over: %v", err)
	}
	select {
	case <-apps.app.started:
	case <-ctx.Done():
		t.Fatal("the application never ran")
	}
	ulaw, _ := codec.New("PCMU")
	pcm := make([]int16, 160)
	fromApp := 0
	for i := range 60 {
		for j := range pcm {
			pcm[j] = int16(8000 * math.Sin(2*math.Pi*1000*float64(i*160+j)/8000))
		}
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(100 + i), Timestamp: uint32(i * 160), SSRC: 0xabc},
			Payload: ulaw.Encode(nil, pcm)}
		raw, _ := pkt.Marshal()
		out, err := enc.EncryptRTP(nil, raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ea.conn.WriteTo(out, ea.to); err != nil {
			t.Fatal(err)
		}
		for drained := false; !drained; {
			select {
			case b := <-ea.media:
				var hd rtp.Header
				if _, err := dec.DecryptRTP(nil, b, &hd); err == nil && hd.PayloadType == 0 {
					fromApp++
				}
			default:
				drained = true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if fromApp < 20 {
		t.Errorf("%d SRTP packets from the application decrypted", fromApp)
	}
	a := apps.app
	a.mu.Lock()
	frames, loud, reason := a.frames, a.loud, a.caller.Reason
	a.mu.Unlock()
	if frames < 40 || loud < 40 || reason != ReasonNoAnswer {
		t.Errorf("application heard %d frames, %d loud, reason %q", frames, loud, reason)
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	e := waitEnded(t, h)
	if e.rec.To != "voicemail/102" || !e.rec.SRTPCaller {
		t.Fatalf("CDR %+v", e.rec)
	}
	h.noStateLeft(t, true)
}
