package call

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestBlindTransfer: 101 calls 102; 101 REFERs the call to 103 (RFC
// 3515). The box answers 202, reports 100 and 200 by NOTIFY sipfrag,
// calls 103 as 102, bridges it to 102 and releases 101's leg; when 103
// hangs up, 102 gets the BYE and nothing is left. Refusals change nothing.
func TestBlindTransfer(t *testing.T) {
	h := startHarness(t)
	caller, callee, target := newPhone(t, "101"), newPhone(t, "102"), newPhone(t, "103")
	h.dir.set("102", callee.addr)
	answer := func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_ = d.Respond(180, "Ringing", nil)
		_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
	}
	callee.setOnInvite(answer)
	targetSess := make(chan *sipgo.DialogServerSession, 1)
	target.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		answer(req, tx, d)
		targetSess <- d
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := caller.dial(ctx, h, "102")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	refer := func(to string) *sip.Response {
		t.Helper()
		req := sip.NewRequest(sip.REFER, d.InviteResponse.Contact().Address)
		req.AppendHeader(sip.NewHeader("Refer-To", to))
		res, err := d.Do(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// Refusals: the call goes on untouched.
	for _, tc := range []struct {
		to   string
		code int
	}{
		{"<sip:0044201234567@box.invalid>", 403},                                // international: not through a transfer
		{"<sip:103@box.invalid>", 480},                                          // not registered yet
		{"<sip:103@box.invalid?Replaces=abc%3Bto-tag%3Dx%3Bfrom-tag%3Dy>", 481}, // no such dialog
		{"<mailto:103@box.invalid>", 400},
	} {
		if res := refer(tc.to); res.StatusCode != tc.code {
			t.Fatalf("REFER %s: %d, want %d", tc.to, res.StatusCode, tc.code)
		}
	}
	h.dir.set("103", target.addr)
	if res := refer("<sip:103@box.invalid>"); res.StatusCode != 202 {
		t.Fatalf("REFER: %d", res.StatusCode)
	}
	var frags []string
	for len(frags) == 0 || !strings.Contains(frags[len(frags)-1], "200") {
		select {
		case n := <-caller.notifies:
			if ev := n.GetHeader("Event"); ev == nil || ev.Value() != "refer" {
				t.Fatalf("NOTIFY without Event: refer:\n%s", n)
			}
			frags = append(frags, strings.TrimSpace(string(n.Body())))
		case <-ctx.Done():
			t.Fatalf("NOTIFYs so far %q", frags)
		}
	}
	if frags[0] != "SIP/2.0 100 Trying" || frags[len(frags)-1] != "SIP/2.0 200 OK" {
		t.Fatalf("NOTIFY sipfrags %q", frags)
	}
	select {
	case <-caller.byes: // the transferor's leg is released
	case <-ctx.Done():
		t.Fatal("transferor got no BYE")
	}
	target.mu.Lock()
	inv := target.invites[0]
	target.mu.Unlock()
	if inv.From().Address.User != "102" || strings.Contains(inv.String(), "phone-101") {
		t.Fatalf("target's INVITE:\n%s", inv)
	}
	if h.b.Active() != 1 {
		t.Fatalf("%d calls active after the transfer", h.b.Active())
	}
	var ts *sipgo.DialogServerSession
	select {
	case ts = <-targetSess:
	case <-ctx.Done():
		t.Fatal("target not called")
	}
	if err := ts.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-callee.byes:
	case <-ctx.Done():
		t.Fatal("remaining party got no BYE")
	}
	rec := waitEnded(t, h).rec
	if rec.Result != cdr.Answered || rec.Cause != "caller BYE" {
		t.Fatalf("CDR %+v", rec)
	}
	if c := h.b.Counters(); c.Transfers != 1 {
		t.Fatalf("counters %+v", c)
	}
	h.noStateLeft(t, true)
}

// TestBlindTransferEdges: a busy target is reported by NOTIFY and the
// call goes on; a transferor that hangs up right after 202 (as many
// phones do) ends only its own leg, and the target is still bridged.
func TestBlindTransferEdges(t *testing.T) {
	h := startHarness(t)
	caller, callee, target := newPhone(t, "101"), newPhone(t, "102"), newPhone(t, "103")
	h.dir.set("102", callee.addr)
	h.dir.set("103", target.addr)
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
	})
	var busy atomic.Bool
	busy.Store(true)
	release := make(chan struct{})
	targetSess := make(chan *sipgo.DialogServerSession, 1)
	target.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		if busy.Load() {
			_ = d.Respond(486, "Busy Here", nil)
			return
		}
		_ = d.Respond(180, "Ringing", nil)
		<-release
		_ = d.Respond(200, "OK", []byte(sdpBody(7002, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
		targetSess <- d
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := caller.dial(ctx, h, "102")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	refer := func() {
		t.Helper()
		req := sip.NewRequest(sip.REFER, d.InviteResponse.Contact().Address)
		req.AppendHeader(sip.NewHeader("Refer-To", "<sip:103@box.invalid>"))
		res, err := d.Do(ctx, req)
		if err != nil || res.StatusCode != 202 {
			t.Fatalf("REFER: %v %v", res, err)
		}
	}
	lastFrag := func() string {
		t.Helper()
		for {
			select {
			case n := <-caller.notifies:
				if ss := n.GetHeader("Subscription-State"); ss != nil && strings.HasPrefix(ss.Value(), "terminated") {
					return strings.TrimSpace(string(n.Body()))
				}
			case <-ctx.Done():
				t.Fatal("no final NOTIFY")
			}
		}
	}
	refer()
	if f := lastFrag(); f != "SIP/2.0 486 Busy Here" {
		t.Fatalf("final NOTIFY %q", f)
	}
	// The call is untouched: a re-INVITE still works.
	req := sip.NewRequest(sip.INVITE, d.InviteResponse.Contact().Address)
	req.SetBody([]byte(sdpBody(6000, "sendonly")))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	if res, err := d.Do(ctx, req); err != nil || res.StatusCode != 200 {
		t.Fatalf("re-INVITE after a failed transfer: %v %v", res, err)
	} else {
		ack := sip.NewRequest(sip.ACK, d.InviteResponse.Contact().Address)
		ack.AppendHeader(&sip.CSeqHeader{SeqNo: res.CSeq().SeqNo, MethodName: sip.ACK})
		if err := d.WriteRequest(ack); err != nil {
			t.Fatal(err)
		}
	}

	busy.Store(false)
	refer()
	if err := d.Bye(ctx); err != nil { // the transferor leaves at once
		t.Fatal(err)
	}
	close(release)
	var ts *sipgo.DialogServerSession
	select {
	case ts = <-targetSess:
	case <-ctx.Done():
		t.Fatal("target not called")
	}
	if err := ts.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-callee.byes:
	case <-ctx.Done():
		t.Fatal("remaining party got no BYE")
	}
	if rec := waitEnded(t, h).rec; rec.Result != cdr.Answered {
		t.Fatalf("CDR %+v", rec)
	}
	// Counted only if the call was still up when the target answered, i.e.
	// the transferor's BYE did not end it.
	if c := h.b.Counters(); c.Transfers != 1 {
		t.Fatalf("counters %+v", c)
	}
	if n := len(callee.byes); n != 0 {
		t.Fatalf("remaining party got %d more BYEs", n)
	}
	select {
	case bye := <-caller.byes:
		t.Fatalf("BYE to a transferor that already left:\n%s", bye)
	default:
	}
	h.noStateLeft(t, false)
}
