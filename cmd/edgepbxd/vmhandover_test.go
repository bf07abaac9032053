package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
)

// testWAV is a 16-bit mono PCM WAV of a tone.
func testWAV(rate int, d time.Duration, hz float64) []byte {
	n := int(d.Seconds() * float64(rate))
	var b bytes.Buffer
	le := binary.LittleEndian
	b.WriteString("RIFF")
	_ = binary.Write(&b, le, uint32(36+2*n))
	b.WriteString("WAVEfmt ")
	for _, v := range []any{uint32(16), uint16(1), uint16(1), uint32(rate), uint32(2 * rate), uint16(2), uint16(16)} {
		_ = binary.Write(&b, le, v)
	}
	b.WriteString("data")
	_ = binary.Write(&b, le, uint32(2*n))
	for i := range n {
		_ = binary.Write(&b, le, int16(6000*math.Sin(2*math.Pi*hz*float64(i)/float64(rate))))
	}
	return b.Bytes()
}

// upload sends a raw body (Content-Type ctype) the way the admin UI does:
// session cookie, Origin and CSRF token.
func (a *apiClient) upload(method, path, ctype string, body []byte) (int, []byte) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Origin", a.origin)
	req.Header.Set("X-CSRF-Token", a.csrf)
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	return resp.StatusCode, out.Bytes()
}

type cdrRow struct {
	From, To, Cause, Result, Direction string
}

// lastCDR waits for the call record of a call from 1001 that ended in an
// application after the n records seen so far.
func lastCDR(t *testing.T, api *apiClient, n int) cdrRow {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var page struct{ Records []cdrRow }
		if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/cdr", nil), &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Records) > n {
			for _, r := range page.Records {
				if strings.HasPrefix(r.To, "voicemail/") && r.From == "1001" {
					return r // newest first
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new call record after %d: %+v", n, page.Records)
		}
	}
}

func cdrCount(t *testing.T, api *apiClient) int {
	var page struct{ Records []cdrRow }
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/cdr", nil), &page); err != nil {
		t.Fatal(err)
	}
	return len(page.Records)
}

// TestDevModeVoicemailAfterRinging runs the real binary: sipp (1001)
// calls 1003, a registered sipgo phone forwarded to voicemail on busy and
// on no answer.
//   - 1003 rings without answering: after its 5 s ring time the box
//     CANCELs it and voicemail answers the caller (the default unavailable
//     greeting); sipp's speech is stored as a message;
//   - 1003 answers 486: voicemail answers with the busy greeting the
//     admin uploaded as WAV (an upload that is not a WAV is refused with
//     the reason);
//   - 1003 records its name greeting from its phone (*97, first PIN,
//     '0' in the message menu, '3');
//   - 1003 in do-not-disturb with forward on busy, the busy greeting
//     removed by the admin: nothing rings, the default busy prompt and
//     the name;
//   - the message's audio file is deleted under its record (as retention
//     does): the admin's audio request answers 404 saying it expired, and
//     the mailbox no longer lists it.
func TestDevModeVoicemailAfterRinging(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	args := []string{"--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0"}
	p := startProc(t, procOpts{noFD3: true}, args...)
	base := p.waitLine(t, adminRE)[1]
	fp := p.waitLine(t, fpRE)[1]
	api := claimBox(t, base, fp, p.waitLine(t, setupRE)[1])
	// sipp answers MD5 challenges only; the algorithms take effect at the
	// next start.
	var v admin.SIPSettingsView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &v); err != nil {
		t.Fatal(err)
	}
	next := v.Settings
	next.Algorithms = []string{"MD5"}
	api.must(http.StatusOK, "PUT", "/api/v1/sip/settings", next)
	pw := map[string]string{}
	for _, u := range []string{"1001", "1003"} {
		var ans struct{ User, Password string }
		if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ans); err != nil || ans.Password == "" {
			t.Fatalf("create %s: %v", u, err)
		}
		pw[u] = ans.Password
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
	p = startProc(t, procOpts{noFD3: true}, args...)
	base = p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	api = newAPIClient(t, base, fp)
	api.login(api.must(http.StatusOK, "POST", "/api/v1/login", admin.LoginRequest{Username: testAdmin, Password: testAdminPW}))
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(p.output(), `msg="calls: ready"`); {
		if time.Now().After(deadline) {
			t.Fatalf("B2BUA not wired:\n%s", p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	udp, err := net.ResolveUDPAddr("udp", sipAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	sip := udp.String()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ph := siptest.NewPhone(t, "1003", pw["1003"])
	ph.Register(ctx, "127.0.0.1", udp.Port)
	kp := &keyPcaps{t: t, dir: t.TempDir(), ts: 1 << 20}

	// The admin uploads 1003's busy greeting; a file that is not a WAV is
	// refused with the reason and changes nothing.
	if code, out := api.upload("PUT", "/api/v1/voicemail/1003/greetings/busy", "audio/wav", []byte("not a wave file at all")); code != http.StatusBadRequest || !strings.Contains(string(out), "RIFF") {
		t.Fatalf("bad upload: %d %s", code, out)
	}
	if code, out := api.upload("PUT", "/api/v1/voicemail/1003/greetings/busy", "audio/wav", testWAV(8000, 2*time.Second, 523)); code != http.StatusOK {
		t.Fatalf("greeting upload: %d %s", code, out)
	}
	var mb admin.MailboxView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/voicemail/1003", nil), &mb); err != nil || strings.Join(mb.Greetings, ",") != "busy" {
		t.Fatalf("mailbox after the upload %+v %v", mb, err)
	}
	if audit := string(api.must(http.StatusOK, "GET", "/api/v1/audit?limit=50", nil)); !strings.Contains(audit, "voicemail.greeting.upload") {
		t.Errorf("greeting upload not audited: %s", audit)
	}

	// No answer: 1003 rings for its 5 s, then voicemail takes the message.
	api.must(http.StatusOK, "PUT", "/api/v1/extensions/1003/features", features.Settings{NoAnswer: features.Voicemail, Busy: features.Voicemail, Ring: 5})
	ph.Reply(siptest.Ring)
	n := cdrCount(t, api)
	start := time.Now()
	sippCall(t, sip, "1001", pw["1001"], "1003", vmScenario([]vmStep{pause(1500)}, speech(), kp.keys("#")))
	if took := time.Since(start); took < 5*time.Second {
		t.Fatalf("voicemail after %v, before the ring time", took)
	}
	select {
	case <-ph.Invites:
	default:
		t.Fatal("1003 never rang")
	}
	if r := lastCDR(t, api, n); r.To != "voicemail/1003" || r.Direction != "app" || r.Result != "answered" || r.Cause != "application ended (noanswer)" {
		t.Fatalf("CDR of the no-answer call %+v", r)
	}
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/voicemail/1003", nil), &mb); err != nil ||
		len(mb.Messages) != 1 || mb.New != 1 || mb.Messages[0].Caller != "1001" || mb.Messages[0].Duration < 5*time.Second {
		t.Fatalf("1003's mailbox after the no-answer call %+v %v", mb, err)
	}
	if !strings.Contains(p.output(), `msg="voicemail: greeting" mailbox=1003 greeting=unavailable own=false`) {
		t.Errorf("no default unavailable greeting played:\n%s", grepLines(p.output(), "voicemail"))
	}

	// The owner records a name greeting from the phone: *97, the first
	// PIN chosen, '0' during the message, '3' (name), speech, '#'.
	const pin = "582914"
	sippCall(t, sip, "1003", pw["1003"], "*97", vmScenario(kp.keys(pin+"#"), []vmStep{pause(600)}, kp.keys(pin+"#"),
		[]vmStep{pause(1500)}, kp.keys("0"), []vmStep{pause(1500)}, kp.keys("3"), []vmStep{pause(1500)}, speech(), kp.keys("#")))
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/voicemail/1003", nil), &mb); err != nil || strings.Join(mb.Greetings, ",") != "busy,name" {
		t.Fatalf("greetings after the phone menu %+v %v\n%s", mb, err, grepLines(p.output(), "voicemail"))
	}

	// Busy: 1003 answers 486; the uploaded busy greeting, '#' ends it.
	ph.Reply(486)
	n = cdrCount(t, api)
	sippCall(t, sip, "1001", pw["1001"], "1003", vmScenario([]vmStep{pause(3500)}, kp.keys("#")))
	select {
	case <-ph.Invites:
	default:
		t.Fatal("1003 was not asked before busy")
	}
	if r := lastCDR(t, api, n); r.To != "voicemail/1003" || r.Cause != "application ended (busy)" {
		t.Fatalf("CDR of the busy call %+v", r)
	}
	if !strings.Contains(p.output(), `msg="voicemail: greeting" mailbox=1003 greeting=busy own=true`) {
		t.Errorf("the uploaded busy greeting was not played:\n%s", grepLines(p.output(), "voicemail"))
	}

	// Do not disturb, forwarded on busy: nothing rings. The admin removed
	// the busy greeting: the default busy prompt and the owner's name.
	api.must(http.StatusOK, "DELETE", "/api/v1/voicemail/1003/greetings/busy", nil)
	api.must(http.StatusOK, "PUT", "/api/v1/extensions/1003/features", features.Settings{DND: true, Busy: features.Voicemail})
	ph.Reply(0)
	n = cdrCount(t, api)
	// The first '#' skips the (7 s) greeting, the second ends the
	// recording.
	sippCall(t, sip, "1001", pw["1001"], "1003", vmScenario([]vmStep{pause(1500)}, kp.keys("#"), []vmStep{pause(1500)}, kp.keys("#")))
	if r := lastCDR(t, api, n); r.To != "voicemail/1003" || r.Cause != "application ended (busy)" {
		t.Fatalf("CDR of the DND call %+v", r)
	}
	select {
	case inv := <-ph.Invites:
		t.Fatalf("1003 rang in do-not-disturb (%s)", inv.Recipient.User)
	default:
	}
	if !strings.Contains(p.output(), `msg="voicemail: greeting" mailbox=1003 greeting=busy own=false name=true`) {
		t.Errorf("no default busy prompt with the name:\n%s", grepLines(p.output(), "voicemail"))
	}

	// Retention deletes the message's audio under its record.
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/voicemail/1003", nil), &mb); err != nil || len(mb.Messages) != 1 {
		t.Fatalf("mailbox %+v %v", mb, err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "recordings", "voicemail", "*"))
	if len(files) == 0 {
		t.Fatal("no voicemail recordings on disk")
	}
	for _, f := range files {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	code, _, out := api.do("GET", "/api/v1/voicemail/1003/messages/"+mb.Messages[0].ID+"/audio", nil)
	if code != http.StatusNotFound || !strings.Contains(string(out), "expired") {
		t.Fatalf("audio of a message retention deleted: %d %s", code, out)
	}
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/voicemail/1003", nil), &mb); err != nil || len(mb.Messages) != 0 || mb.New != 0 {
		t.Fatalf("mailbox still lists the expired message: %+v %v", mb, err)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
}

// TestVoicemailPruneWired: the daemon runs the voicemail retention
// service (message records whose audio retention deleted are removed).
func TestVoicemailPruneWired(t *testing.T) {
	dir := t.TempDir()
	d, err := newDaemon(config{devDir: dir, dataDir: dir, httpsAddr: "127.0.0.1:0", sipAddr: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if d.voicemail == nil {
		t.Fatal("voicemail not wired")
	}
	found := false
	for _, s := range d.services() {
		found = found || s.name == "voicemail-retention"
	}
	if !found {
		t.Error("no voicemail retention service")
	}
	if n, err := d.voicemail.Prune(); err != nil || n != 0 {
		t.Fatalf("prune of an empty box: %d %v", n, err)
	}
}
