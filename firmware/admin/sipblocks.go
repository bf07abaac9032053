package admin

import (
	"context"
	"fmt"
	"math/big"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
)

// SIPBlock is one ban or throttle of the SIP edge: a ban (User "") cuts
// Source off from every service; a throttle only stops Source from
// authenticating as User. Registered names the extensions registered from
// inside Source: the phones a ban cuts off.
type SIPBlock struct {
	Source     netip.Prefix `json:"source"`
	User       string       `json:"user,omitempty"`
	Reason     string       `json:"reason"`
	Since      time.Time    `json:"since"`
	Until      time.Time    `json:"until"`
	Registered []string     `json:"registered,omitempty"`
}

// SIPBlocks is the SIP edge's bans and throttles (edgepbxd adapts
// *sipedge.Server).
type SIPBlocks interface {
	Blocks() []SIPBlock
	// Lift ends the edge's bans overlapping p (when user is "") and the
	// throttles of user ("": all) from sources inside p.
	Lift(p netip.Prefix, user string) (bans, throttles int)
}

// LiftRequest is the body of POST /api/v1/sip/blocks/lift.
type LiftRequest struct {
	// Source is an address or CIDR prefix; with User empty it lifts the
	// bans and every throttle there.
	Source string `json:"source"`
	// User lifts only this extension's throttles from Source.
	User string `json:"user,omitempty"`
}

// Covers says which hosts a ban of p covers, for the pages: one host, or
// the range and its size (a /64 is 18 quintillion addresses: every device
// on that IPv6 segment).
func Covers(p netip.Prefix) string {
	p = p.Masked()
	host := p.Addr().BitLen() - p.Bits()
	if host == 0 {
		return "1 host (" + p.Addr().String() + ")"
	}
	last := lastAddr(p)
	n := new(big.Int).Lsh(big.NewInt(1), uint(host))
	return fmt.Sprintf("%s addresses, %s to %s", n.String(), p.Addr(), last)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// parseSource takes an address or a prefix; an address is its host prefix.
func parseSource(v string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(v); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: source must be an address or CIDR prefix", errBadRequest)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (s *Server) sipBlocks() []SIPBlock {
	if s.sipblk == nil {
		return nil
	}
	return s.sipblk.Blocks()
}

func (s *Server) apiSIPBlocks(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.sipblk == nil {
		return errUnavailable
	}
	bl := s.sipblk.Blocks()
	if bl == nil {
		bl = []SIPBlock{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"blocks": bl})
	return nil
}

func (s *Server) apiSIPLift(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.sipblk == nil {
		return errUnavailable
	}
	var req LiftRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	pfx, err := parseSource(req.Source)
	if err != nil {
		return err
	}
	if len(req.User) > 64 {
		return fmt.Errorf("%w: user: at most 64 characters", errBadRequest)
	}
	// The edge hands its bans to PID 1's firewall too: lifting only the
	// edge's copy would leave the source dropped by nftables. PID 1's
	// overlapping bans go first, so a refusal there changes nothing.
	fwLifted := 0
	if req.User == "" && s.fw != nil {
		ctx, cancel := context.WithTimeout(r.Context(), pid1Timeout)
		defer cancel()
		fwBans, err := s.fw.ListBans(ctx)
		if err != nil {
			return fmt.Errorf("firewall bans from PID 1: %w", err)
		}
		for _, b := range fwBans {
			if b.Prefix.Overlaps(pfx) {
				if err := s.fw.Unban(ctx, b.Prefix.Masked()); err != nil {
					return fmt.Errorf("unban %s via PID 1: %w", b.Prefix, err)
				}
				fwLifted++
			}
		}
	}
	bans, throttles := s.sipblk.Lift(pfx, req.User)
	target := pfx.String()
	if req.User != "" {
		target += " user " + req.User
	}
	_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "sip.lift", Target: target,
		Detail: fmt.Sprintf("%d bans, %d throttles, %d firewall bans", bans, throttles, fwLifted)})
	writeJSON(w, http.StatusOK, map[string]int{"bans": bans, "throttles": throttles, "firewall_bans": fwLifted})
	return nil
}

// sipBlockStatus is the dashboard line: amber while extensions are
// throttled, red while sources are banned, green when neither.
func (s *Server) sipBlockStatus() (StatusItem, bool) {
	if s.sipblk == nil {
		return StatusItem{}, false
	}
	var bans, throttles int
	users := map[string]bool{}
	for _, b := range s.sipblk.Blocks() {
		if b.User == "" {
			bans++
		} else {
			throttles++
			users[b.User] = true
		}
	}
	it := StatusItem{Name: "SIP bans and throttles", OK: true, Level: LevelOK, Value: "none"}
	switch {
	case bans > 0:
		it.OK, it.Level = false, LevelBad
	case throttles > 0:
		it.OK, it.Level = false, LevelWarn
	}
	if bans+throttles > 0 {
		names := make([]string, 0, len(users))
		for u := range users {
			names = append(names, u)
		}
		slices.Sort(names)
		it.Value = fmt.Sprintf("%d sources banned, %d throttles (extensions %v): see Firewall and Extensions to lift", bans, throttles, names)
	}
	return it, true
}

// throttledByUser groups the live throttles by extension.
func throttledByUser(bl []SIPBlock) map[string][]SIPBlock {
	out := map[string][]SIPBlock{}
	for _, b := range bl {
		if b.User != "" {
			out[b.User] = append(out[b.User], b)
		}
	}
	return out
}
