package certs

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *stepClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestKeyLogOffByDefaultAndExpires(t *testing.T) {
	clk := &stepClock{t: time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)}
	k := NewKeyLog(clk.now, slog.New(slog.DiscardHandler))
	k.Write([]byte("CLIENT_RANDOM aa bb\n"))
	if _, ok := k.Contents(); ok {
		t.Fatal("key log on by default")
	}
	for _, d := range []time.Duration{0, -time.Minute, MaxKeyLogDuration + time.Second} {
		if _, err := k.Enable(d); err == nil {
			t.Errorf("Enable(%s) accepted", d)
		}
	}
	until, err := k.Enable(time.Hour)
	if err != nil || !until.Equal(clk.now().Add(time.Hour)) {
		t.Fatalf("Enable = %v, %v", until, err)
	}
	k.Write([]byte("CLIENT_RANDOM 01 02\n"))
	got, ok := k.Contents()
	if !ok || string(got) != "CLIENT_RANDOM 01 02\n" {
		t.Fatalf("Contents = %q, %v", got, ok)
	}
	clk.add(time.Hour - time.Second)
	if on, _, size := k.Status(); !on || size == 0 {
		t.Fatal("off before its deadline")
	}
	clk.add(time.Second)
	if on, _, size := k.Status(); on || size != 0 {
		t.Fatalf("still on at its deadline (size %d)", size)
	}
	k.Write([]byte("CLIENT_RANDOM 03 04\n"))
	if _, ok := k.Contents(); ok {
		t.Fatal("expired key log still hands out secrets")
	}
	// Re-enabled, it starts empty; Disable erases.
	k.Enable(time.Minute)
	if got, _ := k.Contents(); len(got) != 0 {
		t.Fatalf("old secrets survived expiry: %q", got)
	}
	k.Write([]byte("x\n"))
	k.Disable()
	if on, _, size := k.Status(); on || size != 0 {
		t.Fatal("Disable left it on")
	}
}

func TestKeyLogBounded(t *testing.T) {
	k := NewKeyLog(nil, slog.New(slog.DiscardHandler))
	k.Enable(time.Minute)
	line := bytes.Repeat([]byte("a"), 1000)
	for range 2 * MaxKeyLogBytes / len(line) {
		if n, err := k.Write(line); n != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if _, _, size := k.Status(); size > MaxKeyLogBytes {
		t.Fatalf("size %d above %d", size, MaxKeyLogBytes)
	}
}

// TestKeyLogRecordsHandshakes uses the key log as a real server's
// KeyLogWriter: a TLS 1.3 handshake leaves its traffic secrets.
func TestKeyLogRecordsHandshakes(t *testing.T) {
	now := time.Now()
	m, _, _ := newManager(t, &now)
	k := NewKeyLog(nil, slog.New(slog.DiscardHandler))
	cfg, err := m.TLSConfig(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.KeyLogWriter = k
	handshake := func() {
		t.Helper()
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		srv := tls.Server(a, cfg)
		go srv.Handshake()
		c := tls.Client(b, &tls.Config{InsecureSkipVerify: true})
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
	}
	handshake()
	if _, _, size := k.Status(); size != 0 {
		t.Fatal("recorded while off")
	}
	k.Enable(time.Minute)
	handshake()
	got, ok := k.Contents()
	if !ok || !strings.Contains(string(got), "CLIENT_TRAFFIC_SECRET_0 ") {
		t.Fatalf("key log after a handshake: %q", got)
	}
}
