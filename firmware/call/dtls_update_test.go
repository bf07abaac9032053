package call

import (
	"context"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// calleeOffer sends an offer from the callee in its dialog (re-INVITE,
// ACKed, or UPDATE) and returns the box's answer.
func (x *dtlsCall) calleeOffer(ctx context.Context, t *testing.T, method sip.RequestMethod, body string) media.Remote {
	t.Helper()
	target := x.ds.InviteRequest.Contact().Address
	req := sip.NewRequest(method, target)
	req.SetBody([]byte(body))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res, err := x.ds.Do(ctx, req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("callee's %s: %v %v", method, res, err)
	}
	if method == sip.INVITE {
		ack := sip.NewRequest(sip.ACK, target)
		ack.AppendHeader(&sip.CSeqHeader{SeqNo: res.CSeq().SeqNo, MethodName: sip.ACK})
		if err := x.ds.WriteRequest(ack); err != nil {
			t.Fatal(err)
		}
	}
	_, ans, err := media.ParseSDP(res.Body())
	if err != nil {
		t.Fatalf("answer to the callee's %s: %v\n%s", method, err, res.Body())
	}
	return ans
}

// callerUpdate sends an UPDATE with an offer from the caller and returns
// the box's answer.
func (x *dtlsCall) callerUpdate(ctx context.Context, t *testing.T, body string) media.Remote {
	t.Helper()
	req := sip.NewRequest(sip.UPDATE, x.d.InviteResponse.Contact().Address)
	req.SetBody([]byte(body))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res, err := x.d.Do(ctx, req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("caller's UPDATE: %v %v", res, err)
	}
	_, ans, err := media.ParseSDP(res.Body())
	if err != nil {
		t.Fatalf("answer to the caller's UPDATE: %v\n%s", err, res.Body())
	}
	return ans
}

// TestDTLSReofferEitherSide: hold and resume of a call with DTLS-SRTP on
// both legs, offered by the callee (re-INVITE and UPDATE) and by the
// caller with UPDATE (a=setup:actpass, as many phones send). The box
// answers keeping its role on the offering leg, re-offers the other leg
// with the same method, its fingerprint and its established role there,
// and both associations survive: SRTP keeps flowing with the first
// handshakes' keys, and each leg did exactly one handshake.
func TestDTLSReofferEitherSide(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x := newDTLSCall(ctx, t)
	// The box is the caller's DTLS client and the callee's server.
	for _, tc := range []struct {
		name   string
		callee bool
		method sip.RequestMethod
	}{
		{"callee re-INVITE", true, sip.INVITE},
		{"callee UPDATE", true, sip.UPDATE},
		{"caller UPDATE", false, sip.UPDATE},
	} {
		for _, dir := range []struct{ send, want string }{{"sendonly", "recvonly"}, {"sendrecv", "sendrecv"}} {
			var ans, off media.Remote
			if tc.callee {
				ans = x.calleeOffer(ctx, t, tc.method, x.eb.sdpWith("actpass", dir.send, x.eb.fp))
				x.checkDTLS(t, tc.name+" "+dir.send+": answer", ans, "passive", dir.want)
			} else {
				ans = x.callerUpdate(ctx, t, x.ea.sdpWith("actpass", dir.send, x.ea.fp))
				x.checkDTLS(t, tc.name+" "+dir.send+": answer", ans, "active", dir.want)
			}
			other, setup := x.reoffers, "passive"
			if tc.callee {
				other, setup = x.callerReoffers, "active"
			}
			select {
			case off = <-other: // answered before the box's answer
			default:
				t.Fatalf("%s %s: the other party got no re-offer", tc.name, dir.send)
			}
			x.checkDTLS(t, tc.name+" "+dir.send+": re-offer to the other party", off, setup, dir.send)
		}
		sendUntil(ctx, t, x.ea, x.aEnc, x.eb, x.bDec, tc.name+": caller-to-callee after resume")
		sendUntil(ctx, t, x.eb, x.bEnc, x.ea, x.aDec, tc.name+": callee-to-caller after resume")
	}
	e := x.hangup(ctx, t)
	for i, l := range e.st.Legs {
		if l.Handshakes != 1 || l.HandshakeFailures != 0 {
			t.Errorf("leg %d: %d handshakes (%d failed), want 1", i, l.Handshakes, l.HandshakeFailures)
		}
	}
}
