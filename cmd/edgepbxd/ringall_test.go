package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/ivr"
	"github.com/edgepbx/edgepbx/firmware/queue"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// ringingAtOnce waits until every phone of exts (set to Reply(Ring))
// rings at the same moment, an INVITE of each not yet CANCELled, and
// returns each phone's ringing Call-IDs. Rounds that rang only some of
// them (agents logging in one after the other) are passed over.
func (fb *featureBox) ringingAtOnce(ctx context.Context, exts ...string) map[string]map[string]bool {
	fb.t.Helper()
	ringing := map[string]map[string]bool{}
	for _, e := range exts {
		ringing[e] = map[string]bool{}
	}
	for {
		all := true
		for _, e := range exts {
			ph := fb.phones[e]
		read:
			for {
				select {
				case inv := <-ph.Invites:
					ringing[e][inv.CallID().Value()] = true
				case c := <-ph.Cancels:
					delete(ringing[e], c.CallID().Value())
				default:
					break read
				}
			}
			all = all && len(ringing[e]) > 0
		}
		if all {
			return ringing
		}
		select {
		case <-ctx.Done():
			fb.t.Fatalf("%v never rang at once: %v\n%s", exts, ringing, grepLines(fb.p.output(), "queue", "ivr", "WARN"))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// cancelledAt waits until phone ext got a CANCEL for each of the
// Call-IDs in ids.
func (fb *featureBox) cancelledAt(ctx context.Context, ext string, ids map[string]bool) {
	fb.t.Helper()
	left := len(ids)
	for left > 0 {
		select {
		case c := <-fb.phones[ext].Cancels:
			if ids[c.CallID().Value()] {
				left--
			}
		case <-ctx.Done():
			fb.t.Fatalf("%s: no CANCEL of its ringing INVITE", ext)
		}
	}
}

// bridged checks that RTP flows both ways between caller (its box media
// address boxA) and agent, whose answered INVITE was inv, then hangs up
// and waits for the BYE at the agent.
func (fb *featureBox) bridged(ctx context.Context, d *sipgo.DialogClientSession, caller *siptest.Phone, boxA *net.UDPAddr, agent string, inv *sip.Request) {
	fb.t.Helper()
	boxB, err := siptest.MediaAddr(inv.Body())
	if err != nil {
		fb.t.Fatal(err)
	}
	quietRTP(ctx, fb.t, caller) // the music stopped at the answer
	siptest.SendRTPUntil(ctx, fb.t, caller, fb.phones[agent], boxA, 20)
	siptest.SendRTPUntil(ctx, fb.t, fb.phones[agent], caller, boxB, 20)
	if err := d.Bye(ctx); err != nil {
		fb.t.Fatal(err)
	}
	select {
	case <-fb.phones[agent].Byes:
	case <-ctx.Done():
		fb.t.Fatalf("the caller's BYE never reached %s", agent)
	}
}

// answeredAt waits for phone ext's 200 and returns the INVITE it answered.
func (fb *featureBox) answeredAt(ctx context.Context, ext string) *sip.Request {
	fb.t.Helper()
	select {
	case inv := <-fb.phones[ext].Answered:
		return inv
	case <-ctx.Done():
		fb.t.Fatalf("%s never answered\n%s", ext, grepLines(fb.p.output(), "queue", "ivr", "WARN"))
	}
	return nil
}

// TestDevModeRingAllFromApplication runs the real binary with sipgo
// phones: the hand-over from an application rings several phones at
// once.
//   - A caller waiting in ring-all queue 820 (music) is offered to its
//     three agents as they log in; they ring at the same moment, 203
//     picks up, 202 and 204 get a CANCEL of their ringing INVITE, and
//     RTP flows both ways between the caller and 203.
//   - Key 1 in IVR menu 830 hands the caller to ring-all group 600: its
//     three members ring at once, 202 picks up, the others are CANCELled,
//     RTP flows both ways.
//   - Queue 821's longest wait passes with nobody logged in: its
//     fallback, queue 822, takes the caller in the same application
//     (music again) and its agent 204 answers; the statistics count the
//     time-out in 821 and the answer in 822.
func TestDevModeRingAllFromApplication(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fb := startFeatureBox(t, ctx)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(grepLines(fb.p.output(), "call", "ivr", "queue", "media"))
			_, _, cdrs := fb.api.do("GET", "/api/v1/cdr?limit=5", nil)
			t.Logf("CDRs: %s", cdrs)
		}
	})
	fb.cfg.Features.Queues = []queue.Queue{
		{Number: "820", Strategy: queue.RingAll, Ring: 30, MaxWait: 600,
			Agents: []queue.Agent{{Extension: "202"}, {Extension: "203"}, {Extension: "204"}}},
		{Number: "821", Strategy: queue.LeastRecent, MaxWait: 5, Fallback: "822", Agents: []queue.Agent{{Extension: "202"}}},
		{Number: "822", Strategy: queue.RingAll, Agents: []queue.Agent{{Extension: "204", Static: true}}},
	}
	fb.cfg.Features.Groups = []features.RingGroup{
		{Number: "600", Strategy: features.RingAll, Ring: 30, Members: []features.Member{{Extension: "201"}, {Extension: "202"}, {Extension: "203"}}},
	}
	fb.cfg.IVR = ivr.Config{Zone: "UTC", Menus: []ivr.Menu{
		{Number: "830", Name: "sales", Options: []ivr.Option{{Key: "1", Dest: "600"}}, Timeout: 10, Repeats: 2}}}
	fb.saveConfig()
	caller := fb.phones["100"]
	agents := []string{"202", "203", "204"}
	for _, e := range agents {
		fb.phones[e].Reply(siptest.Ring)
	}
	fb.drain()

	// Queue 820: nobody logged in, the application answers at once.
	d, boxA, err := caller.Dial(ctx, "127.0.0.1", fb.port, "820")
	if err != nil {
		t.Fatalf("820: %v\n%s", err, fb.p.output())
	}
	hearsMusic(ctx, t, caller, 25)
	for _, e := range agents {
		fb.api.must(200, "PUT", "/api/v1/queues/820/agents/"+e, map[string]bool{"logged_in": true})
	}
	ringing := fb.ringingAtOnce(ctx, agents...)
	fb.phones["203"].Pick()
	inv := fb.answeredAt(ctx, "203")
	fb.cancelledAt(ctx, "202", ringing["202"])
	fb.cancelledAt(ctx, "204", ringing["204"])
	fb.bridged(ctx, d, caller, boxA, "203", inv)
	q := fb.waitQueue(ctx, "820", func(q queue.Stats) bool { return q.Answered == 1 && len(q.Waiting) == 0 })
	if a := agentOf(q, "203"); a.Answered != 1 {
		t.Fatalf("820 after the answer: %+v", q)
	}
	for _, e := range agents {
		fb.api.must(200, "PUT", "/api/v1/queues/820/agents/"+e, map[string]bool{"logged_in": false})
	}

	// IVR 830, key 1: group 600 rings its three members at once.
	members := []string{"201", "202", "203"}
	fb.phones["201"].Reply(siptest.Ring)
	fb.drain()
	quietRTP(ctx, t, caller)
	if d, boxA, err = caller.Dial(ctx, "127.0.0.1", fb.port, "830"); err != nil {
		t.Fatalf("830: %v", err)
	}
	key := sip.NewRequest(sip.INFO, d.InviteResponse.Contact().Address)
	key.AppendHeader(sip.NewHeader("Content-Type", "application/dtmf-relay"))
	key.SetBody([]byte("Signal=1\r\nDuration=160\r\n"))
	if res, err := d.Do(ctx, key); err != nil || res.StatusCode != 200 {
		t.Fatalf("INFO key: %v %v", res, err)
	}
	ringing = fb.ringingAtOnce(ctx, members...)
	fb.phones["202"].Pick()
	inv = fb.answeredAt(ctx, "202")
	fb.cancelledAt(ctx, "201", ringing["201"])
	fb.cancelledAt(ctx, "203", ringing["203"])
	fb.bridged(ctx, d, caller, boxA, "202", inv)
	for _, e := range append(members, agents...) {
		fb.phones[e].Reply(0)
	}
	fb.drain()

	// Queue 821 to queue 822 at the longest wait, in the application.
	quietRTP(ctx, t, caller)
	start := time.Now()
	if d, boxA, err = caller.Dial(ctx, "127.0.0.1", fb.port, "821"); err != nil {
		t.Fatalf("821: %v", err)
	}
	hearsMusic(ctx, t, caller, 25)
	inv = fb.answeredAt(ctx, "204")
	if took := time.Since(start); took < 5*time.Second {
		t.Fatalf("822's agent rang after %v: before 821's longest wait", took)
	}
	fb.bridged(ctx, d, caller, boxA, "204", inv)
	fb.waitQueue(ctx, "821", func(q queue.Stats) bool { return q.TimedOut == 1 && len(q.Waiting) == 0 && q.Answered == 0 })
	q = fb.waitQueue(ctx, "822", func(q queue.Stats) bool { return q.Answered == 1 && len(q.Waiting) == 0 })
	if a := agentOf(q, "204"); a.Answered != 1 || q.Abandoned != 0 {
		t.Fatalf("822: %+v", q)
	}
	fb.quiet("202")
}
