package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

// TestBaresipCalls runs the real binary in dev mode and two real phones
// (Debian's baresip, headless: a sine source, audio recorded to WAV by
// the sndfile filter) calling each other through the box, once with SDES
// on both legs and once with DTLS-SRTP toward the caller (the box offers
// SDES toward the callee, so the relay bridges DTLS-SRTP↔SDES). Each side
// sends its own tone; each side's decoded audio must be the other's tone,
// and the CDR must report both legs encrypted.
func TestBaresipCalls(t *testing.T) {
	bin := baresiptest.Need(t, "dtls_srtp")
	dir := filepath.Join(t.TempDir(), "dev")
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	api := claimBox(t, base, fp, code)
	udp, err := net.ResolveUDPAddr("udp", sipAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	pw := map[string]string{}
	for _, u := range []string{"1001", "1002", "1003", "1004", "1005", "1006"} {
		var ans struct{ User, Password string }
		if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ans); err != nil || ans.Password == "" {
			t.Fatalf("create %s: %v", u, err)
		}
		pw[u] = ans.Password
	}

	// Distinct extensions per case: the CDRs tell the cases apart by From.
	// Toward the callee the box (policy SRTPOptional) offers SDES keys on
	// RTP/AVP, which baresip takes with mediaenc=srtp; srtp-mand answers
	// such an offer with 488.
	// A DTLS-SRTP caller's callee is offered DTLS-SRTP first; baresip with
	// mediaenc=srtp refuses that INVITE (488 "No audio codecs"), and the box
	// offers SDES next, which it takes.
	cases := []struct {
		name                 string
		caller, callee       string
		callerEnc, calleeEnc string // baresip mediaenc
		calleeRefusesFirst   bool
	}{
		{"SDES", "1001", "1002", "srtp-mand", "srtp", false},             // RTP/SAVP offer to the box
		{"SDES-best-effort", "1005", "1006", "srtp", "srtp", false},      // keys on RTP/AVP to the box
		{"DTLS-SRTP-to-SDES", "1003", "1004", "dtls_srtp", "srtp", true}, // UDP/TLS/RTP/SAVP to the box
	}
	const callerTone, calleeTone = 440, 1000
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			phone := func(user, enc string, tone int) *baresiptest.Phone {
				return baresiptest.Start(ctx, t, bin, baresiptest.Config{Name: user, Tone: tone, Modules: []string{"dtls_srtp"},
					Accounts: []string{fmt.Sprintf("<sip:%s@127.0.0.1:%d;transport=udp>;auth_pass=%s;mediaenc=%s;answermode=auto;audio_codecs=PCMU;regint=300",
						user, udp.Port, pw[user], enc)}})
			}
			a := phone(tc.caller, tc.callerEnc, callerTone)
			b := phone(tc.callee, tc.calleeEnc, calleeTone)
			a.WaitRegistered(ctx, t, 1)
			b.WaitRegistered(ctx, t, 1)

			a.Command(ctx, t, "dial", fmt.Sprintf("sip:%s@127.0.0.1:%d", tc.callee, udp.Port))
			a.WaitEvent(ctx, t, "CALL_ESTABLISHED")
			if tc.calleeRefusesFirst {
				b.WaitEvent(ctx, t, "CALL_CLOSED")
			}
			b.WaitEvent(ctx, t, "CALL_ESTABLISHED")
			// Two seconds of decoded audio on both sides.
			a.WaitAudio(ctx, t, 2*time.Second)
			b.WaitAudio(ctx, t, 2*time.Second)
			a.Command(ctx, t, "hangup", "")
			a.WaitEvent(ctx, t, "CALL_CLOSED")
			b.WaitEvent(ctx, t, "CALL_CLOSED")
			a.Stop(t) // sndfile completes the WAV headers on exit
			b.Stop(t)
			// Each phone says it encrypted: its own word for what it saw
			// of the box's keys or certificate.
			for _, side := range []struct {
				b   *baresiptest.Phone
				enc string
			}{{a, tc.callerEnc}, {b, tc.calleeEnc}} {
				for _, want := range secureMarks[side.enc] {
					if !strings.Contains(side.b.Log(), want) {
						t.Errorf("baresip %s (%s) never logged %q:\n%s", side.b.Name, side.enc, want, side.b.Log())
					}
				}
			}

			// What each side decoded is the other side's tone, as loud as sent.
			baresiptest.CheckTone(t, "callee hears caller", b.WAV(t, "dec"), a.WAV(t, "enc"), callerTone)
			baresiptest.CheckTone(t, "caller hears callee", a.WAV(t, "dec"), b.WAV(t, "enc"), calleeTone)
		})
	}

	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
	id, err := devIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.OpenAt(t, filepath.Join(dir, "edgepbx.db"), id.DeviceKey)
	recs, err := cdr.New(db).Range(time.Now().Add(-time.Hour), time.Now().Add(time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		n := 0
		for _, r := range recs {
			if r.From != tc.caller {
				continue
			}
			n++
			if r.To != tc.callee || r.Result != cdr.Answered || !r.SRTPCaller || !r.SRTPCallee {
				t.Errorf("%s: CDR %+v: want answered with SRTP on both legs", tc.name, r)
			}
		}
		if n != 1 {
			t.Errorf("%s: %d CDRs from %s in %+v", tc.name, n, tc.caller, recs)
		}
	}
}

// secureMarks are what baresip 1.0 logs once media encryption mediaenc
// is up on a call.
var secureMarks = map[string][]string{
	"srtp":      {"srtp: audio: SRTP is Enabled"},
	"srtp-mand": {"srtp: audio: SRTP is Enabled"},
	"dtls_srtp": {"dtls_srtp: verified sha-256 fingerprint OK", "DTLS-SRTP complete"},
}
