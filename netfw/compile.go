package netfw

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
)

// The compiler turns a Policy into a declarative ruleset: sets and an
// ordered list of rule specs. Specs are plain values so the property test
// can reason about them; render.go turns them into nftables expressions.

// Names of the objects in our table.
const (
	tableName   = "edgepbx"
	chainInput  = "input"
	chainFwd    = "forward"
	chainOutput = "output"
)

type family uint8

const (
	fam4 family = 4
	fam6 family = 6
)

func (f family) suffix() string {
	if f == fam4 {
		return "_4"
	}
	return "_6"
}

func famOf(a netip.Addr) family {
	if a.Is4() {
		return fam4
	}
	return fam6
}

// Live set base names; the family suffix is appended.
const (
	setBan      = "ban"
	setPinhole  = "pin"
	setAllow    = "allow"
	setRateSIP  = "rl_sip"
	setRateConn = "rl_conn"
	setCtConn   = "ct_conn"
	setDHCPIf   = "dhcp_server_if"
)

type setKind uint8

const (
	kindZone      setKind = iota // interval, constant content from the policy
	kindBan                      // interval + timeout, updated live
	kindPinhole                  // addr . port + timeout, updated live, refreshed by traffic
	kindMeter                    // dynamic, per-source limit state
	kindConnMeter                // dynamic, per-source ct count state
	kindIfName                   // interface names, updated live (DHCP server)
)

type setSpec struct {
	Name   string
	Family family
	Kind   setKind
	// Ranges is the merged content of an interval set.
	Ranges []addrRange
}

// addrRange is an inclusive address range.
type addrRange struct{ From, To netip.Addr }

type verdict uint8

const (
	accept verdict = iota + 1
	drop
)

// meterSpec is a per-source limit evaluated through a dynamic set.
type meterSpec struct {
	Set       string
	Rate      uint32 // per second; 0 means this is a ct count meter
	Burst     uint32
	ConnCount uint32
}

type ruleKind uint8

const (
	kindEssential ruleKind = iota + 1 // loopback, conntrack, DHCP, ICMP
	kindBanRule
	kindPinholeRule
	kindRTPDrop
	kindLimit
	kindService
	kindFinalDrop
)

// ruleSpec is one rule of the input chain. Zero fields do not match on
// anything; a rule matches when all its set fields match.
type ruleSpec struct {
	Name      string
	Kind      ruleKind
	Service   string // kindService: which service
	Family    family // 0: both
	Iif       string
	IifSet    string // input interface's name must be in this set
	SrcSet    string // source must be in this set ("" = any source)
	ExemptSet string // source must NOT be in this set
	Proto     Proto
	SPort     PortRange
	DPort     PortRange
	CtState   uint32 // ct state must have one of these bits
	ICMP      *[2]uint8
	ICMPv6    *[2]uint8
	Pinhole   string     // source . dport must be in this set; refreshes it
	Meter     *meterSpec // per-source meter: matches when over the limit
	RateLimit uint32     // global rate: matches while under it (per second)
	Verdict   verdict
}

type compiled struct {
	Sets  []setSpec
	Rules []ruleSpec
	RTP   PortRange
	// Allow is the merged allowlist: policy allowlist zones and the
	// firewall's own allowlist.
	Allow []netip.Prefix
	// Phones are the prefixes of the named zones the provisioning service
	// is open to: an interface may get the DHCP server rule only when its
	// subnets lie inside them.
	Phones []netip.Prefix
}

const (
	ctInvalid     = 1
	ctEstablished = 2
	ctRelated     = 4
	ctNew         = 8
)

// compile builds the ruleset for a validated policy.
func compile(p *Policy, extraAllow []netip.Prefix) (*compiled, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	l := p.Limits.withDefaults()
	c := &compiled{RTP: p.RTP}
	zones := map[string]Zone{}
	for _, z := range p.Zones {
		zones[z.Name] = z
	}
	svcs := map[string]Service{}
	for _, s := range p.Services {
		svcs[s.Name] = s
	}
	hasFam := func(ps []netip.Prefix, f family) bool {
		return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return famOf(p.Addr()) == f })
	}

	allow := slices.Clone(extraAllow)
	for _, zn := range p.Allowlist {
		allow = append(allow, zones[zn].Prefixes...)
	}
	c.Allow = allow

	for _, f := range []family{fam4, fam6} {
		for _, z := range p.Zones {
			if hasFam(z.Prefixes, f) {
				c.Sets = append(c.Sets, setSpec{Name: zoneSet(z.Name, f), Family: f, Kind: kindZone, Ranges: mergeRanges(z.Prefixes, f)})
			}
		}
		c.Sets = append(c.Sets,
			setSpec{Name: setAllow + f.suffix(), Family: f, Kind: kindZone, Ranges: mergeRanges(allow, f)},
			setSpec{Name: setBan + f.suffix(), Family: f, Kind: kindBan},
			setSpec{Name: setPinhole + f.suffix(), Family: f, Kind: kindPinhole},
			setSpec{Name: setRateSIP + f.suffix(), Family: f, Kind: kindMeter},
			setSpec{Name: setRateConn + f.suffix(), Family: f, Kind: kindMeter},
			setSpec{Name: setCtConn + f.suffix(), Family: f, Kind: kindConnMeter},
		)
	}

	c.Sets = append(c.Sets, setSpec{Name: setDHCPIf, Kind: kindIfName})
	for _, r := range p.Rules {
		if r.Service != SvcProvisioning {
			continue
		}
		for _, zn := range r.Zones {
			if zn != ZoneAny {
				c.Phones = append(c.Phones, zones[zn].Prefixes...)
			}
		}
	}

	add := func(r ruleSpec) { c.Rules = append(c.Rules, r) }
	add(ruleSpec{Name: "loopback", Kind: kindEssential, Iif: "lo", Verdict: accept})
	// Bans come before conntrack so a ban also cuts established flows.
	for _, f := range []family{fam4, fam6} {
		add(ruleSpec{Name: "ban" + f.suffix(), Kind: kindBanRule, Family: f, SrcSet: setBan + f.suffix(), Verdict: drop})
	}
	add(ruleSpec{Name: "ct-invalid", Kind: kindEssential, CtState: ctInvalid, Verdict: drop})
	// RTP is checked before conntrack so closing a pinhole stops a flow
	// that conntrack already considers established.
	for _, f := range []family{fam4, fam6} {
		add(ruleSpec{Name: "rtp-pinhole" + f.suffix(), Kind: kindPinholeRule, Family: f, Proto: UDP, DPort: p.RTP, Pinhole: setPinhole + f.suffix(), Verdict: accept})
	}
	add(ruleSpec{Name: "rtp-closed", Kind: kindRTPDrop, Proto: UDP, DPort: p.RTP, Verdict: drop})

	// Per-source limits, before conntrack so an established SIP UDP flow is
	// limited too. The allowlist (trunks, admins) is exempt.
	var tcpPorts []Service
	for _, r := range p.Rules {
		if s := svcs[r.Service]; s.Proto == TCP && !slices.ContainsFunc(tcpPorts, func(o Service) bool { return o.Name == s.Name }) {
			tcpPorts = append(tcpPorts, s)
		}
	}
	for _, f := range []family{fam4, fam6} {
		if p.SIPUDPService != "" {
			add(ruleSpec{Name: "limit-sip-udp" + f.suffix(), Kind: kindLimit, Family: f, ExemptSet: setAllow + f.suffix(),
				Proto: UDP, DPort: svcs[p.SIPUDPService].Ports,
				Meter: &meterSpec{Set: setRateSIP + f.suffix(), Rate: l.SIPUDPPerSecond, Burst: l.SIPUDPBurst}, Verdict: drop})
		}
		for _, s := range tcpPorts {
			add(ruleSpec{Name: "limit-conn-" + s.Name + f.suffix(), Kind: kindLimit, Family: f, ExemptSet: setAllow + f.suffix(),
				Proto: TCP, DPort: s.Ports, CtState: ctNew,
				Meter: &meterSpec{Set: setRateConn + f.suffix(), Rate: l.NewConnPerSecond, Burst: l.NewConnBurst}, Verdict: drop})
			add(ruleSpec{Name: "limit-ct-" + s.Name + f.suffix(), Kind: kindLimit, Family: f, ExemptSet: setAllow + f.suffix(),
				Proto: TCP, DPort: s.Ports, CtState: ctNew,
				Meter: &meterSpec{Set: setCtConn + f.suffix(), ConnCount: l.ConnPerSource}, Verdict: drop})
		}
	}

	add(ruleSpec{Name: "ct-established", Kind: kindEssential, CtState: ctEstablished | ctRelated, Verdict: accept})
	add(ruleSpec{Name: "dhcp4-client", Kind: kindEssential, Family: fam4, Proto: UDP, SPort: Port(67), DPort: Port(68), Verdict: accept})
	add(ruleSpec{Name: "dhcp6-client", Kind: kindEssential, Family: fam6, Proto: UDP, SPort: Port(547), DPort: Port(546), Verdict: accept})
	// The phones' DHCP server: requests come from 0.0.0.0 (in no zone), so
	// they are admitted by interface, only on those SetDHCPServer opened.
	add(ruleSpec{Name: "dhcp4-server", Kind: kindEssential, Family: fam4, IifSet: setDHCPIf, Proto: UDP, SPort: Port(68), DPort: Port(67),
		RateLimit: dhcpServerRate, Verdict: accept})
	// Neighbour discovery must never be rate limited or IPv6 breaks.
	add(ruleSpec{Name: "icmp6-nd", Kind: kindEssential, Family: fam6, ICMPv6: &[2]uint8{133, 136}, Verdict: accept})
	add(ruleSpec{Name: "icmp-echo", Kind: kindEssential, Family: fam4, ICMP: &[2]uint8{8, 8}, RateLimit: l.ICMPPerSecond, Verdict: accept})
	add(ruleSpec{Name: "icmp6-echo", Kind: kindEssential, Family: fam6, ICMPv6: &[2]uint8{128, 128}, RateLimit: l.ICMPPerSecond, Verdict: accept})

	for _, r := range p.Rules {
		s := svcs[r.Service]
		for _, zn := range r.Zones {
			for _, f := range []family{fam4, fam6} {
				rs := ruleSpec{Name: fmt.Sprintf("svc-%s-%s%s", s.Name, zn, f.suffix()), Kind: kindService, Service: s.Name,
					Family: f, Proto: s.Proto, DPort: s.Ports, Verdict: accept}
				if zn != ZoneAny {
					if !hasFam(zones[zn].Prefixes, f) {
						continue
					}
					rs.SrcSet = zoneSet(zn, f)
				}
				if slices.ContainsFunc(c.Rules, func(o ruleSpec) bool { return o.Name == rs.Name }) {
					continue // the same service/zone listed twice
				}
				add(rs)
			}
		}
	}
	add(ruleSpec{Name: "drop", Kind: kindFinalDrop, Verdict: drop})
	return c, nil
}

func zoneSet(zone string, f family) string { return "zone_" + zone + f.suffix() }

// prefixRange returns the first and last address of p.
func prefixRange(p netip.Prefix) addrRange {
	from := p.Masked().Addr()
	b := from.AsSlice()
	host := len(b)*8 - p.Bits()
	for i := len(b) - 1; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	to, _ := netip.AddrFromSlice(b)
	return addrRange{From: from, To: to}
}

// mergeRanges returns the sorted ranges of the prefixes of one family with
// overlapping and adjacent ranges merged: the kernel's interval sets reject
// overlaps, and fewer elements load faster.
func mergeRanges(ps []netip.Prefix, f family) []addrRange {
	var rs []addrRange
	for _, p := range ps {
		if famOf(p.Addr()) == f {
			rs = append(rs, prefixRange(p))
		}
	}
	slices.SortFunc(rs, func(a, b addrRange) int { return a.From.Compare(b.From) })
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			next := last.To.Next()
			if r.From.Compare(last.To) <= 0 || (next.IsValid() && r.From == next) {
				if r.To.Compare(last.To) > 0 {
					last.To = r.To
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
