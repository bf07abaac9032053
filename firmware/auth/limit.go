package auth

import (
	"net/netip"
	"sync"
	"time"
)

// limiter allows at most max events per window per key (sliding window).
// It holds at most maxKeys keys; when full it forgets the stalest key, so
// memory stays bounded under address floods.
type limiter struct {
	mu      sync.Mutex
	max     int
	window  time.Duration
	maxKeys int
	hits    map[string][]time.Time
}

func newLimiter(max int, window time.Duration, maxKeys int) *limiter {
	return &limiter{max: max, window: window, maxKeys: maxKeys, hits: map[string][]time.Time{}}
}

// allow records an event for key at now and reports whether it is within the limit.
func (l *limiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.hits[key]
	cut := 0
	for cut < len(h) && now.Sub(h[cut]) >= l.window {
		cut++
	}
	h = h[cut:]
	if len(h) >= l.max {
		l.hits[key] = h
		return false
	}
	if _, ok := l.hits[key]; !ok && len(l.hits) >= l.maxKeys {
		l.evict(now)
	}
	l.hits[key] = append(h, now)
	return true
}

func (l *limiter) evict(now time.Time) {
	var stale string
	var staleAt time.Time
	for k, h := range l.hits {
		if len(h) == 0 || now.Sub(h[len(h)-1]) >= l.window {
			delete(l.hits, k)
			continue
		}
		if stale == "" || h[len(h)-1].Before(staleAt) {
			stale, staleAt = k, h[len(h)-1]
		}
	}
	if len(l.hits) >= l.maxKeys && stale != "" {
		delete(l.hits, stale)
	}
}

// sourceGuard counts failed logins per source (IPv4 address, IPv6 /64) to
// throttle guessing and to spot one source spraying many accounts.
type sourceGuard struct {
	mu      sync.Mutex
	maxKeys int
	m       map[netip.Prefix]*sourceState
}

type sourceState struct {
	failures []time.Time
	accounts map[string]time.Time
	banned   time.Time                // while set, the source's success does not clear it
	hosts    map[netip.Addr]time.Time // hosts of this /64 banned, until
}

// maxHostBansPerSource bounds the hosts of one IPv6 /64 banned at once: an
// attacker rotating addresses inside its /64 cannot fill PID 1's ban table;
// past the bound the /64 stays throttled (the per-source attempt limit).
const maxHostBansPerSource = 16

func newSourceGuard(maxKeys int) *sourceGuard {
	return &sourceGuard{maxKeys: maxKeys, m: map[netip.Prefix]*sourceState{}}
}

func sourcePrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 64
	if a.Is4() {
		bits = 32
	}
	p, _ := a.Prefix(bits)
	return p
}

func (g *sourceGuard) prune(st *sourceState, now time.Time, window time.Duration) {
	cut := 0
	for cut < len(st.failures) && now.Sub(st.failures[cut]) >= window {
		cut++
	}
	st.failures = st.failures[cut:]
	for acct, t := range st.accounts {
		if now.Sub(t) >= window {
			delete(st.accounts, acct)
		}
	}
}

// attempt charges one attempt to src before any password is checked, so a
// parallel burst cannot slip past the limit while earlier guesses are still
// hashing; a success refunds it (succeed). It reports false when src has
// used up its attempts in the window.
func (g *sourceGuard) attempt(src netip.Addr, p Policy, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.state(sourcePrefix(src), now, secs(p.SourceWindowSecs))
	g.prune(st, now, secs(p.SourceWindowSecs))
	if len(st.failures) >= p.SourceMaxFailures {
		return false
	}
	st.failures = append(st.failures, now)
	return true
}

// fail records that src failed on account. It returns the prefix to ban
// when src has now failed on SprayAccounts distinct accounts (once per ban).
func (g *sourceGuard) fail(src netip.Addr, account string, p Policy, now time.Time) (netip.Prefix, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := sourcePrefix(src)
	st := g.state(key, now, secs(p.SourceWindowSecs))
	if len(account) > 64 {
		account = account[:64]
	}
	st.accounts[account] = now
	if len(st.accounts) < p.SprayAccounts {
		return netip.Prefix{}, false
	}
	// Counted per /64, banned per host: the TCP handshake proves this host
	// sent the guesses, not its neighbours (an admin's PC on the same SLAAC
	// segment must not be banned with it).
	host := src.Unmap()
	for h, until := range st.hosts {
		if !now.Before(until) {
			delete(st.hosts, h)
		}
	}
	if _, ok := st.hosts[host]; ok || len(st.hosts) >= maxHostBansPerSource {
		return netip.Prefix{}, false
	}
	if st.hosts == nil {
		st.hosts = map[netip.Addr]time.Time{}
	}
	until := now.Add(secs(p.BanSeconds))
	st.hosts[host] = until
	st.banned = until
	return netip.PrefixFrom(host, host.BitLen()), true
}

// state returns key's entry, creating it within the map's bound.
func (g *sourceGuard) state(key netip.Prefix, now time.Time, window time.Duration) *sourceState {
	st := g.m[key]
	if st == nil {
		if len(g.m) >= g.maxKeys {
			for k, s := range g.m {
				g.prune(s, now, window)
				if len(s.failures) == 0 {
					delete(g.m, k)
				}
			}
			if len(g.m) >= g.maxKeys { // still full of active sources: forget one at random
				for k := range g.m {
					delete(g.m, k)
					break
				}
			}
		}
		st = &sourceState{accounts: map[string]time.Time{}}
		g.m[key] = st
	}
	return st
}

// succeed forgets a source's failures after a successful login.
func (g *sourceGuard) succeed(src netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st := g.m[sourcePrefix(src)]; st != nil && st.banned.IsZero() {
		delete(g.m, sourcePrefix(src))
	}
}
