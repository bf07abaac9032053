package watchdog

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

type counter struct{ n atomic.Int64 }

func (c *counter) Ping() error { c.n.Add(1); return nil }

// TestKeepOnlyWhileHealthy: the real device cannot be opened on a build host
// (opening arms it); QEMU boots cover it. Here the gating: every ping
// follows a healthy verdict, and no unhealthy verdict is followed by one.
func TestKeepOnlyWhileHealthy(t *testing.T) {
	c := &counter{}
	var calls atomic.Int64
	healthy := func() bool {
		n := calls.Add(1)
		return n >= 3 && n <= 7 // healthy for calls 3..7 only
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Keep(ctx, c, time.Millisecond, healthy, slog.New(slog.DiscardHandler))
		close(done)
	}()
	for deadline := time.Now().Add(10 * time.Second); calls.Load() < 12; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Keep stopped asking for health")
		}
	}
	cancel()
	<-done
	if n := c.n.Load(); n != 5 {
		t.Fatalf("pinged %d times, want 5 (one per healthy verdict)", n)
	}
}

func TestOpenErrors(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "watchdog0"))
	if err == nil || !strings.Contains(err.Error(), "watchdog0") {
		t.Fatalf("err = %v", err)
	}
	// A regular file is not a watchdog: timeouts are refused.
	p := filepath.Join(t.TempDir(), "file")
	os.WriteFile(p, nil, 0o600)
	d, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetTimeout(30 * time.Second); err == nil {
		t.Fatal("SetTimeout on a regular file succeeded")
	}
	if _, err := d.SetTimeout(0); err == nil {
		t.Fatal("zero timeout accepted")
	}
	if err := d.Ping(); err == nil {
		t.Fatal("Ping on a regular file succeeded")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "V" {
		t.Fatalf("magic close wrote %q", b)
	}
}
