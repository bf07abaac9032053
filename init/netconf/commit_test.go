package netconf

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/edgepbx/edgepbx/init/netconf/netspec"
)

func kernelAddrs(t *testing.T, name string) []string {
	t.Helper()
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil
	}
	as, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		if !a.IP.IsLinkLocalUnicast() {
			out = append(out, a.IPNet.String())
		}
	}
	slices.Sort(out)
	return out
}

// commitLab is a namespace with eth0 at its boot address, a manager and a
// committer whose hostname and resolv.conf go to the test's own places.
type commitLab struct {
	m        *Manager
	c        *Committer
	dir      string
	hostname []string
	reverted chan error
}

func newCommitLab(t *testing.T, after time.Duration) *commitLab {
	return newCommitLabDelay(t, after, 0)
}

func newCommitLabDelay(t *testing.T, after, delay time.Duration) *commitLab {
	lab(t)
	l := &commitLab{dir: t.TempDir(), reverted: make(chan error, 4)}
	m, err := New(logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); m.Close() })
	m.ResolvConf = filepath.Join(l.dir, "resolv.conf")
	m.Hostname = func(s string) error { l.hostname = append(l.hostname, s); return nil }
	boot := []NIC{{Name: "eth0", Mode: ModeStatic, Address: "192.0.2.10/24", Gateway: "192.0.2.1"}}
	if err := m.Up(ctx, boot); err != nil {
		t.Fatal(err)
	}
	l.m = m
	l.c = NewCommitter(ctx, CommitterConfig{Apply: m, Live: m.Addresses, NICs: []string{"eth0"},
		Default: DefaultNetwork("pbx-boot", boot), RevertAfter: after, Log: logger(t),
		OnRevert: func(_ netspec.Pending, err error) { l.reverted <- err }, ApplyDelay: delay})
	t.Cleanup(l.c.Close)
	return l
}

// vlanSupported probes for the kernel's 8021q in the lab namespace.
func vlanSupported(t *testing.T) bool {
	parent, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	err = netlink.LinkAdd(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "probe.9", ParentIndex: parent.Attrs().Index}, VlanId: 9})
	if err != nil {
		t.Logf("no VLAN support in this kernel (%v): VLAN part not checked here", err)
		return false
	}
	l, _ := netlink.LinkByName("probe.9")
	netlink.LinkDel(l)
	return true
}

func changed(t *testing.T) netspec.Network {
	n := netspec.Network{
		Hostname: "pbx-new",
		Interfaces: []netspec.Interface{{Name: "eth0", Mode: netspec.ModeStatic,
			Addresses: []netip.Prefix{netip.MustParsePrefix("198.51.100.5/24"), netip.MustParsePrefix("2001:db8::5/64")},
			Gateway4:  netip.MustParseAddr("198.51.100.1")}},
		VLANs: []netspec.VLAN{{ID: 20, Parent: "eth0", Mode: netspec.ModeStatic, Addresses: []netip.Prefix{netip.MustParsePrefix("10.20.0.1/24")}}},
		DNS:   []netip.Addr{netip.MustParseAddr("198.51.100.53")},
	}
	if !vlanSupported(t) {
		n.VLANs = nil
	}
	return n
}

func TestNetworkChangeRevertsUnconfirmed(t *testing.T) {
	l := newCommitLab(t, 300*time.Millisecond)
	if err := l.c.Restore(filepath.Join(l.dir, "network.json")); err != nil {
		t.Fatalf("missing file: %v", err)
	}
	p, err := l.c.Set(changed(t))
	if err != nil {
		t.Fatal(err)
	}
	if !netspec.ValidPendingID(p.ID) {
		t.Fatalf("id %q", p.ID)
	}
	if got := kernelAddrs(t, "eth0"); !slices.Equal(got, []string{"198.51.100.5/24", "2001:db8::5/64"}) {
		t.Fatalf("eth0 after change: %v", got)
	}
	if got := kernelAddrs(t, "eth0.20"); len(p.Network.VLANs) > 0 && !slices.Equal(got, []string{"10.20.0.1/24"}) {
		t.Fatalf("eth0.20 after change: %v", got)
	}
	if rc, _ := os.ReadFile(filepath.Join(l.dir, "resolv.conf")); !strings.Contains(string(rc), "nameserver 198.51.100.53\n") {
		t.Fatalf("resolv.conf %q", rc)
	}
	if err := <-l.reverted; err != nil {
		t.Fatalf("revert: %v", err)
	}
	if got := kernelAddrs(t, "eth0"); !slices.Equal(got, []string{"192.0.2.10/24"}) {
		t.Fatalf("eth0 after revert: %v", got)
	}
	link, _ := netlink.LinkByName("eth0")
	routes, _ := netlink.RouteList(link, netlink.FAMILY_V4)
	if !hasDefault(routes, "192.0.2.1") || hasDefault(routes, "198.51.100.1") {
		t.Fatalf("routes after revert: %v", routes)
	}
	if _, err := netlink.LinkByName("eth0.20"); err == nil {
		t.Fatal("VLAN still there after revert")
	}
	if !slices.Equal(l.hostname, []string{"pbx-new", "pbx-boot"}) {
		t.Fatalf("hostnames set: %v", l.hostname)
	}
	if _, err := os.Stat(filepath.Join(l.dir, "network.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unconfirmed change persisted: %v", err)
	}
	if st := l.c.State(); st.Pending != nil || st.Confirmed.Hostname != "pbx-boot" {
		t.Fatalf("state after revert: %+v", st)
	}
	if err := l.c.Confirm(p.ID); !errors.Is(err, ErrNoPending) {
		t.Fatalf("confirm after revert: %v", err)
	}
}

func TestNetworkChangeConfirmedPersistsAndRestores(t *testing.T) {
	l := newCommitLab(t, time.Hour)
	path := filepath.Join(l.dir, "network.json")
	if err := l.c.Restore(path); err != nil {
		t.Fatal(err)
	}
	// Refused changes name the field and leave the network alone.
	bad := changed(t)
	bad.Interfaces[0].Gateway4 = netip.MustParseAddr("192.0.2.1")
	var fe *netspec.FieldError
	if _, err := l.c.Set(bad); !errors.As(err, &fe) || fe.Field != "interfaces[0].gateway4" {
		t.Fatalf("gateway outside the subnet: %v", err)
	}
	if got := kernelAddrs(t, "eth0"); !slices.Equal(got, []string{"192.0.2.10/24"}) {
		t.Fatalf("eth0 after refusal: %v", got)
	}
	p, err := l.c.Set(changed(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.c.Confirm(strings.Repeat("0", 32)); !errors.Is(err, ErrPendingID) {
		t.Fatalf("wrong id: %v", err)
	}
	if err := l.c.Confirm(p.ID); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := ParseNetworkFile(data)
	if err != nil || n.Hostname != "pbx-new" || len(n.DNS) != 1 {
		t.Fatalf("persisted %+v, %v", n, err)
	}
	// A reboot: the board default runs, then Restore brings the change back.
	def := DefaultNetwork("pbx-boot", []NIC{{Name: "eth0", Mode: ModeStatic, Address: "192.0.2.10/24", Gateway: "192.0.2.1"}})
	if err := l.m.ApplyNetwork(context.Background(), def, []string{"eth0"}); err != nil {
		t.Fatal(err)
	}
	c2 := NewCommitter(context.Background(), CommitterConfig{Apply: l.m, NICs: []string{"eth0"}, Default: def, Log: logger(t)})
	if err := c2.Restore(path); err != nil {
		t.Fatal(err)
	}
	if got := kernelAddrs(t, "eth0"); !slices.Equal(got, []string{"198.51.100.5/24", "2001:db8::5/64"}) {
		t.Fatalf("eth0 after restore: %v", got)
	}
	if c2.State().Confirmed.Hostname != "pbx-new" {
		t.Fatal("restored network not confirmed")
	}
}

func TestNetworkRestoreBadFileKeepsDefault(t *testing.T) {
	l := newCommitLab(t, time.Hour)
	for name, body := range map[string]string{
		"garbage":  "{not json",
		"unknown":  `{"version":1,"network":{"hostname":"x","interfaces":[],"evil":1}}`,
		"version":  `{"version":2,"network":{"hostname":"x","interfaces":[{"name":"eth0","mode":"dhcp"}]}}`,
		"invalid":  `{"version":1,"network":{"hostname":"x","interfaces":[{"name":"eth0","mode":"static","addresses":["127.0.0.2/8"]}]}}`,
		"nic":      `{"version":1,"network":{"hostname":"x","interfaces":[{"name":"eth7","mode":"dhcp"}]}}`,
		"oversize": `{"version":1,"network":{"hostname":"` + strings.Repeat("a", maxNetworkFile) + `"}}`,
	} {
		path := filepath.Join(l.dir, name+".json")
		os.WriteFile(path, []byte(body), 0o600)
		if err := l.c.Restore(path); !errors.Is(err, ErrNetworkFile) {
			t.Errorf("%s: %v, want ErrNetworkFile", name, err)
		}
		if got := kernelAddrs(t, "eth0"); !slices.Equal(got, []string{"192.0.2.10/24"}) {
			t.Fatalf("%s: eth0 %v", name, got)
		}
	}
}

func FuzzParseNetworkFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"network":{"hostname":"pbx","interfaces":[{"name":"eth0","mode":"dhcp"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := ParseNetworkFile(data)
		if err != nil {
			return
		}
		if n.Validate([]string{"eth0"}) == nil && len(n.Interfaces) > netspec.MaxInterfaces {
			t.Fatal("unbounded")
		}
	})
}

// waitAddrs waits until name's kernel addresses are want.
func waitAddrs(t *testing.T, name string, want ...string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !slices.Equal(kernelAddrs(t, name), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s has %v, want %v", name, kernelAddrs(t, name), want)
		}
	}
}

// TestNetworkChangeAppliedAfterAnswer: with ApplyDelay, Set answers while
// the old address is still there (so the admin's answer can leave on it),
// the change is applied afterwards, cannot be confirmed before that, and
// reverts after RevertAfter counted from when it was applied. A change
// that fails to apply is undone and reported.
func TestNetworkChangeAppliedAfterAnswer(t *testing.T) {
	l := newCommitLabDelay(t, 500*time.Millisecond, time.Second)
	n := changed(t)
	n.VLANs = nil
	p, err := l.c.Set(n)
	if err != nil {
		t.Fatal(err)
	}
	// The answer leaves before anything changed.
	if got := kernelAddrs(t, "eth0"); !slices.Equal(got, []string{"192.0.2.10/24"}) {
		t.Fatalf("eth0 when Set answered: %v", got)
	}
	if err := l.c.Confirm(p.ID); !errors.Is(err, ErrNotApplied) {
		t.Fatalf("confirm before apply: %v", err)
	}
	waitAddrs(t, "eth0", "198.51.100.5/24", "2001:db8::5/64")
	if err := <-l.reverted; err != nil {
		t.Fatalf("revert: %v", err)
	}
	waitAddrs(t, "eth0", "192.0.2.10/24")

	// Applied, then confirmed: it stays.
	p, err = l.c.Set(n)
	if err != nil {
		t.Fatal(err)
	}
	waitAddrs(t, "eth0", "198.51.100.5/24", "2001:db8::5/64")
	for err := l.c.Confirm(p.ID); err != nil; err = l.c.Confirm(p.ID) {
		if !errors.Is(err, ErrNotApplied) {
			t.Fatalf("confirm: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // addresses are set before the committer marks the change applied
	}
	if st := l.c.State(); st.Pending != nil || st.Confirmed.Hostname != "pbx-new" {
		t.Fatalf("state after confirm: %+v", st)
	}
}

// failingApplier fails every apply of a network named "pbx-broken".
type failingApplier struct{ m *Manager }

func (f failingApplier) ApplyNetwork(ctx context.Context, n netspec.Network, nics []string) error {
	if n.Hostname == "pbx-broken" {
		return errors.New("netlink says no")
	}
	return f.m.ApplyNetwork(ctx, n, nics)
}

func TestNetworkChangeDelayedApplyFails(t *testing.T) {
	l := newCommitLabDelay(t, time.Minute, 100*time.Millisecond)
	l.c.apply = failingApplier{l.m}
	n := changed(t)
	n.Hostname, n.VLANs = "pbx-broken", nil
	if _, err := l.c.Set(n); err != nil {
		t.Fatal(err)
	}
	if err := <-l.reverted; !errors.Is(err, ErrApplyFailed) || !strings.Contains(err.Error(), "netlink says no") {
		t.Fatalf("failed apply reported as %v", err)
	}
	if st := l.c.State(); st.Pending != nil {
		t.Fatalf("failed change still pending: %+v", st.Pending)
	}
	if got := kernelAddrs(t, "eth0"); !slices.Equal(got, []string{"192.0.2.10/24"}) {
		t.Fatalf("eth0 after a failed change: %v", got)
	}
}
