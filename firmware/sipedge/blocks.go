package sipedge

import (
	"net/netip"
	"time"
)

// Block is one SIP ban or throttle as the admin sees it: a ban (User "")
// cuts Source off from every service; a throttle only stops Source from
// authenticating as User. Registered names the extensions with a live
// registration from inside Source, so the admin sees which phones a ban
// hits.
type Block struct {
	Source     netip.Prefix `json:"source"`
	User       string       `json:"user,omitempty"`
	Reason     string       `json:"reason"`
	Since      time.Time    `json:"since"`
	Until      time.Time    `json:"until"`
	Registered []string     `json:"registered,omitempty"`
}

// Blocks lists the edge's live bans and throttles, bans first.
func (s *Server) Blocks() []Block {
	now := s.now()
	var out []Block
	for _, b := range s.bans.List(now) {
		out = append(out, Block{Source: b.Prefix, Reason: b.Reason, Since: b.Since, Until: b.Until,
			Registered: s.location.usersIn(now, b.Prefix)})
	}
	for _, t := range s.guard.Throttles(now) {
		out = append(out, Block{Source: t.Source, User: t.User, Reason: t.Reason, Since: t.Since, Until: t.Until})
	}
	return out
}

// Lift ends the edge's own bans overlapping p and the throttles of user
// ("": all) from sources inside p (invalid p with a user: that user's
// throttles from everywhere). The firewall's copy of a ban is PID 1's, lifted
// there. It returns how many bans and throttles ended.
func (s *Server) Lift(p netip.Prefix, user string) (bans, throttles int) {
	if p.IsValid() {
		p = netip.PrefixFrom(p.Addr().Unmap(), max(0, p.Bits()-unmapBits(p))).Masked()
		if user == "" {
			bans = s.bans.lift(p)
		}
	}
	return bans, s.guard.Lift(p, user)
}

// unmapBits is how many prefix bits an IPv4-mapped prefix loses unmapped.
func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return 96
	}
	return 0
}

// BlockCounts is how many bans and throttles are in force (metrics; unlike
// Blocks it does not look up the registrations inside each ban).
func (s *Server) BlockCounts() (bans, throttles int) {
	now := s.now()
	return len(s.bans.List(now)), len(s.guard.Throttles(now))
}
