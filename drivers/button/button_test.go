package button

import (
	"context"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
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
