package call

import (
	"net/netip"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/media"
)

// noMusic only marks music on hold as configured: these tests look at
// the SDP the box sends, not at the audio (TestDevModeMusicOnHold).
type noMusic struct{}

func (noMusic) Play(*media.Call, media.Side, media.Remote, Identity) (func(), string) {
	return nil, "test"
}

// FuzzHoldOffer: a peer's re-offer decides whether the call is on hold
// and what the other party is offered and the holder answered; whatever
// the SDP, the rewritten offer and answer stay valid SDP with a direction
// RFC 3264 allows.
func FuzzHoldOffer(f *testing.F) {
	for _, s := range []string{
		"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n",
		"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\na=inactive\r\n",
		"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9\r\n",
		"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=recvonly\r\n",
	} {
		f.Add([]byte(s))
	}
	c := &call{b: &B2BUA{cfg: Config{Hold: noMusic{}}}}
	box := media.Local{Addr: netip.MustParseAddr("198.51.100.1"), RTPPort: 10000, SessionID: 1, SessionVersion: 2}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, rem, err := media.ParseSDP(body)
		if err != nil {
			return
		}
		held := isHoldOffer(rem)
		out, err := media.Rewrite(c.holdOfferTo(rem, held), box)
		if err != nil {
			return
		}
		_, toB, err := media.ParseSDP(out)
		if err != nil {
			t.Fatalf("offer to the held party does not parse: %v\n%s", err, out)
		}
		if held && (toB.Direction == "inactive" || toB.Direction == "recvonly") {
			t.Fatalf("held party offered %s: it could not hear the music", toB.Direction)
		}
		ans := c.holdAnswer(rem, media.Remote{Formats: rem.Formats, Rtpmap: rem.Rtpmap, Direction: "recvonly"}, held)
		if held && rem.Direction == "inactive" && ans.Direction != "inactive" {
			t.Fatalf("inactive offer answered %s", ans.Direction)
		}
	})
}

func TestIsHoldOffer(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		addr string
		want bool
	}{
		{"sendonly", "192.0.2.1", true},
		{"inactive", "192.0.2.1", true},
		{"sendrecv", "0.0.0.0", true},
		{"sendrecv", "192.0.2.1", false},
		{"recvonly", "192.0.2.1", false},
		{"", "192.0.2.1", false},
	} {
		r := media.Remote{Direction: tc.dir, Addr: netip.MustParseAddr(tc.addr)}
		if got := isHoldOffer(r); got != tc.want {
			t.Errorf("%s %s: hold %v, want %v", tc.dir, tc.addr, got, tc.want)
		}
	}
}
