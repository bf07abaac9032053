package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/callrec"
	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
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

// holdBox starts the daemon in dev mode with extensions users; it returns
// the admin API, the SIP UDP port and the passwords.
func holdBox(t *testing.T, users ...string) (*apiClient, int, map[string]string) {
	t.Helper()
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
	for _, u := range users {
		var ans struct{ User, Password string }
		if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ans); err != nil || ans.Password == "" {
			t.Fatalf("create %s: %v", u, err)
		}
		pw[u] = ans.Password
	}
	return api, udp.Port, pw
}

func baresipPhone(ctx context.Context, t *testing.T, bin string, port int, user, pass, enc string, tone int) *baresiptest.Phone {
	t.Helper()
	ph := baresiptest.Start(ctx, t, bin, baresiptest.Config{Name: user, Tone: tone,
		Accounts: []string{fmt.Sprintf("<sip:%s@127.0.0.1:%d;transport=udp>;auth_pass=%s;mediaenc=%s;answermode=auto;audio_codecs=PCMU;regint=300",
			user, port, pass, enc)}})
	ph.WaitRegistered(ctx, t, 1)
	return ph
}

// TestDevModeMusicOnHold runs the real daemon in dev mode: a real phone
// (baresip, SDES-SRTP toward the box) calls a sipgo phone whose received
// RTP is decoded here, talks, holds (baresip's re-INVITE with
// a=sendonly) and resumes. The held phone hears the caller's tone, then
// the music on hold (Goertzel on the music's notes, which ringback or
// silence do not pass) with nothing of the caller in it, then the
// caller's tone again. (The held party is not a baresip: Debian's
// baresip 1.0 re-creates its player on a re-INVITE and its decoded-audio
// recording stops, with or without music.)
func TestDevModeMusicOnHold(t *testing.T) {
	bin := baresiptest.Need(t)
	_, port, pw := holdBox(t, "1001", "1002")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const callerTone = 700
	b := siptest.NewPhone(t, "1002", pw["1002"])
	b.Register(ctx, "127.0.0.1", port)
	a := baresipPhone(ctx, t, bin, port, "1001", pw["1001"], "srtp-mand", callerTone)
	a.Command(ctx, t, "dial", fmt.Sprintf("sip:1002@127.0.0.1:%d", port))
	a.WaitEvent(ctx, t, "CALL_ESTABLISHED")

	dec, err := codec.New("PCMU")
	if err != nil {
		t.Fatal(err)
	}
	var pcm []int16
	var kinds []string
	// hear decodes what reaches the held phone until want more blocks of
	// kind arrived.
	hear := func(kind string, want int) {
		t.Helper()
		for got := 0; got < want; {
			select {
			case pkt := <-b.RTP():
				if len(pkt) < 12 || pkt[1]&0x7f != 0 {
					continue
				}
				pcm = dec.Decode(pcm, pkt[12:])
				for len(pcm) >= 800 {
					blk := make([]float64, 800)
					for i, v := range pcm[:800] {
						blk[i] = float64(v)
					}
					pcm = pcm[800:]
					k := blockKind(blk, 8000, callerTone)
					kinds = append(kinds, k)
					if k == kind {
						got++
					}
				}
			case <-ctx.Done():
				t.Fatalf("held phone: %d of %d blocks of %s; heard %s", got, want, kind, strings.Join(kinds, " "))
			}
		}
	}
	hear("tone", 15)
	a.Command(ctx, t, "hold", "")
	hear("music", 40)
	a.Command(ctx, t, "resume", "")
	hear("tone", 15)
	a.Command(ctx, t, "hangup", "")
	a.WaitEvent(ctx, t, "CALL_CLOSED")
	t.Logf("held phone heard (100 ms blocks): %s", strings.Join(kinds, " "))
	first, last := slices.Index(kinds, "music"), -1
	for i, k := range kinds {
		if k == "music" {
			last = i
		}
	}
	if n := countKind(kinds[first:last+1], "tone"); n > 0 {
		t.Errorf("the caller's audio leaked into the music on hold (%d blocks)", n)
	}
	if n := countKind(kinds[first:last+1], "music"); n < (last+1-first)*8/10 {
		t.Errorf("only %d of %d blocks during the hold are the music", n, last+1-first)
	}
}

func countKind(kinds []string, kind string) (n int) {
	for _, k := range kinds {
		if k == kind {
			n++
		}
	}
	return n
}

// TestBaresipRecordingNotice: with the recording policy's announcement
// on, 1003 (recorded on demand) calls 1004, both real phones with
// SDES-SRTP toward the box, talk, and 1003 starts the recording with the
// feature code (RFC 4733): both phones decode the recording notice (1.4
// kHz beeps), and the call goes on with each other's tone after it.
// (At the answer of an "always" call the notice waits for each phone's
// first packet; Debian's baresip as caller sometimes runs its player
// only a second later and misses it, so the daemon test uses the code.)
func TestBaresipRecordingNotice(t *testing.T) {
	bin := baresiptest.Need(t)
	api, port, pw := holdBox(t, "1003", "1004")
	api.must(http.StatusOK, "PUT", "/api/v1/recordings/policy", callrec.Policy{Extensions: map[string]callrec.Mode{"1003": callrec.OnDemand}, Announce: true})
	var pol callrec.Policy
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/recordings/policy", nil), &pol); err != nil || !pol.Announce {
		t.Fatalf("policy announce not stored: %+v %v", pol, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const callerTone, calleeTone = 700, 1000
	c := baresipPhone(ctx, t, bin, port, "1003", pw["1003"], "srtp-mand", callerTone)
	d := baresipPhone(ctx, t, bin, port, "1004", pw["1004"], "srtp", calleeTone)
	c.Command(ctx, t, "dial", fmt.Sprintf("sip:1004@127.0.0.1:%d", port))
	c.WaitEvent(ctx, t, "CALL_ESTABLISHED")
	d.WaitEvent(ctx, t, "CALL_ESTABLISHED")
	c.WaitAudio(ctx, t, 1500*time.Millisecond)
	c.Command(ctx, t, "sndcode", "*1")
	c.WaitAudio(ctx, t, 5*time.Second)
	d.WaitAudio(ctx, t, 5*time.Second)
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
		var ks []string
		firstBeep, lastBeep := -1, -1
		for i, blk := range baresiptest.Blocks(w) {
			k := blockKind(blk, w.Rate, x.other)
			if baresiptest.RMS(blk) >= 200 && baresiptest.Share(blk, 1400, w.Rate) >= 0.8 {
				k = "notice"
				if firstBeep < 0 {
					firstBeep = i
				}
				lastBeep = i
			}
			ks = append(ks, k)
		}
		t.Logf("%s heard: %s", x.ph.Name, strings.Join(ks, " "))
		if firstBeep < 0 {
			t.Errorf("%s did not hear the recording notice", x.ph.Name)
			continue
		}
		before, during, after := countKind(ks[:firstBeep], "tone"), countKind(ks[firstBeep:lastBeep+1], "notice"), countKind(ks[lastBeep+1:], "tone")
		if before < 5 || during < 2 || after < 10 || countKind(ks[firstBeep:lastBeep+1], "tone") > 0 {
			t.Errorf("%s: %d blocks of the other's tone before the notice, %d of the notice (none of the tone within it), %d of the tone after",
				x.ph.Name, before, during, after)
		}
	}
}
