package qemu

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// guestStandIn puts a veth where QEMU's tap would be: its "tap0" end in the
// run network's namespace, the other end ("guest0", the guest's NIC with
// its address and default route) in a namespace of its own.
func guestStandIn(t *testing.T, n *RunNet) *os.File {
	t.Helper()
	g, err := newNetns()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	if err := netlink.LinkAdd(&netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: runTap, Namespace: netlink.NsFd(int(n.ns.Fd()))},
		PeerName:      "guest0",
		PeerNamespace: netlink.NsFd(int(g.Fd())),
	}); err != nil {
		t.Fatal(err)
	}
	if err := n.configureTap(); err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(g.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, name := range []string{"lo", "guest0"} {
		l, err := h.LinkByName(name)
		if err == nil && name == "guest0" {
			err = h.AddrAdd(l, addr(n.Guest))
		}
		if err == nil {
			err = h.LinkSetUp(l)
		}
		if err != nil {
			t.Fatalf("guest %s: %v", name, err)
		}
	}
	gw := n.Gateway
	if err := h.RouteAdd(&netlink.Route{Gw: net.IP(gw.AsSlice())}); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestRunNet checks the run network's paths: the host reaches the guest on
// any port; the guest reaches the host's link address only with UDP/TCP to
// unprivileged ports (phones), and nothing of the host's other networks.
func TestRunNet(t *testing.T) {
	n, err := NewRunNet()
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("needs root: %v", err)
		}
		t.Fatal(err)
	}
	defer n.Close()
	if !runNetBase.Contains(n.Guest.Addr()) || !n.Guest.Contains(n.Gateway) || n.Guest.Contains(n.Host) {
		t.Fatalf("addresses: host %s guest %s gateway %s", n.Host, n.Guest, n.Gateway)
	}
	// A second run network (another `edgepbx run`, a parallel test) takes
	// another block.
	n2, err := NewRunNet()
	if err != nil {
		t.Fatal(err)
	}
	if n2.Guest.Overlaps(n.Guest) || n2.HostIf == n.HostIf {
		t.Errorf("second run network %s on %s overlaps %s on %s", n2.Guest, n2.HostIf, n.Guest, n.HostIf)
	}
	n2.Close()
	if _, err := netlink.LinkByName(n2.HostIf); err == nil && n2.HostIf != "" {
		t.Errorf("Close left %s", n2.HostIf)
	}

	g := guestStandIn(t, n)
	inGuest := func(f func() error) {
		t.Helper()
		if err := inNetns(g, f); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("host opens the guest's ports", func(t *testing.T) {
		var l net.Listener
		inGuest(func() (err error) {
			l, err = net.Listen("tcp", net.JoinHostPort(n.Guest.Addr().String(), "5061"))
			return
		})
		defer l.Close()
		c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatalf("host to guest TCP 5061: %v", err)
		}
		c.Close()
		var u net.PacketConn
		inGuest(func() (err error) {
			u, err = net.ListenPacket("udp", net.JoinHostPort(n.Guest.Addr().String(), "5060"))
			return
		})
		defer u.Close()
		hc, err := net.Dial("udp", u.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer hc.Close()
		if _, err := hc.Write([]byte("REGISTER")); err != nil {
			t.Fatal(err)
		}
		// The guest answers from its port to the phone's: the reply must
		// come back (the UDP path slirp's restrict=on breaks).
		buf := make([]byte, 64)
		u.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, from, err := u.ReadFrom(buf)
		if err != nil {
			t.Fatalf("guest got no UDP from the host: %v", err)
		}
		if got := from.(*net.UDPAddr).IP.String(); got != n.Host.String() {
			t.Errorf("guest sees the phone at %s, want %s (routed, not NATed)", got, n.Host)
		}
		if _, err := u.WriteTo([]byte("SIP/2.0 401"), from); err != nil {
			t.Fatal(err)
		}
		hc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := hc.Read(buf); err != nil {
			t.Fatalf("host got no UDP answer from the guest: %v", err)
		}
	})

	// guestSends sends a UDP datagram from the guest to dst and reports
	// whether a host socket bound to the wildcard address got it.
	guestSends := func(t *testing.T, dst netip.Addr, port int) bool {
		t.Helper()
		l, err := net.ListenPacket("udp4", ":"+strconv.Itoa(port))
		if err != nil {
			t.Skipf("host port %d: %v", port, err)
		}
		defer l.Close()
		var c net.Conn
		inGuest(func() (err error) {
			c, err = net.Dial("udp", net.JoinHostPort(dst.String(), strconv.Itoa(port)))
			return
		})
		defer c.Close()
		for range 3 {
			c.Write([]byte("probe"))
		}
		// A negative result needs a wait: the datagram is dropped silently.
		l.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _, err = l.ReadFrom(make([]byte, 64))
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			t.Fatal(err)
		}
		return err == nil
	}

	t.Run("guest reaches a phone on the host", func(t *testing.T) {
		if !guestSends(t, n.Host, freeUDPPort(t)) {
			t.Error("guest UDP to the host's link address, unprivileged port: not delivered")
		}
	})
	t.Run("guest does not reach the host's privileged ports", func(t *testing.T) {
		if guestSends(t, n.Host, 999) {
			t.Error("guest UDP to the host's port 999 delivered")
		}
	})
	t.Run("guest does not reach the host's other networks", func(t *testing.T) {
		other := otherHostAddr(t, n)
		if !other.IsValid() {
			t.Skip("the host has no other IPv4 address")
		}
		if guestSends(t, other, freeUDPPort(t)) {
			t.Errorf("guest UDP to the host's address %s delivered", other)
		}
	})
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// otherHostAddr is an IPv4 address of the host's outside the run network
// and loopback, or none.
func otherHostAddr(t *testing.T, n *RunNet) netip.Addr {
	t.Helper()
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		if ok && !ip.IsLoopback() && !runNetBase.Overlaps(p) {
			return ip
		}
	}
	return netip.Addr{}
}
