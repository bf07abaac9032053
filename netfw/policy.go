package netfw

import (
	"errors"
	"fmt"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
	"net/netip"
	"slices"
)

// Limits are the per-source DoS limits compiled into the ruleset. Zero
// fields take the defaults of DefaultLimits.
type Limits struct {
	SIPUDPPerSecond  uint32 `json:"sip_udp_per_second"`  // SIP UDP packets per source
	SIPUDPBurst      uint32 `json:"sip_udp_burst"`       //
	NewConnPerSecond uint32 `json:"new_conn_per_second"` // new TCP connections per source
	NewConnBurst     uint32 `json:"new_conn_burst"`      //
	ConnPerSource    uint32 `json:"conn_per_source"`     // concurrent TCP connections per source (ct count)
	ICMPPerSecond    uint32 `json:"icmp_per_second"`     // echo requests, all sources together
}

// DefaultLimits are sized for an office behind one NAT address: a few
// hundred phones re-registering together must stay under them.
func DefaultLimits() Limits {
	return Limits{
		SIPUDPPerSecond:  400,
		SIPUDPBurst:      800,
		NewConnPerSecond: 50,
		NewConnBurst:     100,
		ConnPerSource:    256,
		ICMPPerSecond:    20,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	pick := func(v, def uint32) uint32 {
		if v == 0 {
			return def
		}
		return v
	}
	return Limits{
		SIPUDPPerSecond:  pick(l.SIPUDPPerSecond, d.SIPUDPPerSecond),
		SIPUDPBurst:      pick(l.SIPUDPBurst, d.SIPUDPBurst),
		NewConnPerSecond: pick(l.NewConnPerSecond, d.NewConnPerSecond),
		NewConnBurst:     pick(l.NewConnBurst, d.NewConnBurst),
		ConnPerSource:    pick(l.ConnPerSource, d.ConnPerSource),
		ICMPPerSecond:    pick(l.ICMPPerSecond, d.ICMPPerSecond),
	}
}

// Policy is the whole desired firewall configuration. Everything not opened
// by a Rule is dropped silently.
type Policy struct {
	Zones    []Zone    `json:"zones"`
	Services []Service `json:"services"`
	Rules    []Rule    `json:"rules"`
	// RTP is the media port range; it is opened only through pinholes.
	RTP PortRange `json:"rtp"`
	// SIPUDPService names the service whose packets the SIP UDP flood limit
	// counts ("" disables that limit).
	SIPUDPService string `json:"sip_udp_service"`
	// Allowlist names zones that can never be banned and bypass the
	// per-source limits (admins, trunks).
	Allowlist []string `json:"allowlist"`
	// AllowAdminFromAny is the explicit override needed to open an admin
	// service to the zone "any".
	AllowAdminFromAny bool `json:"allow_admin_from_any"`
	// AdminSources must still reach an admin service under this policy
	// (e.g. the address of the admin session applying it).
	AdminSources []netip.Addr `json:"admin_sources"`
	Limits       Limits       `json:"limits"`
}

// DefaultRTP is the media port range.
var defaultRTP = fwspec.DefaultRTP()

// StandardServices is the catalogue of what edgepbx can listen on. Being in
// the catalogue opens nothing; only Rules do.
func StandardServices() []Service {
	return []Service{
		{Name: SvcSIPUDP, Proto: UDP, Ports: Port(5060)},
		{Name: SvcSIPTCP, Proto: TCP, Ports: Port(5060)},
		{Name: SvcSIPTLS, Proto: TCP, Ports: Port(5061)},
		{Name: SvcSIPWSS, Proto: TCP, Ports: Port(8089)},
		{Name: SvcHTTPS, Proto: TCP, Ports: Port(443), Admin: true},
		{Name: SvcProvisioning, Proto: TCP, Ports: Port(8443)},
		{Name: SvcProvisioningHTTP, Proto: TCP, Ports: Port(8080)},
		{Name: SvcSSH, Proto: TCP, Ports: Port(22), Admin: true},
		{Name: SvcMonitoring, Proto: TCP, Ports: Port(9100), Admin: true},
	}
}

// PrivateRanges are the networks of the default "lan" zone. QEMU's user
// network reaches the guest from 10.0.2.2, inside 10/8.
func PrivateRanges() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("fc00::/7"),
		netip.MustParsePrefix("fe80::/10"),
	}
}

// DefaultPolicy is what an unconfigured box installs at boot, before any
// interface is up: HTTPS admin and SIP open to private networks only, RTP
// only through pinholes, SSH off, everything else dropped silently.
func DefaultPolicy() Policy {
	lan := []string{"lan"}
	return Policy{
		Zones:    []Zone{{Name: "lan", Prefixes: PrivateRanges()}},
		Services: StandardServices(),
		Rules: []Rule{
			{Service: SvcHTTPS, Zones: lan},
			{Service: SvcSIPUDP, Zones: lan},
			{Service: SvcSIPTCP, Zones: lan},
			{Service: SvcSIPTLS, Zones: lan},
			// Phones on the LAN provision themselves; configurations go
			// only to proof (see firmware/provision).
			{Service: SvcProvisioning, Zones: lan},
			{Service: SvcProvisioningHTTP, Zones: lan},
		},
		RTP:           defaultRTP,
		SIPUDPService: SvcSIPUDP,
		Limits:        DefaultLimits(),
	}
}

// Policy validation errors; each Validate error wraps one of these.
var (
	ErrInvalidPolicy = errors.New("invalid firewall policy")
	ErrAdminLockout  = errors.New("policy would lock the admin out")
	ErrAdminToAny    = errors.New("admin service open to any without override")
)

// Bounds on a policy, so a hostile or broken config cannot exhaust memory.
const (
	maxZones        = 64
	maxServices     = 64
	maxRules        = 256
	maxZoneNameLen  = 16
	maxTotalCIDRs   = 100_000
	maxRulesPerZone = 64
)

func validName(s string) bool {
	if len(s) == 0 || len(s) > maxZoneNameLen {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z':
		case i > 0 && (c >= '0' && c <= '9' || c == '-'):
		default:
			return false
		}
	}
	return true
}

func policyErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidPolicy, fmt.Sprintf(format, a...))
}

// Validate checks the policy; a policy that fails is never applied.
func (p *Policy) Validate() error {
	if len(p.Zones) > maxZones || len(p.Services) > maxServices || len(p.Rules) > maxRules {
		return policyErr("too many zones, services or rules (max %d/%d/%d)", maxZones, maxServices, maxRules)
	}
	if p.RTP.First == 0 || p.RTP.First > p.RTP.Last {
		return policyErr("RTP range %s invalid", p.RTP)
	}
	zones := map[string]*Zone{}
	total := 0
	for i := range p.Zones {
		z := &p.Zones[i]
		if !validName(z.Name) {
			return policyErr("zone name %q invalid (lowercase letters, digits, '-', max %d)", z.Name, maxZoneNameLen)
		}
		if z.Name == ZoneAny {
			return policyErr("zone %q is predefined", ZoneAny)
		}
		if zones[z.Name] != nil {
			return policyErr("zone %q defined twice", z.Name)
		}
		if len(z.Prefixes) == 0 {
			return policyErr("zone %q is empty", z.Name)
		}
		total += len(z.Prefixes)
		if total > maxTotalCIDRs {
			return policyErr("more than %d CIDRs in zones", maxTotalCIDRs)
		}
		if err := checkPrefixes(z.Prefixes); err != nil {
			return policyErr("zone %q: %v", z.Name, err)
		}
		zones[z.Name] = z
	}
	svcs := map[string]*Service{}
	for i := range p.Services {
		s := &p.Services[i]
		if !validName(s.Name) {
			return policyErr("service name %q invalid", s.Name)
		}
		if svcs[s.Name] != nil {
			return policyErr("service %q defined twice", s.Name)
		}
		if s.Proto != UDP && s.Proto != TCP {
			return policyErr("service %q: protocol %q not udp/tcp", s.Name, s.Proto)
		}
		if s.Ports.First == 0 || s.Ports.First > s.Ports.Last {
			return policyErr("service %q: ports %s out of range", s.Name, s.Ports)
		}
		if s.Proto == UDP && s.Ports.Overlaps(p.RTP) {
			return policyErr("service %q: ports %s overlap the RTP range %s", s.Name, s.Ports, p.RTP)
		}
		for _, o := range svcs {
			if o.Proto == s.Proto && o.Ports.Overlaps(s.Ports) {
				return policyErr("services %q and %q share %s ports", o.Name, s.Name, s.Proto)
			}
		}
		svcs[s.Name] = s
	}
	if p.SIPUDPService != "" {
		s := svcs[p.SIPUDPService]
		if s == nil || s.Proto != UDP {
			return policyErr("SIP UDP service %q is not a udp service", p.SIPUDPService)
		}
	}
	for _, r := range p.Rules {
		s := svcs[r.Service]
		if s == nil {
			return policyErr("rule names unknown service %q", r.Service)
		}
		if len(r.Zones) == 0 || len(r.Zones) > maxRulesPerZone {
			return policyErr("rule for %q: needs 1..%d zones", r.Service, maxRulesPerZone)
		}
		for _, zn := range r.Zones {
			if zn == ZoneAny {
				if s.Admin && !p.AllowAdminFromAny {
					return fmt.Errorf("%w: %w: %q", ErrInvalidPolicy, ErrAdminToAny, s.Name)
				}
				continue
			}
			if zones[zn] == nil {
				return policyErr("rule for %q names unknown zone %q", r.Service, zn)
			}
		}
	}
	for _, zn := range p.Allowlist {
		if zn == ZoneAny || zones[zn] == nil {
			return policyErr("allowlist names unknown or catch-all zone %q", zn)
		}
	}
	l := p.Limits.withDefaults()
	if l.SIPUDPBurst < l.SIPUDPPerSecond/10 || l.NewConnBurst < 1 || l.ConnPerSource > 1<<20 {
		return policyErr("limits out of range")
	}
	// Lockout: some admin service must be open to a zone, and every listed
	// admin source must be inside such a zone.
	reach := func(a netip.Addr) bool {
		for _, r := range p.Rules {
			if !svcs[r.Service].Admin {
				continue
			}
			for _, zn := range r.Zones {
				if zn == ZoneAny {
					return true
				}
				for _, pf := range zones[zn].Prefixes {
					if a.IsValid() && pf.Contains(a) {
						return true
					}
				}
				if !a.IsValid() {
					return true
				}
			}
		}
		return false
	}
	if !reach(netip.Addr{}) {
		return fmt.Errorf("%w: %w: no admin service is open to any zone", ErrInvalidPolicy, ErrAdminLockout)
	}
	for _, a := range p.AdminSources {
		if !reach(a.Unmap()) {
			return fmt.Errorf("%w: %w: %s could no longer reach an admin service", ErrInvalidPolicy, ErrAdminLockout, a)
		}
	}
	return nil
}

// checkPrefixes rejects invalid, non-canonical, mapped and overlapping
// prefixes (overlap inside one zone is almost always a typo).
func checkPrefixes(ps []netip.Prefix) error {
	sorted := make([]netip.Prefix, 0, len(ps))
	for _, pf := range ps {
		if !pf.IsValid() {
			return fmt.Errorf("invalid prefix %v", pf)
		}
		if pf.Addr().Is4In6() {
			return fmt.Errorf("IPv4-mapped prefix %s: write it as IPv4", pf)
		}
		if pf.Addr().Zone() != "" {
			return fmt.Errorf("prefix %s has a zone", pf)
		}
		if pf.Masked() != pf {
			return fmt.Errorf("prefix %s has host bits set (want %s)", pf, pf.Masked())
		}
		sorted = append(sorted, pf)
	}
	slices.SortFunc(sorted, comparePrefix)
	for i := 1; i < len(sorted); i++ {
		if sorted[i-1].Overlaps(sorted[i]) {
			return fmt.Errorf("prefixes %s and %s overlap", sorted[i-1], sorted[i])
		}
	}
	return nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
