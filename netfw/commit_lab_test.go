package netfw

import (
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

// TestCommitterInNetNS drives the committer over the real firewall: a
// change moves HTTPS admin from the phones to the internet host, packets
// prove it, and without a confirmation the old reachability comes back.
func TestCommitterInNetNS(t *testing.T) {
	l := newLab(t)
	fw := l.firewall()
	base := labPolicy()
	if err := fw.Apply(base); err != nil {
		t.Fatal(err)
	}
	// The revert deadline is driven by a manual clock: with a wall-clock
	// deadline the probes of the pending state (one open, two silent of
	// dropWait each) outlast it, and a loaded machine reverts before the
	// first probe.
	tm := newManualTimer()
	const revertAfter = time.Minute
	c := NewCommitter(fw, base, WithTimer(tm), WithRevertAfter(revertAfter), WithCommitLogger(slog.New(slog.DiscardHandler)))
	path := filepath.Join(t.TempDir(), "policy.json")
	if err := c.Restore(path); err != nil {
		t.Fatal(err)
	}
	https := func(host string, src, dst netip.Addr, want string) {
		t.Helper()
		wait := replyWait
		if want != "open" {
			wait = dropWait
		}
		if got := l.tcpProbe(host, src, dst, 443, wait); got != want {
			t.Errorf("https %s→%s: %s, want %s", src, dst, got, want)
		}
	}
	https(hostPhones, phone4, boxPhone4, "open")
	https(hostInternet, inet4, boxInet4, "silent")

	moved := base.Access()
	moved.Zones = append(moved.Zones, Zone{Name: "ops", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.2/32")}})
	for i := range moved.Rules {
		if moved.Rules[i].Service == SvcHTTPS {
			moved.Rules[i].Zones = []string{"ops"}
		}
	}
	// Made from a phone, the change would cut that admin off: refused,
	// and nothing changes.
	if _, err := c.Set(moved, []netip.Addr{phone4}); !errors.Is(err, ErrAdminLockout) {
		t.Fatalf("lockout not refused: %v", err)
	}
	https(hostPhones, phone4, boxPhone4, "open")

	// Made from the ops host it is applied, pending.
	if _, err := c.Set(moved, []netip.Addr{inet4}); err != nil {
		t.Fatal(err)
	}
	https(hostInternet, inet4, boxInet4, "open")
	https(hostInternet, inet4b, boxInet4, "silent") // only the ops /32
	https(hostPhones, phone4, boxPhone4, "silent")

	// Nobody confirms: at the deadline the revert timer brings the old
	// policy back (the manual clock runs it synchronously).
	tm.Advance(revertAfter - time.Millisecond)
	if c.State().Pending == nil {
		t.Fatal("pending change reverted before its deadline")
	}
	https(hostInternet, inet4, boxInet4, "open")
	tm.Advance(time.Millisecond)
	if c.State().Pending != nil {
		t.Fatal("pending change not reverted at its deadline")
	}
	https(hostPhones, phone4, boxPhone4, "open")
	https(hostInternet, inet4, boxInet4, "silent")

	// Confirmed, it stays and is persisted.
	c2 := NewCommitter(fw, base, WithRevertAfter(time.Hour), WithCommitLogger(slog.New(slog.DiscardHandler)))
	if err := c2.Restore(path); err != nil {
		t.Fatal(err)
	}
	p, err := c2.Set(moved, []netip.Addr{inet4})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Confirm(p.ID); err != nil {
		t.Fatal(err)
	}
	// A reboot: default ruleset first, then the persisted policy.
	if err := fw.Apply(base); err != nil {
		t.Fatal(err)
	}
	https(hostInternet, inet4, boxInet4, "silent")
	if err := NewCommitter(fw, base, WithCommitLogger(slog.New(slog.DiscardHandler))).Restore(path); err != nil {
		t.Fatal(err)
	}
	https(hostInternet, inet4, boxInet4, "open")
	https(hostPhones, phone4, boxPhone4, "silent")
	onlyOurTable(t, l)
}
