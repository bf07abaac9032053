package netfw

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/qemu/netnstest"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The lab: a "box" network namespace running the firewall, connected by
// veth pairs to three host namespaces (phones, trunk, internet). Nothing
// here touches the test process's own namespace or ruleset.

const (
	hostPhones   = "phones"
	hostTrunk    = "trunk"
	hostInternet = "internet"
)

// Addresses of the lab. The box has .1 / ::1 on each link.
var (
	boxPhone4 = netip.MustParseAddr("10.1.0.1")
	boxPhone6 = netip.MustParseAddr("fd00:1::1")
	boxTrunk4 = netip.MustParseAddr("198.51.100.1")
	boxInet4  = netip.MustParseAddr("203.0.113.1")
	boxInet6  = netip.MustParseAddr("2001:db8:3::1")
	phone4    = netip.MustParseAddr("10.1.0.2")
	phone4b   = netip.MustParseAddr("10.1.0.3")
	phone6    = netip.MustParseAddr("fd00:1::2")
	trunk4    = netip.MustParseAddr("198.51.100.2")
	trunk6    = netip.MustParseAddr("2001:db8:2::2")
	inet4     = netip.MustParseAddr("203.0.113.2")
	inet4b    = netip.MustParseAddr("203.0.113.3")
	inet6     = netip.MustParseAddr("2001:db8:3::2")
	labLinks  = []labLink{
		{host: hostPhones, boxIf: "ph0", box: []string{"10.1.0.1/24", "fd00:1::1/64"}, peer: []string{"10.1.0.2/24", "10.1.0.3/24", "fd00:1::2/64"}},
		{host: hostTrunk, boxIf: "tr0", box: []string{"198.51.100.1/24", "2001:db8:2::1/64"}, peer: []string{"198.51.100.2/24", "2001:db8:2::2/64"}},
		{host: hostInternet, boxIf: "in0", box: []string{"203.0.113.1/24", "2001:db8:3::1/64"}, peer: []string{"203.0.113.2/24", "203.0.113.3/24", "2001:db8:3::2/64"}},
	}
)

type labLink struct {
	host, boxIf string
	box, peer   []string
}

type lab struct {
	tb    testing.TB
	box   netns.NsHandle
	hosts map[string]netns.NsHandle
	srv   *servers
}

func newLab(tb testing.TB) *lab {
	tb.Helper()
	netnstest.Require(tb, "nft", "nsenter")
	l := &lab{tb: tb, hosts: map[string]netns.NsHandle{}, box: netnstest.New(tb)}
	boxH, err := netlink.NewHandleAt(l.box)
	if err != nil {
		tb.Fatal(err)
	}
	defer boxH.Close()
	netnstest.LinkUp(tb, boxH, "lo")
	for _, ll := range labLinks {
		h := netnstest.New(tb)
		l.hosts[ll.host] = h
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ll.boxIf}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(h))}
		if err := boxH.LinkAdd(veth); err != nil {
			tb.Fatalf("veth %s: %v", ll.boxIf, err)
		}
		netnstest.LinkUp(tb, boxH, ll.boxIf, ll.box...)
		hh, err := netlink.NewHandleAt(h)
		if err != nil {
			tb.Fatal(err)
		}
		netnstest.LinkUp(tb, hh, "lo")
		netnstest.LinkUp(tb, hh, "eth0", ll.peer...)
		hh.Close()
	}
	l.srv = startServers(tb, l.box)
	return l
}

// firewall returns a Firewall managing the box namespace.
func (l *lab) firewall(opts ...Option) *Firewall {
	l.tb.Helper()
	quiet := slog.New(slog.DiscardHandler)
	fw, err := New(append([]Option{WithNetNS(int(l.box)), WithLogger(quiet)}, opts...)...)
	if err != nil {
		l.tb.Fatal(err)
	}
	l.tb.Cleanup(func() { fw.Close() })
	return fw
}

// nft runs the nft tool inside the box namespace.
func (l *lab) nft(args ...string) string {
	l.tb.Helper()
	return netnstest.Nft(l.tb, l.box, args...)
}

// servers listen in the box: UDP echo on SIP and a few RTP ports, TCP on
// the SIP/HTTPS ports. They count UDP packets per source.
type servers struct {
	mu   sync.Mutex
	seen map[netip.Addr]int
}

var (
	udpPorts = []int{5060, 10000, 10001, 10002}
	tcpPorts = []int{22, 443, 5060, 5061, 8080}
)

func startServers(tb testing.TB, box netns.NsHandle) *servers {
	s := &servers{seen: map[netip.Addr]int{}}
	err := netnstest.Run(box, func() error {
		for _, p := range udpPorts {
			c, err := net.ListenUDP("udp", &net.UDPAddr{Port: p})
			if err != nil {
				return err
			}
			tb.Cleanup(func() { c.Close() })
			go s.echo(c)
		}
		for _, p := range tcpPorts {
			ln, err := net.ListenTCP("tcp", &net.TCPAddr{Port: p})
			if err != nil {
				return err
			}
			tb.Cleanup(func() { ln.Close() })
			go func() {
				var held []net.Conn // kept open so ct count sees them
				defer func() {
					for _, c := range held {
						c.Close()
					}
				}()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("hi"))
					held = append(held, c)
				}
			}()
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("servers: %v", err)
	}
	return s
}

func (s *servers) echo(c *net.UDPConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		src := from.Addr().Unmap()
		s.mu.Lock()
		s.seen[src]++
		s.mu.Unlock()
		if n > 0 && buf[0] == 'q' { // flood packets want no reply
			continue
		}
		c.WriteToUDPAddrPort(buf[:n], from)
	}
}

func (s *servers) count(a netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[a]
}

// Probe timeouts: a reply normally comes in well under a millisecond; the
// negative timeout only has to outlast that. Drops are additionally proven
// by counters where a test needs certainty.
const (
	replyWait = 2 * time.Second
	dropWait  = 250 * time.Millisecond
)

// udpProbe sends one datagram from src (in host's namespace) to dst:port
// and reports whether the echo came back.
func (l *lab) udpProbe(host string, src, dst netip.Addr, port uint16, wait time.Duration) bool {
	l.tb.Helper()
	var got bool
	err := netnstest.Run(l.hosts[host], func() error {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.WriteToUDPAddrPort([]byte("ping"), netip.AddrPortFrom(dst, port)); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 64)
		n, _, err := c.ReadFromUDPAddrPort(buf)
		got = err == nil && string(buf[:n]) == "ping"
		return nil
	})
	if err != nil {
		l.tb.Fatalf("udp probe %s→%s:%d: %v", src, dst, port, err)
	}
	return got
}

// tcpProbe dials dst:port from src and classifies the outcome: "open",
// "refused" (an RST came back) or "silent" (timed out).
func (l *lab) tcpProbe(host string, src, dst netip.Addr, port uint16, wait time.Duration) string {
	l.tb.Helper()
	var res string
	err := netnstest.Run(l.hosts[host], func() error {
		d := net.Dialer{Timeout: wait, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		c, err := d.Dial("tcp", netip.AddrPortFrom(dst, port).String())
		switch {
		case err == nil:
			c.Close()
			res = "open"
		case errors.Is(err, unix.ECONNREFUSED):
			res = "refused"
		case errors.Is(err, os.ErrDeadlineExceeded) || strings.Contains(err.Error(), "timeout"):
			res = "silent"
		default:
			return err
		}
		return nil
	})
	if err != nil {
		l.tb.Fatalf("tcp probe %s→%s:%d: %v", src, dst, port, err)
	}
	return res
}

// counter returns the packet counter of a named rule.
func counter(tb testing.TB, fw *Firewall, name string) uint64 {
	tb.Helper()
	c, err := fw.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	for _, r := range c.Rules {
		if r.Name == name {
			return r.Packets
		}
	}
	tb.Fatalf("no rule %q in %+v", name, c.Rules)
	return 0
}

// labPolicy: phones get SIP and HTTPS admin, trunks get SIP and SIP-TLS,
// the internet gets nothing.
func labPolicy() Policy {
	p := DefaultPolicy()
	p.Zones = []Zone{
		{Name: "phones", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("fd00:1::/64")}},
		{Name: "trunks", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:2::/64")}},
	}
	p.Rules = []Rule{
		{Service: SvcSIPUDP, Zones: []string{"phones", "trunks"}},
		{Service: SvcSIPTCP, Zones: []string{"phones"}},
		{Service: SvcSIPTLS, Zones: []string{"trunks"}},
		{Service: SvcHTTPS, Zones: []string{"phones"}},
	}
	p.Allowlist = []string{"trunks"}
	return p
}
