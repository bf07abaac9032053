package call

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

const t38Offer = "v=0\r\no=ata 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
	"m=image 6004 udptl t38\r\na=T38FaxVersion:0\r\na=T38FaxRateManagement:transferredTCF\r\n"

// TestT38RefusedOnSRTPRequiredLeg: when either leg's extension requires
// SRTP, a T.38 re-INVITE (plain UDPTL) is answered 488 by the box without
// reaching the other side, and the call goes on as before.
func TestT38RefusedOnSRTPRequiredLeg(t *testing.T) {
	for _, tc := range []struct {
		name     string
		required string // the extension that requires SRTP
	}{
		{"callee requires SRTP", "102"},
		{"caller requires SRTP", "101"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHarness(t)
			h.dir.policy[Identity{Extension: tc.required}] = media.SRTPRequired
			caller, callee := newPhone(t, "101"), newPhone(t, "102")
			h.dir.set("102", callee.addr)
			var invites atomic.Int32
			callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
				invites.Add(1)
				_, rem, err := media.ParseSDP(req.Body())
				if err != nil || len(rem.Crypto) == 0 {
					_ = d.Respond(488, "Not Acceptable Here", nil)
					return
				}
				cr, err := sdes.Parse(rem.Crypto[0])
				if err != nil {
					_ = d.Respond(488, "Not Acceptable Here", nil)
					return
				}
				_ = d.Respond(200, "OK", []byte(srtpSDP(t, 7000, rem.Proto, cr.Tag, string(cr.Suite), false)),
					sip.NewHeader("Content-Type", "application/sdp"))
			})
			// The callee would take T.38: only the box's policy refuses.
			callee.mu.Lock()
			callee.reanswer = func(*sip.Request) []byte { return []byte(strings.Replace(t38Offer, "6004", "7004", 1)) }
			callee.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			host, hport, _ := net.SplitHostPort(h.addr)
			var pn int
			fmt.Sscan(hport, &pn)
			from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "phone.invalid"}}
			from.Params.Add("tag", sip.GenerateTagN(10))
			d, err := caller.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: "102", Host: host, Port: pn},
				[]byte(srtpSDP(t, 6000, media.ProtoSRTP, 1, "AES_CM_128_HMAC_SHA1_80", false)), from, sip.NewHeader("Content-Type", "application/sdp"))
			if err != nil {
				t.Fatal(err)
			}
			if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
			pinsBefore, _, _, _, _ := h.pins.state()
			req := sip.NewRequest(sip.INVITE, d.InviteResponse.Contact().Address)
			req.SetBody([]byte(t38Offer))
			req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			res, err := d.Do(ctx, req)
			if err != nil || res.StatusCode != 488 {
				t.Fatalf("T.38 re-INVITE: %v %v, want 488", res, err)
			}
			callee.mu.Lock()
			reinvites := len(callee.reinvite)
			callee.mu.Unlock()
			if n := invites.Load(); n != 1 || reinvites != 0 {
				t.Fatalf("callee saw %d INVITEs and %d re-INVITEs, want only the call's", n, reinvites)
			}
			c := onlyCall(t, h)
			if !c.m.Secured(media.A) || !c.m.Secured(media.B) {
				t.Fatal("legs lost SRTP after the refused T.38 offer")
			}
			if open, _, _, _, _ := h.pins.state(); open != pinsBefore {
				t.Fatalf("pinholes %d, were %d", open, pinsBefore)
			}
			if err := d.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			if rec := waitEnded(t, h).rec; rec.Codec == "T.38" || !strings.HasPrefix(rec.Codec, "PCMU") {
				t.Fatalf("CDR codec %q", rec.Codec)
			}
			h.noStateLeft(t, true)
		})
	}
}
