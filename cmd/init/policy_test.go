package main

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/netfw"
)

// ruleset stands in for the kernel ruleset (netfw's own tests apply real
// ones in network namespaces): it keeps the last policy applied.
type ruleset struct {
	mu      sync.Mutex
	running netfw.Policy
}

func (r *ruleset) Apply(p netfw.Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	r.running = p
	r.mu.Unlock()
	return nil
}

func (r *ruleset) zones() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.running.Zones) }

// syncBuffer is a console several goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func testBox(t *testing.T, opts ...netfw.CommitOption) (*box, *ruleset, *syncBuffer) {
	con := &syncBuffer{}
	b := &box{start: time.Now(), console: con, log: slog.New(slog.DiscardHandler)}
	rs := &ruleset{}
	if err := rs.Apply(netfw.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	b.policy = netfw.NewCommitter(rs, netfw.DefaultPolicy(), append([]netfw.CommitOption{
		netfw.WithCommitLogger(b.log), netfw.WithRevertHook(b.policyReverted)}, opts...)...)
	t.Cleanup(b.policy.Close)
	return b, rs, con
}

const twoZones = `{"version":1,"access":{"zones":[{"name":"lan","prefixes":["10.0.0.0/8"]},{"name":"admins","prefixes":["192.168.7.0/24"]}],"rules":[{"service":"https-admin","zones":["admins"]}],"allowlist":[],"allow_admin_from_any":false}}`

func TestRestorePolicy(t *testing.T) {
	for _, tc := range []struct {
		name, file string // "" file: none on disk
		wantZones  int
		warning    bool
	}{
		{"no file", "", 1, false},
		{"valid", twoZones, 2, false},
		{"corrupt", twoZones[:40], 1, true},
		{"locks the admin out", `{"version":1,"access":{"zones":[],"rules":[]}}`, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, rs, con := testBox(t)
			path := filepath.Join(t.TempDir(), "policy.json")
			if tc.file != "" {
				os.WriteFile(path, []byte(tc.file), 0o600)
			}
			b.restorePolicy(path)
			if got := rs.zones(); got != tc.wantZones {
				t.Errorf("%d zones running, want %d", got, tc.wantZones)
			}
			if got := strings.Contains(con.String(), "edgepbx: WARNING: persisted firewall policy not restored, default policy kept"); got != tc.warning {
				t.Errorf("warning %v, want %v: %q", got, tc.warning, con.String())
			}
		})
	}
}

func TestPolicyRevertOnConsole(t *testing.T) {
	b, rs, con := testBox(t, netfw.WithRevertAfter(50*time.Millisecond))
	b.restorePolicy(filepath.Join(t.TempDir(), "policy.json"))
	a := netfw.DefaultPolicy().Access()
	a.Zones = append(a.Zones, netfw.Zone{Name: "admins", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}})
	p, err := b.policy.Set(a, []netip.Addr{netip.MustParseAddr("10.0.0.5")})
	if err != nil {
		t.Fatal(err)
	}
	want := "edgepbx: firewall policy change " + p.ID + " not confirmed: reverted"
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(con.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("console %q lacks %q", con.String(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rs.zones() != 1 {
		t.Fatal("not reverted")
	}
}
