package call

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// offerOpusFirst is what linphone offers: opus first, then G.711 and DTMF.
func offerOpusFirst(port int) []byte {
	return []byte("v=0\r\no=linphone 1 1 IN IP4 127.0.0.1\r\ns=Talk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		fmt.Sprintf("m=audio %d RTP/AVP 96 0 8 101\r\n", port) +
		"a=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
}

// answerOnly answers with one codec, DTMF listed first (the CDR must skip it).
func answerOnly(port int, pt, rtpmap string) []byte {
	return []byte("v=0\r\no=baresip 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		fmt.Sprintf("m=audio %d RTP/AVP 101 %s\r\n", port, pt) +
		"a=rtpmap:101 telephone-event/8000\r\na=rtpmap:" + pt + " " + rtpmap + "\r\na=sendrecv\r\n")
}

// TestCDRCodecFromAnswer: the record names the codec the answer chose
// (PCMU), not the offer's first one (opus), and follows a re-INVITE that
// changes it (PCMA).
func TestCDRCodecFromAnswer(t *testing.T) {
	h := startHarness(t)
	caller, callee := newPhone(t, "101"), newPhone(t, "102")
	h.dir.set("102", callee.addr)
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_ = d.Respond(200, "OK", answerOnly(7000, "0", "PCMU/8000"), sip.NewHeader("Content-Type", "application/sdp"))
	})
	callee.mu.Lock()
	callee.reanswer = func(*sip.Request) []byte { return answerOnly(7000, "8", "PCMA/8000") }
	callee.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host, hport, _ := net.SplitHostPort(h.addr)
	var pn int
	fmt.Sscan(hport, &pn)

	for _, tc := range []struct {
		name     string
		reinvite bool
		want     string
	}{
		{"answer", false, "PCMU/8000"},
		{"re-INVITE", true, "PCMA/8000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "phone.invalid"}}
			from.Params.Add("tag", sip.GenerateTagN(10))
			d, err := caller.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: "102", Host: host, Port: pn},
				offerOpusFirst(6000), from, sip.NewHeader("Content-Type", "application/sdp"))
			if err != nil {
				t.Fatal(err)
			}
			if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.reinvite {
				req := sip.NewRequest(sip.INVITE, d.InviteResponse.Contact().Address)
				req.SetBody(offerOpusFirst(6000))
				req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
				res, err := d.Do(ctx, req)
				if err != nil || res.StatusCode != 200 {
					t.Fatalf("re-INVITE: %v %v", res, err)
				}
				ack := sip.NewRequest(sip.ACK, d.InviteResponse.Contact().Address)
				ack.AppendHeader(&sip.CSeqHeader{SeqNo: res.CSeq().SeqNo, MethodName: sip.ACK})
				if err := d.WriteRequest(ack); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			if rec := waitEnded(t, h).rec; rec.Codec != tc.want {
				t.Fatalf("CDR codec %q, want %q", rec.Codec, tc.want)
			}
		})
	}
	h.noStateLeft(t, true)
}
