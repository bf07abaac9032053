package call

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// pickupCodes stands in for the feature-code table (firmware/features
// imports this package): *8 may take calls ringing at 102, *9 at nobody.
type pickupCodes struct{ Router }

func (p pickupCodes) RouteOutbound(from, dialled string) (dialplan.Decision, *dialplan.Lease, error) {
	switch dialled {
	case "*8":
		return dialplan.Decision{Kind: dialplan.KindApp, Class: dialplan.Internal, Target: PickupApp + "102", Dialled: dialled}, nil, nil
	case "*9":
		return dialplan.Decision{Kind: dialplan.KindApp, Class: dialplan.Internal, Target: PickupApp, Dialled: dialled}, nil, nil
	}
	return p.Router.RouteOutbound(from, dialled)
}

// TestPickupLeavesOneCall: 101 calls 102, which rings; 103 dials a code
// that may see nothing (404, one record), then one that may see 102: 102's
// INVITE is CANCELled, caller and picker are connected (and so reported to
// busy-lamp watchers), and after the BYE
// there is exactly one record for the call (answered, callee 103's call
// folded into it) and no call, dialog or pinhole is left.
func TestPickupLeavesOneCall(t *testing.T) {
	obs := &dialogLog{}
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) { c.Observer = obs })
	h.b.cfg.Plan = pickupCodes{h.b.cfg.Plan} // before any call
	caller, callee, picker := newPhone(t, "101"), newPhone(t, "102"), newPhone(t, "103")
	h.dir.setContacts("102", callee.addr)
	rang, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		tx.OnCancel(func(*sip.Request) { cancelled <- struct{}{} })
		_ = d.Respond(180, "Ringing", nil)
		<-tx.Done()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	nobody, err := picker.dialAs(ctx, h, "103", "*9", 6200)
	if err != nil {
		t.Fatal(err)
	}
	var e *sipgo.ErrDialogResponse
	if err := nobody.WaitAnswer(ctx, sipgo.AnswerOptions{}); !errors.As(err, &e) || e.Res.StatusCode != 404 {
		t.Fatalf("pickup with nothing visible: %v, want 404", err)
	}
	if rec := waitEnded(t, h).rec; rec.Result != cdr.Rejected || rec.From != "103" {
		t.Fatalf("refused pickup record %+v", rec)
	}

	d, err := caller.dial(ctx, h, "102")
	if err != nil {
		t.Fatal(err)
	}
	answered := make(chan error, 1)
	go func() {
		answered <- d.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
			if res.StatusCode == 180 { // the box has the callee's ringing
				select {
				case rang <- struct{}{}:
				default:
				}
			}
			return nil
		}})
	}()
	select {
	case <-rang:
	case <-ctx.Done():
		t.Fatal("the caller never heard 102 ring")
	}
	p, err := picker.dialAs(ctx, h, "103", "*8", 6100)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("pickup: %v", err)
	}
	if err := p.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-answered; err != nil {
		t.Fatalf("caller: %v", err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("102 was not CANCELled")
	}
	// Busy lamps: the ringing extension goes off, the picker is in the
	// call with the caller, the caller's remote party is the picker.
	for _, c := range []struct {
		ext, states string
		remote      string
	}{
		{"102", "trying,early,terminated", "101"},
		{"103", "confirmed", "101"},
		{"101", "trying,early,confirmed", "103"},
	} {
		states, last := obs.of(c.ext)
		if got := strings.Join(states, ","); got != c.states || last.Remote != (Party{Extension: c.remote}) {
			t.Fatalf("%s: %s with %+v, want %s with %s", c.ext, got, last.Remote, c.states, c.remote)
		}
	}
	// The picker's own call ends on its goroutine once its INVITE was
	// handed over: wait for it (under load it can lag the ACKs), but a
	// call left over fails.
	for deadline := time.Now().Add(10 * time.Second); h.b.Active() != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls active, want the picked-up call only", h.b.Active())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	rec := waitEnded(t, h).rec
	if rec.Result != cdr.Answered || rec.From != "101" || rec.To != "102" || rec.Cause != "callee BYE" {
		t.Fatalf("record %+v", rec)
	}
	for deadline := time.Now().Add(30 * time.Second); h.b.Active() != 0 || h.b.dialogCount() != 0; {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.noStateLeft(t, true)
	// The picker's own call ended inside the picked-up one (before the
	// caller had its 200): a record of it would be here by now.
	if len(h.ended) != 0 {
		t.Fatalf("a second record: %+v", (<-h.ended).rec)
	}
}

// TestSippPicksUp: sipp (stock-style uac.xml, as 101) dials the pickup
// code while 103's call rings at 102: sipp is answered at once, the caller
// is connected, 102 is CANCELled, and sipp's BYE after its pause ends the
// call for the caller with one answered record.
func TestSippPicksUp(t *testing.T) {
	h := startHarness(t)
	h.b.cfg.Plan = pickupCodes{h.b.cfg.Plan} // before any call
	caller, callee := newPhone(t, "103"), newPhone(t, "102")
	h.dir.setContacts("102", callee.addr)
	rang, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		tx.OnCancel(func(*sip.Request) { cancelled <- struct{}{} })
		_ = d.Respond(180, "Ringing", nil)
		<-tx.Done()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := caller.dialAs(ctx, h, "103", "102", 6300)
	if err != nil {
		t.Fatal(err)
	}
	answered := make(chan error, 1)
	go func() {
		answered <- d.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
			if res.StatusCode == 180 { // the box has the callee's ringing
				select {
				case rang <- struct{}{}:
				default:
				}
			}
			return nil
		}})
	}()
	select {
	case <-rang:
	case <-ctx.Done():
		t.Fatal("the caller never heard 102 ring")
	}
	sippUAC(t, "uac.xml", "*8", h.addr, 1, 1, 1, "-d", "300")
	if err := <-answered; err != nil {
		t.Fatalf("caller: %v", err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("102 was not CANCELled")
	}
	rec := waitEnded(t, h).rec
	if rec.Result != cdr.Answered || rec.From != "103" || rec.To != "102" || rec.Cause != "callee BYE" {
		t.Fatalf("record %+v", rec)
	}
	for deadline := time.Now().Add(30 * time.Second); h.b.Active() != 0 || h.b.dialogCount() != 0; {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.noStateLeft(t, true)
}
