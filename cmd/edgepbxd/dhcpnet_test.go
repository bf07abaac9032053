package main

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/edgepbx/edgepbx/firmware/provision"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/netconf"
	"github.com/edgepbx/edgepbx/init/netconf/netspec"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// manualTimer is the network committer's clock: the test fires the revert.
type manualTimer struct {
	mu sync.Mutex
	f  func()
}

func (*manualTimer) Now() time.Time { return time.Now() }

func (m *manualTimer) AfterFunc(_ time.Duration, f func()) func() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.f = f
	return func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		stopped := m.f != nil
		m.f = nil
		return stopped
	}
}

func (m *manualTimer) fire() {
	m.mu.Lock()
	f := m.f
	m.f = nil
	m.mu.Unlock()
	if f != nil {
		f()
	}
}

// TestDHCPServerFollowsNetwork: the phones' DHCP server (edgepbxd) and
// PID 1's UDP 67 opening (real nftables, control socket) follow the
// phones interface's address as PID 1's network committer changes it.
// Busybox udhcpc on the phones link checks what is served: renumbered
// inside the subnet and confirmed, the server names its new address; moved
// to a subnet the pool is not in, nothing is served and UDP 67 is closed;
// when that change is reverted, the server and the opening come back.
func TestDHCPServerFollowsNetwork(t *testing.T) {
	netnstest.Require(t, "nft", "nsenter")
	netnstest.NeedTool(t, "busybox", "busybox")
	box, phone := netnstest.New(t), netnstest.New(t)
	bh, err := netlink.NewHandleAt(box)
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	netnstest.LinkUp(t, bh, "lo")
	if err := bh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ph0"}, PeerName: "ph1", PeerNamespace: netlink.NsFd(int(phone))}); err != nil {
		t.Fatal(err)
	}
	ph, err := netlink.NewHandleAt(phone)
	if err != nil {
		t.Fatal(err)
	}
	netnstest.LinkUp(t, ph, "lo")
	netnstest.LinkUp(t, ph, "ph1") // no address: udhcpc asks from 0.0.0.0
	ph.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// PID 1: the network manager and committer, the firewall watching the
	// addresses, the control socket.
	boot := []netconf.NIC{{Name: "ph0", Mode: netconf.ModeStatic, Address: "10.20.0.1/24"}}
	timer := &manualTimer{}
	var (
		mgr *netconf.Manager
		nc  *netconf.Committer
	)
	if err := netnstest.Run(box, func() error {
		var err error
		if mgr, err = netconf.New(slog.New(slog.DiscardHandler)); err != nil {
			return err
		}
		mgr.ResolvConf = filepath.Join(t.TempDir(), "resolv.conf")
		mgr.Hostname = func(string) error { return nil }
		return mgr.Up(ctx, boot)
	}); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); mgr.Close() }()
	nc = netconf.NewCommitter(ctx, netconf.CommitterConfig{Apply: mgr, Live: mgr.Addresses, NICs: []string{"ph0"},
		Default: netconf.DefaultNetwork("pbx", boot), Timer: timer, Log: slog.New(slog.DiscardHandler)})
	defer nc.Close()
	fw, err := netfw.New(netfw.WithNetNS(int(box)), netfw.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if err := fw.Apply(netfw.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	watched := make(chan struct{})
	go func() { fw.WatchDHCPServer(ctx); close(watched) }()
	defer func() { cancel(); <-watched }()
	sock := filepath.Join(t.TempDir(), "init.sock")
	srv, err := control.Listen(control.Config{Path: sock, Firewall: fw, DHCP: fw, Network: nc, System: noSystem{}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx)

	// edgepbxd with its DHCP server on ph0.
	dir := t.TempDir()
	var d *daemon
	if err := netnstest.Run(box, func() error {
		var err error
		d, err = newDaemon(config{devDir: dir, dataDir: dir, httpsAddr: "127.0.0.1:0", sipAddr: "127.0.0.1:0",
			provHTTPSAddr: "127.0.0.1:0", provHTTPAddr: "127.0.0.1:0", provHost: "pbx.test"}, slog.New(slog.DiscardHandler))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if d.ctrl, err = control.Dial(sock); err != nil {
		t.Fatal(err)
	}
	defer d.ctrl.Close()
	zt := make(chan error, 1)
	go func() { zt <- netnstest.Run(box, func() error { return d.runZeroTouch(ctx) }) }()
	defer func() { cancel(); <-zt }()
	st := d.prov.Settings()
	st.DHCP = provision.DHCPSettings{Enabled: true, Interface: "ph0", PoolStart: netip.MustParseAddr("10.20.0.100"),
		PoolEnd: netip.MustParseAddr("10.20.0.110"), LeaseMinutes: 30}
	if err := d.prov.SetSettings(st, "test", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}

	waitFor := func(what string, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for deadline := start.Add(60 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (dhcp %+v, open %v)", what, d.prov.DHCPStatus(), fw.DHCPServerInterfaces())
			}
		}
		return time.Since(start)
	}
	serving := func() bool {
		return d.prov.DHCPStatus().State == "running" && slices.Equal(fw.DHCPServerInterfaces(), []string{"ph0"})
	}
	closed := func() bool {
		s := d.prov.DHCPStatus()
		return s.State == "failed" && strings.Contains(s.Detail, "not inside") && len(fw.DHCPServerInterfaces()) == 0
	}
	// leaseFrom asks until a lease names server; udhcpc may first meet
	// the server of before the change while it restarts.
	leaseFrom := func(server string) map[string]string {
		t.Helper()
		var vars map[string]string
		waitFor("a lease from "+server, func() bool {
			vars = udhcpcOnce(t, phone, "ph1")
			return vars != nil && strings.TrimSpace(vars["serverid"]) == server
		})
		return vars
	}
	network := func(addr string) netspec.Network {
		return netspec.Network{Hostname: "pbx", Interfaces: []netspec.Interface{{Name: "ph0", Mode: netspec.ModeStatic,
			Addresses: []netip.Prefix{netip.MustParsePrefix(addr)}}}}
	}

	waitFor("the server on 10.20.0.1", serving)
	if v := leaseFrom("10.20.0.1"); strings.TrimSpace(v["ip"]) != "10.20.0.100" || strings.TrimSpace(v["subnet"]) != "255.255.255.0" {
		t.Fatalf("first lease %v", v)
	}

	// Renumbered inside the subnet, confirmed: the server names the new
	// address (it restarted with it).
	p, err := d.ctrl.SetNetwork(ctx, network("10.20.0.5/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.ctrl.ConfirmNetwork(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	took := waitFor("a lease from 10.20.0.5", func() bool { return leaseFrom("10.20.0.5") != nil })
	t.Logf("renumbered to 10.20.0.5: leases from the new address after %v (includes the %v probe)", took, provision.ProbeWait)

	// Moved to a subnet the pool is not in (pending): nothing served,
	// UDP 67 closed.
	changed := time.Now()
	if _, err := d.ctrl.SetNetwork(ctx, network("10.30.0.1/24")); err != nil {
		t.Fatal(err)
	}
	waitFor("the server stopped and UDP 67 closed", closed)
	t.Logf("moved to 10.30.0.1/24: stopped and closed %v after the change", time.Since(changed))
	if v := udhcpcOnce(t, phone, "ph1"); v != nil {
		t.Fatalf("a lease while the box has no address in the pool's subnet: %v", v)
	}

	// Not confirmed: reverted to 10.20.0.5, served again.
	reverted := time.Now()
	timer.fire()
	waitFor("the server back after the revert", serving)
	t.Logf("reverted: serving again %v after the revert", time.Since(reverted))
	leaseFrom("10.20.0.5")
}

// udhcpcOnce runs busybox udhcpc once on iface in ns and returns the
// bound lease's variables, or nil when it got none.
func udhcpcOnce(t *testing.T, ns netns.NsHandle, iface string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && env > "+dir+"/bound\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = inNetNS(ctx, ns, "busybox", "udhcpc", "-f", "-q", "-n", "-i", iface, "-t", "3", "-T", "1", "-A", "1", "-s", script).Run()
	b, err := os.ReadFile(filepath.Join(dir, "bound"))
	if err != nil {
		return nil
	}
	vars := map[string]string{}
	for _, ln := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(ln, "="); ok {
			vars[k] = v
		}
	}
	return vars
}
