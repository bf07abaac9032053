package call

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
)

// TestApplicationWaitsForDTLSKeys: a DTLS-SRTP caller dials an
// application that starts playing at once (a voicemail greeting). The
// caller completes its handshake only half a second later, as a slow
// phone does; still the whole of the application's first second (50
// packets, the first with the talkspurt's marker) reaches it: the
// application's audio waits for the leg's keys instead of being dropped
// by the relay while there are none.
func TestApplicationWaitsForDTLSKeys(t *testing.T) {
	apps := &testApps{app: &listenApp{started: make(chan struct{})}}
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) { c.Apps = apps })
	ph := newPhone(t, "101")
	ea := newDTLSEnd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hp, pn, _ := net.SplitHostPort(h.addr)
	var port int
	fmt.Sscan(pn, &port)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "phone.invalid"}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	d, err := ph.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: "*97", Host: hp, Port: port},
		[]byte(ea.sdp("actpass")), from, sip.NewHeader("Content-Type", "application/sdp"))
	d = connect(ctx, t, d, err)
	_, ans, err := media.ParseSDP(d.InviteResponse.Body())
	if err != nil || ans.Fingerprint == nil || ans.Setup != "active" {
		t.Fatalf("answer %+v %v: want DTLS-SRTP, the box active", ans, err)
	}
	ea.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ans.Addr, ans.RTPPort))
	select {
	case <-apps.app.started:
	case <-ctx.Done():
		t.Fatal("the application never ran")
	}
	time.Sleep(500 * time.Millisecond) // the slow phone: its handshake starts late on purpose
	_, dec, err := ea.handshake(ctx, *ans.Fingerprint, false)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	got, first := 0, rtp.Header{}
	wait := time.NewTimer(10 * time.Second)
	defer wait.Stop()
	for got < 50 {
		select {
		case b := <-ea.media:
			var hd rtp.Header
			if _, err := dec.DecryptRTP(nil, b, &hd); err == nil && hd.PayloadType == 0 {
				if got == 0 {
					first = hd
				}
				got++
			}
		case <-wait.C:
			t.Fatalf("%d of the application's 50 packets reached the caller", got)
		}
	}
	if !first.Marker {
		t.Errorf("first packet %+v: no marker, the start of the audio was lost", first)
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	e := waitEnded(t, h)
	if !e.rec.SRTPCaller {
		t.Fatalf("CDR %+v", e.rec)
	}
	h.noStateLeft(t, true)
}
