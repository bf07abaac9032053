package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/edgepbx/edgepbx/netfw"
)

// policyFirewall is the memFirewall that also takes whole policies; the
// committer in front of it is the real one PID 1 runs.
type policyFirewall struct {
	*memFirewall
	pmu     sync.Mutex
	applies int
	running netfw.Policy
}

func (p *policyFirewall) Apply(pol netfw.Policy) error {
	if err := pol.Validate(); err != nil {
		return err
	}
	p.pmu.Lock()
	defer p.pmu.Unlock()
	p.applies++
	p.running = pol
	return nil
}

func (p *policyFirewall) count() int { p.pmu.Lock(); defer p.pmu.Unlock(); return p.applies }

func startPolicy(t *testing.T, mod func(*Config)) (*fixture, *policyFirewall, *netfw.Committer) {
	t.Helper()
	pf := &policyFirewall{memFirewall: newMemFirewall()}
	cm := netfw.NewCommitter(pf, netfw.DefaultPolicy(), netfw.WithCommitLogger(slog.New(slog.DiscardHandler)))
	t.Cleanup(cm.Close)
	f := start(t, func(c *Config) {
		c.Policy = cm
		if mod != nil {
			mod(c)
		}
	})
	return f, pf, cm
}

var adminAddr = netip.MustParseAddr("192.168.7.9")

func adminsOnly() netfw.Access {
	return netfw.Access{
		Zones: []netfw.Zone{
			{Name: "lan", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
			{Name: "admins", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}},
		},
		Rules: []netfw.Rule{{Service: netfw.SvcHTTPS, Zones: []string{"admins"}}, {Service: netfw.SvcSIPUDP, Zones: []string{"lan"}}},
	}
}

func TestPolicyRoundTrip(t *testing.T) {
	f, pf, _ := startPolicy(t, nil)
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	st, err := c.GetPolicy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != nil || len(st.Confirmed.Zones) != 1 || st.Confirmed.Zones[0].Name != "lan" || len(st.Services) == 0 {
		t.Fatalf("initial state %+v", st)
	}
	p, err := c.SetPolicy(ctx, adminsOnly(), adminAddr)
	if err != nil {
		t.Fatal(err)
	}
	if !netfw.ValidPendingID(p.ID) || pf.count() != 1 {
		t.Fatalf("pending %+v, applies %d", p, pf.count())
	}
	st, err = c.GetPolicy(ctx)
	if err != nil || st.Pending == nil || st.Pending.ID != p.ID || len(st.Pending.Access.Zones) != 2 {
		t.Fatalf("state %+v, %v", st, err)
	}
	other := strings.Repeat("0", 32)
	if err := c.ConfirmPolicy(ctx, other); !errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("wrong id: %v", err)
	}
	if err := c.ConfirmPolicy(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	st, err = c.GetPolicy(ctx)
	if err != nil || st.Pending != nil || len(st.Confirmed.Zones) != 2 {
		t.Fatalf("after confirm %+v, %v", st, err)
	}
}

func TestPolicyRefused(t *testing.T) {
	lockout := adminsOnly()
	lockout.Rules[0].Zones = []string{"lan"}
	anyAdmin := adminsOnly()
	anyAdmin.Rules[0].Zones = []string{netfw.ZoneAny}
	badPort := adminsOnly()
	badPort.Rules = append(badPort.Rules, netfw.Rule{Service: "telnet", Zones: []string{"lan"}})
	overlap := adminsOnly()
	overlap.Zones[0].Prefixes = append(overlap.Zones[0].Prefixes, netip.MustParsePrefix("10.1.0.0/16"))
	empty := adminsOnly()
	empty.Zones[0].Prefixes = nil
	tooMany := adminsOnly()
	for i := range 70 {
		tooMany.Zones = append(tooMany.Zones, netfw.Zone{Name: fmt.Sprintf("z%d", i)})
	}
	for _, tc := range []struct {
		name string
		a    netfw.Access
		src  netip.Addr
		want string
	}{
		{"lockout", lockout, adminAddr, "lock the admin out"},
		{"admin to any", anyAdmin, adminAddr, "without override"},
		{"unknown service", badPort, adminAddr, "unknown service"},
		{"overlap", overlap, adminAddr, "overlap"},
		{"empty zone", empty, adminAddr, "empty"},
		{"too many zones", tooMany, adminAddr, "access.zones: more than"},
		{"no admin source", adminsOnly(), netip.Addr{}, "admin_source"},
		{"multicast admin source", adminsOnly(), netip.MustParseAddr("224.0.0.1"), "admin_source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, pf, cm := startPolicy(t, nil)
			c, err := Dial(f.path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.SetPolicy(context.Background(), tc.a, tc.src)
			if !errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one containing %q", err, tc.want)
			}
			if pf.count() != 0 || cm.State().Pending != nil {
				t.Fatal("a refused policy changed something")
			}
		})
	}
}

func TestPolicyBounds(t *testing.T) {
	f, pf, _ := startPolicy(t, nil)
	// Framing: SetPolicy may use 32 KiB, other requests not.
	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"set policy over bound", frame(1, byte(TypeSetPolicy), MaxPolicyPayload+1, ""), "larger than"},
		{"health at the policy bound", frame(1, byte(TypeHealth), MaxPolicyPayload, ""), "larger than"},
		{"get policy over the request bound", frame(1, byte(TypeGetPolicy), MaxPayload+1, ""), "larger than"},
		{"set policy at its bound", frame(1, byte(TypeSetPolicy), auto, `{"access":{}}`+strings.Repeat(" ", MaxPolicyPayload-13)), "admin_source"},
		{"set policy unknown field", frame(1, byte(TypeSetPolicy), auto, `{"access":{},"services":[]}`), "unknown field"},
		{"confirm bad id", frame(1, byte(TypeConfirmPolicy), auto, `{"id":"../../etc"}`), "32 hex"},
		{"confirm nothing pending", frame(1, byte(TypeConfirmPolicy), auto, `{"id":"`+strings.Repeat("a", 32)+`"}`), "no policy change"},
		{"get policy with payload", frame(1, byte(TypeGetPolicy), auto, `{"x":1}`), "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawConn(t, f.path)
			if _, err := c.Write(tc.in); err != nil {
				t.Fatal(err)
			}
			r := readReply(t, c)
			if r.OK || !strings.Contains(r.Error, tc.wantErr) {
				t.Fatalf("reply %+v, want error containing %q", r, tc.wantErr)
			}
		})
	}
	if pf.count() != 0 {
		t.Fatal("bad frames applied a policy")
	}

	// A policy of ~1,000 CIDRs fits the SetPolicy bound, and the GetPolicy
	// reply (confirmed + pending) is far larger than 8192 bytes.
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := adminsOnly()
	for i := range 1000 {
		big.Zones[0].Prefixes = append(big.Zones[0].Prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16 + byte(i/256), byte(i % 256), 0}), 24))
	}
	if _, err := c.SetPolicy(context.Background(), big, adminAddr); err != nil {
		t.Fatal(err)
	}
	st, err := c.GetPolicy(context.Background())
	if err != nil || st.Pending == nil || len(st.Pending.Access.Zones[0].Prefixes) != 1001 {
		t.Fatalf("big policy: %v", err)
	}
	// Too big for the frame: the client refuses before sending.
	for i := range 2000 {
		big.Zones[0].Prefixes = append(big.Zones[0].Prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64 + byte(i/256), byte(i % 256), 0}), 24))
	}
	if _, err := c.SetPolicy(context.Background(), big, adminAddr); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize policy: %v", err)
	}
}

func TestPolicyRateLimit(t *testing.T) {
	f, pf, _ := startPolicy(t, func(c *Config) { c.PolicyRate, c.PolicyBurst = 0.001, 2 })
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 4 {
		_, err := c.SetPolicy(context.Background(), adminsOnly(), adminAddr)
		if i < 2 && err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if i >= 2 && (err == nil || !strings.Contains(err.Error(), "rate limited")) {
			t.Fatalf("request %d not limited: %v", i, err)
		}
	}
	if pf.count() != 2 {
		t.Fatalf("%d applies, want 2", pf.count())
	}
	// Reading is not limited by the policy bucket.
	if _, err := c.GetPolicy(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestPolicyNotAvailable(t *testing.T) {
	f := start(t, nil)
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetPolicy(context.Background()); !errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), "not available") {
		t.Fatalf("err = %v", err)
	}
}

// FuzzSetPolicy feeds arbitrary SetPolicy and ConfirmPolicy payloads to the
// dispatcher in front of the real committer: never a panic, and a refused
// request applies nothing and leaves nothing pending.
func FuzzSetPolicy(f *testing.F) {
	f.Add(false, []byte(`{"access":{"zones":[{"name":"admins","prefixes":["192.168.7.0/24"]}],"rules":[{"service":"https-admin","zones":["admins"]}]},"admin_source":"192.168.7.9"}`))
	f.Add(false, []byte(`{"access":{"zones":[],"rules":[{"service":"https-admin","zones":["any"]}],"allow_admin_from_any":true},"admin_source":"2001:db8::1"}`))
	f.Add(false, []byte(`{"access":{"zones":[{"name":"a","prefixes":["::ffff:10.0.0.0/104"]}]},"admin_source":"10.0.0.1"}`))
	f.Add(true, []byte(`{"id":"00000000000000000000000000000000"}`))
	f.Fuzz(func(t *testing.T, confirm bool, p []byte) {
		pf := &policyFirewall{memFirewall: newMemFirewall()}
		cm := netfw.NewCommitter(pf, netfw.DefaultPolicy(), netfw.WithCommitLogger(slog.New(slog.DiscardHandler)))
		defer cm.Close()
		srv := &Server{cfg: Config{Policy: cm, System: &sys{}}}
		typ := TypeSetPolicy
		if confirm {
			typ = TypeConfirmPolicy
		}
		r := srv.dispatch(typ, p)
		if !r.OK && (pf.count() != 0 || cm.State().Pending != nil) {
			t.Fatalf("refused request changed state: %+v", r)
		}
		if r.OK && typ == TypeSetPolicy {
			// Whatever was accepted validates, and keeps admin access.
			if err := pf.running.Validate(); err != nil {
				t.Fatalf("accepted policy invalid: %v", err)
			}
		}
	})
}
