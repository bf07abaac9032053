package call

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestForking: extension 102 has two registered phones; the box rings
// both at once (RFC 3261 §16-style parallel search done by the B2BUA).
func TestForking(t *testing.T) {
	type behaviour int
	const (
		ringUntilCancel behaviour = iota // 180, then waits for CANCEL
		answer                           // 180, 200 once the other phone rings
		busy                             // 486
		unavailable                      // 480
		decline                          // 603 once the other phone rings
	)
	tests := []struct {
		name        string
		first, sec  behaviour
		wantCode    int
		wantResult  cdr.Result
		wantCancels int // CANCELs the first phone saw
	}{
		{"second answers, first cancelled", ringUntilCancel, answer, 200, cdr.Answered, 1},
		{"6xx ends the search", ringUntilCancel, decline, 603, cdr.Rejected, 1},
		{"all fail: busy is the best answer", unavailable, busy, 486, cdr.Busy, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := startHarness(t)
			caller, p1, p2 := newPhone(t, "101"), newPhone(t, "102"), newPhone(t, "102")
			h.dir.setContacts("102", p1.addr, p2.addr)
			firstRang := make(chan struct{})
			cancels := make(chan struct{}, 4)
			answered := make(chan *sipgo.DialogServerSession, 1)
			act := func(b behaviour, tx sip.ServerTransaction, d *sipgo.DialogServerSession, first bool) {
				switch b {
				case ringUntilCancel:
					tx.OnCancel(func(*sip.Request) { cancels <- struct{}{} })
					_ = d.Respond(180, "Ringing", nil)
					close(firstRang)
					<-tx.Done()
				case answer:
					<-firstRang
					_ = d.Respond(180, "Ringing", nil)
					_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
					answered <- d
				case busy:
					_ = d.Respond(486, "Busy Here", nil)
				case unavailable:
					_ = d.Respond(480, "Temporarily Unavailable", nil)
				case decline:
					<-firstRang
					_ = d.Respond(603, "Decline", nil)
				}
			}
			p1.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
				act(tc.first, tx, d, true)
			})
			p2.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
				act(tc.sec, tx, d, false)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d, err := caller.dial(ctx, h, "102")
			if err != nil {
				t.Fatal(err)
			}
			err = d.WaitAnswer(ctx, sipgo.AnswerOptions{})
			code := 200
			var e *sipgo.ErrDialogResponse
			if errors.As(err, &e) {
				code = e.Res.StatusCode
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode {
				t.Fatalf("caller got %d, want %d", code, tc.wantCode)
			}
			for i := 0; i < tc.wantCancels; i++ {
				select {
				case <-cancels:
				case <-ctx.Done():
					t.Fatal("the ringing phone got no CANCEL")
				}
			}
			p1.mu.Lock()
			n1 := len(p1.invites)
			p1.mu.Unlock()
			p2.mu.Lock()
			n2 := len(p2.invites)
			p2.mu.Unlock()
			if n1 != 1 || n2 != 1 {
				t.Fatalf("INVITEs: first phone %d, second %d", n1, n2)
			}
			if code == 200 {
				if err := d.Ack(ctx); err != nil {
					t.Fatal(err)
				}
				if err := d.Bye(ctx); err != nil {
					t.Fatal(err)
				}
				select {
				case <-p2.byes:
				case <-ctx.Done():
					t.Fatal("answering phone got no BYE")
				}
			}
			rec := waitEnded(t, h).rec
			if rec.Result != tc.wantResult {
				t.Fatalf("CDR %+v", rec)
			}
			if len(cancels) != 0 {
				t.Fatalf("%d extra CANCELs", len(cancels))
			}
			h.noStateLeft(t, true)
		})
	}
}

// TestForkLate2xx: a phone whose 200 crosses the box's CANCEL (sipp,
// uas_late_200.xml) after another phone of the extension answered: the box
// ACKs the late 200 and hangs it up with BYE; the call stays with the
// phone that answered first.
func TestForkLate2xx(t *testing.T) {
	h := startHarness(t)
	caller, winner := newPhone(t, "101"), newPhone(t, "102")
	late, lateDone := sippUASRun(t, "uas_late_200.xml", "-m", "1")
	h.dir.setContacts("102", late, winner.addr)
	rang := make(chan struct{})
	winner.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		<-rang // the sipp phone rings first
		_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d, err := caller.dial(ctx, h, "102")
	if err != nil {
		t.Fatal(err)
	}
	once := false
	err = d.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
		if res.StatusCode == 180 && !once { // only the sipp phone sends 180
			once = true
			close(rang)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	// sipp exits 0 only after CANCEL, its late 200 ACKed and a BYE.
	select {
	case err := <-lateDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("late phone's scenario did not finish")
	}
	if h.b.Active() != 1 {
		t.Fatalf("%d calls active", h.b.Active())
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	if rec := waitEnded(t, h).rec; rec.Result != cdr.Answered || rec.Cause != "caller BYE" {
		t.Fatalf("CDR %+v", rec)
	}
	h.noStateLeft(t, false)
}
