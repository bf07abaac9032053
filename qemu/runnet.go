package qemu

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RunNet is the network `edgepbx run` gives the guest, so phones on this host
// reach it with UDP as well as TCP. User-mode networking cannot: with
// restrict=on libslirp drops every UDP datagram the guest sends (udp_input
// discards them before looking up the forward's socket), so a forwarded UDP
// port never answers; without restrict the guest reaches everything the host
// does, and one UDP forward answers only its last sender (two phones fight)
// and RTP would need a forward per port.
//
// Instead the guest's NIC is a tap device inside a private network namespace
// that only this process holds (it vanishes when the process exits, even on
// SIGKILL). A veth pair links that namespace to the host, which gets a route
// to the guest's /25 and nothing else; the namespace routes between the two
// under a forward filter: the host may open anything to the guest, the guest
// may open only UDP/TCP to unprivileged ports on the host's veth address (the
// phones), and nothing else. The namespace has no other route, so the guest
// never reaches the host's other networks.
//
// Addresses come from the first 10.213.N.0/24 that overlaps no address or
// route of the host's: host veth .1/30, namespace veth .2/30, namespace tap
// .129/25 (the guest's gateway), guest .130/25.
type RunNet struct {
	// Host is this host's address on the link: phones on the host send
	// from it and the guest reaches them there.
	Host netip.Addr
	// Guest is the appliance's address: SIP, RTP and HTTPS are all there.
	Guest netip.Prefix
	// Gateway is the namespace's address on the tap.
	Gateway netip.Addr
	// HostIf is the host end of the veth pair.
	HostIf string

	ns     *os.File // holds the namespace alive
	nsPath string
}

// Link names inside the namespace.
const (
	runTap    = "tap0"
	runUplink = "uplink"
)

// runNetBase is the /16 the link networks are taken from.
var runNetBase = netip.MustParsePrefix("10.213.0.0/16")

// NewRunNet builds the namespace, the veth pair, the routes and the filter.
// It needs CAP_NET_ADMIN (root). Close removes it all.
func NewRunNet() (_ *RunNet, err error) {
	ns, err := newNetns()
	if err != nil {
		return nil, err
	}
	n := &RunNet{ns: ns, nsPath: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd())}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	nh, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("qemu: run network: netlink in namespace: %w", err)
	}
	defer nh.Close()
	lo, err := nh.LinkByName("lo")
	if err == nil {
		err = nh.LinkSetUp(lo)
	}
	if err != nil {
		return nil, fmt.Errorf("qemu: run network: lo: %w", err)
	}
	if err := n.link(nh); err != nil {
		return nil, err
	}
	if err := inNetns(ns, func() error {
		// Per namespace: routing between the host and the guest happens here.
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
	}); err != nil {
		return nil, fmt.Errorf("qemu: run network: ip_forward: %w", err)
	}
	if err := n.filter(); err != nil {
		return nil, fmt.Errorf("qemu: run network: filter: %w", err)
	}
	return n, nil
}

// link picks a free /24, creates the veth pair and the host's route.
func (n *RunNet) link(nh *netlink.Handle) error {
	used, err := hostPrefixes()
	if err != nil {
		return err
	}
	base := runNetBase.Addr().As4()
	for i := range 256 {
		b := base
		b[2] = byte(i)
		block := netip.PrefixFrom(netip.AddrFrom4(b), 24)
		if overlapsAny(block, used) {
			continue
		}
		at := func(last byte) netip.Addr { a := b; a[3] = last; return netip.AddrFrom4(a) }
		name := fmt.Sprintf("epbx%d", i)
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: name},
			PeerName:      runUplink,
			PeerNamespace: netlink.NsFd(int(n.ns.Fd())),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			if errors.Is(err, syscall.EEXIST) {
				continue // another run holds this block
			}
			return fmt.Errorf("qemu: run network: veth %s: %w", name, err)
		}
		n.HostIf = name
		n.Host, n.Gateway = at(1), at(129)
		n.Guest = netip.PrefixFrom(at(130), 25)
		if err := n.configure(nh, at(2)); err != nil {
			if errors.Is(err, syscall.EEXIST) {
				// A route to this block appeared meanwhile: take the next.
				n.dropHostLink()
				continue
			}
			return err
		}
		return nil
	}
	return errors.New("qemu: run network: no free /24 in " + runNetBase.String())
}

func (n *RunNet) configure(nh *netlink.Handle, peer netip.Addr) error {
	host, err := netlink.LinkByName(n.HostIf)
	if err != nil {
		return fmt.Errorf("qemu: run network: %s: %w", n.HostIf, err)
	}
	if err := netlink.AddrAdd(host, addr(netip.PrefixFrom(n.Host, 30))); err != nil {
		return fmt.Errorf("qemu: run network: address on %s: %w", n.HostIf, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("qemu: run network: %s up: %w", n.HostIf, err)
	}
	up, err := nh.LinkByName(runUplink)
	if err == nil {
		err = nh.AddrAdd(up, addr(netip.PrefixFrom(peer, 30)))
	}
	if err == nil {
		err = nh.LinkSetUp(up)
	}
	if err != nil {
		return fmt.Errorf("qemu: run network: namespace uplink: %w", err)
	}
	if err := netlink.RouteAdd(&netlink.Route{
		LinkIndex: host.Attrs().Index,
		Dst:       ipnet(n.Guest.Masked()),
		Gw:        net.IP(peer.AsSlice()),
	}); err != nil {
		return fmt.Errorf("qemu: run network: route to %s: %w", n.Guest.Masked(), err)
	}
	return nil
}

// configureTap gives the tap QEMU holds its address and brings it up.
func (n *RunNet) configureTap() error {
	nh, err := netlink.NewHandleAt(netns.NsHandle(n.ns.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("qemu: run network: netlink in namespace: %w", err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(runTap)
	if err == nil {
		err = nh.AddrAdd(l, addr(netip.PrefixFrom(n.Gateway, n.Guest.Bits())))
	}
	if err == nil {
		err = nh.LinkSetUp(l)
	}
	if err != nil {
		return fmt.Errorf("qemu: run network: tap: %w", err)
	}
	return nil
}

// filter installs the namespace's forward filter (see RunNet).
func (n *RunNet) filter() error {
	c, err := nftables.New(nftables.WithNetNSFd(int(n.ns.Fd())))
	if err != nil {
		return err
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "edgepbx_run"})
	drop := nftables.ChainPolicyDrop
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	in := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	established := []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
	// The namespace itself serves nothing: only answers come in.
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: established})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: established})
	// The host opens anything to the guest: SIP, RTP, HTTPS.
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: append(between(runUplink, runTap),
		&expr.Verdict{Kind: expr.VerdictAccept})})
	// The guest opens only UDP/TCP to unprivileged ports of the host's link
	// address: INVITEs and RTP to the phones, not the host's own services.
	host := n.Host.As4()
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: append(between(runTap, runUplink),
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: host[:]},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: binaryutil.BigEndian.PutUint16(1024)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		)})
	}
	return c.Flush()
}

// Close removes the host's end (its route goes with it) and lets the
// namespace, the tap and the veth's other end go.
func (n *RunNet) Close() error {
	n.dropHostLink()
	if n.ns != nil {
		err := n.ns.Close()
		n.ns = nil
		return err
	}
	return nil
}

func (n *RunNet) dropHostLink() {
	if n.HostIf == "" {
		return
	}
	if l, err := netlink.LinkByName(n.HostIf); err == nil {
		_ = netlink.LinkDel(l)
	}
	n.HostIf = ""
}

// WithRunNet puts the guest on n (see RunNet): a tap in n's namespace and
// the guest's static address on the kernel command line.
func WithRunNet(n *RunNet) Option {
	return func(c *config) error {
		if n == nil || n.ns == nil {
			return errors.New("qemu: run network closed or missing")
		}
		c.tap = &tapConfig{netns: n.nsPath, name: runTap}
		c.runNet = n
		c.appendArgs = append(c.appendArgs, "edgepbx.ip="+n.Guest.String(), "edgepbx.gw="+n.Gateway.String())
		return nil
	}
}

// newNetns creates a network namespace and returns a file holding it; no
// thread stays in it.
func newNetns() (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			res <- result{nil, fmt.Errorf("qemu: own netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			res <- result{nil, fmt.Errorf("qemu: run network: new network namespace (needs root): %w", err)}
			return
		}
		f, ferr := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and dies with this goroutine.
			if f != nil {
				f.Close()
			}
			res <- result{nil, fmt.Errorf("qemu: return to own netns: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		res <- result{f, ferr}
	}()
	r := <-res
	return r.f, r.err
}

// inNetns runs f on a thread inside ns.
func inNetns(ns *os.File, f func() error) error {
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			res <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			res <- err
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			res <- err // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		res <- ferr
	}()
	return <-res
}

// hostPrefixes are the host's IPv4 addresses and routes (default routes
// aside), which the run network must not overlap.
func hostPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("qemu: run network: host addresses: %w", err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, p)
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("qemu: run network: host routes: %w", err)
	}
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p.Bits() > 0 {
			out = append(out, p)
		}
	}
	return out, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones).Masked(), true
}

func overlapsAny(p netip.Prefix, set []netip.Prefix) bool {
	for _, q := range set {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}

func addr(p netip.Prefix) *netlink.Addr { return &netlink.Addr{IPNet: ipnet(p)} }

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// ifname matches an interface name (nftables compares 16 NUL-padded bytes).
func ifname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

// between matches packets from interface in to interface out.
func between(in, out string) []expr.Any {
	return append(ifname(expr.MetaKeyIIFNAME, in), ifname(expr.MetaKeyOIFNAME, out)...)
}
