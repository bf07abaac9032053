package netfw

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

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
