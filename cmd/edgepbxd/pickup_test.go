package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/emiago/sipgo"
)

// dialled is the outcome of a call placed in the background.
type dialled struct {
	d    *sipgo.DialogClientSession
	addr *net.UDPAddr
	code int // 200 answered, else the final status
	err  error
}

// dialAsync dials number from ext and reports the outcome on the channel.
func (fb *featureBox) dialAsync(ctx context.Context, from, number string) <-chan dialled {
	out := make(chan dialled, 1)
	go func() {
		d, a, err := fb.phones[from].Dial(ctx, "127.0.0.1", fb.port, number)
		r := dialled{d: d, addr: a, code: 200, err: err}
		if err != nil {
			r.code = statusOf(err)
		}
		out <- r
	}()
	return out
}

func (fb *featureBox) answered(ctx context.Context, ch <-chan dialled, what string) dialled {
	fb.t.Helper()
	select {
	case r := <-ch:
		if r.code != 200 {
			fb.t.Fatalf("%s: %d %v\n%s", what, r.code, r.err, fb.p.output())
		}
		return r
	case <-ctx.Done():
		fb.t.Fatalf("%s: no answer", what)
	}
	return dialled{}
}

func (fb *featureBox) cancelled(ctx context.Context, ext string) {
	fb.t.Helper()
	select {
	case <-fb.phones[ext].Cancels:
	case <-ctx.Done():
		fb.t.Fatalf("%s was never CANCELled", ext)
	}
}

func (fb *featureBox) byeAt(ctx context.Context, ext string) {
	fb.t.Helper()
	select {
	case <-fb.phones[ext].Byes:
	case <-ctx.Done():
		fb.t.Fatalf("%s: no BYE", ext)
	}
}

// TestDevModePickup runs the real binary with real sipgo phones (pickup
// group "sales": 201 and 202): a call from 100 rings 202; extensions
// outside the group dialling *8 or **202 get the same 404 as somebody who
// finds nothing ringing; 201 picks it up by **202 (directed) and later by
// *8 (group): 202's ringing INVITE is CANCELled, the caller is answered
// and RTP flows both ways between the caller and the picker, and a BYE
// from either side reaches the other.
func TestDevModePickup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fb := startFeatureBox(t, ctx)
	pick := func(from, code string) int {
		t.Helper()
		r := <-fb.dialAsync(ctx, from, code)
		if r.code == 0 {
			t.Fatalf("%s dials %s: %v\n%s", from, code, r.err, fb.p.output())
		}
		if r.code == 200 {
			_ = r.d.Bye(ctx)
			t.Fatalf("%s picked up with %s and should not have", from, code)
		}
		return r.code
	}
	// Nothing rings: the answer every refusal below must equal.
	nothing := pick("201", "*8")
	if nothing != 404 || pick("201", "**202") != nothing {
		t.Fatalf("nothing to pick up: %d", nothing)
	}

	fb.phones["202"].Reply(siptest.Ring)
	for i, code := range []string{"**202", "*8"} {
		caller := fb.dialAsync(ctx, "100", "202")
		fb.invited(ctx, "202")
		if i == 0 {
			for _, r := range []struct{ from, code string }{
				{"203", "*8"}, {"203", "**202"}, {"204", "**202"}, {"100", "**202"}, {"203", "**203"},
			} {
				if got := pick(r.from, r.code); got != nothing {
					t.Fatalf("%s dials %s while 202 rings: %d, want %d as for nothing ringing", r.from, r.code, got, nothing)
				}
			}
		}
		picked := fb.answered(ctx, fb.dialAsync(ctx, "201", code), "201 dials "+code)
		fb.cancelled(ctx, "202")
		call := fb.answered(ctx, caller, "100 calls 202")
		// Media between the caller and the picker, both ways.
		siptest.SendRTPUntil(ctx, t, fb.phones["100"], fb.phones["201"], call.addr, 5)
		siptest.SendRTPUntil(ctx, t, fb.phones["201"], fb.phones["100"], picked.addr, 5)
		if i == 0 {
			if err := picked.d.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			fb.byeAt(ctx, "100")
		} else {
			if err := call.d.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			fb.byeAt(ctx, "201")
		}
	}
	// A ring-all group ringing 201, 202 and 203: 202 dials *8 while its
	// own phone rings too (as from a second phone), and every branch,
	// its own included, gives way to the picker.
	fb.cfg.Features.Groups = append(fb.cfg.Features.Groups, features.RingGroup{Number: "610", Strategy: features.RingAll, Ring: 120,
		Members: []features.Member{{Extension: "201"}, {Extension: "202"}, {Extension: "203"}}})
	fb.saveConfig()
	for _, e := range []string{"201", "203"} {
		fb.phones[e].Reply(siptest.Ring)
	}
	caller := fb.dialAsync(ctx, "100", "610")
	for _, e := range []string{"201", "202", "203"} {
		fb.invited(ctx, e)
	}
	picked := fb.answered(ctx, fb.dialAsync(ctx, "202", "*8"), "202 dials *8")
	for _, e := range []string{"201", "202", "203"} {
		fb.cancelled(ctx, e)
	}
	call := fb.answered(ctx, caller, "100 calls 610")
	siptest.SendRTPUntil(ctx, t, fb.phones["202"], fb.phones["100"], picked.addr, 5)
	if err := call.d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	fb.byeAt(ctx, "202")
	// The same call can be picked up once only: a second picker finds
	// nothing (the call was answered).
	if got := pick("201", "*8"); got != nothing {
		t.Fatalf("after the pickups: %d", got)
	}
}
