package netfw_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// TestDHCPServerPort: with real nftables in a box namespace, a DHCPDISCOVER
// a phone broadcasts from 0.0.0.0:68 to 255.255.255.255:67 is dropped until
// edgepbxd asks PID 1 (through the control socket) to open the phones
// interface, reaches the server socket while open, and is dropped again
// once closed. PID 1 refuses, naming "interface", an interface that does
// not exist, the loopback, a malformed name and the WAN interface (its
// subnet is in no zone the provisioning service is open to); a policy
// that stops opening provisioning to the phones' zone closes the port, and
// so does the phones interface's address leaving the zone (PID 1 watches
// the addresses itself: WatchDHCPServer), while a new address inside the
// zone keeps it open.
func TestDHCPServerPort(t *testing.T) {
	netnstest.Require(t, "nft")
	box, phone, wan := netnstest.New(t), netnstest.New(t), netnstest.New(t)
	bh, err := netlink.NewHandleAt(box)
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	for _, l := range []struct {
		name, peer string
		ns         netns.NsHandle
		addr       string
	}{{"ph0", "ph1", phone, "10.20.0.1/24"}, {"wan0", "wan1", wan, "203.0.113.1/24"}} {
		if err := bh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.name}, PeerName: l.peer, PeerNamespace: netlink.NsFd(int(l.ns))}); err != nil {
			t.Fatal(err)
		}
		netnstest.LinkUp(t, bh, l.name, l.addr)
		ph, err := netlink.NewHandleAt(l.ns)
		if err != nil {
			t.Fatal(err)
		}
		netnstest.LinkUp(t, ph, l.peer) // no IPv4 address: it sends from 0.0.0.0
		ph.Close()
	}
	fw, err := netfw.New(netfw.WithNetNS(int(box)), netfw.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if err := fw.Apply(netfw.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "init.sock")
	srv, err := control.Listen(control.Config{Path: path, Firewall: fw, DHCP: fw, System: noPower{}, PolicyRate: 100, PolicyBurst: 100})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	watched := make(chan struct{})
	go func() { fw.WatchDHCPServer(ctx); close(watched) }()
	defer func() { cancel(); <-watched }()
	cl, err := control.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	var server, client *net.UDPConn
	if err := netnstest.Run(box, func() error {
		server, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 67})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if err := netnstest.Run(phone, func() error {
		if client, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 68}); err != nil {
			return err
		}
		rc, err := client.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), "ph1") }); err != nil {
			return err
		}
		return serr
	}); err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	counter := func(name string) uint64 {
		c, err := fw.Counters()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range c.Rules {
			if r.Name == name {
				return r.Packets
			}
		}
		t.Fatalf("no rule %q", name)
		return 0
	}
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	// dropped sends one discover and waits until the final drop rule
	// counted it; the server socket must hold nothing then.
	dropped := func(what string) {
		t.Helper()
		before := counter("drop")
		if _, err := client.WriteToUDP([]byte("discover "+what), bcast); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); counter("drop") == before; {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the discover never reached the firewall's drop rule", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
		buf := make([]byte, 64)
		rc, _ := server.SyscallConn()
		var n int
		var rerr error
		rc.Read(func(fd uintptr) bool { n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT); return true })
		if !errors.Is(rerr, unix.EAGAIN) {
			t.Fatalf("%s: the server got %q (%v), want nothing", what, buf[:max(n, 0)], rerr)
		}
	}
	admitted := func(what string) {
		t.Helper()
		before := counter("dhcp4-server")
		if _, err := client.WriteToUDP([]byte("discover "+what), bcast); err != nil {
			t.Fatal(err)
		}
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		n, from, err := server.ReadFromUDP(buf)
		if err != nil || string(buf[:n]) != "discover "+what {
			t.Fatalf("%s: server read %q from %v: %v", what, buf[:max(n, 0)], from, err)
		}
		if !from.IP.Equal(net.IPv4zero) {
			t.Errorf("%s: source %v, want 0.0.0.0", what, from.IP)
		}
		if counter("dhcp4-server") == before {
			t.Errorf("%s: admitted, but not by the dhcp4-server rule", what)
		}
	}

	dropped("before open")
	for _, c := range []struct{ iface, why string }{
		{"wan0", "WAN subnet outside the phones' zone"},
		{"nosuch0", "no such interface"},
		{"lo", "loopback"},
		{"ph0;x", "malformed name"},
		{"", "empty name"},
		{"abcdefghijklmnopq", "longer than IFNAMSIZ"},
	} {
		err := cl.SetDHCPServer(ctx, c.iface, true)
		var re *control.RemoteError
		if !errors.As(err, &re) || re.Field != "interface" {
			t.Errorf("%s (%q): err = %v, want a refusal naming interface", c.why, c.iface, err)
		}
	}
	if got := fw.DHCPServerInterfaces(); len(got) != 0 {
		t.Fatalf("open after refusals: %v", got)
	}
	if err := cl.SetDHCPServer(ctx, "ph0", true); err != nil {
		t.Fatal(err)
	}
	admitted("while open")
	if err := cl.SetDHCPServer(ctx, "ph0", false); err != nil {
		t.Fatal(err)
	}
	dropped("after close")
	if err := cl.SetDHCPServer(ctx, "ph0", false); err != nil {
		t.Errorf("closing a closed port: %v", err)
	}

	// Re-applying the same policy keeps the port open; one that no longer
	// opens provisioning to the lan zone closes it.
	if err := cl.SetDHCPServer(ctx, "ph0", true); err != nil {
		t.Fatal(err)
	}
	if err := fw.Apply(netfw.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	admitted("after re-apply")
	p := netfw.DefaultPolicy()
	p.Rules = slices.DeleteFunc(p.Rules, func(r netfw.Rule) bool { return r.Service == netfw.SvcProvisioning })
	if err := fw.Apply(p); err != nil {
		t.Fatal(err)
	}
	if got := fw.DHCPServerInterfaces(); len(got) != 0 {
		t.Errorf("open after provisioning left the zone: %v", got)
	}
	dropped("after the policy change")

	// The phones interface renumbered inside the zone: still open.
	if err := fw.Apply(netfw.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	if err := cl.SetDHCPServer(ctx, "ph0", true); err != nil {
		t.Fatal(err)
	}
	renumber := func(from, to string) {
		t.Helper()
		link, err := bh.LinkByName("ph0")
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []struct {
			prefix string
			op     func(netlink.Link, *netlink.Addr) error
		}{{from, bh.AddrDel}, {to, bh.AddrAdd}} {
			a, err := netlink.ParseAddr(p.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.op(link, a); err != nil {
				t.Fatalf("%s: %v", p.prefix, err)
			}
		}
	}
	renumber("10.20.0.1/24", "10.30.0.1/24")
	if closed := fw.RecheckDHCPServer(); len(closed) != 0 {
		t.Fatalf("renumbered inside the zone, closed %v", closed)
	}
	admitted("after renumbering inside the zone")
	// Out of the zone: closed without anyone asking.
	renumber("10.30.0.1/24", "198.51.100.1/24")
	for deadline := time.Now().Add(30 * time.Second); len(fw.DHCPServerInterfaces()) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still open after ph0 left the zone: %v", fw.DHCPServerInterfaces())
		}
	}
	dropped("after ph0 left the zone")
	if err := cl.SetDHCPServer(ctx, "ph0", true); err == nil {
		t.Fatal("opened again outside the zone")
	}
}
