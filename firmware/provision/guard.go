package provision

import (
	"context"
	"net/netip"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
)

// sourceState is what the guard remembers of one source address.
type sourceState struct {
	tokens  float64
	last    time.Time
	limited int                  // requests refused by the rate limit since the last refill
	macs    map[string]time.Time // distinct refused MACs (or probe paths) and when
}

// allow is the per-source token bucket. A source that keeps hammering
// after being limited is banned like a scanner.
func (s *Service) allow(src netip.Addr) bool {
	lim := s.deps.Limits
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sourceLocked(src, now)
	st.tokens += now.Sub(st.last).Seconds() * lim.Rate
	if st.tokens > float64(lim.Burst) {
		st.tokens = float64(lim.Burst)
	}
	st.last = now
	if st.tokens < 1 {
		st.limited++
		if st.limited > 10*lim.Burst {
			s.banLocked(src, "provisioning-flood")
		}
		return false
	}
	st.tokens--
	st.limited = 0
	return true
}

func (s *Service) sourceLocked(src netip.Addr, now time.Time) *sourceState {
	k := src.String()
	st, ok := s.sources[k]
	if ok {
		return st
	}
	if len(s.sources) >= s.deps.Limits.MaxSources {
		// Evict the quietest: a scanner spread over many sources is still
		// counted globally (underAttack), and each source it keeps is banned.
		var oldest string
		var ot time.Time
		for key, v := range s.sources {
			if oldest == "" || v.last.Before(ot) {
				oldest, ot = key, v.last
			}
		}
		delete(s.sources, oldest)
	}
	st = &sourceState{tokens: float64(s.deps.Limits.Burst), last: now, macs: map[string]time.Time{}}
	s.sources[k] = st
	return st
}

// noteRefusal counts a refused MAC (or probe) for src and overall; it bans
// src once it has been refused ScanMACs distinct MACs within ScanWindow,
// and reports whether it did.
func (s *Service) noteRefusal(src netip.Addr, key string) bool {
	lim := s.deps.Limits
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sourceLocked(src, now)
	for k, t := range st.macs {
		if now.Sub(t) > lim.ScanWindow {
			delete(st.macs, k)
		}
	}
	_, seen := st.macs[key]
	if len(st.macs) < lim.ScanMACs {
		st.macs[key] = now
	}
	if !seen && s.deps.Security != nil && len(st.macs) <= 2 {
		// The first refusals of a source are worth a line; a scan is one ban event.
		s.deps.Security.Record(logs.Event{Kind: KindProvRefused, Source: src.String(), User: truncate(key, 32)})
	}
	s.noteAttackLocked(key, now)
	if !seen && len(st.macs) >= lim.ScanMACs {
		s.banLocked(src, "provisioning-mac-scan")
		return true
	}
	return false
}

func (s *Service) noteAttackLocked(key string, now time.Time) {
	lim := s.deps.Limits
	if _, ok := s.attack[key]; !ok && len(s.attack) >= 4*lim.AttackMACs {
		for k, t := range s.attack {
			if now.Sub(t) > lim.ScanWindow {
				delete(s.attack, k)
			}
		}
		if len(s.attack) >= 4*lim.AttackMACs {
			return // full of recent refusals: under attack anyway
		}
	}
	was := s.countAttackLocked(now) >= lim.AttackMACs
	s.attack[key] = now
	if !was && s.countAttackLocked(now) >= lim.AttackMACs {
		s.log.Warn("provisioning under attack: bare-MAC enrolment closed", "refused_macs", lim.AttackMACs)
		if s.deps.Security != nil {
			s.deps.Security.Record(logs.Event{Kind: KindProvScan, Reason: "many MACs refused: enrolment by MAC alone is closed"})
		}
	}
}

func (s *Service) countAttackLocked(now time.Time) int {
	n := 0
	for _, t := range s.attack {
		if now.Sub(t) <= s.deps.Limits.ScanWindow {
			n++
		}
	}
	return n
}

// underAttack reports whether so many distinct MACs were refused lately
// (a scan spread over many sources) that a bare MAC must not enrol: a
// scanner could otherwise hit a phone inside its window.
func (s *Service) underAttack() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.countAttackLocked(s.now()) >= s.deps.Limits.AttackMACs
}

// UnderAttack is underAttack for the Phones page.
func (s *Service) UnderAttack() bool { return s.underAttack() }

// sendBans forwards bans to PID 1 off the request path.
func (s *Service) sendBans(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-s.banq:
			if s.deps.Banner == nil {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := s.deps.Banner.Ban(cctx, b)
			cancel()
			if err != nil {
				s.log.Warn("provisioning ban refused by the firewall", "prefix", b.Prefix, "err", err)
			}
		}
	}
}
