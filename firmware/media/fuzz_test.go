package media

import (
	"context"
	"net/netip"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
)

// FuzzRelayPacket feeds arbitrary datagrams from the accepted source into
// both kinds of leg (SRTP with SDES, plain RTP with RTCP mux): nothing may
// panic, and nothing that fails SRTP authentication may be queued for the
// other leg.
func FuzzRelayPacket(f *testing.F) {
	f.Add([]byte{0x80, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x12, 0x34}, false)
	f.Add([]byte{0x81, 0xc9, 0x00, 0x01, 0, 0, 0, 5}, true)
	f.Add([]byte{0x16, 0xfe, 0xfd, 0, 0}, false)
	f.Add([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42}, false)
	r := newTestRelay(f)
	call, err := r.NewCall("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { call.Close() })
	offer, _ := sdes.New(1, sdes.AES128CMSHA1_80)
	keys, _, _ := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
	peerA := Peer{Addr: localhost, RTPPort: 9, RTCPMux: true, SDES: &keys}
	peerB := Peer{Addr: localhost, RTPPort: 11, RTCPMux: true}
	if err := call.SetPeer(context.Background(), A, peerA); err != nil {
		f.Fatal(err)
	}
	if err := call.SetPeer(context.Background(), B, peerB); err != nil {
		f.Fatal(err)
	}
	from := netip.AddrPortFrom(localhost, 9)
	f.Fuzz(func(t *testing.T, pkt []byte, rtcpSock bool) {
		for _, s := range []Side{A, B} {
			l := call.legs[s]
			w := newWorker(4)
			st, ost := l.state.Load(), l.other().state.Load()
			l.handle(w, 0, st, ost, pkt, from, rtcpSock)
			if s == A && len(w.tx[0].pkts)+len(w.tx[1].pkts) != 0 {
				t.Fatalf("unauthenticated packet forwarded from the SRTP leg")
			}
		}
	})
}
