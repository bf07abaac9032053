package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/callrec"
	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
)

// blockKind classifies a 100 ms block of decoded audio: "tone" (one test
// phone's sine), "music" (most of its energy at the notes of the generated
// music, mohNotes in queuemusic_test.go, which ringback at 425 Hz or
// 440+480 Hz, the phones' tones and silence do not have) or "-"
// (silence, transitions, anything else).
func blockKind(b []float64, rate int, tone float64) string {
	if baresiptest.RMS(b) < 200 {
		return "-"
	}
	if baresiptest.Share(b, tone, rate) >= 0.8 {
		return "tone"
	}
	sum := 0.0
	for _, f := range mohNotes {
		sum += baresiptest.Share(b, f, rate)
	}
	if sum >= 0.5 {
		return "music"
	}
	return "-"
}

// TestBaresipMusicOnHold runs the real daemon in dev mode with real phones
// (baresip, SDES-SRTP on both legs). 1001 calls 1002, talks, holds
// (baresip's re-INVITE with a=sendonly) and resumes: what 1002 decoded
// is 1001's tone, then the music on hold (Goertzel on the music's notes,
// which ringback or silence do not pass) with nothing of 1001's tone,
// then 1001's tone again; 1001 hears 1002 again after the resume. Then
// the recording policy with the announcement: 1003 (always recorded)
// calls 1004, and both hear the recording notice (1.4 kHz beeps) before
// each other's tone.
func TestBaresipMusicOnHold(t *testing.T) {
	bin := baresiptest.Need(t)
	dir := filepath.Join(t.TempDir(), "dev")
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	api := claimBox(t, base, fp, code)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon: %s", p.output())
		}
	})
	udp, err := net.ResolveUDPAddr("udp", sipAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	pw := map[string]string{}
	for _, u := range []string{"1001", "1002", "1003", "1004"} {
		var ans struct{ User, Password string }
		if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ans); err != nil || ans.Password == "" {
			t.Fatalf("create %s: %v", u, err)
		}
		pw[u] = ans.Password
	}
	api.must(http.StatusOK, "PUT", "/api/v1/recordings/policy", callrec.Policy{Extensions: map[string]callrec.Mode{"1003": callrec.Always}, Announce: true})
	var pol callrec.Policy
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/recordings/policy", nil), &pol); err != nil || !pol.Announce {
		t.Fatalf("policy announce not stored: %+v %v", pol, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	phone := func(user, enc string, tone int) *baresiptest.Phone {
		ph := baresiptest.Start(ctx, t, bin, baresiptest.Config{Name: user, Tone: tone,
			Accounts: []string{fmt.Sprintf("<sip:%s@127.0.0.1:%d;transport=udp>;auth_pass=%s;mediaenc=%s;answermode=auto;audio_codecs=PCMU;regint=300",
				user, udp.Port, pw[user], enc)}})
		ph.WaitRegistered(ctx, t, 1)
		return ph
	}
	const callerTone, calleeTone = 700, 1000

	// Hold and resume.
	a, b := phone("1001", "srtp-mand", callerTone), phone("1002", "srtp", calleeTone)
	a.Command(ctx, t, "dial", fmt.Sprintf("sip:1002@127.0.0.1:%d", udp.Port))
	a.WaitEvent(ctx, t, "CALL_ESTABLISHED")
	b.WaitEvent(ctx, t, "CALL_ESTABLISHED")
	b.WaitAudio(ctx, t, 2*time.Second)
	a.WaitAudio(ctx, t, 2*time.Second)
	a.Command(ctx, t, "hold", "")
	// 1002 decodes only what reaches it: without the music it would
	// wait here until the deadline.
	b.WaitAudio(ctx, t, 7*time.Second)
	a.Command(ctx, t, "resume", "")
	b.WaitAudio(ctx, t, 10*time.Second)
	a.WaitAudio(ctx, t, 4500*time.Millisecond)
	a.Command(ctx, t, "hangup", "")
	a.WaitEvent(ctx, t, "CALL_CLOSED")
	b.WaitEvent(ctx, t, "CALL_CLOSED")
	a.Stop(t)
	b.Stop(t)

	heard := b.WAV(t, "dec")
	var kinds []string
	for _, blk := range baresiptest.Blocks(heard) {
		kinds = append(kinds, blockKind(blk, heard.Rate, callerTone))
	}
	t.Logf("1002 heard (100 ms blocks): %s", strings.Join(kinds, " "))
	first, last := -1, -1
	for i, k := range kinds {
		if k == "music" {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	count := func(from, to int, kind string) (n int) {
		for _, k := range kinds[max(from, 0):max(to, 0)] {
			if k == kind {
				n++
			}
		}
		return n
	}
	switch {
	case first < 0:
		t.Fatal("1002 heard no music on hold")
	case count(0, first, "tone") < 10:
		t.Errorf("1002 heard %d blocks of 1001 before the hold, want 10", count(0, first, "tone"))
	case count(first, last+1, "music") < 35:
		t.Errorf("1002 heard %d blocks of music on hold, want at least 35 of %d", count(first, last+1, "music"), last+1-first)
	case count(first, last+1, "tone") > 0:
		t.Errorf("1001's audio leaked into the music on hold (%d blocks)", count(first, last+1, "tone"))
	case count(last+1, len(kinds), "tone") < 10:
		t.Errorf("1002 heard %d blocks of 1001 after the resume, want 10", count(last+1, len(kinds), "tone"))
	}
	back := baresiptest.Blocks(a.WAV(t, "dec"))
	n := 0
	for _, blk := range back[max(len(back)-20, 0):] {
		if blockKind(blk, 8000, calleeTone) == "tone" {
			n++
		}
	}
	if n < 10 {
		t.Errorf("1001 hears 1002 in %d of its last 20 blocks after the resume, want 10", n)
	}

	// The recording announcement, heard by both parties first.
	c, d := phone("1003", "srtp-mand", callerTone), phone("1004", "srtp", calleeTone)
	c.Command(ctx, t, "dial", fmt.Sprintf("sip:1004@127.0.0.1:%d", udp.Port))
	c.WaitEvent(ctx, t, "CALL_ESTABLISHED")
	d.WaitEvent(ctx, t, "CALL_ESTABLISHED")
	c.WaitAudio(ctx, t, 2*time.Second)
	d.WaitAudio(ctx, t, 2*time.Second)
	c.Command(ctx, t, "hangup", "")
	c.WaitEvent(ctx, t, "CALL_CLOSED")
	d.WaitEvent(ctx, t, "CALL_CLOSED")
	c.Stop(t)
	d.Stop(t)
	for _, x := range []struct {
		ph    *baresiptest.Phone
		other float64
	}{{c, calleeTone}, {d, callerTone}} {
		w := x.ph.WAV(t, "dec")
		beeps, tone, firstTone, lastBeep := 0, 0, -1, -1
		var ks []string
		for i, blk := range baresiptest.Blocks(w) {
			k := blockKind(blk, w.Rate, x.other)
			if baresiptest.RMS(blk) >= 200 && baresiptest.Share(blk, 1400, w.Rate) >= 0.8 {
				k = "notice"
				beeps++
				lastBeep = i
			}
			if k == "tone" {
				tone++
				if firstTone < 0 {
					firstTone = i
				}
			}
			ks = append(ks, k)
		}
		t.Logf("%s heard: %s", x.ph.Name, strings.Join(ks, " "))
		if beeps < 2 || tone < 10 || lastBeep > firstTone {
			t.Errorf("%s: %d blocks of the recording notice, %d of the other party's tone (notice must come first)", x.ph.Name, beeps, tone)
		}
	}
}
