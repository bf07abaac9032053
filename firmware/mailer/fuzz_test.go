package mailer_test

import (
	"mime"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mailer"
)

// FuzzBuild: whatever the recipient, subject and body, a message that
// builds has exactly the headers the box writes, the recipient it was
// given and the subject decoding back to itself: nothing can add a
// header or a recipient.
func FuzzBuild(f *testing.F) {
	f.Add("owner@example.test", "Voicemail from 1001", "hello")
	f.Add("a@b\r\nBcc: x@y", "s", "b")
	f.Add("a@b", "s\r\nBcc: x@y", "b\r\n.\r\n")
	f.Add("a@b", "=?utf-8?q?x?=", "")
	f.Fuzz(func(t *testing.T, to, subject, body string) {
		raw, err := mailer.Build("pbx@example.test", mailer.Message{To: to, Subject: subject, Body: body}, time.Unix(0, 0))
		if err != nil {
			return
		}
		m, err := mail.ReadMessage(strings.NewReader(string(raw)))
		if err != nil {
			t.Fatalf("built message does not parse: %v", err)
		}
		want := map[string]bool{"From": true, "To": true, "Subject": true, "Date": true, "Message-Id": true,
			"Mime-Version": true, "Auto-Submitted": true, "Content-Type": true, "Content-Transfer-Encoding": true}
		for k, v := range m.Header {
			if !want[k] || len(v) != 1 {
				t.Fatalf("header %q %q", k, v)
			}
		}
		if m.Header.Get("To") != to {
			t.Fatalf("To %q, want %q", m.Header.Get("To"), to)
		}
		if got, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject")); err != nil || got != subject {
			t.Fatalf("subject %q (%v), want %q", got, err, subject)
		}
		if addrs, err := m.Header.AddressList("To"); err != nil || len(addrs) != 1 {
			t.Fatalf("recipients %v %v", addrs, err)
		}
	})
}

// FuzzCheckAddress: an accepted address has no byte that could end a
// header or an SMTP command, and parses to itself.
func FuzzCheckAddress(f *testing.F) {
	for _, s := range []string{"a@b", "a@b\r\n", "<a@b>", "\"a b\"@c", "a@[127.0.0.1]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if mailer.CheckAddress(s) != nil {
			return
		}
		if strings.ContainsAny(s, "\r\n\x00 <>,;\"") {
			t.Fatalf("accepted %q", s)
		}
		if a, err := mail.ParseAddress(s); err != nil || a.Address != s {
			t.Fatalf("accepted %q that parses to %v %v", s, a, err)
		}
	})
}
