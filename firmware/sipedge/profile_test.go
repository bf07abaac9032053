package sipedge

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// profileSubscribe is the ua-profile SUBSCRIBE a Yealink sends to the SIP
// server it was given (no credentials, the box's address as the domain).
func profileSubscribe(p *phone, mac string) string {
	host := p.srv.IP.String()
	return fmt.Sprintf("SUBSCRIBE sip:%[1]s@%[2]s SIP/2.0\r\nVia: SIP/2.0/UDP %[3]s;branch=z9hG4bK%[4]s;rport\r\n"+
		"From: <sip:%[1]s@%[2]s>;tag=%[4]s\r\nTo: <sip:%[1]s@%[2]s>\r\nCall-ID: %[4]s@pnp\r\nCSeq: 1 SUBSCRIBE\r\n"+
		"Contact: <sip:%[1]s@%[3]s>\r\nEvent: ua-profile;profile-type=\"device\";vendor=\"Yealink\";model=\"SIP-T46S\"\r\n"+
		"Expires: 0\r\nUser-Agent: Yealink SIP-T46S 66.86.0.15\r\nContent-Length: 0\r\n\r\n", mac, host, p.local, randHex(6))
}

// profilesFunc is a Profiles from a function: it records what the edge
// hands over and answers as told.
type profilesFunc func(msg []byte, src netip.Addr) (string, string, bool)

func (f profilesFunc) ProfileURL(msg []byte, src netip.Addr) (string, string, bool) {
	return f(msg, src)
}

// TestProfileSubscribeBranch: without Profiles a ua-profile SUBSCRIBE
// takes the ordinary path (a challenge: the branch swallows nothing);
// with one, the edge hands over the request as received from its source
// and answers nothing when refused. The answering path runs against
// provisioning in cmd/edgepbxd (TestUnicastPnP, real sipp).
func TestProfileSubscribeBranch(t *testing.T) {
	s := startServer(t, nil)
	p := newPhone(t, s.udp, "127.0.0.1", "pnp")
	r, ok := p.exchange(profileSubscribe(p, "805ec0000001"))
	if !ok || r.StatusCode != 401 {
		t.Fatalf("without Profiles: %v %v, want the ordinary 401", r, ok)
	}

	got := make(chan string, 4)
	s.SetProfiles(profilesFunc(func(msg []byte, src netip.Addr) (string, string, bool) {
		got <- src.String() + " " + strings.SplitN(string(msg), "\r\n", 2)[0]
		return "", "", false
	}))
	p.send(profileSubscribe(p, "805ec0000002"))
	if seen := <-got; seen != "127.0.0.1 SUBSCRIBE sip:805ec0000002@127.0.0.1 SIP/2.0" {
		t.Fatalf("handed over %q", seen)
	}
	if raw, _, ok := p.recv(); ok {
		t.Fatalf("refused, but answered:\n%s", raw)
	}
	// Other events still take the ordinary path.
	msg := strings.Replace(profileSubscribe(p, "805ec0000003"), "Event: ua-profile", "Event: presence", 1)
	if r, ok := p.exchange(msg); !ok || r.StatusCode != 401 {
		t.Fatalf("Event: presence: %v %v, want the ordinary 401", r, ok)
	}
	if len(got) != 0 {
		t.Fatalf("a presence SUBSCRIBE was handed to Profiles: %q", <-got)
	}
}
