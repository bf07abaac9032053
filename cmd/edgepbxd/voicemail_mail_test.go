package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/mailer"
	"github.com/edgepbx/edgepbx/firmware/mailer/mailtest"
	"github.com/edgepbx/edgepbx/firmware/voicemail"
)

// TestDevModeVoicemailEmail: the real daemon mails voicemail through a
// real SMTP submission server (Debian's aiosmtpd, STARTTLS required, AUTH,
// the server's CA pinned):
//   - the admin sets the server (the password is never shown back) and
//     sends a test message; a second one within the minute is refused;
//   - 1001 leaves 1002 a message: the mail to 1002's address carries the
//     right headers and a WAV that is the message as the admin downloads
//     it; the message stays in the mailbox;
//   - 1002 leaves 1001 a message: 1001's mailbox wants only a notice, so
//     the mail has no attachment.
func TestDevModeVoicemailEmail(t *testing.T) {
	srv := mailtest.Start(t, mailer.ModeSTARTTLS)
	dir := filepath.Join(t.TempDir(), "dev")
	args := []string{"--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0"}
	p := startProc(t, procOpts{noFD3: true}, args...)
	base := p.waitLine(t, adminRE)[1]
	fp := p.waitLine(t, fpRE)[1]
	api := claimBox(t, base, fp, p.waitLine(t, setupRE)[1])
	var v admin.SIPSettingsView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &v); err != nil {
		t.Fatal(err)
	}
	next := v.Settings
	next.Algorithms = []string{"MD5"} // sipp answers MD5 only; takes effect at the next start
	api.must(http.StatusOK, "PUT", "/api/v1/sip/settings", next)
	pw := map[string]string{}
	for _, u := range []string{"1001", "1002"} {
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

	// The mail server: refused field named, then set; the password never
	// comes back.
	req := admin.MailRequest{Host: srv.Host, Port: srv.Port, Mode: "starttls", User: srv.User, Password: srv.Pass,
		From: "pbx@example.test", CAPEM: srv.CAPEM}
	bad := req
	bad.Mode = "plain"
	if b := string(api.must(http.StatusBadRequest, "PUT", "/api/v1/mail", bad)); !strings.Contains(b, "/mode") {
		t.Errorf("refused mode: %s", b)
	}
	var mv admin.MailView
	if b := api.must(http.StatusOK, "PUT", "/api/v1/mail", req); bytes.Contains(b, []byte(srv.Pass)) || json.Unmarshal(b, &mv) != nil || !mv.PasswordSet {
		t.Fatalf("mail settings answer: %s", b)
	}
	if b := string(api.must(http.StatusOK, "POST", "/api/v1/mail/test", admin.MailTestRequest{To: "admin@example.test"})); !strings.Contains(b, "accepted") {
		t.Fatalf("test message: %s", b)
	}
	if b := string(api.must(http.StatusTooManyRequests, "POST", "/api/v1/mail/test", admin.MailTestRequest{To: "admin@example.test"})); !strings.Contains(b, "minute") {
		t.Errorf("second test message: %s", b)
	}
	api.must(http.StatusBadRequest, "POST", "/api/v1/mail/test", admin.MailTestRequest{To: "a@b\r\nBcc: x@y"})
	if m := srv.Wait(t, 1, 60*time.Second); !m.TLS || m.To[0] != "admin@example.test" || m.Mail.Header.Get("Subject") != "edgepbx: test message" {
		t.Fatalf("test message %+v", m)
	}
	api.must(http.StatusOK, "PUT", "/api/v1/voicemail/1002/options", voicemail.Options{Email: "owner1002@example.test", AttachAudio: true})
	api.must(http.StatusOK, "PUT", "/api/v1/voicemail/1001/options", voicemail.Options{Email: "owner1001@example.test"})
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
	kp := &keyPcaps{t: t, dir: t.TempDir(), ts: 1 << 20}
	sippCall(t, sip, "1001", pw["1001"], "1002", vmScenario([]vmStep{pause(1500)}, speech(), kp.keys("#")))

	m := srv.Wait(t, 2, 120*time.Second)
	var mb admin.MailboxView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/voicemail/1002", nil), &mb); err != nil || len(mb.Messages) != 1 {
		t.Fatalf("mailbox after the mail %+v %v", mb, err)
	}
	id := mb.Messages[0].ID
	subj := m.Mail.Header.Get("Subject")
	if !m.TLS || m.From != "pbx@example.test" || m.To[0] != "owner1002@example.test" || m.Mail.Header.Get("To") != "owner1002@example.test" ||
		!strings.HasPrefix(subj, "Voicemail for 1002 from 1001 (") || m.Mail.Header.Get("Auto-Submitted") != "auto-generated" {
		t.Fatalf("voicemail mail: envelope %v %v tls=%t, headers %v", m.From, m.To, m.TLS, m.Mail.Header)
	}
	text, name, att := mailParts(t, m)
	want := api.must(http.StatusOK, "GET", "/api/v1/voicemail/1002/messages/"+id+"/audio?download=1", nil)
	if name != "voicemail-1002-"+id+".wav" || !bytes.Equal(att, want) || len(att) < 44+2*8000*5 {
		t.Fatalf("attachment %q: %d bytes, the message is %d bytes (equal %t)", name, len(att), len(want), bytes.Equal(att, want))
	}
	// The voicemail page lists the message with a player on the audited
	// endpoint, a download link and a delete button.
	page := string(api.must(http.StatusOK, "GET", "/voicemail", nil))
	for _, want := range []string{`id="mailbox-1002"`, `<audio controls preload="none" src="/api/v1/voicemail/1002/messages/` + id + `/audio"`,
		`/api/v1/voicemail/1002/messages/` + id + `/audio?download=1`, `data-api="/api/v1/voicemail/1002/messages/` + id + `" data-method="DELETE"`,
		`id="mail-server"`, `value="owner1002@example.test"`} {
		if !strings.Contains(page, want) {
			t.Errorf("voicemail page lacks %s", want)
		}
	}
	if strings.Contains(page, srv.Pass) {
		t.Error("the voicemail page shows the SMTP password")
	}
	if !strings.Contains(text, "From: 1001") || !strings.Contains(text, "stays in the mailbox") {
		t.Errorf("mail text %q", text)
	}

	sippCall(t, sip, "1002", pw["1002"], "1001", vmScenario([]vmStep{pause(1500)}, speech(), kp.keys("#")))
	n := srv.Wait(t, 3, 120*time.Second)
	if n.To[0] != "owner1001@example.test" || !strings.HasPrefix(n.Mail.Header.Get("Content-Type"), "text/plain") ||
		!strings.HasPrefix(n.Mail.Header.Get("Subject"), "Voicemail for 1001 from 1002") {
		t.Fatalf("notice: %v %v", n.To, n.Mail.Header)
	}
	if b, _ := io.ReadAll(n.Mail.Body); bytes.Contains(b, []byte("RIFF")) || bytes.Contains(b, []byte("UklGR")) {
		t.Error("the notice carries audio")
	}
	if out := p.output(); strings.Contains(out, srv.Pass) {
		t.Error("the SMTP password is in the daemon's log")
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
}

// mailParts returns the text, the attachment's file name and its bytes.
func mailParts(t *testing.T, r mailtest.Received) (text, name string, att []byte) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(r.Mail.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("content type %q %v", mt, err)
	}
	mr := multipart.NewReader(r.Mail.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return text, name, att
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		if p.FileName() != "" {
			name = p.FileName()
			if att, err = base64.StdEncoding.DecodeString(strings.ReplaceAll(string(b), "\r\n", "")); err != nil {
				t.Fatal(err)
			}
		} else {
			text = string(b)
		}
	}
}
