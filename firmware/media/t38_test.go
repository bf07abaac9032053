package media

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// faxOffer is an ATA's T.38 re-INVITE body (audio rejected, image on).
const faxOffer = "v=0\r\no=ata 1 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n" +
	"m=audio 0 RTP/AVP 8\r\n" +
	"m=image 6004 udptl t38\r\n" +
	"a=T38FaxVersion:0\r\na=T38MaxBitRate:14400\r\na=t38faxfillbitremoval\r\n" +
	"a=T38FaxRateManagement:transferredTCF\r\na=T38FaxMaxBuffer:262\r\na=T38FaxMaxDatagram:1800\r\n" +
	"a=T38FaxUdpEC:t38UDPRedundancy\r\na=T38VendorInfo:0 0 0\r\na=ice-ufrag:x\r\n"

func TestParseFax(t *testing.T) {
	f, err := ParseFax([]byte(faxOffer))
	if err != nil {
		t.Fatal(err)
	}
	if f.Addr != netip.MustParseAddr("10.0.0.2") || f.Port != 6004 || f.Direction != "sendrecv" {
		t.Fatalf("fax %+v", f)
	}
	var keys []string
	for _, a := range f.Attrs {
		keys = append(keys, a.Key+"="+a.Value)
	}
	want := "T38FaxVersion=0 T38MaxBitRate=14400 T38FaxFillBitRemoval= T38FaxRateManagement=transferredTCF " +
		"T38FaxMaxBuffer=262 T38FaxMaxDatagram=1800 T38FaxUdpEC=t38UDPRedundancy"
	if got := strings.Join(keys, " "); got != want {
		t.Fatalf("attributes\n got %s\nwant %s", got, want)
	}
	loc := Local{Addr: netip.MustParseAddr("192.0.2.1"), RTPPort: 10020, SessionID: 7, SessionVersion: 3}
	body, err := RewriteFax(f, loc, &f)
	if err != nil {
		t.Fatal(err)
	}
	s := string(body)
	for _, w := range []string{"c=IN IP4 192.0.2.1\r\n", "m=audio 0 RTP/AVP 8\r\n", "m=image 10020 udptl t38\r\n",
		"a=T38FaxMaxDatagram:1400\r\n", "a=T38FaxFillBitRemoval\r\n", "a=sendrecv\r\n", "o=- 7 3 IN IP4 192.0.2.1\r\n"} {
		if !strings.Contains(s, w) {
			t.Errorf("rewritten SDP lacks %q:\n%s", w, s)
		}
	}
	for _, bad := range []string{"10.0.0.2", "VendorInfo", "ice", "1800"} {
		if strings.Contains(s, bad) {
			t.Errorf("rewritten SDP leaks %q:\n%s", bad, s)
		}
	}
	// The box's own output parses back to the same stream.
	g, err := ParseFax(body)
	if err != nil || g.Port != 10020 || len(g.Attrs) != len(f.Attrs) {
		t.Fatalf("round trip: %+v %v", g, err)
	}
}

func TestParseFaxRefuses(t *testing.T) {
	base := "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
	for _, tc := range []struct {
		name, body string
		notFax     bool
	}{
		{"audio offer", base + "m=audio 4000 RTP/AVP 0\r\nm=image 6004 udptl t38\r\n", true},
		{"image port 0", base + "m=image 0 udptl t38\r\n", true},
		{"secure UDPTL", base + "m=image 6004 UDP/TLS/UDPTL t38\r\n", true},
		{"not t38", base + "m=image 6004 udptl jpeg\r\n", true},
		{"video", base + "m=video 6004 RTP/AVP 96\r\n", true},
		{"version 9", base + "m=image 6004 udptl t38\r\na=T38FaxVersion:9\r\n", false},
		{"bit rate huge", base + "m=image 6004 udptl t38\r\na=T38MaxBitRate:99999999999\r\n", false},
		{"rate management", base + "m=image 6004 udptl t38\r\na=T38FaxRateManagement:x\r\n", false},
		{"EC", base + "m=image 6004 udptl t38\r\na=T38FaxUdpEC:magic\r\n", false},
		{"flag value", base + "m=image 6004 udptl t38\r\na=T38FaxTranscodingMMR:yes\r\n", false},
		{"duplicate", base + "m=image 6004 udptl t38\r\na=T38FaxVersion:0\r\na=t38faxversion:1\r\n", false},
		{"host name", strings.Replace(base, "c=IN IP4 10.0.0.2", "c=IN IP4 fax.example", 1) + "m=image 6004 udptl t38\r\n", false},
		{"multicast", strings.Replace(base, "c=IN IP4 10.0.0.2", "c=IN IP4 224.0.0.1", 1) + "m=image 6004 udptl t38\r\n", false},
		{"port range", base + "m=image 6004/2 udptl t38\r\n", false},
		{"no connection", "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nt=0 0\r\nm=image 6004 udptl t38\r\n", false},
		{"too big", base + "m=image 6004 udptl t38\r\n" + strings.Repeat("a=x\r\n", MaxSDPBytes/5), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFax([]byte(tc.body))
			switch {
			case err == nil:
				t.Fatal("accepted")
			case tc.notFax != errors.Is(err, ErrNotFax):
				t.Fatalf("err %v, want ErrNotFax=%v", err, tc.notFax)
			case !tc.notFax && !errors.Is(err, ErrSDP):
				t.Fatalf("err %v does not wrap ErrSDP", err)
			}
		})
	}
}

// TestAudioOfferWithImage: a gateway offering audio and T.38 together gets
// audio; the answer keeps the image line at port 0 (pion/sdp alone
// refused the whole offer).
func TestAudioOfferWithImage(t *testing.T) {
	body := "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n" +
		"m=audio 4000 RTP/AVP 0\r\nm=image 6004 udptl t38\r\na=T38FaxVersion:0\r\n"
	_, rem, err := ParseSDP([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if rem.RTPPort != 4000 {
		t.Fatalf("audio %+v", rem)
	}
	ans, err := Rewrite(rem, Local{Addr: netip.MustParseAddr("192.0.2.1"), RTPPort: 10000, Answering: &rem})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ans), "m=audio 10000 RTP/AVP 0\r\n") || !strings.Contains(string(ans), "m=image 0 udptl t38\r\n") {
		t.Fatalf("answer:\n%s", ans)
	}
	if _, err := ParseFax([]byte(body)); !errors.Is(err, ErrNotFax) {
		t.Fatalf("ParseFax of an audio offer: %v", err)
	}
}

func FuzzParseFax(f *testing.F) {
	f.Add([]byte(faxOffer))
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=image 6004 udptl t38\r\na=T38FaxMaxDatagram:99999\r\n"))
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=image 6004 UDP/TLS/UDPTL t38\r\nm=audio 0 RTP/AVP 0\r\n"))
	box := netip.MustParseAddr("198.51.100.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		// The audio parser must cope with whatever image lines hold too.
		_, _, _ = ParseSDP(b)
		fx, err := ParseFax(b)
		if err != nil {
			if !errors.Is(err, ErrSDP) && !errors.Is(err, ErrNotFax) {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		if !fx.Addr.IsValid() || fx.Addr.IsMulticast() || fx.Port == 0 || len(fx.Attrs) > len(t38Attrs) {
			t.Fatalf("accepted %+v", fx)
		}
		out, err := RewriteFax(fx, Local{Addr: box, RTPPort: 20000}, &fx)
		if err != nil {
			t.Fatalf("rewrite of accepted SDP failed: %v", err)
		}
		g, err := ParseFax(out)
		if err != nil {
			t.Fatalf("our rewrite does not parse: %v\n%s", err, out)
		}
		if g.Addr != box || g.Port != 20000 || len(g.Attrs) != len(fx.Attrs) {
			t.Fatalf("round trip changed the stream: %+v\n%s", g, out)
		}
		if v, ok := g.Attr("T38FaxMaxDatagram"); ok && len(v) > 4 {
			t.Fatalf("datagram size %s not clamped", v)
		}
	})
}

// TestRelayUDPTL: a T.38 leg relays datagrams verbatim to a T.38 leg and
// to nothing else; runts and the RTCP socket carry nothing.
func TestRelayUDPTL(t *testing.T) {
	r := newTestRelay(t)
	call, err := r.NewCall("fax")
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	ctx := t.Context()
	fax := Fax{Addr: localhost, Port: 9}
	if err := call.SetPeer(ctx, A, FaxPeer(fax)); err != nil {
		t.Fatal(err)
	}
	if err := call.SetPeer(ctx, B, Peer{Addr: localhost, RTPPort: 11}); err != nil {
		t.Fatal(err)
	}
	from := netip.AddrPortFrom(localhost, 9)
	send := func(pkt []byte, rtcpSock bool) int {
		l := call.legs[A]
		w := newWorker(4)
		l.handle(w, 0, l.state.Load(), l.other().state.Load(), pkt, from, rtcpSock)
		return len(w.tx[0].pkts) + len(w.tx[1].pkts)
	}
	ifp := []byte{0, 7, 3, 0xc0, 1, 0x80, 0}
	if n := send(ifp, false); n != 0 {
		t.Fatal("UDPTL forwarded to an audio leg")
	}
	if err := call.SetPeer(ctx, B, FaxPeer(Fax{Addr: localhost, Port: 11})); err != nil {
		t.Fatal(err)
	}
	if got := len(call.Pinholes()); got != 2 {
		t.Fatalf("%d pinholes for two T.38 legs, want one each", got)
	}
	for _, tc := range []struct {
		name     string
		pkt      []byte
		rtcpSock bool
		want     int
	}{
		{"IFP", ifp, false, 1},
		{"RTP-looking IFP", append([]byte{0x80}, ifp[1:]...), false, 1},
		{"runt", ifp[:3], false, 0},
		{"on the RTCP port", ifp, true, 0},
		{"too big", make([]byte, maxPacket+1), false, 0},
	} {
		if n := send(tc.pkt, tc.rtcpSock); n != tc.want {
			t.Errorf("%s: %d forwarded, want %d", tc.name, n, tc.want)
		}
	}
	if err := call.SetPeer(ctx, A, Peer{Addr: localhost, RTPPort: 9, SDES: &SDESKeys{}, UDPTL: true}); err == nil {
		t.Fatal("UDPTL with SRTP keys accepted")
	}
}
