package netconf

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/init/netconf/netspec"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		in      string
		want    Cmdline
		wantErr string
	}{
		{"console=ttyS0 quiet", Cmdline{}, ""},
		{"edgepbx.ip=192.0.2.10/24 edgepbx.gw=192.0.2.1", Cmdline{netip.MustParsePrefix("192.0.2.10/24"), netip.MustParseAddr("192.0.2.1")}, ""},
		{"edgepbx.ip=2001:db8::5/64", Cmdline{Addr: netip.MustParsePrefix("2001:db8::5/64")}, ""},
		{"edgepbx.ip=192.0.2.10", Cmdline{}, "edgepbx.ip"},
		{"edgepbx.ip=0.0.0.0/0", Cmdline{}, "edgepbx.ip"},
		{"edgepbx.ip=127.0.0.2/8", Cmdline{}, "edgepbx.ip"},
		{"edgepbx.gw=192.0.2.1", Cmdline{}, "without"},
		{"edgepbx.ip=192.0.2.10/24 edgepbx.gw=198.51.100.1", Cmdline{}, "outside"},
		{"edgepbx.ip=192.0.2.10/24 edgepbx.gw=nope", Cmdline{}, "edgepbx.gw"},
		{strings.Repeat("x", 5000), Cmdline{}, "too long"},
	}
	for _, tt := range tests {
		got, err := ParseCmdline(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%.40q: err %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%.40q: got %+v %v, want %+v", tt.in, got, err, tt.want)
		}
	}
	nics := []NIC{{Name: "eth0", Mode: ModeDHCP}, {Name: "eth1", Mode: ModeDHCP}}
	c, _ := ParseCmdline("edgepbx.ip=192.0.2.10/24 edgepbx.gw=192.0.2.1")
	got := c.Apply(nics)
	if got[0] != (NIC{Name: "eth0", Mode: ModeStatic, Address: "192.0.2.10/24", Gateway: "192.0.2.1"}) || got[1] != nics[1] || nics[0].Mode != ModeDHCP {
		t.Fatalf("Apply: %+v (input %+v)", got, nics)
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("edgepbx.ip=192.0.2.10/24 edgepbx.gw=192.0.2.1")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCmdline(s)
		if err != nil {
			return
		}
		if c.Gateway.IsValid() && !c.Addr.Masked().Contains(c.Gateway) {
			t.Fatalf("gateway outside prefix accepted: %+v", c)
		}
	})
}

// lab puts the calling goroutine's thread into a fresh client namespace
// with a veth "eth0" whose peer "srv0" sits in a server namespace. The
// thread stays locked and dies with the test goroutine, so the host's
// namespace is never touched.
func lab(t *testing.T) (srv netns.NsHandle) {
	t.Helper()
	netnstest.NeedRoot(t, "network namespaces")
	runtime.LockOSThread()
	srv, err := netns.New()
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	cli, err := netns.New()
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	t.Cleanup(func() { srv.Close(); cli.Close() })
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "srv0"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	peer, err := netlink.LinkByName("srv0")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(peer, int(srv)); err != nil {
		t.Fatal(err)
	}
	return srv
}

// inNS runs fn with the thread in ns, then returns to the current one.
func inNS(t *testing.T, ns netns.NsHandle, fn func()) {
	t.Helper()
	cur, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(cur)
	fn()
}

func logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestStaticAndLoopback(t *testing.T) {
	lab(t)
	m, err := New(logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.LoopbackUp(); err != nil {
		t.Fatal(err)
	}
	err = m.Up(context.Background(), []NIC{
		{Name: "eth0", Mode: ModeStatic, Address: "192.0.2.10/24", Gateway: "192.0.2.1"},
		{Name: "eth9", Mode: ModeStatic, Address: "198.51.100.1/24"},
	})
	if err == nil || !strings.Contains(err.Error(), "eth9") {
		t.Fatalf("missing NIC not reported: %v", err)
	}
	link, _ := netlink.LinkByName("eth0")
	addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "192.0.2.10/24" {
		t.Fatalf("addresses %v", addrs)
	}
	routes, _ := netlink.RouteList(link, netlink.FAMILY_V4)
	if !hasDefault(routes, "192.0.2.1") {
		t.Fatalf("no default route via 192.0.2.1: %v", routes)
	}
	lo, _ := netlink.LinkByName("lo")
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Fatal("lo down")
	}
	got := m.Addresses()
	if len(got) != 2 || got[0].String() != "192.0.2.10/24" || got[1].String() != "127.0.0.1/8" {
		t.Fatalf("Addresses() = %v", got)
	}
}

func hasDefault(routes []netlink.Route, gw string) bool {
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw.String() == gw {
			return true
		}
	}
	return false
}

// dhcpServer answers DISCOVER and REQUEST with a fixed lease.
type dhcpServer struct {
	lease    time.Duration
	requests atomic.Int64
	dns      []net.IP // DNS servers option; nil: none
}

func (s *dhcpServer) handle(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
	var typ dhcpv4.MessageType
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		typ = dhcpv4.MessageTypeAck
		s.requests.Add(1)
	default:
		return
	}
	srvIP := net.IPv4(10, 99, 0, 1)
	resp, err := dhcpv4.NewReplyFromRequest(m,
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithYourIP(net.IPv4(10, 99, 0, 10)),
		dhcpv4.WithServerIP(srvIP),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithRouter(srvIP),
		dhcpv4.WithLeaseTime(uint32(s.lease/time.Second)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(srvIP)),
	)
	if err == nil && s.dns != nil {
		resp.UpdateOption(dhcpv4.OptDNS(s.dns...))
	}
	if err != nil {
		return
	}
	conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort})
}

func TestDHCPLeaseAndRenewal(t *testing.T) {
	srvNS := lab(t)
	s := &dhcpServer{lease: 10 * time.Second} // the floor: renewal at T1 = 5 s
	var server *server4.Server
	inNS(t, srvNS, func() {
		peer, err := netlink.LinkByName("srv0")
		if err != nil {
			t.Fatal(err)
		}
		netlink.AddrAdd(peer, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 99, 0, 1), Mask: net.CIDRMask(24, 32)}})
		if err := netlink.LinkSetUp(peer); err != nil {
			t.Fatal(err)
		}
		server, err = server4.NewServer("srv0", &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, s.handle)
		if err != nil {
			t.Fatal(err)
		}
	})
	go server.Serve()
	defer server.Close()

	m, err := New(logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); m.Close() }()
	if err := m.Up(ctx, []NIC{{Name: "eth0", Mode: ModeDHCP}}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	addrs, err := m.WaitAddress(wctx)
	if err != nil || len(addrs) != 1 || addrs[0].String() != "10.99.0.10/24" {
		t.Fatalf("addresses %v, %v", addrs, err)
	}
	link, _ := netlink.LinkByName("eth0")
	got, _ := netlink.AddrList(link, netlink.FAMILY_V4)
	if len(got) != 1 || got[0].IPNet.String() != "10.99.0.10/24" || got[0].ValidLft <= 0 || got[0].ValidLft > 10 {
		t.Fatalf("kernel addresses %+v", got)
	}
	routes, _ := netlink.RouteList(link, netlink.FAMILY_V4)
	if !hasDefault(routes, "10.99.0.1") {
		t.Fatalf("no default route: %v", routes)
	}
	// The background loop renews at T1 with another REQUEST.
	for deadline := time.Now().Add(30 * time.Second); s.requests.Load() < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("lease never renewed")
		}
	}
	if a := m.Addresses(); len(a) != 1 || a[0].String() != "10.99.0.10/24" {
		t.Fatalf("after renewal: %v", a)
	}
}

// TestLeaseDNS: a lease's DNS servers are used only when they are unicast
// IPv4 addresses (not loopback, where edgepbxd listens, nor multicast,
// link-local or unspecified), without repeats, three at most.
func TestLeaseDNS(t *testing.T) {
	for _, tt := range []struct {
		name string
		dns  []net.IP
		want string
	}{
		{"none", nil, "[]"},
		{"two", []net.IP{net.IPv4(10, 99, 0, 53), net.IPv4(192, 0, 2, 53)}, "[10.99.0.53 192.0.2.53]"},
		{"hostile", []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(0, 0, 0, 0), net.IPv4(224, 0, 0, 251), net.IPv4(169, 254, 1, 1),
			net.IPv4(255, 255, 255, 255), net.IPv4(10, 99, 0, 53)}, "[10.99.0.53]"},
		{"repeats and too many", []net.IP{net.IPv4(10, 0, 0, 1), net.IPv4(10, 0, 0, 1), net.IPv4(10, 0, 0, 2), net.IPv4(10, 0, 0, 3), net.IPv4(10, 0, 0, 4)},
			"[10.0.0.1 10.0.0.2 10.0.0.3]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ack, err := dhcpv4.New(dhcpv4.WithYourIP(net.IPv4(10, 99, 0, 10)), dhcpv4.WithNetmask(net.CIDRMask(24, 32)))
			if err != nil {
				t.Fatal(err)
			}
			if tt.dns != nil {
				ack.UpdateOption(dhcpv4.OptDNS(tt.dns...))
			}
			// Through the wire format, as a server's answer arrives.
			ack, err = dhcpv4.FromBytes(ack.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			l, err := leaseFrom(ack)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(l.dns); got != tt.want {
				t.Errorf("dns %s, want %s", got, tt.want)
			}
		})
	}
}

// TestDHCPDNSUnlessConfigured: with no DNS servers configured, the
// resolver file lists those of the DHCP lease (at boot too); configured
// servers replace them, and removing those brings the lease's back.
func TestDHCPDNSUnlessConfigured(t *testing.T) {
	srvNS := lab(t)
	s := &dhcpServer{lease: time.Hour, dns: []net.IP{net.IPv4(10, 99, 0, 53), net.IPv4(127, 0, 0, 1)}}
	var server *server4.Server
	inNS(t, srvNS, func() {
		peer, err := netlink.LinkByName("srv0")
		if err != nil {
			t.Fatal(err)
		}
		netlink.AddrAdd(peer, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 99, 0, 1), Mask: net.CIDRMask(24, 32)}})
		if err := netlink.LinkSetUp(peer); err != nil {
			t.Fatal(err)
		}
		server, err = server4.NewServer("srv0", &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, s.handle)
		if err != nil {
			t.Fatal(err)
		}
	})
	go server.Serve()
	defer server.Close()

	m, err := New(logger(t))
	if err != nil {
		t.Fatal(err)
	}
	m.ResolvConf = filepath.Join(t.TempDir(), "resolv.conf")
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); m.Close() }()
	if err := m.Up(ctx, []NIC{{Name: "eth0", Mode: ModeDHCP}}); err != nil {
		t.Fatal(err)
	}
	servers := func() string {
		b, _ := os.ReadFile(m.ResolvConf)
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if a, ok := strings.CutPrefix(l, "nameserver "); ok {
				out = append(out, a)
			}
		}
		return strings.Join(out, " ")
	}
	waitFor := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); servers() != want; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("resolv.conf lists %q, want %q", servers(), want)
			}
		}
	}
	waitFor("10.99.0.53")
	dhcp := netspec.Network{Hostname: "box", Interfaces: []netspec.Interface{{Name: "eth0", Mode: netspec.ModeDHCP}}}
	static := dhcp
	static.DNS = []netip.Addr{netip.MustParseAddr("192.0.2.53")}
	if err := m.ApplyNetwork(ctx, static, []string{"eth0"}); err != nil {
		t.Fatal(err)
	}
	if got := servers(); got != "192.0.2.53" {
		t.Fatalf("configured DNS: resolv.conf lists %q", got)
	}
	if err := m.ApplyNetwork(ctx, dhcp, []string{"eth0"}); err != nil {
		t.Fatal(err)
	}
	waitFor("10.99.0.53")
	// A static address on the interface: its lease, and its DNS, are gone.
	if err := m.ApplyNetwork(ctx, netspec.Network{Hostname: "box", Interfaces: []netspec.Interface{{Name: "eth0", Mode: netspec.ModeStatic,
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.20/24")}}}}, []string{"eth0"}); err != nil {
		t.Fatal(err)
	}
	if got := servers(); got != "" {
		t.Fatalf("static, no DNS configured: resolv.conf lists %q", got)
	}
}
