package mailer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mailer"
	"github.com/edgepbx/edgepbx/firmware/mailer/mailtest"
	"github.com/edgepbx/edgepbx/firmware/store"
)

func settings(s *mailtest.Server, mode string) mailer.Settings {
	return mailer.Settings{Host: s.Host, Port: s.Port, Mode: mode, User: s.User, Password: s.Pass,
		From: "pbx@example.test", CAPEM: s.CAPEM}
}

// TestSendRealServer sends through Debian's aiosmtpd with STARTTLS and
// with implicit TLS: AUTH inside TLS, the headers as built, the
// attachment decoding to the bytes sent.
func TestSendRealServer(t *testing.T) {
	for _, mode := range []string{mailer.ModeSTARTTLS, mailer.ModeTLS} {
		t.Run(mode, func(t *testing.T) {
			srv := mailtest.Start(t, mode)
			data := make([]byte, 50_000)
			rand.Read(data)
			m := mailer.Message{To: "owner@example.test", Subject: "Voicemail from 1001 — ünïcode", Body: "Line one\n.\nLine three\n",
				Attached: &mailer.Attachment{Name: "voicemail.wav", ContentType: "audio/wav", Data: data}}
			raw, err := mailer.Build("pbx@example.test", m, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if err := mailer.Send(context.Background(), settings(srv, mode), m.To, raw); err != nil {
				t.Fatal(err)
			}
			got := srv.Wait(t, 1, 30*time.Second)
			if !got.TLS || got.From != "pbx@example.test" || len(got.To) != 1 || got.To[0] != m.To {
				t.Fatalf("envelope %+v", got)
			}
			subj, err := new(mime.WordDecoder).DecodeHeader(got.Mail.Header.Get("Subject"))
			if err != nil || subj != m.Subject || got.Mail.Header.Get("To") != m.To {
				t.Fatalf("headers: subject %q (%v), to %q", subj, err, got.Mail.Header.Get("To"))
			}
			body, att := parts(t, got)
			if body != "Line one\r\n.\r\nLine three\r\n" || !bytes.Equal(att, data) {
				t.Fatalf("body %q, attachment %d bytes equal=%t", body, len(att), bytes.Equal(att, data))
			}
		})
	}
}

// parts returns the text and the attachment of a multipart message.
func parts(t *testing.T, r mailtest.Received) (string, []byte) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(r.Mail.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("content type %q %v", mt, err)
	}
	mr := multipart.NewReader(r.Mail.Body, params["boundary"])
	var text string
	var att []byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p) // quoted-printable is decoded by the reader
		if p.FileName() != "" {
			if att, err = base64.StdEncoding.DecodeString(strings.ReplaceAll(string(b), "\r\n", "")); err != nil {
				t.Fatal(err)
			}
		} else {
			text = string(b)
		}
	}
	return text, att
}

// TestSendRefusals: no STARTTLS means nothing is sent (no fall-back to
// plain), a server whose CA is not pinned or known is refused, and a
// wrong password is refused by the server.
func TestSendRefusals(t *testing.T) {
	msg := func(s mailer.Settings) error {
		raw, err := mailer.Build(s.From, mailer.Message{To: "a@example.test", Subject: "x", Body: "x"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return mailer.Send(context.Background(), s, "a@example.test", raw)
	}
	plain := mailtest.Start(t, "plain")
	if err := msg(settings(plain, mailer.ModeSTARTTLS)); !errors.Is(err, mailer.ErrNoTLS) {
		t.Errorf("server without STARTTLS: %v", err)
	}
	if plain.Count() != 0 {
		t.Error("a message went out in clear")
	}
	tls := mailtest.Start(t, mailer.ModeSTARTTLS)
	s := settings(tls, mailer.ModeSTARTTLS)
	s.CAPEM = ""
	if err := msg(s); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("unknown CA: %v", err)
	}
	s = settings(tls, mailer.ModeSTARTTLS)
	s.Password = "wrong-password"
	if err := msg(s); err == nil || !strings.Contains(err.Error(), "AUTH") || strings.Contains(err.Error(), "wrong-password") {
		t.Errorf("wrong password: %v", err)
	}
	if tls.Count() != 0 {
		t.Error("a refused session delivered a message")
	}
}

func newDB(t *testing.T) *store.DB {
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(t.TempDir(), "edgepbx.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestQueueRetries: a job that fails (wrong password) is retried and
// delivered once the settings are right; a job whose message is gone is
// dropped; the password is sealed in the store, not in clear.
func TestQueueRetries(t *testing.T) {
	srv := mailtest.Start(t, mailer.ModeSTARTTLS)
	db := newDB(t)
	svc, err := mailer.New(mailer.Config{DB: db, Backoff: []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond,
		time.Second, time.Second, time.Second, time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	made := make(chan struct{}, 10)
	svc.Handle("gone", func(context.Context, string) (mailer.Message, error) { return mailer.Message{}, mailer.ErrGone })
	svc.Handle("vm", func(_ context.Context, ref string) (mailer.Message, error) {
		made <- struct{}{}
		return mailer.Message{To: "owner@example.test", Subject: ref, Body: "b"}, nil
	})
	if svc.Enqueue(mailer.Job{Kind: "vm", Ref: "x"}) {
		t.Fatal("enqueued without settings")
	}
	bad := settings(srv, mailer.ModeSTARTTLS)
	bad.Password = "not-the-password"
	if err := svc.SetSettings(bad); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if svc.Enqueue(mailer.Job{Kind: "nobody", Ref: "x"}) {
		t.Fatal("enqueued a kind nobody sends")
	}
	svc.Enqueue(mailer.Job{Kind: "gone", Ref: "1"})
	svc.Enqueue(mailer.Job{Kind: "vm", Ref: "retry"})
	<-made
	<-made // failed once at least: now fix the password
	if err := svc.SetSettings(settings(srv, mailer.ModeSTARTTLS)); err != nil {
		t.Fatal(err)
	}
	got := srv.Wait(t, 1, 60*time.Second)
	if got.Mail.Header.Get("Subject") != "retry" {
		t.Fatalf("subject %q", got.Mail.Header.Get("Subject"))
	}
	for deadline := time.Now().Add(30 * time.Second); svc.Stats().Sent != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", svc.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := svc.Stats(); st.Retried == 0 || st.Dropped != 1 || strings.Contains(st.LastError, srv.Pass) {
		t.Fatalf("stats %+v", st)
	}
	// The password is sealed: the raw store value does not contain it.
	if err := db.View(func(tx *store.Tx) error {
		var raw []byte
		if _, err := tx.Get(mailer.Bucket, "smtp", &raw); err != nil {
			return err
		}
		if bytes.Contains(raw, []byte(srv.Pass)) || bytes.Contains(raw, []byte(srv.Host)) {
			t.Error("settings stored in clear")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// An empty password keeps the stored one.
	keep := settings(srv, mailer.ModeSTARTTLS)
	keep.Password = ""
	if err := svc.SetSettings(keep); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := svc.Settings(); st.Password != srv.Pass {
		t.Fatal("password not kept")
	}
	// The test button: sent now, then refused for a minute.
	if err := svc.SendTest(context.Background(), "admin@example.test"); err != nil {
		t.Fatal(err)
	}
	if err := svc.SendTest(context.Background(), "admin@example.test"); !errors.Is(err, mailer.ErrTooSoon) {
		t.Fatalf("second test: %v", err)
	}
	if got := srv.Wait(t, 2, 30*time.Second); got.To[0] != "admin@example.test" {
		t.Fatalf("test message to %v", got.To)
	}
}

// TestQueueSurvivesRestart: jobs waiting for a server that refuses are in
// the store; a new service on the same store (the daemon after a restart
// or an update) sends each exactly once, keeps their order, and removes
// stored records that do not decode or name a kind nobody sends.
func TestQueueSurvivesRestart(t *testing.T) {
	srv := mailtest.Start(t, mailer.ModeSTARTTLS)
	db := newDB(t)
	cfg := mailer.Config{DB: db, Backoff: []time.Duration{time.Hour}}
	tried := make(chan string, 10)
	maker := func(_ context.Context, ref string) (mailer.Message, error) {
		tried <- ref
		return mailer.Message{To: "owner@example.test", Subject: "message " + ref, Body: "b"}, nil
	}
	first, err := mailer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	first.Handle("vm", maker)
	bad := settings(srv, mailer.ModeSTARTTLS)
	bad.Password = "not-the-password"
	if err := first.SetSettings(bad); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"201/a", "201/b", "202/c"} {
		if !first.Enqueue(mailer.Job{Kind: "vm", Ref: ref}) {
			t.Fatalf("job %s not queued", ref)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	for range 3 { // each tried once and refused: now waiting an hour
		<-tried
	}
	for deadline := time.Now().Add(30 * time.Second); first.Stats().Retried != 3; {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", first.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if srv.Count() != 0 {
		t.Fatal("a refused session delivered a message")
	}
	// What a crash or an older version could leave: a record that does not
	// decode and one of a kind the new daemon does not send.
	if err := db.Update(func(tx *store.Tx) error {
		if err := tx.Put(mailer.QueueBucket, "0-broken", "not a job"); err != nil {
			return err
		}
		return tx.Put(mailer.QueueBucket, "1-fax", map[string]any{"kind": "fax", "ref": "9"})
	}); err != nil {
		t.Fatal(err)
	}

	cfg.Backoff = []time.Duration{time.Hour}
	now := time.Now().Add(2 * time.Hour) // the retries are due
	cfg.Now = func() time.Time { return now }
	second, err := mailer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	second.Handle("vm", maker)
	if err := second.SetSettings(settings(srv, mailer.ModeSTARTTLS)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- second.Run(ctx) }()
	defer func() { cancel(); <-done }()
	srv.Wait(t, 3, 60*time.Second)
	for deadline := time.Now().Add(30 * time.Second); second.Stats().Sent != 3; {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", second.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var order []string
	for range 3 {
		order = append(order, <-tried)
	}
	if strings.Join(order, " ") != "201/a 201/b 202/c" {
		t.Errorf("sent in the order %v, want the order they came", order)
	}
	if srv.Count() != 3 {
		t.Errorf("%d messages delivered, want 3", srv.Count())
	}
	left := 0
	if err := db.View(func(tx *store.Tx) error {
		return tx.ForEach(mailer.QueueBucket, func(string, []byte) error { left++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d records left in the stored queue after sending", left)
	}
}

func TestValidation(t *testing.T) {
	for _, a := range []string{"", "a", "a@", "@b", "a b@c", "a@b\r\nBcc: x@y", "A <a@b>", "a@b,c@d", "a@b>", "a@.b", "a@b..c", "\"q\"@b", strings.Repeat("a", 65) + "@b"} {
		if mailer.CheckAddress(a) == nil {
			t.Errorf("address %q accepted", a)
		}
	}
	for _, a := range []string{"a@b", "first.last+tag@example.co.uk", "x_1@10.0.0.1"} {
		if err := mailer.CheckAddress(a); err != nil {
			t.Errorf("address %q: %v", a, err)
		}
	}
	for _, subj := range []string{"a\r\nBcc: x@y", "a\nb", "a\rb", "a\x00", "a\u2028b", strings.Repeat("x", 201)} {
		if _, err := mailer.Build("a@b", mailer.Message{To: "c@d", Subject: subj}, time.Now()); !errors.Is(err, mailer.ErrInvalid) {
			t.Errorf("subject %q: %v", subj, err)
		}
	}
	s := mailer.Settings{Host: "smtp.example.test", Port: 587, Mode: "starttls", From: "pbx@example.test"}
	for _, bad := range []func(*mailer.Settings){
		func(s *mailer.Settings) { s.Mode = "none" },
		func(s *mailer.Settings) { s.Port = 0 },
		func(s *mailer.Settings) { s.Host = "a b" },
		func(s *mailer.Settings) { s.Host = "x\r\nMAIL FROM" },
		func(s *mailer.Settings) { s.User = "u" },
		func(s *mailer.Settings) { s.From = "pbx" },
		func(s *mailer.Settings) { s.CAPEM = "not pem" },
	} {
		c := s
		bad(&c)
		if c.Validate() == nil {
			t.Errorf("settings %+v accepted", c)
		}
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
}
