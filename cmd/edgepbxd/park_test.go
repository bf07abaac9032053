package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// park has the callee's phone (ext) transfer its caller to target (the
// park code or a slot) by a blind REFER on d; the REFER's status.
func (fb *featureBox) park(ctx context.Context, d *sipgo.DialogServerSession, ext, target string) int {
	fb.t.Helper()
	req := sip.NewRequest(sip.REFER, d.InviteRequest.Contact().Address)
	req.AppendHeader(sip.NewHeader("Refer-To", fmt.Sprintf("<sip:%s@127.0.0.1:%d>", target, fb.port)))
	req.AppendHeader(sip.NewHeader("Referred-By", fmt.Sprintf("<sip:%s@127.0.0.1>", ext)))
	res, err := d.Do(ctx, req)
	if err != nil {
		fb.t.Fatalf("%s REFERs to %s: %v\n%s", ext, target, err, fb.p.output())
	}
	return res.StatusCode
}

// drainRTP empties ph's RTP queue until nothing arrived for a while (the
// music of a parked call before the retriever's own packets).
func drainRTP(ph *siptest.Phone) int {
	n := 0
	for {
		select {
		case <-ph.RTP():
			n++
		case <-time.After(300 * time.Millisecond):
			return n
		}
	}
}

// waitRTP waits for want packets at ph (music on hold).
func waitRTP(ctx context.Context, t *testing.T, ph *siptest.Phone, want int, what string) {
	t.Helper()
	for got := 0; got < want; got++ {
		select {
		case <-ph.RTP():
		case <-ctx.Done():
			t.Fatalf("%s: %d of %d RTP packets", what, got, want)
		}
	}
}

// answeredCall has 100 call ext, which answers: the caller's side and the
// callee's dialog.
func (fb *featureBox) answeredCall(ctx context.Context, ext string) (dialled, *sipgo.DialogServerSession) {
	fb.t.Helper()
	call := fb.answered(ctx, fb.dialAsync(ctx, "100", ext), "100 calls "+ext)
	select {
	case d := <-fb.phones[ext].Dialogs:
		<-fb.phones[ext].Answered
		return call, d
	case <-ctx.Done():
		fb.t.Fatalf("%s answered no call", ext)
	}
	return call, nil
}

// dialogNotify waits for a dialog-info NOTIFY whose body says state
// (confirmed, terminated) for the watched slot.
func dialogNotify(ctx context.Context, t *testing.T, ph *eventPhone, state string, fb *featureBox) {
	t.Helper()
	for {
		select {
		case n := <-ph.notifies:
			b := string(n.Body())
			if state == "terminated" && !strings.Contains(b, "<state") {
				return // no dialog left: the slot is free
			}
			if strings.Contains(b, ">"+state+"</state>") {
				if strings.Contains(b, "<remote>") || strings.Contains(b, "100") {
					t.Fatalf("the slot's lamp tells who waits:\n%s", b)
				}
				return
			}
		case <-ctx.Done():
			t.Fatalf("no dialog NOTIFY %s\n%s", state, fb.p.output())
		}
	}
}

// TestDevModePark runs the real binary with real sipgo phones (pickup
// group "sales": 201, 202, 210; slots 71-72): 100 calls 202, 202 blind-
// transfers it to *70 and the caller waits in 71 hearing music; a watcher
// in the group sees slot 71 confirmed while the one outside is refused the
// subscription; the parked call still counts against 100's limit of one
// call. 203 and 204 (outside the group) dialling 71 get the same 404 as
// for an empty slot; 201 dials 71 and talks to the caller, RTP both ways,
// and the lamp goes off. A call parked into slot 72 by transfer to 72
// (directed park) nobody takes rings 202 back after the timeout; a caller
// hanging up frees its slot; a ring-back 202 refuses goes to 202's
// voicemail. The CDRs say what happened.
func TestDevModePark(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fb := startFeatureBox(t, ctx)
	t.Cleanup(func() { // a -race daemon reports and goes on
		if out := fb.p.output(); strings.Contains(out, "DATA RACE") {
			t.Errorf("the daemon raced:\n%s", out)
		}
	})
	pass := map[string]string{}
	for _, u := range []string{"210", "211"} {
		var ext struct{ User, Password string }
		if err := json.Unmarshal(fb.api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ext); err != nil || ext.Password == "" {
			t.Fatalf("create %s: %v", u, err)
		}
		pass[u] = ext.Password
	}
	fb.cfg.Features.PickupGroups = []features.PickupGroup{{Name: "sales", Members: []string{"201", "202", "210"}}}
	fb.cfg.Features.Park = features.ParkSlots{First: "71", Count: 2, Timeout: features.MinParkTimeout}
	// 100 may have one call at a time: a parked call is still one.
	fb.cfg.Extensions = append(fb.cfg.Extensions, dialplan.Extension{Number: "100", Limits: dialplan.Limits{MaxConcurrent: 1}})
	fb.saveConfig()

	retrieve := func(from, slot string) int {
		t.Helper()
		r := <-fb.dialAsync(ctx, from, slot)
		if r.code == 200 {
			_ = r.d.Bye(ctx)
			t.Fatalf("%s retrieved %s and should not have", from, slot)
		}
		return r.code
	}
	empty := retrieve("201", "71")
	if empty != 404 {
		t.Fatalf("an empty slot: %d, want 404", empty)
	}
	if code := <-fb.dialAsync(ctx, "201", "*70"); code.code != 404 {
		t.Fatalf("dialling *70 (not a transfer): %d, want 404", code.code)
	}

	watcher := newEventPhone(t, fb.port, "210", pass["210"])
	if code := watcher.subscribe(ctx, "71", "dialog", "application/dialog-info+xml").StatusCode; code != 200 {
		t.Fatalf("210 watching slot 71: %d, want 200", code)
	}
	dialogNotify(ctx, t, watcher, "terminated", fb)
	outsider := newEventPhone(t, fb.port, "211", pass["211"])
	if code := outsider.subscribe(ctx, "71", "dialog", "application/dialog-info+xml").StatusCode; code != 403 {
		t.Fatalf("211 (no pickup group) watching slot 71: %d, want 403", code)
	}

	// Park by transfer to the code: the first free slot, 71.
	caller, d := fb.answeredCall(ctx, "202")
	if code := fb.park(ctx, d, "202", "*70"); code != 202 {
		t.Fatalf("REFER to *70: %d", code)
	}
	fb.byeAt(ctx, "202") // the parker's leg is released
	waitRTP(ctx, t, fb.phones["100"], 25, "music for the parked caller")
	dialogNotify(ctx, t, watcher, "confirmed", fb)
	if r := <-fb.dialAsync(ctx, "100", "203"); r.code != 486 {
		t.Fatalf("100 calls while its call is parked: %d, want 486 (one call at a time)", r.code)
	}
	for _, from := range []string{"203", "204"} {
		if got := retrieve(from, "71"); got != empty {
			t.Fatalf("%s (outside the group) dials 71: %d, want %d as for an empty slot", from, got, empty)
		}
	}
	if got := retrieve("201", "72"); got != empty {
		t.Fatalf("201 dials the empty slot 72: %d", got)
	}
	got := fb.answered(ctx, fb.dialAsync(ctx, "201", "71"), "201 dials 71")
	dialogNotify(ctx, t, watcher, "terminated", fb)
	drainRTP(fb.phones["100"])
	siptest.SendRTPUntil(ctx, t, fb.phones["201"], fb.phones["100"], got.addr, 5)
	drainRTP(fb.phones["201"])
	siptest.SendRTPUntil(ctx, t, fb.phones["100"], fb.phones["201"], caller.addr, 5)
	if err := got.d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	fb.byeAt(ctx, "100")
	if got := retrieve("201", "71"); got != empty {
		t.Fatalf("71 after the retrieval: %d", got)
	}

	// Directed park into 72; nobody takes it: 202 is rung back.
	caller, d = fb.answeredCall(ctx, "202")
	if code := fb.park(ctx, d, "202", "72"); code != 202 {
		t.Fatalf("REFER to 72: %d", code)
	}
	fb.byeAt(ctx, "202")
	waitRTP(ctx, t, fb.phones["100"], 10, "music in slot 72")
	select {
	case <-fb.phones["202"].Dialogs: // the ring-back, answered
		<-fb.phones["202"].Answered
	case <-ctx.Done():
		t.Fatalf("202 was not rung back\n%s", fb.p.output())
	}
	drainRTP(fb.phones["202"])
	siptest.SendRTPUntil(ctx, t, fb.phones["100"], fb.phones["202"], caller.addr, 5)
	if err := caller.d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	fb.byeAt(ctx, "202")

	// The caller hangs up while parked: the slot is free again.
	caller, d = fb.answeredCall(ctx, "202")
	if code := fb.park(ctx, d, "202", "*70"); code != 202 {
		t.Fatalf("REFER to *70: %d", code)
	}
	fb.byeAt(ctx, "202")
	dialogNotify(ctx, t, watcher, "confirmed", fb)
	if err := caller.d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	dialogNotify(ctx, t, watcher, "terminated", fb)
	if got := retrieve("201", "71"); got != empty {
		t.Fatalf("71 after its caller left: %d", got)
	}

	// The parker is busy at the ring-back: the parker's voicemail.
	caller, d = fb.answeredCall(ctx, "202")
	if code := fb.park(ctx, d, "202", "*70"); code != 202 {
		t.Fatalf("REFER to *70: %d", code)
	}
	fb.byeAt(ctx, "202")
	fb.phones["202"].Reply(486)
	fb.p.waitLine(t, regexp.MustCompile(`parked call to voicemail.*slot=71`))
	if err := caller.d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	fb.phones["202"].Reply(0)

	// The records say what happened.
	want := []string{"parked in 71 by 202; retrieved from 71 by 201", "parked in 72 by 202; park 72: timed out, rung back to 202",
		"parked in 71 by 202; caller BYE", "parked in 71 by 202; park 71: timed out, 202 did not answer: voicemail 202"}
	for _, w := range want {
		if !fb.cdrCause(ctx, w) {
			t.Fatalf("no CDR with cause %q", w)
		}
	}
}

// cdrCause reports whether a call record's cause starts with prefix
// (waiting for records still being written).
func (fb *featureBox) cdrCause(ctx context.Context, prefix string) bool {
	for ctx.Err() == nil {
		var page cdr.Page
		if err := json.Unmarshal(fb.api.must(200, "GET", "/api/v1/cdr?limit=100", nil), &page); err != nil {
			fb.t.Fatal(err)
		}
		for _, r := range page.Records {
			if strings.HasPrefix(r.Cause, prefix) {
				return true
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return false
}
