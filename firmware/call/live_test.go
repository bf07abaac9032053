package call

import (
	"context"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestLiveAndHangup: a call shows in Live while it rings and once
// answered (who, since, codec); Hangup ends an answered call with a BYE to
// both phones and a CDR naming the admin, and a ringing one with a CANCEL;
// an unknown or ended call is refused.
func TestLiveAndHangup(t *testing.T) {
	h := startHarness(t)
	caller, callee := newPhone(t, "101"), newPhone(t, "102")
	h.dir.set("102", callee.addr)
	ring := make(chan struct{}, 2)
	answer := make(chan bool, 2) // true: answer, false: keep ringing
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_ = d.Respond(180, "Ringing", nil)
		ring <- struct{}{}
		if <-answer {
			_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
			return
		}
		<-tx.Done()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if h.b.Hangup("no-such-call", "test") {
		t.Fatal("Hangup of an unknown call reported true")
	}

	// Answered: listed with its codec, hung up from the box.
	d, err := caller.dial(ctx, h, "102")
	if err != nil {
		t.Fatal(err)
	}
	<-ring
	ls := h.b.Live()
	if len(ls) != 1 || ls[0].From != "101" || ls[0].To != "102" || !ls[0].Answer.IsZero() || ls[0].Start.IsZero() {
		t.Fatalf("ringing call listed as %+v", ls)
	}
	answer <- true
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	ls = h.b.Live()
	if len(ls) != 1 || ls[0].Answer.IsZero() || ls[0].Codec == "" {
		t.Fatalf("answered call listed as %+v", ls)
	}
	if !h.b.Hangup(ls[0].ID, "hung up by admin") {
		t.Fatal("Hangup of an answered call reported false")
	}
	for name, p := range map[string]*phone{"caller": caller, "callee": callee} {
		select {
		case <-p.byes:
		case <-ctx.Done():
			t.Fatalf("%s got no BYE", name)
		}
	}
	if rec := waitEnded(t, h).rec; rec.Result != cdr.Answered || rec.Cause != "hung up by admin" {
		t.Fatalf("CDR %+v", rec)
	}
	if l := h.b.Live(); len(l) != 0 {
		t.Fatalf("after the hang-up: %+v", l)
	}
	if h.b.Hangup(ls[0].ID, "again") {
		t.Fatal("Hangup of an ended call reported true")
	}

	// Ringing: the box cancels it; the caller gets a final answer.
	d2, err := caller.dial(ctx, h, "102")
	if err != nil {
		t.Fatal(err)
	}
	<-ring
	ls = h.b.Live()
	if len(ls) != 1 {
		t.Fatalf("second call listed as %+v", ls)
	}
	if !h.b.Hangup(ls[0].ID, "hung up by admin") {
		t.Fatal("Hangup of a ringing call reported false")
	}
	answer <- false
	if err := d2.WaitAnswer(ctx, sipgo.AnswerOptions{}); err == nil {
		t.Fatal("a call the box hung up while ringing was answered")
	}
	if rec := waitEnded(t, h).rec; rec.Result == cdr.Answered {
		t.Fatalf("ringing call's CDR %+v", rec)
	}
	h.noStateLeft(t, false)
}
