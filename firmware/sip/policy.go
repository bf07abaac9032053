package sip

import (
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
)

// PolicyCounters count stage-3 and stage-4 outcomes.
type PolicyCounters struct {
	ForeignDomain, OutsideZone atomic.Uint64
}

// Policy holds stage 3 (domain policy) and stage 4 (ACL zones).
type Policy struct {
	domains   map[string]bool // lower case
	zones     []netip.Prefix
	allowlist []netip.Prefix
	trunks    []trunkPeers
	Counters  PolicyCounters
}

type trunkPeers struct {
	name  string
	peers []netip.Prefix
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Trunk returns the name of the IP-authenticated trunk src belongs to.
func (p *Policy) Trunk(src netip.Addr) (string, bool) {
	for _, t := range p.trunks {
		if inAny(t.peers, src) {
			return t.name, true
		}
	}
	return "", false
}

// Exempt reports sources that are never banned: allowlist and trunk peers.
func (p *Policy) Exempt(src netip.Addr) bool {
	_, trunk := p.Trunk(src)
	return trunk || inAny(p.allowlist, src)
}

// servesHost reports whether host is one of our domains. With no domains
// configured the box answers only to IP literals (it has no name yet).
func (p *Policy) servesHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if len(p.domains) == 0 {
		_, err := netip.ParseAddr(host)
		return err == nil
	}
	return p.domains[host]
}

// Domain is stage 3: requests for domains we do not serve are ignored
// unless they come from a trunk or the allowlist.
func (p *Policy) Domain(req *sip.Request, src netip.Addr) Verdict {
	if p.Exempt(src) {
		return pass
	}
	ok := p.servesHost(req.Recipient.Host)
	if ok && req.Method == sip.REGISTER {
		ok = p.servesHost(req.To().Address.Host)
	}
	if !ok {
		p.Counters.ForeignDomain.Add(1)
		return Verdict{Drop: true, Reason: "foreign domain"}
	}
	return pass
}

// Zone is stage 4: only sources in the SIP zones (or trunks) may talk.
func (p *Policy) Zone(src netip.Addr) Verdict {
	if inAny(p.zones, src) || p.Exempt(src) {
		return pass
	}
	p.Counters.OutsideZone.Add(1)
	return Verdict{Drop: true, Reason: "outside sip zones"}
}
