package button

import (
	"context"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func ev(typ, code uint16, value int32) []byte {
	b := make([]byte, eventSize)
	binary.NativeEndian.PutUint16(b[16:], typ)
	binary.NativeEndian.PutUint16(b[18:], code)
	binary.NativeEndian.PutUint32(b[20:], uint32(value))
	return b
}

func TestParse(t *testing.T) {
	var stream []byte
	stream = append(stream, ev(EvKey, KeyPower, 1)...)      // press
	stream = append(stream, ev(0, 0, 0)...)                 // SYN_REPORT
	stream = append(stream, ev(EvKey, KeyPower, 0)...)      // release
	stream = append(stream, ev(EvKey, 30, 1)...)            // KEY_A
	stream = append(stream, ev(EvKey, KeyPower, 2)...)      // autorepeat
	stream = append(stream, ev(EvKey, KeyPower, 1)[:10]...) // torn
	evs := Parse(stream)
	if len(evs) != 5 {
		t.Fatalf("%d events", len(evs))
	}
	var presses int
	for _, e := range evs {
		if e.IsPowerPress() {
			presses++
		}
	}
	if presses != 1 {
		t.Fatalf("%d power presses, want 1", presses)
	}
}

func TestWatchNoDevices(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "input"), 0o755)
	// A regular file is not an input device: it has no power key.
	os.WriteFile(filepath.Join(dir, "input", "event0"), ev(EvKey, KeyPower, 1), 0o600)
	got, err := Watch(context.Background(), dir, func() { t.Error("pressed") }, slog.New(slog.DiscardHandler))
	if err != nil || len(got) != 0 {
		t.Fatalf("watching %v, %v", got, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(ev(EvKey, KeyPower, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		if n := len(Parse(b)); n != len(b)/eventSize {
			t.Fatalf("%d events from %d bytes", n, len(b))
		}
	})
}

func TestHeldFor(t *testing.T) {
	cases := []struct {
		name   string
		events [][]byte // written before the hold window ends
		close  bool     // device disappears
		want   bool
	}{
		{name: "held", events: [][]byte{ev(EvKey, KeyPower, 2), ev(0, 0, 0), ev(EvKey, 30, 0)}, want: true},
		{name: "released", events: [][]byte{ev(EvKey, KeyPower, 2), ev(EvKey, KeyPower, 0)}, want: false},
		{name: "torn release", events: [][]byte{ev(EvKey, KeyPower, 0)[:10], ev(EvKey, KeyPower, 0)[10:]}, want: false},
		{name: "device gone", close: true, want: false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for _, e := range c.events {
				w.Write(e)
			}
			if c.close {
				w.Close()
			} else {
				defer w.Close()
			}
			// The window is long when a release is expected (the answer
			// must come from the event, not the timer) and short otherwise.
			d := 30 * time.Second
			if c.want {
				d = 200 * time.Millisecond
			}
			if got := heldFor(context.Background(), r, d); got != c.want {
				t.Fatalf("held = %v, want %v", got, c.want)
			}
		})
	}
}

func TestHeldAtBootNoDevices(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "input"), 0o755)
	os.WriteFile(filepath.Join(dir, "input", "event0"), nil, 0o600)
	if HeldAtBoot(context.Background(), dir, time.Hour, func() { t.Error("prompted") }, slog.New(slog.DiscardHandler)) {
		t.Fatal("held without a device")
	}
}
