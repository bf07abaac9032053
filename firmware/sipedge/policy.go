package sipedge

import (
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/emiago/sipgo/sip"
)

// PolicyCounters count stage-3 and stage-4 outcomes.
type PolicyCounters struct {
	ForeignDomain, OutsideZone atomic.Uint64
}

// Policy holds stage 3 (domain policy) and stage 4 (ACL zones).
type Policy struct {
	// rules is replaced whole by set; each check loads it once, so a
	// request never sees half of one version and half of another.
	rules    atomic.Pointer[policyRules]
	Counters PolicyCounters

	// mu orders writers; base is the last set() and live the trunks of
	// the stored telephony configuration (SetTrunkPeers). Both feed rules.
	mu   sync.Mutex
	base policyRules
	live []trunkPeers
}

// policyRules are one immutable version of the policy.
type policyRules struct {
	domains   map[string]bool // lower case
	zones     []netip.Prefix
	allowlist []netip.Prefix
	trunks    []trunkPeers
}

type trunkPeers struct {
	name  string
	peers []netip.Prefix
}

func newPolicy(domains []string, zones, allowlist []netip.Prefix, trunks []pbxconfig.Trunk) *Policy {
	p := &Policy{}
	p.set(domains, zones, allowlist, trunks)
	return p
}

// set replaces the policy; the next request is checked against it.
func (p *Policy) set(domains []string, zones, allowlist []netip.Prefix, trunks []pbxconfig.Trunk) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := policyRules{domains: make(map[string]bool, len(domains)),
		zones: append([]netip.Prefix(nil), zones...), allowlist: append([]netip.Prefix(nil), allowlist...)}
	for _, d := range domains {
		b.domains[strings.ToLower(d)] = true
	}
	b.trunks = trunkPeersOf(trunks)
	p.base = b
	p.publish()
}

// setLive replaces the trunks that come from the stored telephony
// configuration; the settings' own trunks stay.
func (p *Policy) setLive(trunks []pbxconfig.Trunk) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live = trunkPeersOf(trunks)
	p.publish()
}

// publish stores a new immutable version (p.mu held): base, then the
// live trunks, so the settings' trunk wins when two claim one address.
func (p *Policy) publish() {
	r := p.base
	r.trunks = append(append([]trunkPeers(nil), p.base.trunks...), p.live...)
	p.rules.Store(&r)
}

func trunkPeersOf(trunks []pbxconfig.Trunk) []trunkPeers {
	var out []trunkPeers
	for _, t := range trunks {
		if len(t.Peers) > 0 {
			out = append(out, trunkPeers{name: t.Name, peers: append([]netip.Prefix(nil), t.Peers...)})
		}
	}
	return out
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
func (p *Policy) Trunk(src netip.Addr) (string, bool) { return p.rules.Load().trunk(src) }

func (r *policyRules) trunk(src netip.Addr) (string, bool) {
	for _, t := range r.trunks {
		if inAny(t.peers, src) {
			return t.name, true
		}
	}
	return "", false
}

// Exempt reports sources that are never banned: allowlist and trunk peers.
func (p *Policy) Exempt(src netip.Addr) bool { return p.rules.Load().exempt(src) }

func (r *policyRules) exempt(src netip.Addr) bool {
	_, trunk := r.trunk(src)
	return trunk || inAny(r.allowlist, src)
}

// servesHost reports whether host is one of our domains. With no domains
// configured the box answers only to IP literals (it has no name yet).
func (r *policyRules) servesHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if len(r.domains) == 0 {
		_, err := netip.ParseAddr(host)
		return err == nil
	}
	return r.domains[host]
}

// Domain is stage 3: requests for domains we do not serve are ignored
// unless they come from a trunk or the allowlist.
func (p *Policy) Domain(req *sip.Request, src netip.Addr) Verdict {
	r := p.rules.Load()
	if r.exempt(src) {
		return pass
	}
	ok := r.servesHost(req.Recipient.Host)
	if ok && req.Method == sip.REGISTER {
		ok = r.servesHost(req.To().Address.Host)
	}
	if !ok {
		p.Counters.ForeignDomain.Add(1)
		return Verdict{Drop: true, Reason: "foreign domain"}
	}
	return pass
}

// domainRegister is Domain for a REGISTER on the UDP fast path, from the
// raw request-URI and To hosts: the same verdict and counter, without
// building a request.
func (p *Policy) domainRegister(ruriHost, toHost []byte, src netip.Addr) Verdict {
	r := p.rules.Load()
	if r.exempt(src) {
		return pass
	}
	if !r.servesHostBytes(ruriHost) || !r.servesHostBytes(toHost) {
		p.Counters.ForeignDomain.Add(1)
		return Verdict{Drop: true, Reason: "foreign domain"}
	}
	return pass
}

// servesHostBytes is servesHost without allocating for names: a host is
// lowered into a stack buffer (DNS names are at most 253 bytes) and looked
// up with the compiler's no-copy map[string(bytes)] form.
func (r *policyRules) servesHostBytes(host []byte) bool {
	var buf [253]byte
	for len(host) > 0 && (host[0] == '[' || host[0] == ']') {
		host = host[1:]
	}
	for n := len(host); n > 0 && (host[n-1] == '[' || host[n-1] == ']'); n-- {
		host = host[:n-1]
	}
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	if len(host) > len(buf) {
		return r.servesHost(string(host))
	}
	for i, c := range host {
		switch {
		case c >= 0x80: // non-ASCII: strings.ToLower's rules
			return r.servesHost(string(host))
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	h := buf[:len(host)]
	if len(r.domains) == 0 {
		_, err := netip.ParseAddr(string(h))
		return err == nil
	}
	return r.domains[string(h)]
}

// InZone reports whether src is inside the SIP zones (phones' networks).
func (p *Policy) InZone(src netip.Addr) bool { return inAny(p.rules.Load().zones, src.Unmap()) }

// Zone is stage 4: only sources in the SIP zones (or trunks) may talk.
func (p *Policy) Zone(src netip.Addr) Verdict {
	r := p.rules.Load()
	if inAny(r.zones, src) || r.exempt(src) {
		return pass
	}
	p.Counters.OutsideZone.Add(1)
	return Verdict{Drop: true, Reason: "outside sip zones"}
}
