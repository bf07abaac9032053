// Package netspec holds what PID 1 is asked to set up on the network and
// the clock: addresses (DHCP or static, IPv4 and IPv6), VLANs, DNS
// servers, the hostname, NTP servers and the time zone, with the checks
// every such request must pass.
//
// It is the control API's vocabulary for the network, shared by PID 1
// (init/control, init/netconf) and the unprivileged edgepbxd, so that
// edgepbxd never links netlink. It imports the standard library only
// (time/tzdata embeds the zone database, so the image needs no zoneinfo).
// PID 1 runs Validate itself on every request: edgepbxd's checks are a
// convenience for the form, never a guarantee.
package netspec

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	_ "time/tzdata" // zone names are checked against the embedded database
)

// ErrInvalid is wrapped by every refusal of a request's content.
var ErrInvalid = errors.New("invalid network request")

// FieldError refuses one field. Field is its JSON path
// ("interfaces[0].gateway4"); Reason says what is wrong with it.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap makes every FieldError an ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, a...)}
}

// Address modes.
const (
	ModeDHCP   = "dhcp"
	ModeStatic = "static"
)

// Bounds. Small on purpose: an appliance has a handful of ports and
// phone VLANs, and every list here becomes netlink calls in PID 1.
const (
	MaxInterfaces   = 4
	MaxVLANs        = 8
	MaxAddresses    = 4 // per interface or VLAN
	MaxDNS          = 3 // glibc's MAXNS; more are never asked
	MaxNTP          = 4
	MaxHostnameLen  = 63 // one DNS label: the box's own name
	MaxNTPNameLen   = 253
	MaxIfNameLen    = 15 // IFNAMSIZ - 1
	MinVLANID       = 1
	MaxVLANID       = 4094
	MaxTimeZoneLen  = 64
	DefaultTimeZone = "UTC"
)

// Interface configures one of the board's NICs.
type Interface struct {
	Name string `json:"name"`
	Mode string `json:"mode"` // dhcp or static
	// Addresses are the static addresses (ADDR/PREFIX, IPv4 and IPv6).
	// With DHCP they must be empty.
	Addresses []netip.Prefix `json:"addresses,omitempty"`
	// Gateway4 and Gateway6 are the static default routes; each must lie
	// inside one of the addresses' subnets of its family.
	Gateway4 netip.Addr `json:"gateway4,omitzero"`
	Gateway6 netip.Addr `json:"gateway6,omitzero"`
}

// VLAN is a tagged sub-interface of a NIC, e.g. for the phones.
type VLAN struct {
	ID     uint16 `json:"id"`
	Parent string `json:"parent"`
	Mode   string `json:"mode"`
	// Addresses are the static addresses on the VLAN (no gateway: the
	// default route belongs to a NIC).
	Addresses []netip.Prefix `json:"addresses,omitempty"`
}

// Name is the Linux name of the VLAN's interface ("eth0.20").
func (v VLAN) Name() string { return fmt.Sprintf("%s.%d", v.Parent, v.ID) }

// Network is the admin-editable network: applied by PID 1 as a pending
// change that reverts unless confirmed from a new connection.
type Network struct {
	Hostname   string       `json:"hostname"`
	Interfaces []Interface  `json:"interfaces"`
	VLANs      []VLAN       `json:"vlans,omitempty"`
	DNS        []netip.Addr `json:"dns,omitempty"`
}

// Time is the clock's configuration: NTP servers (names or addresses)
// and the time zone used for display and time conditions.
type Time struct {
	NTP      []string `json:"ntp"`
	TimeZone string   `json:"time_zone"`
}

// Pending describes a network change waiting for its confirmation.
type Pending struct {
	ID       string    `json:"id"`
	Network  Network   `json:"network"`
	Deadline time.Time `json:"deadline"`
	// Remaining is Deadline less PID 1's clock when reported.
	Remaining time.Duration `json:"remaining"`
}

// State is what GetNetwork reports.
type State struct {
	Confirmed Network  `json:"confirmed"`
	Pending   *Pending `json:"pending,omitempty"`
	// NICs are the board's interfaces a configuration may name.
	NICs []string `json:"nics"`
	// Live are the addresses configured right now (DHCP leases included).
	Live        []netip.Prefix `json:"live"`
	RevertAfter time.Duration  `json:"revert_after"`
}

// TimeState is what GetTime reports.
type TimeState struct {
	Config Time `json:"config"`
	// Synced is the last time the clock was set from NTP (zero: never),
	// Server the answer it took, Offset how far the clock moved.
	Synced time.Time     `json:"synced,omitzero"`
	Server string        `json:"server,omitempty"`
	Offset time.Duration `json:"offset"`
	Error  string        `json:"error,omitempty"`
}

// ValidHostname reports whether s is one RFC 1123 label: letters, digits
// and hyphens, 1–63 characters, not starting or ending with a hyphen.
func ValidHostname(s string) bool {
	if len(s) == 0 || len(s) > MaxHostnameLen || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validDNSName reports whether s is an RFC 1123 host name (dotted labels).
func validDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > MaxNTPNameLen {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !ValidHostname(l) {
			return false
		}
	}
	// An all-numeric last label would read as a malformed IPv4 address.
	last := s[strings.LastIndexByte(s, '.')+1:]
	return strings.Trim(last, "0123456789") != ""
}

func validIfName(s string) bool {
	if s == "" || len(s) > MaxIfNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// unicastHost reports whether a may be the box's own or a server's address.
func unicastHost(a netip.Addr) bool {
	return a.IsValid() && a.Zone() == "" && !a.Is4In6() && !a.IsUnspecified() && !a.IsLoopback() &&
		!a.IsMulticast() && !a.IsLinkLocalMulticast() && !a.IsInterfaceLocalMulticast() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// checkAddresses checks a static address list: unicast hosts, sane
// prefixes (IPv4 /8–/32, IPv6 /48–/128), not the network or broadcast
// address of an IPv4 subnet, no duplicates, no overlap with taken.
func checkAddresses(field string, as []netip.Prefix, taken map[netip.Prefix]string) error {
	if len(as) > MaxAddresses {
		return fieldErr(field, "at most %d addresses", MaxAddresses)
	}
	for i, p := range as {
		f := fmt.Sprintf("%s[%d]", field, i)
		a := p.Addr()
		if !p.IsValid() || !unicastHost(a) || a.IsLinkLocalUnicast() {
			return fieldErr(f, "%s is not a unicast address for the box (no loopback, multicast, link-local or unspecified)", p)
		}
		if a.Is4() && (p.Bits() < 8 || p.Bits() > 32) || a.Is6() && (p.Bits() < 48 || p.Bits() > 128) {
			return fieldErr(f, "prefix length /%d out of range (IPv4 /8–/32, IPv6 /48–/128)", p.Bits())
		}
		if a.Is4() && p.Bits() <= 30 {
			if a == p.Masked().Addr() {
				return fieldErr(f, "%s is the subnet's network address", p)
			}
			if a == lastAddr(p) {
				return fieldErr(f, "%s is the subnet's broadcast address", p)
			}
		}
		for q, owner := range taken {
			if q.Overlaps(p) {
				return fieldErr(f, "%s overlaps %s of %s", p, q, owner)
			}
		}
		taken[p] = field
	}
	return nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func checkGateway(field string, gw netip.Addr, want4 bool, as []netip.Prefix) error {
	if !gw.IsValid() {
		return nil
	}
	if !unicastHost(gw) || gw.Is4() != want4 {
		return fieldErr(field, "%s is not a unicast IPv%s address", gw, map[bool]string{true: "4", false: "6"}[want4])
	}
	for _, p := range as {
		if p.Masked().Contains(gw) {
			if p.Addr() == gw {
				return fieldErr(field, "%s is the box's own address", gw)
			}
			return nil
		}
	}
	// An IPv6 router is usually announced by its link-local address.
	if !want4 && gw.IsLinkLocalUnicast() {
		return nil
	}
	return fieldErr(field, "%s is outside every subnet of the box's addresses", gw)
}

// Validate checks n against the board's NICs. Every refusal is a
// *FieldError naming the field by its JSON path.
func (n Network) Validate(nics []string) error {
	if !ValidHostname(n.Hostname) {
		return fieldErr("hostname", "must be 1–%d letters, digits or hyphens, not starting or ending with a hyphen (RFC 1123)", MaxHostnameLen)
	}
	if len(n.Interfaces) == 0 || len(n.Interfaces) > MaxInterfaces {
		return fieldErr("interfaces", "between 1 and %d", MaxInterfaces)
	}
	if len(n.VLANs) > MaxVLANs {
		return fieldErr("vlans", "at most %d", MaxVLANs)
	}
	if len(n.DNS) > MaxDNS {
		return fieldErr("dns", "at most %d servers", MaxDNS)
	}
	known := map[string]bool{}
	for _, s := range nics {
		known[s] = true
	}
	seen := map[string]bool{}
	taken := map[netip.Prefix]string{}
	var gw4, gw6 bool
	for i, it := range n.Interfaces {
		f := fmt.Sprintf("interfaces[%d]", i)
		if !validIfName(it.Name) || !known[it.Name] {
			return fieldErr(f+".name", "%q is not one of the box's interfaces %v", it.Name, nics)
		}
		if seen[it.Name] {
			return fieldErr(f+".name", "%s configured twice", it.Name)
		}
		seen[it.Name] = true
		switch it.Mode {
		case ModeDHCP:
			if len(it.Addresses) > 0 || it.Gateway4.IsValid() || it.Gateway6.IsValid() {
				return fieldErr(f+".addresses", "DHCP takes no static addresses or gateways")
			}
		case ModeStatic:
			if len(it.Addresses) == 0 {
				return fieldErr(f+".addresses", "static needs at least one address")
			}
			if err := checkAddresses(f+".addresses", it.Addresses, taken); err != nil {
				return err
			}
			if err := checkGateway(f+".gateway4", it.Gateway4, true, it.Addresses); err != nil {
				return err
			}
			if err := checkGateway(f+".gateway6", it.Gateway6, false, it.Addresses); err != nil {
				return err
			}
			if it.Gateway4.IsValid() && gw4 || it.Gateway6.IsValid() && gw6 {
				return fieldErr(f, "only one interface may carry the default route of a family")
			}
			gw4, gw6 = gw4 || it.Gateway4.IsValid(), gw6 || it.Gateway6.IsValid()
		default:
			return fieldErr(f+".mode", "must be %q or %q", ModeDHCP, ModeStatic)
		}
	}
	vids := map[string]bool{}
	for i, v := range n.VLANs {
		f := fmt.Sprintf("vlans[%d]", i)
		if v.ID < MinVLANID || v.ID > MaxVLANID {
			return fieldErr(f+".id", "must be %d–%d", MinVLANID, MaxVLANID)
		}
		if !seen[v.Parent] {
			return fieldErr(f+".parent", "%q is not a configured interface", v.Parent)
		}
		if vids[v.Name()] {
			return fieldErr(f+".id", "VLAN %d on %s configured twice", v.ID, v.Parent)
		}
		vids[v.Name()] = true
		switch v.Mode {
		case ModeDHCP:
			if len(v.Addresses) > 0 {
				return fieldErr(f+".addresses", "DHCP takes no static addresses")
			}
		case ModeStatic:
			if len(v.Addresses) == 0 {
				return fieldErr(f+".addresses", "static needs at least one address")
			}
			if err := checkAddresses(f+".addresses", v.Addresses, taken); err != nil {
				return err
			}
		default:
			return fieldErr(f+".mode", "must be %q or %q", ModeDHCP, ModeStatic)
		}
	}
	dns := map[netip.Addr]bool{}
	for i, a := range n.DNS {
		if !unicastHost(a) {
			return fieldErr(fmt.Sprintf("dns[%d]", i), "%s is not a unicast address", a)
		}
		if dns[a] {
			return fieldErr(fmt.Sprintf("dns[%d]", i), "%s listed twice", a)
		}
		dns[a] = true
	}
	return nil
}

// Validate checks the NTP servers and the time zone.
func (t Time) Validate() error {
	if len(t.NTP) > MaxNTP {
		return fieldErr("ntp", "at most %d servers", MaxNTP)
	}
	seen := map[string]bool{}
	for i, s := range t.NTP {
		f := fmt.Sprintf("ntp[%d]", i)
		if a, err := netip.ParseAddr(s); err == nil {
			if !unicastHost(a) {
				return fieldErr(f, "%s is not a unicast address", s)
			}
		} else if !validDNSName(s) {
			return fieldErr(f, "must be an IP address or a host name (RFC 1123)")
		}
		if seen[strings.ToLower(s)] {
			return fieldErr(f, "%s listed twice", s)
		}
		seen[strings.ToLower(s)] = true
	}
	if _, err := LoadZone(t.TimeZone); err != nil {
		return fieldErr("time_zone", "%v", err)
	}
	return nil
}

// LoadZone returns the location of an IANA zone name ("Europe/Berlin",
// "UTC") from the embedded database. "" and "Local" are refused: the box
// has no local zone but the one configured here.
func LoadZone(name string) (*time.Location, error) {
	if name == "" || len(name) > MaxTimeZoneLen || name == "Local" {
		return nil, fmt.Errorf("%q is not a time zone name", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '/' || c == '_' || c == '-' || c == '+') {
			return nil, fmt.Errorf("%q is not a time zone name", name)
		}
	}
	if strings.Contains(name, "..") || strings.HasPrefix(name, "/") {
		return nil, fmt.Errorf("%q is not a time zone name", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q", name)
	}
	return loc, nil
}

// DefaultTime is the clock configuration of a new box: UTC, no NTP
// servers until the admin names some (the box does not phone anyone).
func DefaultTime() Time { return Time{NTP: []string{}, TimeZone: DefaultTimeZone} }

// ValidPendingID reports whether s looks like a pending change's id.
func ValidPendingID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
