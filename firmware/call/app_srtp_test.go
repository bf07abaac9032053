package call

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// TestApplicationSRTP: a phone whose policy requires SRTP calls an
// application. The box answers RTP/SAVP with its own key; the phone's
// SRTP audio reaches the application decoded, the application's tone
// reaches the phone as SRTP under the box's key, and a plain-RTP offer
// from that phone is refused with 488.
func TestApplicationSRTP(t *testing.T) {
	apps := &testApps{app: &listenApp{started: make(chan struct{})}}
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) { c.Apps = apps })
	h.dir.mu.Lock()
	h.dir.policy[Identity{Extension: "101"}] = media.SRTPRequired
	h.dir.mu.Unlock()
	ph := newPhone(t, "101")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Plain RTP from an SRTP-required phone: 488.
	d, err := ph.dial(ctx, h, "*97")
	if err != nil {
		t.Fatal(err)
	}
	var re *sipgo.ErrDialogResponse
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{}); !errors.As(err, &re) || re.Res.StatusCode != 488 {
		t.Fatalf("plain offer: %v, want 488", err)
	}
	waitEnded(t, h)

	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := conn.LocalAddr().(*net.UDPAddr).Port
	offer := srtpSDP(t, port, "RTP/SAVP", 1, "AES_CM_128_HMAC_SHA1_80", false)
	_, offered, err := media.ParseSDP([]byte(offer))
	if err != nil {
		t.Fatal(err)
	}
	mine, err := sdes.Parse(offered.Crypto[0])
	if err != nil {
		t.Fatal(err)
	}
	host, hport, _ := net.SplitHostPort(h.addr)
	var pn int
	_, _ = fmt.Sscan(hport, &pn)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "phone.invalid"}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	d, err = ph.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: "*97", Host: host, Port: pn}, []byte(offer),
		from, sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	_, ans, err := media.ParseSDP(d.InviteResponse.Body())
	if err != nil || ans.Proto != media.ProtoSRTP || len(ans.Crypto) != 1 {
		t.Fatalf("answer %+v %v: want RTP/SAVP with a key", ans, err)
	}
	theirs, err := sdes.Parse(ans.Crypto[0])
	if err != nil {
		t.Fatal(err)
	}
	prof, _ := mine.Suite.Profile()
	enc, err := srtp.CreateContext(mine.Key, mine.Salt, prof)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := media.NewSRTPContext(theirs.Key, theirs.Salt, prof)
	if err != nil {
		t.Fatal(err)
	}
	box := &net.UDPAddr{IP: net.IP(ans.Addr.AsSlice()), Port: int(ans.RTPPort)}
	<-apps.app.started

	// The phone's 1 kHz tone as SRTP, 100 packets; what the box sends is
	// read meanwhile.
	got := make(chan int, 1)
	go func() {
		ok := 0
		buf := make([]byte, 1500)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				got <- ok
				return
			}
			var h rtp.Header
			if _, err := dec.DecryptRTP(nil, buf[:n], &h); err == nil && h.PayloadType == 0 {
				ok++
			}
		}
	}()
	ulaw, _ := codec.New("PCMU")
	pcm := make([]int16, 160)
	for i := range 100 {
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
		if _, err := conn.WriteToUDP(out, box); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // real-time pacing, as a phone sends
	}
	if n := <-got; n < 40 {
		t.Errorf("%d SRTP packets from the application decrypted with the box's key", n)
	}
	a := apps.app
	a.mu.Lock()
	frames, loud := a.frames, a.loud
	a.mu.Unlock()
	if frames < 80 || loud < 80 {
		t.Errorf("application heard %d frames, %d loud, of 100 SRTP packets", frames, loud)
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	e := waitEnded(t, h)
	if !e.rec.SRTPCaller || e.rec.Direction != string(dialplan.KindApp) {
		t.Fatalf("CDR %+v", e.rec)
	}
	h.noStateLeft(t, true)
}
