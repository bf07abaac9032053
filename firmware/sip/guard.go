package sip

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Banner cuts a source off in the firewall. In edgepbxd it is PID 1's control
// client (init/control), which forwards the ban to netfw.
type Banner interface {
	Ban(ctx context.Context, b fwspec.Ban) error
}

// sourceKey is the unit we count and ban: an IPv4 address or an IPv6 /64
// (one IPv6 host owns a whole /64, so banning /128s is useless).
func sourceKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// window is a sliding-window counter approximated from two fixed buckets.
type window struct {
	start     time.Time
	cur, prev int
}

func (w *window) add(now time.Time, size time.Duration, n int) float64 {
	switch el := now.Sub(w.start); {
	case el >= 2*size:
		w.start, w.cur, w.prev = now, 0, 0
	case el >= size:
		w.start, w.prev, w.cur = w.start.Add(size), w.cur, 0
	}
	w.cur += n
	frac := float64(now.Sub(w.start)) / float64(size)
	return float64(w.prev)*(1-frac) + float64(w.cur)
}

// windows is a bounded table of sliding windows keyed by K.
type windows[K comparable] struct {
	mu   sync.Mutex
	size time.Duration
	max  int
	m    map[K]*window
}

func newWindows[K comparable](size time.Duration, max int) *windows[K] {
	return &windows[K]{size: size, max: max, m: map[K]*window{}}
}

// add counts n events for k and returns the windowed total. When the table
// is full of live keys a new key is not tracked (returns 0): memory stays
// bounded, and floods are still cut by the keys already tracked.
func (t *windows[K]) add(now time.Time, k K, n int) float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	w, ok := t.m[k]
	if !ok {
		if len(t.m) >= t.max {
			for key, old := range t.m {
				if now.Sub(old.start) >= 2*t.size {
					delete(t.m, key)
				}
			}
			if len(t.m) >= t.max {
				return 0
			}
		}
		w = &window{start: now}
		t.m[k] = w
	}
	return w.add(now, t.size, n)
}

// setSize changes the window length; counts already made are kept and
// weighed against the new length from the next event on.
func (t *windows[K]) setSize(size time.Duration) {
	t.mu.Lock()
	t.size = size
	t.mu.Unlock()
}

func (t *windows[K]) reset(k K) {
	t.mu.Lock()
	delete(t.m, k)
	t.mu.Unlock()
}

// Bans is the in-process ban table the read filter consults, so a source is
// dropped at once, before the firewall has applied the ban.
type Bans struct {
	mu sync.RWMutex
	m  map[netip.Prefix]time.Time
}

func newBans() *Bans { return &Bans{m: map[netip.Prefix]time.Time{}} }

func (b *Bans) add(p netip.Prefix, until time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.m[p]; ok && t.After(until) {
		return false
	}
	_, had := b.m[p]
	b.m[p] = until
	return !had
}

// Banned reports whether a is inside an unexpired ban.
func (b *Bans) Banned(now time.Time, a netip.Addr) bool {
	k := sourceKey(a)
	b.mu.RLock()
	until, ok := b.m[k]
	b.mu.RUnlock()
	if !ok {
		return false
	}
	if now.After(until) {
		b.mu.Lock()
		delete(b.m, k)
		b.mu.Unlock()
		return false
	}
	return true
}

// GuardConfig sizes the Guard.
type GuardConfig struct {
	RateWindow        time.Duration
	RateLimit         int
	FloodBan          time.Duration
	FailWindow        time.Duration
	MaxFailsPerSource int
	MaxFailsPerUser   int
	AuthBan           time.Duration
	MaxTracked        int
}

// GuardCounters are the Guard's counters.
type GuardCounters struct {
	FloodBans, AuthBans, BanQueueFull, Exempt atomic.Uint64
}

// Guard is stage 6: flood (per-source request rate) and brute-force (failed
// authentications per source and per extension) detection. Its rate input
// is fed from stage 1 so floods are counted before any parsing.
type Guard struct {
	// cfg is replaced whole by setConfig; each event loads it once.
	cfg      atomic.Pointer[GuardConfig]
	exempt   func(netip.Addr) bool // allowlist and trunk peers: never banned
	bans     *Bans
	rate     *windows[netip.Prefix]
	failSrc  *windows[netip.Prefix]
	failUser *windows[string]
	queue    chan fwspec.Ban
	onBan    func(fwspec.Ban)
	Counters GuardCounters
}

func newGuard(cfg GuardConfig, bans *Bans, exempt func(netip.Addr) bool, onBan func(fwspec.Ban)) *Guard {
	g := &Guard{
		exempt:   exempt,
		bans:     bans,
		rate:     newWindows[netip.Prefix](cfg.RateWindow, cfg.MaxTracked),
		failSrc:  newWindows[netip.Prefix](cfg.FailWindow, cfg.MaxTracked),
		failUser: newWindows[string](cfg.FailWindow, cfg.MaxTracked),
		queue:    make(chan fwspec.Ban, 1024),
		onBan:    onBan,
	}
	g.cfg.Store(&cfg)
	return g
}

// setConfig changes thresholds, windows and ban times at run time. Counts
// and bans already made are kept, so a lowered threshold bans a source
// that is over it at its next event. MaxTracked sizes tables made at start
// and stays as it was.
func (g *Guard) setConfig(cfg GuardConfig) {
	cfg.MaxTracked = g.cfg.Load().MaxTracked
	g.rate.setSize(cfg.RateWindow)
	g.failSrc.setSize(cfg.FailWindow)
	g.failUser.setSize(cfg.FailWindow)
	g.cfg.Store(&cfg)
}

// Config returns the guard's current configuration.
func (g *Guard) Config() GuardConfig { return *g.cfg.Load() }

// Packet counts one packet from src; it reports true if src got banned.
func (g *Guard) Packet(now time.Time, src netip.Addr) bool {
	cfg := g.cfg.Load()
	if g.rate.add(now, sourceKey(src), 1) > float64(cfg.RateLimit) {
		if g.ban(now, src, cfg.FloodBan, "sip-flood") {
			g.Counters.FloodBans.Add(1)
			return true
		}
	}
	return false
}

// AuthFailed counts a failed authentication of user from src and bans src
// when either the source or the extension is over its limit. Once an
// extension is under attack every further failing source is banned at once.
func (g *Guard) AuthFailed(now time.Time, src netip.Addr, user string) bool {
	cfg := g.cfg.Load()
	bySrc := g.failSrc.add(now, sourceKey(src), 1)
	byUser := g.failUser.add(now, user, 1)
	if bySrc >= float64(cfg.MaxFailsPerSource) || byUser >= float64(cfg.MaxFailsPerUser) {
		if g.ban(now, src, cfg.AuthBan, "sip-bruteforce") {
			g.Counters.AuthBans.Add(1)
			return true
		}
	}
	return false
}

// AuthOK clears the source's failure count (a phone that fixed its password).
func (g *Guard) AuthOK(src netip.Addr) { g.failSrc.reset(sourceKey(src)) }

func (g *Guard) ban(now time.Time, src netip.Addr, d time.Duration, reason string) bool {
	if g.exempt(src) {
		g.Counters.Exempt.Add(1)
		return false
	}
	p := sourceKey(src)
	if !g.bans.add(p, now.Add(d)) {
		return false // already banned
	}
	b := fwspec.Ban{Prefix: p, Timeout: d, Reason: reason}
	if g.onBan != nil {
		g.onBan(b)
	}
	select {
	case g.queue <- b:
	default:
		g.Counters.BanQueueFull.Add(1) // still dropped locally by stage 1
	}
	return true
}

// run forwards bans to the firewall until ctx ends.
func (g *Guard) run(ctx context.Context, banner Banner, report func(fwspec.Ban, error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-g.queue:
			if banner == nil {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := banner.Ban(cctx, b)
			cancel()
			if err != nil && report != nil {
				report(b, err)
			}
		}
	}
}
