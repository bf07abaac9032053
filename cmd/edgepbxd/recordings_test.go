package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/callrec"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

// TestBaresipRecording runs the real daemon in dev mode with real phones
// (baresip, SRTP toward the box on both legs) and the recording policy set
// through the API: 1001 is always recorded, 1003 on demand (the phone
// types *1 during the call, sent as RFC 4733 events), 1005 never. The
// recordings are listed, downloaded (audited) and one deleted through
// the API; after the daemon stopped, the stored files are decoded back
// (each direction's tone by Goertzel), are not audio as raw bytes, do not
// open with another key, and are gone once retention has passed (the
// clock driven, not waited for).
func TestBaresipRecording(t *testing.T) {
	bin := baresiptest.Need(t)
	dir := filepath.Join(t.TempDir(), "dev")
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0")
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
	for _, u := range []string{"1001", "1002", "1003", "1005"} {
		var ans struct{ User, Password string }
		if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ans); err != nil || ans.Password == "" {
			t.Fatalf("create %s: %v", u, err)
		}
		pw[u] = ans.Password
	}
	api.must(http.StatusBadRequest, "PUT", "/api/v1/recordings/policy", callrec.Policy{Extensions: map[string]callrec.Mode{"1001": "sometimes"}})
	pol := callrec.Policy{Extensions: map[string]callrec.Mode{"1001": callrec.Always, "1003": callrec.OnDemand, "1005": callrec.Never, "1002": callrec.Always},
		RetentionDays: map[string]int{"call": 30}}
	api.must(http.StatusOK, "PUT", "/api/v1/recordings/policy", pol)

	const callerTone, calleeTone = 440, 1000
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	phone := func(user, enc string, tone int) *baresiptest.Phone {
		return baresiptest.Start(ctx, t, bin, baresiptest.Config{Name: user, Tone: tone,
			Accounts: []string{fmt.Sprintf("<sip:%s@127.0.0.1:%d;transport=udp>;auth_pass=%s;mediaenc=%s;answermode=auto;audio_codecs=PCMU;regint=300",
				user, udp.Port, pw[user], enc)}})
	}
	callee := phone("1002", "srtp", calleeTone)
	callee.WaitRegistered(ctx, t, 1)
	call := func(caller string, during func(a *baresiptest.Phone)) {
		a := phone(caller, "srtp-mand", callerTone)
		a.WaitRegistered(ctx, t, 1)
		a.Command(ctx, t, "dial", fmt.Sprintf("sip:1002@127.0.0.1:%d", udp.Port))
		a.WaitEvent(ctx, t, "CALL_ESTABLISHED")
		callee.WaitEvent(ctx, t, "CALL_ESTABLISHED")
		during(a)
		a.Command(ctx, t, "hangup", "")
		a.WaitEvent(ctx, t, "CALL_CLOSED")
		callee.WaitEvent(ctx, t, "CALL_CLOSED")
		a.Stop(t)
	}
	// 1002 is "always" too: 1005's never must win over it.
	call("1001", func(a *baresiptest.Phone) { a.WaitAudio(ctx, t, 3*time.Second) })
	call("1003", func(a *baresiptest.Phone) {
		a.WaitAudio(ctx, t, 500*time.Millisecond)
		a.Command(ctx, t, "sndcode", "*1")
		a.WaitAudio(ctx, t, 3500*time.Millisecond)
	})
	call("1005", func(a *baresiptest.Phone) { a.WaitAudio(ctx, t, time.Second) })

	var list admin.RecordingsView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/recordings?category=call", nil), &list); err != nil {
		t.Fatal(err)
	}
	byFrom := map[string]callrec.Item{}
	for _, it := range list.Recordings {
		byFrom[it.From] = it
	}
	if len(list.Recordings) != 2 || byFrom["1001"].To != "1002" || byFrom["1003"].To != "1002" || list.RetentionDays["call"] != 30 {
		t.Fatalf("recordings %+v, want 1001's and 1003's", list)
	}
	if list.Usage.Used <= 0 || list.Usage.Limit <= list.Usage.Used || list.Usage.Full {
		t.Errorf("usage %+v", list.Usage)
	}
	always, onDemand := byFrom["1001"], byFrom["1003"]
	if always.Seconds < 2 || always.Seconds > 6 {
		t.Errorf("1001's recording: %d s", always.Seconds)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon: %s", p.output())
		}
	})
	if page := string(api.must(http.StatusOK, "GET", "/recordings", nil)); !strings.Contains(page, always.ID) || !strings.Contains(page, "1003") {
		t.Errorf("recordings page does not list %s", always.ID)
	}
	api.must(http.StatusBadRequest, "PUT", "/api/v1/recordings/retention", map[string]int{"call": 0})
	api.must(http.StatusOK, "PUT", "/api/v1/recordings/retention", map[string]int{"call": 30, "voicemail": 100})
	var kept callrec.Policy
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/recordings/policy", nil), &kept); err != nil || kept.Extensions["1001"] != callrec.Always || kept.RetentionDays["voicemail"] != 100 {
		t.Errorf("policy after the retention change: %+v %v", kept, err)
	}
	wav := api.must(http.StatusOK, "GET", "/api/v1/recordings/"+always.ID+"/audio?download=1", nil)
	if len(wav) < 44+2*8000*2 || string(wav[:4]) != "RIFF" {
		t.Errorf("download: %d bytes", len(wav))
	}
	api.must(http.StatusNotFound, "GET", "/api/v1/recordings/voicemail/1-0000000000000000.rec/audio", nil)
	api.must(http.StatusNotFound, "GET", "/api/v1/recordings/call/..%2f..%2fedgepbx.db/audio", nil)
	noCSRF := *api
	noCSRF.csrf = ""
	if code, _, _ := noCSRF.do("DELETE", "/api/v1/recordings/"+onDemand.ID, nil); code == http.StatusOK {
		t.Fatal("delete without the CSRF token accepted")
	}
	api.must(http.StatusOK, "DELETE", "/api/v1/recordings/"+onDemand.ID, nil)
	api.must(http.StatusNotFound, "DELETE", "/api/v1/recordings/"+onDemand.ID, nil)
	audit := string(api.must(http.StatusOK, "GET", "/api/v1/audit?limit=50", nil))
	for _, a := range []string{"recording.policy", "recording.download", "recording.delete"} {
		if !strings.Contains(audit, a) {
			t.Errorf("%s not audited", a)
		}
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
	notes := map[string]string{}
	for _, r := range recs {
		notes[r.From] = r.Recording
	}
	if !strings.Contains(notes["1001"], always.ID) || !strings.Contains(notes["1003"], onDemand.ID) || notes["1005"] != "" {
		t.Errorf("CDR recording notes %q", notes)
	}

	keys, _, err := mediaKeys(id)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := recording.OpenStore(recording.Config{Dir: filepath.Join(dir, "recordings"), Keys: keys, Quota: 1 << 30, MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.List("call"); len(got) != 1 || got[0].ID != always.ID {
		t.Fatalf("stored call recordings %+v, want only %s (the other deleted)", got, always.ID)
	}
	if _, err := os.Stat(filepath.Join(dir, "recordings", filepath.FromSlash(onDemand.ID))); !os.IsNotExist(err) {
		t.Errorf("deleted recording's file: %v", err)
	}
	pcm, meta, err := rs.ReadAudio(always.ID)
	if err != nil {
		t.Fatal(err)
	}
	baresiptest.CheckMixed(t, "1001's recording", baresiptest.PCM{Rate: meta.SampleRate, Samples: pcm}, 15, callerTone, calleeTone)

	// Raw bytes are not audio, and another key opens nothing.
	raw, err := os.ReadFile(filepath.Join(dir, "recordings", filepath.FromSlash(always.ID)))
	if err != nil {
		t.Fatal(err)
	}
	ulaw, _ := codec.New("PCMU")
	if good, total, _ := baresiptest.MixedBlocks(baresiptest.PCM{Rate: 8000, Samples: ulaw.Decode(nil, raw)}, callerTone, calleeTone); good > total/20 {
		t.Errorf("raw file played as G.711: %d of %d blocks carry the tones", good, total)
	}
	other := make([]byte, 32)
	rand.Read(other)
	otherKeys, _ := recording.StaticKey(other)
	rs2, err := recording.OpenStore(recording.Config{Dir: filepath.Join(dir, "recordings"), Keys: otherKeys, Quota: 1 << 30, MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rs2.ReadAudio(always.ID); err == nil {
		t.Fatal("recording opens with another key")
	}

	// Retention as the policy set it (30 days), the clock driven.
	if err := rs.SetRetention(pol.Retention()); err != nil {
		t.Fatal(err)
	}
	if n, err := rs.Sweep(time.Now().Add(29 * 24 * time.Hour)); n != 0 || err != nil {
		t.Fatalf("29 days: %d swept, %v", n, err)
	}
	if n, err := rs.Sweep(time.Now().Add(31 * 24 * time.Hour)); n != 1 || err != nil {
		t.Fatalf("31 days: %d swept, %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "recordings", filepath.FromSlash(always.ID))); !os.IsNotExist(err) {
		t.Errorf("expired recording's file: %v", err)
	}
}
