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
