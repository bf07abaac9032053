package netfw

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// dhcpServerRate bounds the DHCP requests admitted per second on all
// opened interfaces together (the server's own global limit is 200/s).
const dhcpServerRate = 200

// DHCPServer is the request type of SetDHCPServer.
type DHCPServer = fwspec.DHCPServer

// SetDHCPServer admits (r.Open) or stops admitting DHCPv4 requests on one
// interface. It trusts nothing of the caller (edgepbxd): the interface
// must exist in the firewall's namespace, have IPv4 addresses, and every
// IPv4 subnet on it must lie inside a named zone the provisioning service
// is open to, so a compromised daemon cannot open UDP 67 on the WAN.
// Closing needs no check; closing a closed interface is not an error.
func (f *Firewall) SetDHCPServer(r DHCPServer) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("netfw: dhcp server: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.ready(); err != nil {
		return err
	}
	if r.Open {
		if err := f.phonesIface(r.Interface, f.applied.Phones); err != nil {
			return fmt.Errorf("netfw: dhcp server: %w", err)
		}
	}
	if err := f.take(); err != nil {
		return err
	}
	set := &nftables.Set{Table: f.table(), Name: setDHCPIf, KeyType: nftables.TypeIFName}
	elems := []nftables.SetElement{{Key: ifNameKey(r.Interface)}}
	err := f.nlDo(func(cc *nftables.Conn) error {
		var err error
		if r.Open {
			err = cc.SetAddElements(set, elems)
		} else {
			err = cc.SetDeleteElements(set, elems)
		}
		if err != nil {
			return err
		}
		return cc.Flush()
	})
	if err != nil && !(errors.Is(err, syscall.ENOENT) && !r.Open) {
		return fmt.Errorf("netfw: dhcp server %s: %w", r.Interface, err)
	}
	if r.Open {
		f.dhcpIfs[r.Interface] = true
	} else {
		delete(f.dhcpIfs, r.Interface)
	}
	f.log.Info("netfw: DHCP server port", "iface", r.Interface, "open", r.Open)
	return nil
}

// DHCPServerInterfaces lists the interfaces the DHCP server rule admits.
func (f *Firewall) DHCPServerInterfaces() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.dhcpIfs))
	for n := range f.dhcpIfs {
		out = append(out, n)
	}
	return out
}

// phonesIface checks that name is an interface of the firewall's namespace
// whose IPv4 subnets all lie inside phones.
func (f *Firewall) phonesIface(name string, phones []netip.Prefix) error {
	var h *netlink.Handle
	var err error
	if f.netnsFD != 0 {
		h, err = netlink.NewHandleAt(netns.NsHandle(f.netnsFD))
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		return fmt.Errorf("rtnetlink: %w", err)
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err != nil {
		return &fwspec.FieldError{Field: "interface", Reason: fmt.Sprintf("no interface %q", name)}
	}
	if link.Attrs().Flags&net.FlagLoopback != 0 {
		return &fwspec.FieldError{Field: "interface", Reason: "not the loopback"}
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", name, err)
	}
	if len(addrs) == 0 {
		return &fwspec.FieldError{Field: "interface", Reason: fmt.Sprintf("%s has no IPv4 address", name)}
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		subnet := netip.PrefixFrom(ip, ones).Masked()
		if !coveredBy(subnet, phones) {
			return &fwspec.FieldError{Field: "interface",
				Reason: fmt.Sprintf("%s's subnet %s is not inside a zone the provisioning service is open to", name, subnet)}
		}
	}
	return nil
}

// coveredBy reports whether p lies entirely inside one of list.
func coveredBy(p netip.Prefix, list []netip.Prefix) bool {
	for _, z := range list {
		if z.Addr().Is4() == p.Addr().Is4() && z.Bits() <= p.Bits() && z.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// RecheckDHCPServer closes UDP 67 on every interface that no longer
// qualifies (gone, without an IPv4 address, or with a subnet outside the
// phones' zones): an opening follows the interface's addresses, not only
// the request that made it. It returns the interfaces it closed.
func (f *Firewall) RecheckDHCPServer() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.dhcpIfs) == 0 || f.ready() != nil {
		return nil
	}
	var closing []string
	var elems []nftables.SetElement
	for name := range f.dhcpIfs {
		if err := f.phonesIface(name, f.applied.Phones); err != nil {
			f.log.Warn("netfw: closing the DHCP server port", "iface", name, "err", err)
			closing = append(closing, name)
			elems = append(elems, nftables.SetElement{Key: ifNameKey(name)})
		}
	}
	if len(closing) == 0 {
		return nil
	}
	set := &nftables.Set{Table: f.table(), Name: setDHCPIf, KeyType: nftables.TypeIFName}
	err := f.nlDo(func(cc *nftables.Conn) error {
		if err := cc.SetDeleteElements(set, elems); err != nil {
			return err
		}
		return cc.Flush()
	})
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		// The next change or poll tries again; the entries stay listed.
		f.log.Error("netfw: close the DHCP server port", "ifaces", closing, "err", err)
		return nil
	}
	for _, n := range closing {
		delete(f.dhcpIfs, n)
	}
	return closing
}

// dhcpRecheckPoll re-checks the openings without a notification (one lost
// to a full socket buffer).
const dhcpRecheckPoll = 10 * time.Second

// A change is checked once the interfaces have been quiet for
// dhcpRecheckQuiet (at most dhcpRecheckMax after its first event): a
// network apply flushes an interface's addresses and adds the new ones a
// few milliseconds later, and the interface without an address in between
// must not close a port the server goes on using. The server itself reacts
// at once to the same events (provision.RunDHCP), so an address that is
// really gone stops it before the port closes.
const (
	dhcpRecheckQuiet = 300 * time.Millisecond
	dhcpRecheckMax   = 2 * time.Second
)

// WatchDHCPServer runs RecheckDHCPServer after link and address changes
// in the firewall's namespace (the network committer's apply and revert,
// a DHCP client's lease, a VLAN removed) and every dhcpRecheckPoll, until
// ctx ends.
func (f *Firewall) WatchDHCPServer(ctx context.Context) {
	tick := time.NewTicker(dhcpRecheckPoll)
	defer tick.Stop()
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	var first time.Time // of the changes not checked yet; zero: none
	var addrs chan netlink.AddrUpdate
	var links chan netlink.LinkUpdate
	var done chan struct{}
	subscribe := func() {
		if done != nil {
			close(done)
		}
		done = make(chan struct{})
		addrs, links = make(chan netlink.AddrUpdate, 64), make(chan netlink.LinkUpdate, 64)
		var ns *netns.NsHandle
		if f.netnsFD != 0 {
			h := netns.NsHandle(f.netnsFD)
			ns = &h
		}
		if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: ns}); err != nil {
			f.log.Warn("netfw: address changes seen by polling only", "err", err)
			addrs = nil
		}
		if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: ns}); err != nil {
			f.log.Warn("netfw: link changes seen by polling only", "err", err)
			links = nil
		}
	}
	subscribe()
	defer func() { close(done) }()
	changed := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		quiet.Reset(min(dhcpRecheckQuiet, max(first.Add(dhcpRecheckMax).Sub(now), 0)))
	}
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-addrs:
			if !ok {
				addrs = nil // a socket error closed it: subscribed again at the next tick
			}
			changed()
		case _, ok := <-links:
			if !ok {
				links = nil
			}
			changed()
		case <-quiet.C:
			first = time.Time{}
			f.RecheckDHCPServer()
		case <-tick.C:
			if addrs == nil || links == nil {
				subscribe()
			}
			f.RecheckDHCPServer()
		}
	}
}
