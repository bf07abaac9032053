package netfw

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"
)

// manualTimer is a clock that moves only when the test says so; due
// functions run synchronously inside Advance.
type manualTimer struct {
	mu  sync.Mutex
	now time.Time
	fns map[int]manualFn
	seq int
}

type manualFn struct {
	at time.Time
	f  func()
}

func newManualTimer() *manualTimer {
	return &manualTimer{now: time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC), fns: map[int]manualFn{}}
}

func (m *manualTimer) Now() time.Time { m.mu.Lock(); defer m.mu.Unlock(); return m.now }

func (m *manualTimer) AfterFunc(d time.Duration, f func()) func() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	id := m.seq
	m.fns[id] = manualFn{at: m.now.Add(d), f: f}
	return func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		_, ok := m.fns[id]
		delete(m.fns, id)
		return ok
	}
}

func (m *manualTimer) Advance(d time.Duration) {
	m.mu.Lock()
	m.now = m.now.Add(d)
	var due []int
	for id, fn := range m.fns {
		if !fn.at.After(m.now) {
			due = append(due, id)
		}
	}
	sort.Ints(due)
	var run []func()
	for _, id := range due {
		run = append(run, m.fns[id].f)
		delete(m.fns, id)
	}
	m.mu.Unlock()
	for _, f := range run {
		f()
	}
}

// recordingApplier keeps what was applied last; fail makes the next Apply
// fail (like a rejected netlink batch, which changes nothing).
type recordingApplier struct {
	mu      sync.Mutex
	running Policy
	applied int
	fail    error
}

func (r *recordingApplier) Apply(p Policy) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		err := r.fail
		r.fail = nil
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	r.running = p
	r.applied++
	return nil
}

func (r *recordingApplier) zones() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, z := range r.running.Zones {
		out = append(out, z.Name)
	}
	return out
}

// adminsAccess opens HTTPS only to an "admins" zone, SIP to "lan".
func adminsAccess() Access {
	return Access{
		Zones: []Zone{
			{Name: "lan", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
			{Name: "admins", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}},
		},
		Rules: []Rule{
			{Service: SvcHTTPS, Zones: []string{"admins"}},
			{Service: SvcSIPUDP, Zones: []string{"lan"}},
		},
	}
}

func newTestCommitter(t *testing.T) (*Committer, *recordingApplier, *manualTimer, string) {
	t.Helper()
	fw := &recordingApplier{}
	if err := fw.Apply(DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	tm := newManualTimer()
	c := NewCommitter(fw, DefaultPolicy(), WithTimer(tm), WithRevertAfter(120*time.Second), WithCommitLogger(slog.New(slog.DiscardHandler)))
	path := filepath.Join(t.TempDir(), "netfw", "policy.json")
	if err := c.Restore(path); err != nil {
		t.Fatalf("restore with no file: %v", err)
	}
	return c, fw, tm, path
}

func TestCommitterRevertsUnconfirmed(t *testing.T) {
	c, fw, tm, path := newTestCommitter(t)
	admin := netip.MustParseAddr("192.168.7.9")
	p, err := c.Set(adminsAccess(), []netip.Addr{admin})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fw.zones(), []string{"lan", "admins"}) {
		t.Fatalf("pending policy not running: %v", fw.zones())
	}
	st := c.State()
	if st.Pending == nil || st.Pending.ID != p.ID || !st.Pending.Deadline.Equal(tm.Now().Add(120*time.Second)) {
		t.Fatalf("state %+v", st)
	}
	tm.Advance(119 * time.Second)
	if c.State().Pending == nil {
		t.Fatal("reverted before the deadline")
	}
	tm.Advance(time.Second)
	if c.State().Pending != nil {
		t.Fatal("still pending after the deadline")
	}
	if !reflect.DeepEqual(fw.zones(), []string{"lan"}) {
		t.Fatalf("not reverted to the default: %v", fw.zones())
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unconfirmed policy persisted: %v", err)
	}
	// A late confirmation finds nothing to confirm.
	if err := c.Confirm(p.ID); !errors.Is(err, ErrNoPending) {
		t.Fatalf("late confirm: %v", err)
	}
}

func TestCommitterConfirmPersistsAndRestores(t *testing.T) {
	c, fw, tm, path := newTestCommitter(t)
	p, err := c.Set(adminsAccess(), []netip.Addr{netip.MustParseAddr("192.168.7.9")})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Confirm("00000000000000000000000000000000"); !errors.Is(err, ErrPendingID) {
		t.Fatalf("wrong id: %v", err)
	}
	if err := c.Confirm(p.ID); err != nil {
		t.Fatal(err)
	}
	tm.Advance(time.Hour) // the revert timer is gone
	if !reflect.DeepEqual(fw.zones(), []string{"lan", "admins"}) {
		t.Fatalf("confirmed policy reverted: %v", fw.zones())
	}
	st := c.State()
	if st.Pending != nil || len(st.Confirmed.Zones) != 2 {
		t.Fatalf("state %+v", st)
	}

	// A reboot: the default first, then the persisted policy.
	fw2 := &recordingApplier{}
	if err := fw2.Apply(DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	c2 := NewCommitter(fw2, DefaultPolicy(), WithTimer(tm), WithCommitLogger(slog.New(slog.DiscardHandler)))
	if err := c2.Restore(path); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fw2.zones(), []string{"lan", "admins"}) {
		t.Fatalf("restored policy not applied: %v", fw2.zones())
	}
	if got := c2.State().Confirmed; !reflect.DeepEqual(got, c.State().Confirmed) {
		t.Fatalf("restored %+v, want %+v", got, c.State().Confirmed)
	}
}

func TestCommitterRestoreCorrupt(t *testing.T) {
	valid := `{"version":1,"access":{"zones":[{"name":"lan","prefixes":["10.0.0.0/8"]}],"rules":[{"service":"https-admin","zones":["lan"]}],"allowlist":null,"allow_admin_from_any":false}}`
	for _, tc := range []struct{ name, data string }{
		{"not json", "{\x00"},
		{"truncated", valid[:len(valid)/2]},
		{"wrong version", `{"version":2,"access":{}}`},
		{"unknown field", `{"version":1,"access":{},"extra":1}`},
		{"trailing", valid + "{}"},
		{"lockout", `{"version":1,"access":{"zones":[{"name":"lan","prefixes":["10.0.0.0/8"]}],"rules":[{"service":"sip-udp","zones":["lan"]}]}}`},
		{"admin to any", `{"version":1,"access":{"zones":[],"rules":[{"service":"https-admin","zones":["any"]}]}}`},
		{"overlap", `{"version":1,"access":{"zones":[{"name":"lan","prefixes":["10.0.0.0/8","10.1.0.0/16"]}],"rules":[{"service":"https-admin","zones":["lan"]}]}}`},
		{"new ports", `{"version":1,"access":{"zones":[],"rules":[{"service":"telnet","zones":["any"]}]}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fw := &recordingApplier{}
			if err := fw.Apply(DefaultPolicy()); err != nil {
				t.Fatal(err)
			}
			before := fw.applied
			path := filepath.Join(t.TempDir(), "policy.json")
			if err := os.WriteFile(path, []byte(tc.data), 0o600); err != nil {
				t.Fatal(err)
			}
			c := NewCommitter(fw, DefaultPolicy(), WithCommitLogger(slog.New(slog.DiscardHandler)))
			if err := c.Restore(path); err == nil {
				t.Fatal("corrupt policy file accepted")
			}
			if fw.applied != before || !reflect.DeepEqual(fw.zones(), []string{"lan"}) {
				t.Fatalf("ruleset changed by a corrupt file: %v", fw.zones())
			}
			if got := c.State().Confirmed; !reflect.DeepEqual(got, normalized(DefaultPolicy().Access())) {
				t.Fatalf("confirmed changed: %+v", got)
			}
		})
	}
	// The valid one restores.
	fw := &recordingApplier{}
	path := filepath.Join(t.TempDir(), "policy.json")
	os.WriteFile(path, []byte(valid), 0o600)
	if err := NewCommitter(fw, DefaultPolicy(), WithCommitLogger(slog.New(slog.DiscardHandler))).Restore(path); err != nil {
		t.Fatal(err)
	}
}

func TestCommitterRejects(t *testing.T) {
	c, fw, _, _ := newTestCommitter(t)
	admin := netip.MustParseAddr("192.168.7.9")
	lockout := adminsAccess()
	lockout.Rules[0].Zones = []string{"lan"} // the admin at 192.168.7.9 is not in lan
	anyAdmin := adminsAccess()
	anyAdmin.Rules[0].Zones = []string{ZoneAny}
	empty := adminsAccess()
	empty.Zones[1].Prefixes = nil
	overlap := adminsAccess()
	overlap.Zones[0].Prefixes = append(overlap.Zones[0].Prefixes, netip.MustParsePrefix("10.9.0.0/16"))
	unknownSvc := adminsAccess()
	unknownSvc.Rules = append(unknownSvc.Rules, Rule{Service: "telnet", Zones: []string{"lan"}})
	for _, tc := range []struct {
		name string
		a    Access
		want error
	}{
		{"lockout", lockout, ErrAdminLockout},
		{"admin to any", anyAdmin, ErrAdminToAny},
		{"empty zone", empty, ErrInvalidPolicy},
		{"overlap", overlap, ErrInvalidPolicy},
		{"unknown service", unknownSvc, ErrInvalidPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := fw.applied
			if _, err := c.Set(tc.a, []netip.Addr{admin}); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if fw.applied != n || c.State().Pending != nil {
				t.Fatal("a rejected policy changed something")
			}
		})
	}
	// The explicit override allows admin from any.
	anyAdmin.AllowAdminFromAny = true
	if _, err := c.Set(anyAdmin, []netip.Addr{admin}); err != nil {
		t.Fatalf("override: %v", err)
	}
}

func TestCommitterApplyFailure(t *testing.T) {
	c, fw, tm, _ := newTestCommitter(t)
	first, err := c.Set(adminsAccess(), nil)
	if err != nil {
		t.Fatal(err)
	}
	fw.fail = errors.New("netlink batch rejected")
	other := adminsAccess()
	other.Zones[1].Name = "ops"
	other.Rules[0].Zones = []string{"ops"}
	if _, err := c.Set(other, nil); err == nil {
		t.Fatal("failed apply reported success")
	}
	// The first change is still the pending one, and still reverts.
	if st := c.State(); st.Pending == nil || st.Pending.ID != first.ID {
		t.Fatalf("pending lost: %+v", st.Pending)
	}
	if !reflect.DeepEqual(fw.zones(), []string{"lan", "admins"}) {
		t.Fatalf("running %v", fw.zones())
	}
	tm.Advance(120 * time.Second)
	if !reflect.DeepEqual(fw.zones(), []string{"lan"}) {
		t.Fatalf("not reverted: %v", fw.zones())
	}
}

func TestCommitterSupersede(t *testing.T) {
	c, fw, tm, _ := newTestCommitter(t)
	a, err := c.Set(adminsAccess(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tm.Advance(100 * time.Second)
	other := adminsAccess()
	other.Zones[1].Name = "ops"
	other.Rules[0].Zones = []string{"ops"}
	b, err := c.Set(other, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Confirm(a.ID); !errors.Is(err, ErrPendingID) {
		t.Fatalf("superseded id confirmed: %v", err)
	}
	tm.Advance(30 * time.Second) // past a's deadline, not b's
	if st := c.State(); st.Pending == nil || st.Pending.ID != b.ID {
		t.Fatal("the first change's timer reverted the second")
	}
	tm.Advance(90 * time.Second)
	if !reflect.DeepEqual(fw.zones(), []string{"lan"}) {
		t.Fatalf("revert goes to the last confirmed policy, got %v", fw.zones())
	}
}

func TestCommitterConfirmWriteFailure(t *testing.T) {
	c, _, _, _ := newTestCommitter(t)
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	os.WriteFile(blocker, nil, 0o600)
	c.path = filepath.Join(blocker, "policy.json") // a directory that cannot exist
	p, err := c.Set(adminsAccess(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Confirm(p.ID); err == nil {
		t.Fatal("confirm succeeded without persisting")
	}
	if st := c.State(); st.Pending == nil {
		t.Fatal("a confirm that could not persist must stay pending")
	}
}

func FuzzParsePolicyFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"access":{"zones":[{"name":"lan","prefixes":["10.0.0.0/8"]}],"rules":[{"service":"https-admin","zones":["lan"]}]}}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParsePolicyFile(data)
		if err != nil {
			return
		}
		p := DefaultPolicy().WithAccess(a)
		if p.Validate() != nil {
			return
		}
		// Whatever validates never opens an admin service to everyone
		// without the explicit override.
		if !a.AllowAdminFromAny {
			for _, r := range p.Rules {
				for _, z := range r.Zones {
					if z == ZoneAny && (r.Service == SvcHTTPS || r.Service == SvcSSH || r.Service == SvcMonitoring) {
						t.Fatalf("admin service %s open to any", r.Service)
					}
				}
			}
		}
	})
}
