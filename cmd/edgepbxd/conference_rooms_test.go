package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/conference"
	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
)

// TestDevModeConferenceRooms runs the real binary with baresip phones in
// the rooms' other paths:
//   - moderator: a room that waits for its moderator. Two callers with
//     the participant PIN hear the music on hold (an uploaded 300 Hz
//     tone) and not each other; the caller with the moderator PIN is
//     shown as moderator and from then on all three hear each other and
//     no music; when the moderator hangs up, the two are back to music
//     and no longer hear each other.
//   - SRTP: an SDES phone, a DTLS-SRTP phone and a plain RTP phone in
//     one room each hear the other two (Goertzel), the encrypted ones
//     say so in their logs.
func TestDevModeConferenceRooms(t *testing.T) {
	bin := baresiptest.Need(t, "dtls_srtp")
	p, api, udp, pw := confDaemon(t)
	const musicTone = 300
	if code, body := api.upload("PUT", "/api/v1/moh/default", "audio/wav", testWAV(16000, 4*time.Second, musicTone)); code != http.StatusOK {
		t.Fatalf("music upload: %d %s", code, body)
	}
	pin, modPIN := "582914", "736150"
	api.must(http.StatusOK, "PUT", "/api/v1/conference/rooms/820",
		conference.RoomRequest{Name: "moderated", PIN: &pin, ModeratorPIN: &modPIN, MaxParticipants: 5, WaitModerator: true})
	phone := func(ctx context.Context, t *testing.T, ext, enc string, tone int) *baresiptest.Phone {
		acc := fmt.Sprintf("<sip:%s@127.0.0.1:%d;transport=udp>;auth_pass=%s;answermode=auto;audio_codecs=PCMU;regint=300", ext, udp.Port, pw[ext])
		if enc != "" && enc != "plain" {
			acc += ";mediaenc=" + enc
		}
		b := baresiptest.Start(ctx, t, bin, baresiptest.Config{Name: ext, Tone: tone, Modules: []string{"dtls_srtp"}, Accounts: []string{acc}})
		b.WaitRegistered(ctx, t, 1)
		return b
	}
	type party struct {
		ext, enc string
		tone     int
		b        *baresiptest.Phone
		est      time.Time
	}
	// window is the part of pt's decoded audio between two moments.
	window := func(t *testing.T, pt *party, got baresiptest.PCM, from, to time.Time) (int, int) {
		if !to.After(from.Add(time.Second)) {
			t.Fatalf("%s: window %s..%s shorter than 1 s", pt.ext, from.Format(time.StampMilli), to.Format(time.StampMilli))
		}
		return got.Rate * int(from.Sub(pt.est).Milliseconds()) / 1000, got.Rate * int(to.Sub(from).Milliseconds()) / 1000
	}

	t.Run("moderator", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
		defer cancel()
		room := fmt.Sprintf("sip:820@127.0.0.1:%d", udp.Port)
		a, b := &party{ext: "1001", tone: 500}, &party{ext: "1002", tone: 800}
		mod := &party{ext: "1003", tone: 1100}
		join := func(pt *party, pin string) {
			pt.b = phone(ctx, t, pt.ext, "", pt.tone)
			pt.b.Command(ctx, t, "dial", room)
			pt.b.WaitEvent(ctx, t, "CALL_ESTABLISHED")
			pt.est = time.Now()
			pt.b.Command(ctx, t, "sndcode", pin+"#")
		}
		// recorded waits until each phone's recording reaches d past now.
		recorded := func(d time.Duration, pts ...*party) time.Time {
			now := time.Now()
			for _, pt := range pts {
				pt.b.WaitAudio(ctx, t, now.Sub(pt.est)+d)
			}
			return now.Add(d)
		}
		join(a, pin)
		join(b, pin)
		t0 := waitRoom(ctx, t, api, "820", func(ps []conference.Participant) bool {
			return len(ps) == 2 && ps[0].Waiting && ps[1].Waiting && !ps[0].Moderator && !ps[1].Moderator
		})
		t1a := recorded(3*time.Second, a, b)
		join(mod, modPIN)
		t1 := waitRoom(ctx, t, api, "820", func(ps []conference.Participant) bool {
			n := 0
			for _, x := range ps {
				if x.Waiting {
					return false
				}
				if x.Moderator && x.Caller == mod.ext {
					n++
				}
			}
			return len(ps) == 3 && n == 1
		})
		t2a := recorded(3*time.Second, a, b, mod)
		mod.b.Command(ctx, t, "hangup", "")
		mod.b.WaitEvent(ctx, t, "CALL_CLOSED")
		t2 := waitRoom(ctx, t, api, "820", func(ps []conference.Participant) bool {
			return len(ps) == 2 && ps[0].Waiting && ps[1].Waiting
		})
		t3 := recorded(3*time.Second, a, b)
		for _, pt := range []*party{a, b} {
			pt.b.Command(ctx, t, "hangup", "")
			pt.b.WaitEvent(ctx, t, "CALL_CLOSED")
		}
		for _, pt := range []*party{a, b, mod} {
			pt.b.Stop(t)
		}
		for _, c := range []struct {
			phase    string
			pt       *party
			from, to time.Time
			hear     []float64
			not      []float64
		}{
			{"waiting", a, t0, t1a, []float64{musicTone}, []float64{float64(b.tone)}},
			{"waiting", b, t0, t1a, []float64{musicTone}, []float64{float64(a.tone)}},
			{"moderated", a, t1, t2a, []float64{float64(b.tone), float64(mod.tone)}, []float64{float64(a.tone), musicTone}},
			{"moderated", b, t1, t2a, []float64{float64(a.tone), float64(mod.tone)}, []float64{float64(b.tone), musicTone}},
			{"moderated", mod, t1, t2a, []float64{float64(a.tone), float64(b.tone)}, []float64{float64(mod.tone), musicTone}},
			{"moderator gone", a, t2, t3, []float64{musicTone}, []float64{float64(b.tone)}},
			{"moderator gone", b, t2, t3, []float64{musicTone}, []float64{float64(a.tone)}},
		} {
			got := c.pt.b.WAV(t, "dec")
			// Margins: the mixer's and the phones' buffers, the join.
			from, n := window(t, c.pt, got, c.from.Add(600*time.Millisecond), c.to.Add(-400*time.Millisecond))
			checkHears(t, c.phase+": "+c.pt.ext, got, from, n, c.hear, c.not)
		}
	})

	t.Run("SRTP", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		room := fmt.Sprintf("sip:810@127.0.0.1:%d", udp.Port)
		parties := []*party{{ext: "1004", enc: "srtp-mand", tone: 500}, {ext: "1005", enc: "dtls_srtp", tone: 800}, {ext: "1006", enc: "plain", tone: 1100}}
		for _, pt := range parties {
			pt.b = phone(ctx, t, pt.ext, pt.enc, pt.tone)
			pt.b.Command(ctx, t, "dial", room)
			pt.b.WaitEvent(ctx, t, "CALL_ESTABLISHED")
			pt.est = time.Now()
		}
		all := waitRoom(ctx, t, api, "810", func(ps []conference.Participant) bool { return len(ps) == 3 })
		for _, pt := range parties {
			pt.b.WaitAudio(ctx, t, time.Since(pt.est)+3500*time.Millisecond)
		}
		for _, pt := range parties {
			pt.b.Command(ctx, t, "hangup", "")
			pt.b.WaitEvent(ctx, t, "CALL_CLOSED")
			pt.b.Stop(t)
		}
		for _, pt := range parties {
			for _, want := range secureMarks[pt.enc] {
				if !strings.Contains(pt.b.Log(), want) {
					t.Errorf("baresip %s (%s) never logged %q:\n%s", pt.ext, pt.enc, want, pt.b.Log())
				}
			}
			var others []float64
			for _, o := range parties {
				if o != pt {
					others = append(others, float64(o.tone))
				}
			}
			got := pt.b.WAV(t, "dec")
			// From 1 s after the last join (its join tone is over), 2.3 s
			// (WaitAudio above made sure each phone recorded that far).
			from, n := window(t, pt, got, all.Add(time.Second), all.Add(3300*time.Millisecond))
			checkHears(t, pt.ext+" ("+pt.enc+")", got, from, n, others, []float64{float64(pt.tone)})
		}
	})
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
}

// waitRoom polls the rooms API until room's participants satisfy ok and
// returns when they did.
func waitRoom(ctx context.Context, t *testing.T, api *apiClient, room string, ok func([]conference.Participant) bool) time.Time {
	t.Helper()
	var rv admin.RoomView
	for {
		if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/conference/rooms/"+room, nil), &rv); err != nil {
			t.Fatal(err)
		}
		if ok(rv.Participants) {
			return time.Now()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("room %s: participants %+v", room, rv.Participants)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// checkHears requires nearly every 100 ms block of got[from:from+n] to
// carry each tone of hear (a fair share of the block's energy) and almost
// none of each tone of not.
func checkHears(t *testing.T, who string, got baresiptest.PCM, from, n int, hear, not []float64) {
	t.Helper()
	block := got.Rate / 10
	if from < 0 || from+n > len(got.Samples) {
		t.Fatalf("%s: %d samples decoded, want %d..%d", who, len(got.Samples), from, from+n)
	}
	good, total := 0, 0
	var bad []string
	for i := from; i+block <= from+n; i += block {
		x := make([]float64, block)
		for j := range x {
			x[j] = float64(got.Samples[i+j])
		}
		total++
		ok := true
		var shares []string
		for _, f := range hear {
			s := share(x, f, got.Rate)
			shares = append(shares, fmt.Sprintf("%.0f:%.2f", f, s))
			ok = ok && s > 0.1
		}
		for _, f := range not {
			s := share(x, f, got.Rate)
			shares = append(shares, fmt.Sprintf("not %.0f:%.2f", f, s))
			ok = ok && s < 0.03
		}
		if ok {
			good++
		} else if len(bad) < 4 {
			bad = append(bad, fmt.Sprintf("block at %d: %s", i, strings.Join(shares, " ")))
		}
	}
	t.Logf("%s: %d of %d blocks carry %v and not %v", who, good, total, hear, not)
	if total == 0 || good < total*9/10 {
		t.Errorf("%s hears the wrong mix: %s", who, strings.Join(bad, "; "))
	}
}
