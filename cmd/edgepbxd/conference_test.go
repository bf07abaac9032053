package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/conference"
	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
)

// TestDevModeConference runs the real binary with five baresip phones in
// one room (three PCMU, two G.722, a 16 kHz mix), each sending its own
// tone: each must hear the other four and not itself. A sixth caller is
// refused (max participants), the admin sees the five and kicks one, and
// a sipp caller typing three wrong PINs into a PIN room is refused and
// throttled by the SIP guard like voicemail's wrong PINs.
func TestDevModeConference(t *testing.T) {
	bin := baresiptest.Need(t, "g722")
	p, api, udp, pw := confDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	type party struct {
		ext, codec string
		tone       int
		b          *baresiptest.Phone
		est        time.Time
	}
	parties := []*party{{"1001", "PCMU", 500, nil, time.Time{}}, {"1002", "G722/16000/1", 800, nil, time.Time{}}, {"1003", "PCMU", 1100, nil, time.Time{}},
		{"1004", "G722/16000/1", 1400, nil, time.Time{}}, {"1005", "PCMU", 1700, nil, time.Time{}}}
	start := func(ext, codec string, tone int) *baresiptest.Phone {
		b := baresiptest.Start(ctx, t, bin, baresiptest.Config{Name: ext, Tone: tone, Modules: []string{"g722"},
			Accounts: []string{fmt.Sprintf("<sip:%s@127.0.0.1:%d;transport=udp>;auth_pass=%s;answermode=auto;audio_codecs=%s;regint=300",
				ext, udp.Port, pw[ext], codec)}})
		b.WaitRegistered(ctx, t, 1)
		return b
	}
	for _, pt := range parties {
		pt.b = start(pt.ext, pt.codec, pt.tone)
	}
	room := fmt.Sprintf("sip:800@127.0.0.1:%d", udp.Port)
	for _, pt := range parties {
		pt.b.Command(ctx, t, "dial", room)
		pt.b.WaitEvent(ctx, t, "CALL_ESTABLISHED")
		pt.est = time.Now()
	}
	all := time.Now()
	// The sixth caller: the room is full.
	sixth := start("1006", "PCMU", 300)
	sixth.Command(ctx, t, "dial", room)
	sixth.WaitEvent(ctx, t, "CALL_CLOSED")
	var rv admin.RoomView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/conference/rooms/800", nil), &rv); err != nil || len(rv.Participants) != 5 {
		t.Fatalf("room 800: %+v %v", rv, err)
	}
	// At least 3 s of everyone in the room (G.722 recordings grow twice
	// as fast as WaitAudio counts).
	for _, pt := range parties {
		d := time.Since(pt.est) + 3500*time.Millisecond
		if pt.codec != "PCMU" {
			d *= 2
		}
		pt.b.WaitAudio(ctx, t, d)
	}
	// The admin kicks 1005: its call ends.
	api.must(http.StatusOK, "POST", "/api/v1/conference/rooms/800/participants/"+rv.Participants[4].ID+"/kick", nil)
	parties[4].b.WaitEvent(ctx, t, "CALL_CLOSED")
	api.must(http.StatusNotFound, "POST", "/api/v1/conference/rooms/800/participants/"+rv.Participants[4].ID+"/kick", nil)
	for _, pt := range parties[:4] {
		pt.b.Command(ctx, t, "hangup", "")
		pt.b.WaitEvent(ctx, t, "CALL_CLOSED")
	}
	for _, pt := range parties {
		pt.b.Stop(t)
	}
	for _, pt := range parties {
		got := pt.b.WAV(t, "dec")
		if want := map[string]int{"PCMU": 8000, "G722/16000/1": 16000}[pt.codec]; got.Rate != want {
			t.Fatalf("%s decoded %d Hz audio, want %d (%s)", pt.ext, got.Rate, want, pt.codec)
		}
		// From 1 s after the last join (its join tone is over) for 2 s.
		from := got.Rate * int((all.Sub(pt.est) + time.Second).Milliseconds()) / 1000
		var others []float64
		for _, o := range parties {
			if o != pt {
				others = append(others, float64(o.tone))
			}
		}
		checkMix(t, pt.ext, got, from, 2*got.Rate, others, float64(pt.tone))
	}

	// Room 801 has a PIN: three wrong ones from 1006, the box hangs up and
	// the source is throttled for that room.
	sip := udp.String()
	kp := &keyPcaps{t: t, dir: t.TempDir(), ts: 1 << 20}
	sippCall(t, sip, "1006", pw["1006"], "801", vmScenario([]vmStep{pause(1500)},
		kp.keys("111111#"), []vmStep{pause(1500)}, kp.keys("222222#"), []vmStep{pause(1500)}, kp.keys("333333#")))
	if !hasBlock(t, api, "conference/801", "failed authentications") {
		t.Errorf("no throttle of the source for conference/801:\n%s", grepLines(p.output(), "conference", "call:"))
	}
	if audit := string(api.must(http.StatusOK, "GET", "/api/v1/audit?limit=50", nil)); !strings.Contains(audit, "conference.kick") {
		t.Errorf("kick not audited: %s", audit)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
}

// confDaemon starts the daemon in dev mode with extensions 1001-1006
// (MD5 digests, as sipp needs), room 800 (five, tones, wideband), room
// 801 (PIN 582914, three), room 810 (five, 8 kHz mix), and checks the
// rooms API's refusals on the way.
func confDaemon(tb testing.TB) (*proc, *apiClient, *net.UDPAddr, map[string]string) {
	dir := filepath.Join(tb.TempDir(), "dev")
	args := []string{"--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0"}
	p := startProc(tb, procOpts{noFD3: true}, args...)
	base := p.waitLine(tb, adminRE)[1]
	fp := p.waitLine(tb, fpRE)[1]
	api := claimBox(tb, base, fp, p.waitLine(tb, setupRE)[1])
	// sipp answers MD5 challenges only; the algorithms apply at the next start.
	var v admin.SIPSettingsView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &v); err != nil {
		tb.Fatal(err)
	}
	next := v.Settings
	next.Algorithms = []string{"MD5"}
	api.must(http.StatusOK, "PUT", "/api/v1/sip/settings", next)
	pw := map[string]string{}
	for _, u := range []string{"1001", "1002", "1003", "1004", "1005", "1006"} {
		var ans struct{ User, Password string }
		if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ans); err != nil || ans.Password == "" {
			tb.Fatalf("create %s: %v", u, err)
		}
		pw[u] = ans.Password
	}
	pin := "582914"
	api.must(http.StatusOK, "PUT", "/api/v1/conference/rooms/800", conference.RoomRequest{Name: "all hands", MaxParticipants: 5, Tones: true, Wideband: true})
	api.must(http.StatusOK, "PUT", "/api/v1/conference/rooms/801", conference.RoomRequest{PIN: &pin, MaxParticipants: 3})
	api.must(http.StatusOK, "PUT", "/api/v1/conference/rooms/810", conference.RoomRequest{MaxParticipants: 5, Tones: true})
	weak := "123456"
	api.must(http.StatusBadRequest, "PUT", "/api/v1/conference/rooms/802", conference.RoomRequest{PIN: &weak, MaxParticipants: 3})
	api.must(http.StatusBadRequest, "PUT", "/api/v1/conference/rooms/1001", conference.RoomRequest{MaxParticipants: 3}) // an extension
	raw := api.must(http.StatusOK, "GET", "/api/v1/conference/rooms/801", nil)
	var view admin.RoomView
	if err := json.Unmarshal(raw, &view); err != nil || !view.PINSet || strings.Contains(string(raw), pin) || strings.Contains(string(raw), "argon2") {
		tb.Fatalf("room view: %s", raw)
	}
	if code := p.stop(tb); code != 0 {
		tb.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
	p = startProc(tb, procOpts{noFD3: true}, args...)
	base = p.waitLine(tb, adminRE)[1]
	sipAddrs := p.waitLine(tb, sipRE)
	api = newAPIClient(tb, base, fp)
	api.login(api.must(http.StatusOK, "POST", "/api/v1/login", admin.LoginRequest{Username: testAdmin, Password: testAdminPW}))
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(p.output(), `msg="calls: ready"`); {
		if time.Now().After(deadline) {
			tb.Fatalf("B2BUA not wired:\n%s", p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	udp, err := net.ResolveUDPAddr("udp", sipAddrs[1])
	if err != nil {
		tb.Fatal(err)
	}
	return p, api, udp, pw
}

// BenchmarkDevConference measures the daemon's own CPU (from /proc, user
// and system) while five baresip phones talk in one room: G.711 (PCMU,
// 8 kHz mix) and G.722 (16 kHz mix). One iteration is one second of the
// conference; the figure includes the relay, the application endpoints,
// decoding, mixing and encoding, not baresip.
func BenchmarkDevConference(b *testing.B) {
	bin := baresiptest.Need(b, "g722")
	p, _, udp, pw := confDaemon(b)
	for _, tc := range []struct{ name, codec, room string }{{"G711", "PCMU", "810"}, {"G722", "G722/16000/1", "800"}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			var phones []*baresiptest.Phone
			for i, ext := range []string{"1001", "1002", "1003", "1004", "1005"} {
				ph := baresiptest.Start(ctx, b, bin, baresiptest.Config{Name: ext, Tone: 500 + 300*i, Modules: []string{"g722"},
					Accounts: []string{fmt.Sprintf("<sip:%s@127.0.0.1:%d;transport=udp>;auth_pass=%s;answermode=auto;audio_codecs=%s;regint=300",
						ext, udp.Port, pw[ext], tc.codec)}})
				ph.WaitRegistered(ctx, b, 1)
				ph.Command(ctx, b, "dial", fmt.Sprintf("sip:%s@127.0.0.1:%d", tc.room, udp.Port))
				ph.WaitEvent(ctx, b, "CALL_ESTABLISHED")
				phones = append(phones, ph)
			}
			time.Sleep(time.Second) // join tones over, jitter buffers filled
			b.ResetTimer()
			start := procCPU(b, p.cmd.Process.Pid)
			for range b.N {
				time.Sleep(time.Second)
			}
			used := procCPU(b, p.cmd.Process.Pid) - start
			b.StopTimer()
			perPart := used / time.Duration(b.N) / time.Duration(len(phones)) // CPU per participant-second
			b.ReportMetric(float64(perPart.Microseconds())/50, "µs-cpu/participant/20ms")
			b.ReportMetric(float64(time.Second)/float64(perPart), "participants/core")
			for _, ph := range phones {
				ph.Command(ctx, b, "hangup", "")
				ph.WaitEvent(ctx, b, "CALL_CLOSED")
				ph.Stop(b)
			}
		})
	}
	if code := p.stop(b); code != 0 {
		b.Fatalf("SIGTERM: exit %d", code)
	}
}

// procCPU is a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(tb testing.TB, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th of the line, in clock ticks (100 Hz on Linux).
	rest := string(raw[strings.LastIndexByte(string(raw), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		tb.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// checkMix requires nearly every 100 ms block of got[from:from+n] to
// carry each of the tones in others (each a fair share of the block's
// energy) and almost none of own: the mix is everyone else.
func checkMix(t *testing.T, who string, got baresiptest.PCM, from, n int, others []float64, own float64) {
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
		ok := share(x, own, got.Rate) < 0.03
		var shares []string
		for _, f := range others {
			s := share(x, f, got.Rate)
			shares = append(shares, fmt.Sprintf("%.0f:%.2f", f, s))
			ok = ok && s > 0.1
		}
		if ok {
			good++
		} else if len(bad) < 4 {
			bad = append(bad, fmt.Sprintf("block at %d: own %.2f, %s", i, share(x, own, got.Rate), strings.Join(shares, " ")))
		}
	}
	t.Logf("%s: %d of %d blocks carry the other four tones and not its own", who, good, total)
	if good < total*9/10 {
		t.Errorf("%s hears the wrong mix: %s", who, strings.Join(bad, "; "))
	}
}

// share is the part of x's energy at freq (Goertzel): 1 for a pure sine.
func share(x []float64, freq float64, rate int) float64 {
	w := 2 * math.Pi * freq / float64(rate)
	c := 2 * math.Cos(w)
	var s1, s2, energy float64
	for _, v := range x {
		s1, s2 = v+c*s1-s2, s1
		energy += v * v
	}
	if energy == 0 {
		return 0
	}
	return 2 * (s1*s1 + s2*s2 - c*s1*s2) / (float64(len(x)) * energy)
}
