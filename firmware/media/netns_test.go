package media

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/qemu/netnstest"

	"github.com/edgepbx/edgepbx/netfw"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The pinhole lab: a "box" network namespace running netfw (real nftables)
// and the relay, and three hosts each behind its own veth pair: phone A,
// phone B and a third host that knows the relay's ports but is not in the
// call. Nothing here touches the test process's own namespace or ruleset.

var (
	nsBoxA   = netip.MustParseAddr("10.77.1.1") // the relay's media address
	nsPhoneA = netip.MustParseAddr("10.77.1.2")
	nsPhoneB = netip.MustParseAddr("10.77.2.2")
	nsThird  = netip.MustParseAddr("10.77.3.2")
	nsLinks  = []struct {
		name, boxIf, box, host, gw string
	}{
		{"phoneA", "pa0", "10.77.1.1/24", "10.77.1.2/24", "10.77.1.1"},
		{"phoneB", "pb0", "10.77.2.1/24", "10.77.2.2/24", "10.77.2.1"},
		{"third", "th0", "10.77.3.1/24", "10.77.3.2/24", "10.77.3.1"},
	}
)

type pinLab struct {
	tb    testing.TB
	box   netns.NsHandle
	hosts map[string]netns.NsHandle
	fw    *netfw.Firewall
}

func newPinLab(tb testing.TB) *pinLab {
	tb.Helper()
	netnstest.Require(tb, "nft", "nsenter")
	l := &pinLab{tb: tb, hosts: map[string]netns.NsHandle{}, box: netnstest.New(tb)}
	boxH, err := netlink.NewHandleAt(l.box)
	if err != nil {
		tb.Fatal(err)
	}
	defer boxH.Close()
	netnstest.LinkUp(tb, boxH, "lo")
	for _, ln := range nsLinks {
		h := netnstest.New(tb)
		l.hosts[ln.name] = h
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ln.boxIf}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(h))}
		if err := boxH.LinkAdd(veth); err != nil {
			tb.Fatalf("veth %s: %v", ln.boxIf, err)
		}
		netnstest.LinkUp(tb, boxH, ln.boxIf, ln.box)
		hh, err := netlink.NewHandleAt(h)
		if err != nil {
			tb.Fatal(err)
		}
		netnstest.LinkUp(tb, hh, "lo")
		netnstest.LinkUp(tb, hh, "eth0", ln.host)
		// Every host reaches the relay's address (on phone A's link)
		// through the box.
		if err := hh.RouteAdd(&netlink.Route{Gw: net.ParseIP(ln.gw)}); err != nil {
			tb.Fatalf("default route in %s: %v", ln.name, err)
		}
		hh.Close()
	}
	quiet := slog.New(slog.DiscardHandler)
	l.fw, err = netfw.New(netfw.WithNetNS(int(l.box)), netfw.WithLogger(quiet))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.fw.Close() })
	// The boot policy: RTP 10000-20000 reachable only through pinholes.
	if err := l.fw.Apply(netfw.DefaultPolicy()); err != nil {
		tb.Fatal(err)
	}
	return l
}

// nft runs the nft tool inside the box namespace.
func (l *pinLab) nft(args ...string) string {
	l.tb.Helper()
	return netnstest.Nft(l.tb, l.box, args...)
}

var reNftPin = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+) \. (\d+)`)

// pinSet lists the kernel's IPv4 pinhole set as sorted "addr:port".
func (l *pinLab) pinSet() []string {
	l.tb.Helper()
	out := l.nft("list", "set", "inet", "edgepbx", "pin_4")
	if !bytes.Contains([]byte(out), []byte("set pin_4")) {
		l.tb.Fatalf("nft did not list pin_4:\n%s", out)
	}
	var got []string
	for _, m := range reNftPin.FindAllStringSubmatch(out, -1) {
		got = append(got, m[1]+":"+m[2])
	}
	slices.Sort(got)
	return got
}

// dropped returns the kernel's count of RTP packets dropped for want of a
// pinhole.
func (l *pinLab) dropped() uint64 {
	l.tb.Helper()
	c, err := l.fw.Counters()
	if err != nil {
		l.tb.Fatal(err)
	}
	for _, r := range c.Rules {
		if r.Name == "rtp-closed" {
			return r.Packets
		}
	}
	l.tb.Fatalf("no rtp-closed rule in %+v", c.Rules)
	return 0
}

// waitDropped waits until the kernel has dropped n more packets than
// before. The deadline only stops a broken test from hanging.
func (l *pinLab) waitDropped(before, n uint64) {
	l.tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.dropped() < before+n {
		if time.Now().After(deadline) {
			l.tb.Fatalf("kernel dropped %d RTP packets, want %d", l.dropped()-before, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := l.dropped() - before; got != n {
		l.tb.Fatalf("kernel dropped %d RTP packets, want exactly %d", got, n)
	}
}

// fwPinholes adapts the in-process Firewall (no contexts) to Pinholes.
type fwPinholes struct{ fw *netfw.Firewall }

func (p fwPinholes) OpenPinhole(_ context.Context, ph netfw.Pinhole) error {
	return p.fw.OpenPinhole(ph)
}

func (p fwPinholes) ClosePinhole(_ context.Context, ph netfw.Pinhole) error {
	return p.fw.ClosePinhole(ph)
}

// nsPhone is an RTP/RTCP socket pair in one host namespace.
type nsPhone struct {
	tb        testing.TB
	addr      netip.Addr
	rtp, rtcp *net.UDPConn
}

func (l *pinLab) phone(host string, addr netip.Addr, port uint16) *nsPhone {
	l.tb.Helper()
	p := &nsPhone{tb: l.tb, addr: addr}
	err := netnstest.Run(l.hosts[host], func() error {
		var err error
		if p.rtp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port))); err != nil {
			return err
		}
		p.rtcp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port+1)))
		return err
	})
	if err != nil {
		l.tb.Fatalf("phone %s: %v", host, err)
	}
	l.tb.Cleanup(func() { p.rtp.Close(); p.rtcp.Close() })
	return p
}

// sdp is what the phone would offer: plain RTP, RTCP on the next port.
func (p *nsPhone) sdp() []byte {
	port := p.rtp.LocalAddr().(*net.UDPAddr).Port
	return fmt.Appendf(nil, "v=0\r\no=- 1 1 IN IP4 %[1]s\r\ns=-\r\nc=IN IP4 %[1]s\r\nt=0 0\r\n"+
		"m=audio %[2]d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", p.addr, port)
}

func nsSend(tb testing.TB, c *net.UDPConn, port uint16, b []byte) {
	tb.Helper()
	if _, err := c.WriteToUDPAddrPort(b, netip.AddrPortFrom(nsBoxA, port)); err != nil {
		tb.Fatal(err)
	}
}

// nsRecv reads the next datagram; the deadline only stops a broken test
// from hanging.
func nsRecv(tb testing.TB, c *net.UDPConn) ([]byte, netip.AddrPort) {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 2048)
	n, from, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		tb.Fatalf("recv on %v: %v", c.LocalAddr(), err)
	}
	return b[:n], from
}

// TestPinholesLiveForTheCall runs the relay in the box namespace with
// netfw's real nftables ruleset and checks with real UDP that the call's
// pinholes, and only they, exist while the call is up and are gone after.
func TestPinholesLiveForTheCall(t *testing.T) {
	l := newPinLab(t)
	if got := l.pinSet(); len(got) != 0 {
		t.Fatalf("pinholes before any call: %v", got)
	}
	ports, err := NewPorts(10000, 10099)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	r, err := NewRelay(Config{Addr: nsBoxA, Ports: ports, Pinholes: fwPinholes{l.fw}, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var call *Call
	if err := netnstest.Run(l.box, func() error {
		var err error
		call, err = r.NewCall("netns")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer call.Close()

	a := l.phone("phoneA", nsPhoneA, 40000)
	b := l.phone("phoneB", nsPhoneB, 40002)
	third := l.phone("third", nsThird, 40004)
	ctx := context.Background()
	for _, x := range []struct {
		side Side
		p    *nsPhone
	}{{A, a}, {B, b}} {
		_, rem, err := ParseSDP(x.p.sdp())
		if err != nil {
			t.Fatal(err)
		}
		if err := call.SetPeer(ctx, x.side, PeerFrom(rem)); err != nil {
			t.Fatal(err)
		}
	}
	pa, pb := call.LocalPort(A), call.LocalPort(B)

	// While the call is up the kernel holds exactly its four pinholes.
	want := []string{
		fmt.Sprintf("%s:%d", nsPhoneA, pa), fmt.Sprintf("%s:%d", nsPhoneA, pa+1),
		fmt.Sprintf("%s:%d", nsPhoneB, pb), fmt.Sprintf("%s:%d", nsPhoneB, pb+1),
	}
	slices.Sort(want)
	if got := l.pinSet(); !slices.Equal(got, want) {
		t.Fatalf("pin_4 during the call = %v, want %v", got, want)
	}
	var fromCall []string
	for _, ph := range call.Pinholes() {
		fromCall = append(fromCall, fmt.Sprintf("%s:%d", ph.Remote, ph.LocalPort))
	}
	slices.Sort(fromCall)
	if !slices.Equal(fromCall, want) {
		t.Fatalf("call.Pinholes() = %v, want %v", fromCall, want)
	}

	// RTP and RTCP both ways, through the firewall and the relay.
	for i := range 20 {
		p := rtpPacket(t, uint16(100+i), payload(i))
		nsSend(t, a.rtp, pa, p)
		if got, from := nsRecv(t, b.rtp); !bytes.Equal(got, p) || from != netip.AddrPortFrom(nsBoxA, pb) {
			t.Fatalf("A→B packet %d: %d bytes from %v", i, len(got), from)
		}
		p = rtpPacket(t, uint16(500+i), payload(i+1))
		nsSend(t, b.rtp, pb, p)
		if got, from := nsRecv(t, a.rtp); !bytes.Equal(got, p) || from != netip.AddrPortFrom(nsBoxA, pa) {
			t.Fatalf("B→A packet %d: %d bytes from %v", i, len(got), from)
		}
	}
	sr := []byte{0x80, 200, 0, 6, 0, 0, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24}
	nsSend(t, a.rtcp, pa+1, sr)
	if got, from := nsRecv(t, b.rtcp); !bytes.Equal(got, sr) || from != netip.AddrPortFrom(nsBoxA, pb+1) {
		t.Fatalf("RTCP A→B: %d bytes from %v", len(got), from)
	}

	// The third host sends to all four media ports: the kernel drops every
	// packet (counted by the rtp-closed rule) and the relay sees none.
	before := l.dropped()
	for i, port := range []uint16{pa, pa + 1, pb, pb + 1} {
		nsSend(t, third.rtp, port, rtpPacket(t, uint16(900+i), payload(i)))
		nsSend(t, third.rtcp, port, rtpPacket(t, uint16(950+i), payload(i)))
	}
	l.waitDropped(before, 8)
	// Media still flows after the attempt.
	p := rtpPacket(t, 120, payload(3))
	nsSend(t, a.rtp, pa, p)
	if got, _ := nsRecv(t, b.rtp); !bytes.Equal(got, p) {
		t.Fatal("A→B broken after the third host's packets")
	}
	st := call.Stats()
	for _, s := range []Side{A, B} {
		if ls := st.Legs[s]; ls.DroppedSource != 0 || ls.DroppedMalformed != 0 {
			t.Errorf("leg %s: relay saw packets from a stranger: %+v", s, ls)
		}
	}
	if st.Legs[A].Received != 22 || st.Legs[B].Received != 20 {
		t.Errorf("relay received A=%d B=%d, want exactly the phones' 22 and 20", st.Legs[A].Received, st.Legs[B].Received)
	}

	// After the call the set is empty and the phones' media is dropped in
	// the kernel.
	if err := call.Close(); err != nil {
		t.Fatal(err)
	}
	if got := l.pinSet(); len(got) != 0 {
		t.Fatalf("pin_4 after the call = %v, want empty", got)
	}
	before = l.dropped()
	nsSend(t, a.rtp, pa, rtpPacket(t, 121, payload(4)))
	nsSend(t, a.rtcp, pa+1, sr)
	nsSend(t, b.rtp, pb, rtpPacket(t, 521, payload(5)))
	nsSend(t, b.rtcp, pb+1, sr)
	l.waitDropped(before, 4)
}
