package voicemail

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// addTestMessage stores a 1 s message from 201 in ext's mailbox.
func addTestMessage(t *testing.T, s *Service, clk *testClock, ext string) string {
	t.Helper()
	id, _ := newID(clk.now())
	w, err := s.cfg.Audio.Create("test", 8000)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(tone(8000, 8000, 440)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.add(Message{ID: id, Ext: ext, Caller: "201", Time: clk.now(), Duration: time.Second, New: true, Rate: 8000, File: w.ID()}); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Minute)
	return id
}

// TestRetentionExpiresMessages: the recording store's retention deletes
// the audio of messages (and a greeting) under their records. Reading
// such a message answers ErrExpired (a kind of ErrNoMessage: the admin API
// says 404 with the reason) and removes its record; Prune removes the
// others and the greeting's reference; MWI follows each change; a
// message recorded after the sweep stays.
func TestRetentionExpiresMessages(t *testing.T) {
	mwi := &mwiLog{}
	s, clk := newTestService(t, mwi)
	rs := s.cfg.Audio.(Recordings).Store
	m1 := addTestMessage(t, s, clk, "202")
	m2 := addTestMessage(t, s, clk, "202")
	if err := s.MarkOld("202", m2); err != nil {
		t.Fatal(err)
	}
	w, err := s.cfg.Audio.Create("greeting", 8000)
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Write(tone(8000, 8000, 550))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.update("202", func(b *Mailbox) error { b.Greetings = map[string]string{"busy": w.ID()}; return nil }); err != nil {
		t.Fatal(err)
	}
	if n, err := rs.Sweep(time.Now().Add(rs.Retention(Category) + 24*time.Hour)); err != nil || n != 3 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	m3 := addTestMessage(t, s, clk, "202") // after the sweep: kept

	_, _, err = s.Audio("202", m1)
	if !errors.Is(err, ErrExpired) || !errors.Is(err, ErrNoMessage) {
		t.Fatalf("audio of an expired message: %v", err)
	}
	if _, err := s.Message("202", m1); !errors.Is(err, ErrNoMessage) {
		t.Fatalf("expired message still listed: %v", err)
	}
	n, err := s.Prune()
	if err != nil || n != 1 {
		t.Fatalf("prune: %d %v, want the one other expired message", n, err)
	}
	ms, err := s.Messages("202")
	if err != nil || len(ms) != 1 || ms[0].ID != m3 {
		t.Fatalf("messages after retention %+v %v, want only %s", ms, err, m3)
	}
	if b, _ := s.Mailbox("202"); len(b.Greetings) != 0 {
		t.Fatalf("greeting whose audio is gone still set: %v", b.Greetings)
	}
	if _, _, err := s.Audio("202", m3); err != nil {
		t.Fatalf("message recorded after the sweep: %v", err)
	}
	if n, err := s.Prune(); err != nil || n != 0 {
		t.Fatalf("second prune: %d %v", n, err)
	}
	mwi.mu.Lock()
	defer mwi.mu.Unlock()
	// add, add, heard, add (after the sweep), m1 expired, m2 expired.
	want := []string{"202:1/0", "202:2/0", "202:1/1", "202:2/1", "202:1/1", "202:1/0"}
	if !slices.Equal(mwi.got, want) {
		t.Fatalf("MWI %v, want %v", mwi.got, want)
	}
}
