// Package netconf brings up PID 1's network: lo, then the board's NICs via
// netlink, each static (from the board profile or the kernel command line)
// or by DHCP with the lease renewed in the background. It owns the
// addresses it configures and reports them for the banner.
package netconf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Modes, as in the board profile.
const (
	ModeDHCP   = "dhcp"
	ModeStatic = "static"
)

// NIC is one interface to configure (board.NIC's fields).
type NIC struct {
	Name    string
	Mode    string
	Address string // CIDR, static only
	Gateway string // static only, optional
}

// Cmdline is the static override from the kernel command line:
// edgepbx.ip=ADDR/PFX edgepbx.gw=ADDR. It applies to the first NIC.
type Cmdline struct {
	Addr    netip.Prefix
	Gateway netip.Addr
}

// ParseCmdline reads the edgepbx.ip / edgepbx.gw options from a kernel
// command line. Absent options give a zero Cmdline; malformed ones an error.
func ParseCmdline(s string) (Cmdline, error) {
	if len(s) > 4096 {
		return Cmdline{}, errors.New("kernel command line too long")
	}
	var c Cmdline
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "edgepbx.ip":
			p, err := netip.ParsePrefix(v)
			if err != nil || !p.Addr().Is4() && !p.Addr().Is6() || p.Addr().IsUnspecified() || p.Addr().IsMulticast() || p.Addr().IsLoopback() {
				return Cmdline{}, fmt.Errorf("kernel command line: edgepbx.ip=%q: want a unicast ADDR/PREFIX", v)
			}
			c.Addr = p
		case "edgepbx.gw":
			a, err := netip.ParseAddr(v)
			if err != nil || a.IsUnspecified() || a.IsMulticast() {
				return Cmdline{}, fmt.Errorf("kernel command line: edgepbx.gw=%q: want a unicast address", v)
			}
			c.Gateway = a
		}
	}
	if c.Gateway.IsValid() && !c.Addr.IsValid() {
		return Cmdline{}, errors.New("kernel command line: edgepbx.gw without edgepbx.ip")
	}
	if c.Gateway.IsValid() && !c.Addr.Masked().Contains(c.Gateway) {
		return Cmdline{}, fmt.Errorf("kernel command line: gateway %s outside %s", c.Gateway, c.Addr)
	}
	return c, nil
}

// Apply returns nics with the command-line override applied to the first.
func (c Cmdline) Apply(nics []NIC) []NIC {
	if !c.Addr.IsValid() || len(nics) == 0 {
		return nics
	}
	out := slices.Clone(nics)
	out[0].Mode, out[0].Address, out[0].Gateway = ModeStatic, c.Addr.String(), ""
	if c.Gateway.IsValid() {
		out[0].Gateway = c.Gateway.String()
	}
	return out
}

// Manager configures interfaces in the network namespace it was created in.
type Manager struct {
	h   *netlink.Handle
	ns  netns.NsHandle // the namespace of h, for the DHCP clients' sockets
	log *slog.Logger
	// DHCPTimeout bounds one DHCP exchange attempt.
	DHCPTimeout time.Duration

	// ResolvConf is where ApplyNetwork writes the DNS servers ("": not written).
	ResolvConf string
	// Hostname sets the kernel's host name (nil: not set).
	Hostname func(string) error

	mu    sync.Mutex
	addrs map[string][]netip.Prefix // by interface
	wake  chan struct{}             // closed and replaced when addrs change
	wg    sync.WaitGroup

	// cfgMu serialises reconfiguration; dhcp and vlans are under it.
	cfgMu sync.Mutex
	dhcp  map[string]func() // running DHCP loop per interface: cancels and joins it
	vlans map[string]bool   // VLAN interfaces this manager created

	// dnsMu serialises the resolver file and guards what it is made of:
	// the configured servers, else those the DHCP leases hand out.
	dnsMu     sync.Mutex
	staticDNS []netip.Addr
	leaseDNS  map[string][]netip.Addr // by interface
}

// New opens a netlink handle in the calling thread's network namespace.
func New(log *slog.Logger) (*Manager, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("netconf: current netns: %w", err)
	}
	// Route sockets only: the appliance kernel has no XFRM, and asking for
	// every family fails with EPROTONOSUPPORT.
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netconf: netlink: %w", err)
	}
	return &Manager{h: h, ns: ns, log: log, DHCPTimeout: 3 * time.Second, addrs: map[string][]netip.Prefix{}, wake: make(chan struct{}),
		dhcp: map[string]func(){}, vlans: map[string]bool{}, leaseDNS: map[string][]netip.Addr{}}, nil
}

// Close releases the netlink handle after the DHCP loops ended (cancel
// their context first).
func (m *Manager) Close() {
	m.wg.Wait()
	m.h.Close()
	m.ns.Close()
}

// LoopbackUp brings lo up (the kernel adds 127.0.0.1 and ::1 itself).
func (m *Manager) LoopbackUp() error {
	lo, err := m.h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("netconf: lo: %w", err)
	}
	if err := m.h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("netconf: lo up: %w", err)
	}
	m.setAddrs("lo", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")})
	return nil
}

// Up configures each NIC: static ones before it returns, DHCP ones in
// background loops that run until ctx is done. A NIC that is missing is an
// error for that NIC only: the others still come up.
func (m *Manager) Up(ctx context.Context, nics []NIC) error {
	var errs []error
	for _, n := range nics {
		link, err := m.h.LinkByName(n.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("netconf: %s: %w", n.Name, err))
			continue
		}
		if err := m.h.LinkSetUp(link); err != nil {
			errs = append(errs, fmt.Errorf("netconf: %s up: %w", n.Name, err))
			continue
		}
		switch n.Mode {
		case ModeStatic:
			if err := m.static(link, n); err != nil {
				errs = append(errs, err)
			}
		case ModeDHCP:
			m.cfgMu.Lock()
			m.startDHCP(ctx, link)
			m.cfgMu.Unlock()
		default:
			errs = append(errs, fmt.Errorf("netconf: %s: unknown mode %q", n.Name, n.Mode))
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) static(link netlink.Link, n NIC) error {
	p, err := netip.ParsePrefix(n.Address)
	if err != nil {
		return fmt.Errorf("netconf: %s: address %q: %w", n.Name, n.Address, err)
	}
	if err := m.h.AddrReplace(link, &netlink.Addr{IPNet: ipnet(p)}); err != nil {
		return fmt.Errorf("netconf: %s: add %s: %w", n.Name, p, err)
	}
	if n.Gateway != "" {
		gw, err := netip.ParseAddr(n.Gateway)
		if err != nil {
			return fmt.Errorf("netconf: %s: gateway %q: %w", n.Name, n.Gateway, err)
		}
		if err := m.defaultRoute(link, gw); err != nil {
			return fmt.Errorf("netconf: %s: %w", n.Name, err)
		}
	}
	m.setAddrs(n.Name, []netip.Prefix{p})
	m.log.Info("netconf: static", "nic", n.Name, "addr", p, "gw", n.Gateway)
	return nil
}

func (m *Manager) defaultRoute(link netlink.Link, gw netip.Addr) error {
	dst := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
	if gw.Is6() {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: gw.AsSlice()}
	if err := m.h.RouteReplace(r); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (m *Manager) setAddrs(name string, a []netip.Prefix) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(a) == 0 {
		delete(m.addrs, name)
	} else {
		m.addrs[name] = a
	}
	close(m.wake)
	m.wake = make(chan struct{})
}

// Addresses returns the configured addresses, sorted by interface.
func (m *Manager) Addresses() []netip.Prefix {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.addrs))
	for n := range m.addrs {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []netip.Prefix
	for _, n := range names {
		out = append(out, m.addrs[n]...)
	}
	return out
}

// WaitAddress waits until a non-loopback address is configured or ctx is done.
func (m *Manager) WaitAddress(ctx context.Context) ([]netip.Prefix, error) {
	for {
		m.mu.Lock()
		wake := m.wake
		m.mu.Unlock()
		addrs := m.Addresses()
		for _, a := range addrs {
			if !a.Addr().IsLoopback() {
				return addrs, nil
			}
		}
		select {
		case <-ctx.Done():
			return addrs, ctx.Err()
		case <-wake:
		}
	}
}

// lease is what we apply from an ACK.
type lease struct {
	addr     netip.Prefix
	router   netip.Addr
	duration time.Duration
	renewAt  time.Duration // T1
	dns      []netip.Addr  // at most maxLeaseDNS unicast servers
}

// maxLeaseDNS is how many of a lease's DNS servers are used (the resolver
// reads three).
const maxLeaseDNS = 3

func leaseFrom(ack *dhcpv4.DHCPv4) (lease, error) {
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() {
		return lease{}, fmt.Errorf("dhcp: bad address %v", ack.YourIPAddr)
	}
	mask := ack.SubnetMask()
	bits := 24
	if mask != nil {
		if ones, size := mask.Size(); size == 32 && ones > 0 {
			bits = ones
		}
	}
	l := lease{addr: netip.PrefixFrom(ip, bits)}
	if rs := ack.Router(); len(rs) > 0 {
		if r, ok := netip.AddrFromSlice(rs[0].To4()); ok && l.addr.Masked().Contains(r) {
			l.router = r
		}
	}
	// DNS servers: unicast IPv4 only (a hostile server could point the box
	// at loopback, where edgepbxd itself listens), at most maxLeaseDNS.
	for _, d := range ack.DNS() {
		a, ok := netip.AddrFromSlice(d.To4())
		if !ok || !a.IsGlobalUnicast() || a.IsLinkLocalUnicast() || slices.Contains(l.dns, a) {
			continue
		}
		if l.dns = append(l.dns, a); len(l.dns) == maxLeaseDNS {
			break
		}
	}
	l.duration = ack.IPAddressLeaseTime(time.Hour)
	// Bound hostile or silly lease times.
	l.duration = min(max(l.duration, 10*time.Second), 7*24*time.Hour)
	l.renewAt = ack.IPAddressRenewalTime(l.duration / 2)
	if l.renewAt <= 0 || l.renewAt >= l.duration {
		l.renewAt = l.duration / 2
	}
	return l, nil
}

func (m *Manager) applyLease(link netlink.Link, l lease) error {
	secs := int(l.duration / time.Second)
	a := &netlink.Addr{IPNet: ipnet(l.addr), ValidLft: secs, PreferedLft: secs}
	if err := m.h.AddrReplace(link, a); err != nil {
		return fmt.Errorf("dhcp: add %s: %w", l.addr, err)
	}
	if l.router.IsValid() {
		if err := m.defaultRoute(link, l.router); err != nil {
			return fmt.Errorf("dhcp: %w", err)
		}
	}
	m.setAddrs(link.Attrs().Name, []netip.Prefix{l.addr})
	if err := m.setLeaseDNS(link.Attrs().Name, l.dns); err != nil {
		m.log.Warn("dhcp: DNS servers not written", "nic", link.Attrs().Name, "err", err)
	}
	return nil
}

func (m *Manager) dropLease(link netlink.Link, l lease) {
	m.h.AddrDel(link, &netlink.Addr{IPNet: ipnet(l.addr)})
	m.setAddrs(link.Attrs().Name, nil)
	if err := m.setLeaseDNS(link.Attrs().Name, nil); err != nil {
		m.log.Warn("dhcp: DNS servers not written", "nic", link.Attrs().Name, "err", err)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// dhcpLoop acquires a lease, renews it at T1 and retries until it expires,
// then starts over. It returns when ctx is done.
func (m *Manager) dhcpLoop(ctx context.Context, link netlink.Link) {
	name := link.Attrs().Name
	log := m.log.With("nic", name)
	// nclient4 resolves the interface and opens its packet socket in the
	// calling thread's namespace: pin this goroutine to a thread in ours.
	// The thread is never unlocked, so it exits with the goroutine.
	runtime.LockOSThread()
	if err := netns.Set(m.ns); err != nil {
		log.Error("dhcp: enter netns", "err", err)
		return
	}
	backoff := time.Second
	for ctx.Err() == nil {
		c, err := nclient4.New(name, nclient4.WithTimeout(m.DHCPTimeout), nclient4.WithRetry(2))
		if err != nil {
			log.Warn("dhcp: client", "err", err)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, time.Minute)
			continue
		}
		m.runLease(ctx, c, link, log, &backoff)
		c.Close()
	}
}

func (m *Manager) runLease(ctx context.Context, c *nclient4.Client, link netlink.Link, log *slog.Logger, backoff *time.Duration) {
	nl, err := c.Request(ctx)
	if err != nil {
		log.Warn("dhcp: no lease", "err", err)
		sleep(ctx, *backoff)
		*backoff = min(*backoff*2, time.Minute)
		return
	}
	l, err := leaseFrom(nl.ACK)
	if err == nil {
		err = m.applyLease(link, l)
	}
	if err != nil {
		log.Error("dhcp: lease", "err", err)
		sleep(ctx, *backoff)
		return
	}
	*backoff = time.Second
	log.Info("dhcp: lease", "addr", l.addr, "router", l.router, "lease", l.duration)
	expires := time.Now().Add(l.duration)
	wait := l.renewAt
	for {
		if !sleep(ctx, wait) {
			return
		}
		renewed, err := c.Renew(ctx, nl)
		if err == nil {
			nl2, err2 := leaseFrom(renewed.ACK)
			if err2 == nil && nl2.addr == l.addr {
				if err := m.applyLease(link, nl2); err == nil {
					nl, l = renewed, nl2
					expires = time.Now().Add(l.duration)
					wait = l.renewAt
					log.Debug("dhcp: renewed", "addr", l.addr, "lease", l.duration)
					continue
				}
			}
			err = errors.Join(err2, errors.New("renewal ACK not applied (address changed or netlink error)"))
		}
		left := time.Until(expires)
		log.Warn("dhcp: renew failed", "err", err, "left", left)
		if left <= 2*time.Second {
			m.dropLease(link, l)
			return // start over with a new DISCOVER
		}
		wait = max(left/2, time.Second)
	}
}
