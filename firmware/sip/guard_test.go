package sip

import (
	"net/netip"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/netfw"
)

func TestSourceKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7/32"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
	}
	for _, tt := range tests {
		if got := sourceKey(netip.MustParseAddr(tt.in)).String(); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestWindowSlides(t *testing.T) {
	w := newWindows[string](10*time.Second, 4)
	t0 := time.Unix(1000, 0)
	for i := 0; i < 10; i++ {
		w.add(t0, "a", 1)
	}
	// Half a window later, half of the previous window still counts.
	if got := w.add(t0.Add(15*time.Second), "a", 0); got < 4.9 || got > 5.1 {
		t.Fatalf("after 1.5 windows: %v, want ~5", got)
	}
	if got := w.add(t0.Add(40*time.Second), "a", 1); got != 1 {
		t.Fatalf("after 4 windows: %v, want 1", got)
	}
	// A full table of live keys does not grow.
	for _, k := range []string{"b", "c", "d"} {
		w.add(t0.Add(40*time.Second), k, 1)
	}
	if got := w.add(t0.Add(40*time.Second), "e", 1); got != 0 || len(w.m) != 4 {
		t.Fatalf("table grew past its bound: %v, %d keys", got, len(w.m))
	}
}

func TestGuardPerUserAndExempt(t *testing.T) {
	var bans []netfw.Ban
	exempt := netip.MustParsePrefix("198.51.100.0/24")
	g := newGuard(GuardConfig{RateWindow: time.Second, RateLimit: 100, FloodBan: time.Hour, FailWindow: time.Hour,
		MaxFailsPerSource: 3, MaxFailsPerUser: 4, AuthBan: time.Hour, MaxTracked: 64},
		newBans(), exempt.Contains, func(b netfw.Ban) { bans = append(bans, b) })
	now := time.Unix(1000, 0)
	// A distributed guess: four sources, one failure each, on one extension.
	for i, src := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"} {
		banned := g.AuthFailed(now, netip.MustParseAddr(src), "101")
		if want := i >= 3; banned != want {
			t.Fatalf("source %s: banned=%v, want %v", src, banned, want)
		}
	}
	// Allowlisted sources are never banned, whatever they do.
	for i := 0; i < 10; i++ {
		if g.AuthFailed(now, netip.MustParseAddr("198.51.100.9"), "102") {
			t.Fatal("allowlisted source banned")
		}
	}
	if len(bans) != 2 || g.Counters.Exempt.Load() == 0 {
		t.Fatalf("bans %v, exempt %d", bans, g.Counters.Exempt.Load())
	}
}
