package netconf

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/init/atomicfile"
	"github.com/edgepbx/edgepbx/init/netconf/netspec"
)

// startDHCP runs a DHCP loop on link until ctx is done or the interface is
// reconfigured. Callers hold cfgMu.
func (m *Manager) startDHCP(ctx context.Context, link netlink.Link) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(done)
		m.dhcpLoop(ctx, link)
	}()
	m.dhcp[link.Attrs().Name] = func() { cancel(); <-done }
}

// stopDHCP ends the DHCP loop of an interface, if one runs. Callers hold cfgMu.
func (m *Manager) stopDHCP(name string) {
	if stop, ok := m.dhcp[name]; ok {
		stop()
		delete(m.dhcp, name)
		if err := m.setLeaseDNS(name, nil); err != nil {
			m.log.Warn("netconf: DNS servers not written", "nic", name, "err", err)
		}
	}
}

// ApplyNetwork makes the interfaces, VLANs, DNS servers and host name what
// n says (PID 1 validated n first). NICs that n does not name are left
// without addresses; VLANs this manager created that n drops are deleted.
// DHCP loops run under ctx. It applies as much as it can and returns every
// error: the committer then re-applies the configuration it came from.
func (m *Manager) ApplyNetwork(ctx context.Context, n netspec.Network, nics []string) error {
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	var errs []error
	want := map[string]netspec.Interface{}
	for _, it := range n.Interfaces {
		want[it.Name] = it
	}
	// VLANs first down: their parents are about to change.
	wantVLAN := map[string]netspec.VLAN{}
	for _, v := range n.VLANs {
		wantVLAN[v.Name()] = v
	}
	for name := range m.vlans {
		if _, ok := wantVLAN[name]; ok {
			continue
		}
		m.stopDHCP(name)
		if l, err := m.h.LinkByName(name); err == nil {
			if err := m.h.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("netconf: delete %s: %w", name, err))
				continue
			}
		}
		delete(m.vlans, name)
		m.setAddrs(name, nil)
	}
	for _, name := range nics {
		it, ok := want[name]
		if !ok {
			it = netspec.Interface{Name: name} // not named: no addresses
		}
		if err := m.configure(ctx, name, it.Mode, it.Addresses, it.Gateway4, it.Gateway6); err != nil {
			errs = append(errs, err)
		}
	}
	for _, v := range n.VLANs {
		if err := m.ensureVLAN(v); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := m.configure(ctx, v.Name(), v.Mode, v.Addresses, netip.Addr{}, netip.Addr{}); err != nil {
			errs = append(errs, err)
		}
	}
	if m.Hostname != nil && n.Hostname != "" {
		if err := m.Hostname(n.Hostname); err != nil {
			errs = append(errs, fmt.Errorf("netconf: hostname: %w", err))
		}
	}
	if err := m.setStaticDNS(n.DNS); err != nil {
		errs = append(errs, err)
	}
	m.log.Info("netconf: network applied", "interfaces", len(n.Interfaces), "vlans", len(n.VLANs), "dns", len(n.DNS), "errors", len(errs))
	return errors.Join(errs...)
}

func (m *Manager) ensureVLAN(v netspec.VLAN) error {
	parent, err := m.h.LinkByName(v.Parent)
	if err != nil {
		return fmt.Errorf("netconf: vlan %s: parent: %w", v.Name(), err)
	}
	if l, err := m.h.LinkByName(v.Name()); err == nil {
		vl, ok := l.(*netlink.Vlan)
		if !ok || vl.VlanId != int(v.ID) || vl.ParentIndex != parent.Attrs().Index {
			return fmt.Errorf("netconf: vlan %s: an interface of that name exists and is not this VLAN", v.Name())
		}
	} else {
		vl := &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: v.Name(), ParentIndex: parent.Attrs().Index}, VlanId: int(v.ID)}
		if err := m.h.LinkAdd(vl); err != nil {
			return fmt.Errorf("netconf: vlan %s: %w", v.Name(), err)
		}
	}
	m.vlans[v.Name()] = true
	return nil
}

// configure sets one interface to mode: it stops its DHCP loop, removes
// its global addresses and default routes, then adds the static ones or
// starts DHCP. An empty mode leaves it without addresses.
func (m *Manager) configure(ctx context.Context, name, mode string, addrs []netip.Prefix, gw4, gw6 netip.Addr) error {
	link, err := m.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("netconf: %s: %w", name, err)
	}
	m.stopDHCP(name)
	if err := m.flush(link); err != nil {
		return err
	}
	m.setAddrs(name, nil)
	if mode == "" {
		return nil
	}
	if err := m.h.LinkSetUp(link); err != nil {
		return fmt.Errorf("netconf: %s up: %w", name, err)
	}
	switch mode {
	case netspec.ModeDHCP:
		m.startDHCP(ctx, link)
		return nil
	case netspec.ModeStatic:
		var errs []error
		var ok []netip.Prefix
		for _, p := range addrs {
			a := &netlink.Addr{IPNet: ipnet(p)}
			if p.Addr().Is6() {
				// Usable at once: the admin confirms over it within the window.
				a.Flags = unix.IFA_F_NODAD
			}
			if err := m.h.AddrReplace(link, a); err != nil {
				errs = append(errs, fmt.Errorf("netconf: %s: add %s: %w", name, p, err))
				continue
			}
			ok = append(ok, p)
		}
		for _, gw := range []netip.Addr{gw4, gw6} {
			if gw.IsValid() {
				if err := m.defaultRoute(link, gw); err != nil {
					errs = append(errs, fmt.Errorf("netconf: %s: %w", name, err))
				}
			}
		}
		m.setAddrs(name, ok)
		m.log.Info("netconf: static", "nic", name, "addrs", ok, "gw4", gw4, "gw6", gw6)
		return errors.Join(errs...)
	}
	return fmt.Errorf("netconf: %s: unknown mode %q", name, mode)
}

// flush removes an interface's global addresses (IPv6 link-local stays:
// the kernel owns it) and its default routes.
func (m *Manager) flush(link netlink.Link) error {
	name := link.Attrs().Name
	as, err := m.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("netconf: %s: list addresses: %w", name, err)
	}
	for _, a := range as {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		if err := m.h.AddrDel(link, &a); err != nil {
			return fmt.Errorf("netconf: %s: remove %s: %w", name, a.IPNet, err)
		}
	}
	rs, err := m.h.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("netconf: %s: list routes: %w", name, err)
	}
	for _, r := range rs {
		if r.Gw == nil || r.Dst != nil && !isDefault(r.Dst) {
			continue
		}
		if err := m.h.RouteDel(&r); err != nil {
			return fmt.Errorf("netconf: %s: remove default route: %w", name, err)
		}
	}
	return nil
}

func isDefault(d *net.IPNet) bool {
	ones, _ := d.Mask.Size()
	return ones == 0
}

// setStaticDNS makes dns the box's DNS servers; empty: those of the DHCP
// leases.
func (m *Manager) setStaticDNS(dns []netip.Addr) error {
	m.dnsMu.Lock()
	defer m.dnsMu.Unlock()
	m.staticDNS = slices.Clone(dns)
	return m.writeDNSLocked()
}

// setLeaseDNS records the DNS servers of nic's lease (nil: none) and
// rewrites the resolver file when they are the ones in use.
func (m *Manager) setLeaseDNS(nic string, dns []netip.Addr) error {
	m.dnsMu.Lock()
	defer m.dnsMu.Unlock()
	if slices.Equal(m.leaseDNS[nic], dns) {
		return nil
	}
	if len(dns) == 0 {
		delete(m.leaseDNS, nic)
	} else {
		m.leaseDNS[nic] = slices.Clone(dns)
	}
	if len(m.staticDNS) > 0 {
		return nil
	}
	return m.writeDNSLocked()
}

// DNS is the list of DNS servers in use: the configured ones, else the
// leases' (by interface name, without repeats, at most maxLeaseDNS).
func (m *Manager) DNS() []netip.Addr {
	m.dnsMu.Lock()
	defer m.dnsMu.Unlock()
	return m.dnsLocked()
}

func (m *Manager) dnsLocked() []netip.Addr {
	if len(m.staticDNS) > 0 {
		return slices.Clone(m.staticDNS)
	}
	var out []netip.Addr
	for _, nic := range slices.Sorted(maps.Keys(m.leaseDNS)) {
		for _, a := range m.leaseDNS[nic] {
			if len(out) < maxLeaseDNS && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

func (m *Manager) writeDNSLocked() error {
	if m.ResolvConf == "" {
		return nil
	}
	return writeResolvConf(m.ResolvConf, m.dnsLocked())
}

// writeResolvConf points the resolver (edgepbxd's too) at the DNS servers.
func writeResolvConf(path string, dns []netip.Addr) error {
	var b strings.Builder
	b.WriteString("# written by edgepbx PID 1 (System page)\n")
	for _, a := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	return WriteAtomic(path, []byte(b.String()), 0o644)
}

// WriteAtomic is atomicfile.Write (kept for callers in other packages).
func WriteAtomic(path string, data []byte, perm os.FileMode) error {
	return atomicfile.Write(path, data, perm)
}
