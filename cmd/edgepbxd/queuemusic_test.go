package main

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/queue"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
)

// mohNotes are the fundamentals of the generated hold music (the chords
// of prompts' arpeggio and its octave step).
var mohNotes = []float64{174.61, 196.00, 220.00, 246.94, 261.63, 293.66, 329.63, 392.00, 493.88}

// goertzel is the mean square of pcm's component at f (rate 8000).
func goertzel(pcm []float64, f float64) float64 {
	w := 2 * math.Pi * f / 8000
	coeff := 2 * math.Cos(w)
	var s1, s2 float64
	for _, x := range pcm {
		s1, s2 = x+coeff*s1-s2, s1
	}
	p := s1*s1 + s2*s2 - coeff*s1*s2
	n := float64(len(pcm))
	return 2 * p / (n * n)
}

// hearsMusic decodes n PCMU packets arriving at ph and checks they are
// the generated music on hold: 40 ms blocks that are not silent, most
// of whose energy is one of the music's notes (ringback, silence or noise
// fail).
func hearsMusic(ctx context.Context, t *testing.T, ph *siptest.Phone, n int) {
	t.Helper()
	dec, err := codec.New("PCMU/8000")
	if err != nil {
		t.Fatal(err)
	}
	var pcm []int16
	for got := 0; got < n; {
		select {
		case pkt := <-ph.RTP():
			if len(pkt) < 12 || pkt[1]&0x7f != 0 {
				t.Fatalf("not PCMU: %x", pkt[:min(len(pkt), 12)])
			}
			pcm = dec.Decode(pcm, pkt[12:])
			got++
		case <-ctx.Done():
			t.Fatalf("music on hold: %d of %d packets", got, n)
		}
	}
	const block = 320 // 40 ms: a note lasts 300 ms, few blocks straddle two
	voiced, tonal := 0, 0
	for i := 0; i+block <= len(pcm); i += block {
		x := make([]float64, block)
		var ms float64
		for j, v := range pcm[i : i+block] {
			x[j] = float64(v)
			ms += x[j] * x[j]
		}
		ms /= block
		if math.Sqrt(ms) < 300 {
			continue
		}
		voiced++
		best := 0.0
		for _, f := range mohNotes {
			best = max(best, goertzel(x, f))
		}
		if best/ms > 0.5 {
			tonal++
		}
	}
	blocks := len(pcm) / block
	if voiced < blocks*3/4 || tonal < voiced*2/3 {
		t.Fatalf("music on hold: %d of %d blocks voiced, %d of them the music's notes", voiced, blocks, tonal)
	}
}

// hearsPip waits for a 20 ms PCMU frame at ph that is the position
// announcement's 1 kHz pip (the music has no note there).
func hearsPip(ctx context.Context, t *testing.T, ph *siptest.Phone) {
	t.Helper()
	dec, err := codec.New("PCMU")
	if err != nil {
		t.Fatal(err)
	}
	var pcm []int16
	for {
		select {
		case pkt := <-ph.RTP():
			if len(pkt) != 12+160 {
				continue
			}
			pcm = dec.Decode(pcm[:0], pkt[12:])
			x := make([]float64, len(pcm))
			var ms float64
			for i, v := range pcm {
				x[i] = float64(v)
				ms += x[i] * x[i]
			}
			ms /= float64(len(x))
			if math.Sqrt(ms) > 300 && goertzel(x, 1000)/ms > 0.6 {
				return
			}
		case <-ctx.Done():
			t.Fatal("no position announcement")
		}
	}
}

// quietRTP drains ph's media socket until nothing came for 300 ms.
func quietRTP(ctx context.Context, t *testing.T, ph *siptest.Phone) {
	t.Helper()
	for {
		select {
		case <-ph.RTP():
		case <-time.After(300 * time.Millisecond):
			return
		case <-ctx.Done():
			t.Fatal("media never went quiet")
		}
	}
}

// TestDevModeQueueMusic runs the real binary with sipgo phones (their RTP
// decoded): a queue caller nobody answers at once is answered by the
// queue application and hears the generated music on hold; an agent who
// logs in is rung through the hand-over, answers, and the two phones'
// RTP flows both ways with the music gone; a caller hanging up while
// hearing music is abandoned; at the longest wait the fallback answers
// through the hand-over. The statistics count each.
func TestDevModeQueueMusic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fb := startFeatureBox(t, ctx)
	fb.cfg.Features.Queues = []queue.Queue{
		{Number: "810", Strategy: queue.RingAll, Announce: 10, Agents: []queue.Agent{{Extension: "202"}, {Extension: "203"}}},
		{Number: "811", Strategy: queue.LeastRecent, MaxWait: 5, Fallback: "204", Agents: []queue.Agent{{Extension: "203"}}},
	}
	fb.saveConfig()
	caller := fb.phones["100"]

	// Nobody logged in: answered at once, music, and after 10 s its
	// position (one pip: first in the queue).
	start := time.Now()
	d, boxA, err := caller.Dial(ctx, "127.0.0.1", fb.port, "810")
	if err != nil {
		t.Fatalf("810: %v\n%s", err, fb.p.output())
	}
	hearsMusic(ctx, t, caller, 75)
	hearsPip(ctx, t, caller)
	if took := time.Since(start); took < 9*time.Second {
		t.Fatalf("position announced after %v, want 10 s", took)
	}
	for range 15 { // the pip's rest and pause: then the music again
		select {
		case <-caller.RTP():
		case <-ctx.Done():
			t.Fatal("media stopped after the announcement")
		}
	}
	hearsMusic(ctx, t, caller, 50)
	fb.waitQueue(ctx, "810", func(q queue.Stats) bool { return len(q.Waiting) == 1 })
	fb.quiet("202")

	// 202 logs in: rung by the queue application, answers, bridged.
	fb.api.must(200, "PUT", "/api/v1/queues/810/agents/202", map[string]bool{"logged_in": true})
	var inv202 []byte
	select {
	case req := <-fb.phones["202"].Answered:
		inv202 = req.Body()
	case <-ctx.Done():
		t.Fatalf("202 never answered\n%s", fb.p.output())
	}
	boxB, err := siptest.MediaAddr(inv202)
	if err != nil {
		t.Fatal(err)
	}
	quietRTP(ctx, t, caller) // the music stops at the answer
	siptest.SendRTPUntil(ctx, t, caller, fb.phones["202"], boxA, 20)
	siptest.SendRTPUntil(ctx, t, fb.phones["202"], caller, boxB, 20)
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	<-fb.phones["202"].Byes
	q := fb.waitQueue(ctx, "810", func(q queue.Stats) bool { return q.Answered == 1 && len(q.Waiting) == 0 })
	if a := agentOf(q, "202"); a.Answered != 1 || q.Abandoned != 0 {
		t.Fatalf("810 after the answer: %+v", q)
	}
	fb.quiet("203")
	fb.drain()

	// Nobody logged in again: the caller hangs up while hearing music.
	fb.api.must(200, "PUT", "/api/v1/queues/810/agents/202", map[string]bool{"logged_in": false})
	quietRTP(ctx, t, caller)
	if d, _, err = caller.Dial(ctx, "127.0.0.1", fb.port, "810"); err != nil {
		t.Fatalf("810: %v", err)
	}
	hearsMusic(ctx, t, caller, 25)
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	q = fb.waitQueue(ctx, "810", func(q queue.Stats) bool { return q.Abandoned == 1 && len(q.Waiting) == 0 })
	if q.Answered != 1 || q.TimedOut != 0 {
		t.Fatalf("810 after the abandon: %+v", q)
	}

	// The longest wait (5 s) with nobody logged in: the fallback 204
	// answers through the hand-over.
	quietRTP(ctx, t, caller)
	start = time.Now()
	if d, boxA, err = caller.Dial(ctx, "127.0.0.1", fb.port, "811"); err != nil {
		t.Fatalf("811: %v", err)
	}
	hearsMusic(ctx, t, caller, 50)
	var inv204 []byte
	select {
	case req := <-fb.phones["204"].Answered:
		inv204 = req.Body()
	case <-ctx.Done():
		t.Fatalf("fallback 204 never answered\n%s", fb.p.output())
	}
	if took := time.Since(start); took < 5*time.Second {
		t.Fatalf("fallback after %v: before the longest wait", took)
	}
	boxB, err = siptest.MediaAddr(inv204)
	if err != nil {
		t.Fatal(err)
	}
	quietRTP(ctx, t, caller)
	siptest.SendRTPUntil(ctx, t, caller, fb.phones["204"], boxA, 20)
	siptest.SendRTPUntil(ctx, t, fb.phones["204"], caller, boxB, 20)
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	<-fb.phones["204"].Byes
	q = fb.waitQueue(ctx, "811", func(q queue.Stats) bool { return q.TimedOut == 1 && len(q.Waiting) == 0 })
	if q.Answered != 0 || q.Abandoned != 0 {
		t.Fatalf("811: %+v", q)
	}
	fb.quiet("203")
}
