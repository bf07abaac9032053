package sipedge

import (
	"context"
	"net"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// TestUDPIgnoresUnjoinedMulticast: provisioning's SIP PnP responder binds
// 224.0.1.75 on the edge's port and joins the group; a phone's multicast
// SUBSCRIBE must reach only it, never the edge's wildcard sockets (which
// would answer it or count it as an attack). The edge's first datagram is
// the unicast one sent after the responder got the multicast one.
func TestUDPIgnoresUnjoinedMulticast(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t)
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMulticastOn(lo); err != nil {
		t.Fatal(err)
	}
	netnstest.LinkUp(t, h, "lo")
	group := net.IPv4(224, 0, 1, 75)
	for _, addr := range []string{":0", "0.0.0.0:0"} { // dual-stack (as ":5060") and IPv4-only
		t.Run(addr, func(t *testing.T) {
			var edge []*net.UDPConn
			var pnp *net.UDPConn
			var send *net.UDPConn
			err := netnstest.Run(ns, func() error {
				var err error
				if edge, err = listenUDP(context.Background(), addr, 1); err != nil {
					return err
				}
				port := edge[0].LocalAddr().(*net.UDPAddr).Port
				if pnp, err = groupSocket(group, port, lo.Attrs().Index); err != nil {
					return err
				}
				send, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					return err
				}
				return ipv4.NewPacketConn(send).SetMulticastInterface(&net.Interface{Index: lo.Attrs().Index})
			})
			if err != nil {
				t.Fatal(err)
			}
			defer pnp.Close()
			defer send.Close()
			for _, c := range edge {
				defer c.Close()
			}
			port := edge[0].LocalAddr().(*net.UDPAddr).Port
			sub := []byte("SUBSCRIBE sip:MAC001565123456@224.0.1.75 SIP/2.0\r\nEvent: ua-profile\r\n\r\n")
			if _, err := send.WriteToUDP(sub, &net.UDPAddr{IP: group, Port: port}); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2048)
			n, _, err := pnp.ReadFromUDP(buf)
			if err != nil || string(buf[:n]) != string(sub) {
				t.Fatalf("PnP socket read %q, %v", buf[:n], err)
			}
			uni := []byte("OPTIONS sip:box SIP/2.0\r\n\r\n")
			if _, err := send.WriteToUDP(uni, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err != nil {
				t.Fatal(err)
			}
			n, _, err = edge[0].ReadFromUDP(buf)
			if err != nil || string(buf[:n]) != string(uni) {
				t.Fatalf("the edge read %q (%v) first, want only the unicast %q", buf[:n], err, uni)
			}
		})
	}
}

// groupSocket is the PnP responder's socket (provision.ListenPnP): bound to
// the group with SO_REUSEPORT, IP_MULTICAST_ALL off, joined on ifindex.
func groupSocket(group net.IP, port, ifindex int) (*net.UDPConn, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "pnp")
	defer f.Close()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0); err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte(group.To4())}); err != nil {
		return nil, err
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, err
	}
	c := pc.(*net.UDPConn)
	if err := ipv4.NewPacketConn(c).JoinGroup(&net.Interface{Index: ifindex}, &net.UDPAddr{IP: group}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
