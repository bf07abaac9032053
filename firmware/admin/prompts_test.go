package admin

import (
	"math"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/auth"

	"github.com/edgepbx/edgepbx/firmware/mailer"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
)

func toneWAV(rate int, ms int) []byte {
	pcm := make([]int16, rate*ms/1000)
	for i := range pcm {
		pcm[i] = int16(8000 * math.Sin(2*math.Pi*700*float64(i)/float64(rate)))
	}
	return wav.Encode(rate, pcm)
}

// TestPromptsAPI: a WAV replaces a prompt (raw body and the page's
// multipart form), the library then plays it, a refused file changes
// nothing and names the reason, revert brings the default back; every
// change is audited; readers cannot change prompts.
func TestPromptsAPI(t *testing.T) {
	e, a := claimed(t)
	a.must(409, "GET", "/api/v1/prompts", nil) // no library on this box
	lib := &prompts.Library{Dir: t.TempDir()}
	e.srv.prompts = lib

	a.header = map[string]string{"Content-Type": "audio/wav"}
	r := a.must(200, "PUT", "/api/v1/prompts/de/goodbye", string(toneWAV(8000, 1200)))
	if !strings.Contains(r.str("status"), "1.2 s") {
		t.Fatalf("upload answer %s", r.body)
	}
	got, err := lib.Get("de", prompts.Goodbye, 16000)
	def, _ := prompts.Default(prompts.Goodbye)
	if err != nil || len(got) != 16000*12/10 || len(got) == len(def) {
		t.Fatalf("library plays %d samples (%v), want the 1.2 s upload", len(got), err)
	}
	body, ct := multipartBody(t, "file", "enter.wav", toneWAV(16000, 500))
	a.header = map[string]string{"Content-Type": ct}
	a.must(200, "PUT", "/api/v1/prompts/de/enter-pin", body)

	a.header = map[string]string{"Content-Type": "audio/wav"}
	if r := a.must(400, "PUT", "/api/v1/prompts/de/locked", "RIFF....WAVEjunk"); r.str("field") != "/file" && !strings.Contains(string(r.body), "wav") {
		t.Fatalf("refused upload: %s", r.body)
	}
	if lib.Custom("de", prompts.Locked) {
		t.Fatal("a refused upload was stored")
	}
	// A record prompt is limited to 30 s.
	a.must(400, "PUT", "/api/v1/prompts/de/record", string(toneWAV(8000, 31000)))
	a.must(404, "PUT", "/api/v1/prompts/de/no-such-prompt", string(toneWAV(8000, 100)))
	a.must(404, "PUT", "/api/v1/prompts/..%2fx/goodbye", string(toneWAV(8000, 100)))
	a.header = nil

	r = a.must(200, "GET", "/api/v1/prompts?lang=de", nil)
	if !strings.Contains(string(r.body), `"custom": true`) {
		t.Fatalf("catalogue %s", r.body)
	}
	a.must(400, "GET", "/api/v1/prompts?lang=x/y", nil)
	a.must(200, "DELETE", "/api/v1/prompts/de/goodbye", nil)
	if lib.Custom("de", prompts.Goodbye) {
		t.Fatal("revert left the upload")
	}
	audit := string(a.must(200, "GET", "/api/v1/audit?limit=20", nil).body)
	for _, want := range []string{"prompt.upload", "de/enter-pin", "prompt.revert"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit lacks %q", want)
		}
	}
	ro := auditorClient(e, a)
	ro.header = map[string]string{"Content-Type": "audio/wav"}
	ro.must(403, "PUT", "/api/v1/prompts/de/goodbye", string(toneWAV(8000, 100)))
}

// TestMailAPI: settings refused with the field named, stored without
// ever showing the password back, an empty password keeps it, a test
// message to a bad address is refused before anything is sent.
func TestMailAPI(t *testing.T) {
	e, a := claimed(t)
	a.must(409, "GET", "/api/v1/mail", nil)
	m, err := mailer.New(mailer.Config{DB: e.db})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.mail = m
	req := MailRequest{Host: "smtp.example.test", Port: 587, Mode: "starttls", User: "pbx", Password: "Sm7p-pass-word", From: "pbx@example.test"}
	for field, bad := range map[string]func(*MailRequest){
		"/host": func(q *MailRequest) { q.Host = "smtp\r\nRCPT TO:<x@y>" },
		"/mode": func(q *MailRequest) { q.Mode = "none" },
		"/from": func(q *MailRequest) { q.From = "pbx@example.test\r\nBcc: x@y" },
		"/port": func(q *MailRequest) { q.Port = 70000 },
	} {
		q := req
		bad(&q)
		if r := a.must(400, "PUT", "/api/v1/mail", q); r.str("field") != field {
			t.Errorf("%s: field %q %s", field, r.str("field"), r.body)
		}
	}
	r := a.must(200, "PUT", "/api/v1/mail", req)
	if strings.Contains(string(r.body), req.Password) || r.js["password_set"] != true {
		t.Fatalf("answer %s", r.body)
	}
	req.Password = ""
	a.must(200, "PUT", "/api/v1/mail", req)
	if st, _, _ := m.Settings(); st.Password != "Sm7p-pass-word" {
		t.Fatal("empty password did not keep the stored one")
	}
	if r := a.must(400, "POST", "/api/v1/mail/test", MailTestRequest{To: "x@y\r\nBcc: z@w"}); r.str("field") != "/to" {
		t.Errorf("test to a bad address: %s", r.body)
	}
	audit := string(a.must(200, "GET", "/api/v1/audit?limit=20", nil).body)
	if !strings.Contains(audit, "mail.settings") || strings.Contains(audit, "Sm7p-pass-word") {
		t.Errorf("audit: %s", audit)
	}
	a.must(200, "DELETE", "/api/v1/mail", nil)
	if m.Configured() {
		t.Fatal("settings not removed")
	}
	auditorClient(e, a).must(403, "GET", "/api/v1/mail", nil)
}

// auditorClient logs in a new read-only account.
func auditorClient(e *env, admin *client) *client {
	admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "aud-vm", Role: auth.RoleAuditor, Password: userPW})
	c := e.client("192.0.2.53")
	c.must(200, "POST", "/api/v1/login", LoginRequest{Username: "aud-vm", Password: userPW})
	return c
}
