package sipedge

import (
	"fmt"
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

func testGuard(mod func(*GuardConfig)) (*Guard, *[]netfw.Ban) {
	var bans []netfw.Ban
	cfg := GuardConfig{RateWindow: time.Second, RateLimit: 100, FloodBan: time.Hour, FailWindow: time.Hour,
		MaxFailsPerSource: 3, MaxFailsPerUser: 4, MaxUsersPerSource: 5, AuthBan: time.Hour, MaxTracked: 64}
	if mod != nil {
		mod(&cfg)
	}
	exempt := netip.MustParsePrefix("198.51.100.0/24")
	g := newGuard(cfg, newBans(), exempt.Contains, func(b netfw.Ban) { bans = append(bans, b) })
	zones := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("fd00::/8")}
	g.inZone = func(a netip.Addr) bool { return inAny(zones, a) }
	trunk := netip.MustParsePrefix("203.0.113.0/28")
	g.trunk = trunk.Contains
	g.shielded = func(a netip.Addr) bool { return g.inZone(a) || g.trunk(a) }
	return g, &bans
}

// TestGuardThrottlesOneUser: a phone with a mistyped password (three
// failures for one extension from one address) is throttled for that
// extension only; nothing is banned, other extensions and sources are
// untouched, and lifting the throttle lets it try again.
func TestGuardThrottlesOneUser(t *testing.T) {
	g, bans := testGuard(nil)
	now := time.Unix(1000, 0)
	phone := netip.MustParseAddr("192.0.2.10")
	want := []GuardOutcome{GuardCounted, GuardCounted, GuardThrottled}
	for i, w := range want {
		if got := g.AuthFailed(now, phone, "101"); got != w {
			t.Fatalf("failure %d: %v, want %v", i+1, got, w)
		}
	}
	if len(*bans) != 0 || g.bans.Banned(now, phone) {
		t.Fatalf("a mistyped password banned the source: %v", *bans)
	}
	if !g.Throttled(now, phone, "101") || g.Throttled(now, phone, "102") || g.Throttled(now, netip.MustParseAddr("192.0.2.11"), "101") {
		t.Fatal("throttle not limited to (source, extension)")
	}
	if th := g.Throttles(now); len(th) != 1 || th[0].Source.String() != "192.0.2.10/32" || th[0].User != "101" {
		t.Fatalf("throttles: %+v", th)
	}
	if g.Lift(netip.MustParsePrefix("192.0.2.10/32"), "101") != 1 || g.Throttled(now, phone, "101") {
		t.Fatal("lift did not end the throttle")
	}
	if got := g.AuthFailed(now, phone, "101"); got != GuardCounted {
		t.Fatalf("after lift the count starts afresh: %v", got)
	}
	g.AuthFailed(now, phone, "101")
	if g.AuthFailed(now, phone, "101") != GuardThrottled || g.Throttled(now.Add(time.Hour+time.Second), phone, "101") {
		t.Fatal("throttle not renewed, or outlived AuthBan")
	}
}

// TestGuardScanBanned: a source failing for many extensions is scanning
// and is banned, as one host; an allowlisted one is throttled instead.
func TestGuardScanBanned(t *testing.T) {
	tests := []struct {
		name, src, want string
		mod             func(*GuardConfig)
	}{
		{"ipv4 host", "192.0.2.20", "192.0.2.20/32", nil},
		{"ipv6 host inside the zones", "fd00:1:2:3::20", "fd00:1:2:3::20/128", nil},
		{"ipv4-mapped", "::ffff:192.0.2.21", "192.0.2.21/32", nil},
		{"admin asked for /64", "fd00:1:2:3::20", "fd00:1:2:3::/64", func(c *GuardConfig) { c.BanBitsV6 = 64 }},
		{"admin asked for /24", "192.0.2.22", "192.0.2.0/24", func(c *GuardConfig) { c.BanBitsV4 = 24 }},
		{"allowlisted", "198.51.100.9", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, bans := testGuard(tt.mod)
			now := time.Unix(1000, 0)
			src := netip.MustParseAddr(tt.src)
			var last GuardOutcome
			for i := 0; i < 5; i++ {
				last = g.AuthFailed(now, src, fmt.Sprint(200+i))
			}
			if tt.want == "" {
				if last != GuardCounted || len(*bans) != 0 || g.Counters.Exempt.Load() == 0 {
					t.Fatalf("allowlisted: %v, bans %v", last, *bans)
				}
				for i := 0; i < 3; i++ {
					last = g.AuthFailed(now, src, "200")
				}
				if last != GuardThrottled || !g.Throttled(now, src, "200") {
					t.Fatalf("allowlisted source not throttled: %v", last)
				}
				return
			}
			if last != GuardBanned || len(*bans) != 1 || (*bans)[0].Prefix.String() != tt.want || (*bans)[0].Reason != "sip-scan" {
				t.Fatalf("outcome %v, bans %+v, want %s", last, *bans, tt.want)
			}
			if !g.bans.Banned(now, src) {
				t.Fatal("in-process ban missing")
			}
			// The neighbour on the same segment is not hit unless asked for.
			next := src.Unmap().Next()
			if got, wide := g.bans.Banned(now, next), tt.mod != nil; got != wide {
				t.Fatalf("neighbour %s banned=%v", next, got)
			}
		})
	}
}

// TestGuardUserUnderAttack: past MaxFailsPerUser failures of one
// extension, every further failing source is throttled for it at its
// first failure; none is banned.
func TestGuardUserUnderAttack(t *testing.T) {
	g, bans := testGuard(nil)
	now := time.Unix(1000, 0)
	for i, src := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"} {
		got := g.AuthFailed(now, netip.MustParseAddr(src), "101")
		if want := map[bool]GuardOutcome{false: GuardCounted, true: GuardThrottled}[i >= 3]; got != want {
			t.Fatalf("source %s: %v, want %v", src, got, want)
		}
	}
	if len(*bans) != 0 {
		t.Fatalf("bans %v", *bans)
	}
}

// TestGuardFloodKeys: floods inside the zones are counted and banned per
// host; outside them IPv6 per /64.
func TestGuardFloodKeys(t *testing.T) {
	for _, tt := range []struct{ src, want string }{
		{"fd00::1", "fd00::1/128"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"192.0.2.7", "192.0.2.7/32"},
	} {
		g, bans := testGuard(nil)
		now := time.Unix(1000, 0)
		for i := 0; i <= 100; i++ {
			g.Packet(now, netip.AddrPortFrom(netip.MustParseAddr(tt.src), 5060), false) // TCP: the handshake proved it
		}
		if len(*bans) != 1 || (*bans)[0].Prefix.String() != tt.want {
			t.Errorf("%s: bans %v, want %s", tt.src, *bans, tt.want)
		}
	}
}

// TestGuardUDPFloodShielded: a UDP flood carrying an address inside the
// zones or a trunk peer's is limited in process, never banned: the excess
// is dropped, the address keeps its budget, a flow that authenticated
// keeps its own, and one episode is reported. Outside the zones a UDP
// flood is banned as before; over TCP even inside the zones.
func TestGuardUDPFloodShielded(t *testing.T) {
	for _, tt := range []struct {
		name, src string
		udp       bool
		ban       string // "": no ban
	}{
		{"phone in zone", "192.0.2.7", true, ""},
		{"phone in zone v6", "fd00::7", true, ""},
		{"trunk peer", "203.0.113.5", true, ""},
		{"outside zones", "233.252.0.9", true, "233.252.0.9/32"},
		{"outside zones v6", "2001:db8:1:2::1", true, "2001:db8:1:2::/64"},
		{"in zone over TCP", "192.0.2.7", false, "192.0.2.7/32"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g, bans := testGuard(nil)
			var episodes []netip.Prefix
			g.onFlood = func(k netip.Prefix) { episodes = append(episodes, k) }
			now := time.Unix(1000, 0)
			a := netip.MustParseAddr(tt.src)
			phone, spoof := netip.AddrPortFrom(a, 5062), netip.AddrPortFrom(a, 40000)
			g.Prove(now, phone, time.Hour)
			dropped := 0
			for i := 0; i < 1000; i++ {
				if g.Packet(now, spoof, tt.udp) {
					dropped++
				}
			}
			if tt.ban != "" {
				if len(*bans) != 1 || (*bans)[0].Prefix.String() != tt.ban || (*bans)[0].Reason != "sip-flood" {
					t.Fatalf("bans %v, want %s", *bans, tt.ban)
				}
				return
			}
			if len(*bans) != 0 || g.bans.Banned(now, a) {
				t.Fatalf("spoofable UDP flood banned %v", *bans)
			}
			if dropped != 900 || g.Counters.FloodDropped.Load() != 900 {
				t.Fatalf("dropped %d (counter %d), want the 900 over the limit", dropped, g.Counters.FloodDropped.Load())
			}
			if len(episodes) != 1 || g.Counters.FloodLimited.Load() != 1 {
				t.Fatalf("episodes %v, want one", episodes)
			}
			// The proven flow keeps its own budget within the flood.
			for i := 0; i < 100; i++ {
				if g.Packet(now, phone, true) {
					t.Fatalf("proven flow dropped at packet %d", i)
				}
			}
			if !g.Packet(now, phone, true) {
				t.Fatal("proven flow over its own rate passed")
			}
			// The address's window was kept at the limit: one window later
			// packets pass again.
			if g.Packet(now.Add(2*time.Second), spoof, true) {
				t.Fatal("address still limited a window after the flood")
			}
		})
	}
}

// TestBansMixedLengths: a lookup finds hosts inside bans of any length,
// and lifting removes what overlaps.
func TestBansMixedLengths(t *testing.T) {
	b := newBans()
	now := time.Unix(1000, 0)
	b.addReason(netip.MustParsePrefix("fd00::1/128"), now, now.Add(time.Hour), "x")
	b.addReason(netip.MustParsePrefix("2001:db8::/64"), now, now.Add(time.Hour), "x")
	b.addReason(netip.MustParsePrefix("192.0.2.0/24"), now, now.Add(time.Minute), "x")
	for _, tt := range []struct {
		a    string
		want bool
	}{{"fd00::1", true}, {"fd00::2", false}, {"2001:db8::77", true}, {"192.0.2.200", true}, {"::ffff:192.0.2.9", true}, {"192.0.3.1", false}} {
		if got := b.Banned(now, netip.MustParseAddr(tt.a)); got != tt.want {
			t.Errorf("%s: banned=%v", tt.a, got)
		}
	}
	if b.Banned(now.Add(2*time.Minute), netip.MustParseAddr("192.0.2.200")) {
		t.Error("expired ban still holds")
	}
	if n := b.lift(netip.MustParsePrefix("2001:db8::5/128")); n != 1 || b.Banned(now, netip.MustParseAddr("2001:db8::77")) {
		t.Errorf("lift: %d", n)
	}
}
