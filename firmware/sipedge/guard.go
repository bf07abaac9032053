package sipedge

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Banner cuts a source off in the firewall. In edgepbxd it is PID 1's control
// client (init/control), which forwards the ban to fwspec.
type Banner interface {
	Ban(ctx context.Context, b fwspec.Ban) error
}

// sourceKey is the unit counted and banned outside the SIP zones: an IPv4
// address or an IPv6 /64 (a host on the internet owns a whole /64, so
// counting /128s there is useless). Inside the zones the Guard counts and
// bans hosts (see Guard.key): one bad device on a SLAAC segment must not
// cut off every phone and admin on it.
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
// dropped at once, before the firewall has applied the ban. Bans may be of
// any prefix length (hosts inside the zones, /64s outside, wider where an
// admin asked for it); lookups try each length in use.
type Bans struct {
	mu   sync.RWMutex
	m    map[netip.Prefix]banEntry
	bits [2][129]int // prefixes in m per family (0: IPv4, 1: IPv6) and length
}

type banEntry struct {
	since, until time.Time
	reason       string
}

// BanInfo is one in-process ban, for the admin pages.
type BanInfo struct {
	Prefix netip.Prefix
	Reason string
	Since  time.Time
	Until  time.Time
}

func newBans() *Bans { return &Bans{m: map[netip.Prefix]banEntry{}} }

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 0
	}
	return 1
}

// add bans p until until; it reports whether p is newly banned.
func (b *Bans) add(p netip.Prefix, until time.Time) bool {
	return b.addReason(p, time.Now(), until, "")
}

func (b *Bans) addReason(p netip.Prefix, now, until time.Time, reason string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	old, had := b.m[p]
	if had && old.until.After(until) {
		return false
	}
	if !had {
		b.bits[family(p)][p.Bits()]++
		old.since = now
	}
	b.m[p] = banEntry{since: old.since, until: until, reason: reason}
	return !had
}

// del removes p (b.mu held).
func (b *Bans) del(p netip.Prefix) {
	if _, ok := b.m[p]; ok {
		delete(b.m, p)
		b.bits[family(p)][p.Bits()]--
	}
}

// Banned reports whether a is inside an unexpired ban.
func (b *Bans) Banned(now time.Time, a netip.Addr) bool {
	a = a.Unmap()
	f, n := 0, 32
	if a.Is6() {
		f, n = 1, 128
	}
	b.mu.RLock()
	var hit netip.Prefix
	var until time.Time
	found := false
	for bits := n; bits >= 0 && !found; bits-- {
		if b.bits[f][bits] == 0 {
			continue
		}
		p, _ := a.Prefix(bits)
		var e banEntry
		if e, found = b.m[p]; found {
			hit, until = p, e.until
		}
	}
	b.mu.RUnlock()
	if !found {
		return false
	}
	if now.After(until) {
		b.mu.Lock()
		if e, ok := b.m[hit]; ok && now.After(e.until) {
			b.del(hit)
		}
		b.mu.Unlock()
		return b.Banned(now, a) // a wider ban may still hold
	}
	return true
}

// List returns the live bans, oldest first.
func (b *Bans) List(now time.Time) []BanInfo {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]BanInfo, 0, len(b.m))
	for p, e := range b.m {
		if now.After(e.until) {
			continue
		}
		out = append(out, BanInfo{Prefix: p, Reason: e.reason, Since: e.since, Until: e.until})
	}
	slices.SortFunc(out, func(x, y BanInfo) int { return x.Since.Compare(y.Since) })
	return out
}

// lift removes every ban that overlaps p; it returns how many.
func (b *Bans) lift(p netip.Prefix) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for k := range b.m {
		if k.Overlaps(p) {
			b.del(k)
			n++
		}
	}
	return n
}

// GuardConfig sizes the Guard.
type GuardConfig struct {
	RateWindow time.Duration
	RateLimit  int
	FloodBan   time.Duration
	FailWindow time.Duration
	// MaxFailsPerSource is how many failures one source may have for one
	// extension before that source is throttled for that extension.
	MaxFailsPerSource int
	// MaxFailsPerUser: past this many failures of one extension (from any
	// source) each further failing source is throttled for it at once.
	MaxFailsPerUser int
	// MaxUsersPerSource: a source failing for this many different
	// extensions is scanning and is banned.
	MaxUsersPerSource int
	AuthBan           time.Duration // ban and throttle time
	// BanBitsV4 and BanBitsV6 are the prefix lengths counted and banned
	// inside the SIP zones; 0 means the host (/32, /128).
	BanBitsV4, BanBitsV6 int
	MaxTracked           int
}

// GuardCounters are the Guard's counters.
type GuardCounters struct {
	FloodBans, AuthBans, ScanBans, Throttles, ThrottledRequests, BanQueueFull, Exempt, ThrottleFull atomic.Uint64
	// FloodLimited counts flood episodes of shielded sources (limited in
	// process, never banned); FloodDropped the packets they cost.
	// FloodFlowPassed counts packets of authenticated flows let through on
	// their own budget while their address was over its rate.
	FloodLimited, FloodDropped, FloodFlowPassed atomic.Uint64
}

// GuardOutcome is what a failed authentication led to.
type GuardOutcome int

const (
	GuardCounted   GuardOutcome = iota // counted, nothing else
	GuardThrottled                     // the source may no longer try this extension
	GuardBanned                        // the source is banned
)

// pairKey names one source trying one extension.
type pairKey struct {
	src  netip.Prefix
	user string
}

// throttle is a (source, extension) that may not authenticate until until.
type throttle struct {
	since, until time.Time
	reason       string
}

// Throttle is one live throttle, for the admin pages.
type Throttle struct {
	Source netip.Prefix
	User   string
	Reason string
	Since  time.Time
	Until  time.Time
}

// userSet is the extensions a source failed for within the window.
type userSet struct {
	start time.Time
	users []string
}

// Guard is stage 6: flood (per-source request rate) and brute-force (failed
// authentications per source and extension) detection. Its rate input is
// fed from stage 1 so floods are counted before any parsing.
//
// It only ever sees failures that are evidence against the source: a
// wrong response on a fresh nonce the box issued to that very address (see
// Authenticator.verify). Inside the SIP zones a source that keeps failing
// for one extension is throttled for that extension, not banned (a phone
// with a mistyped password must not cut off the office behind its
// address); a source failing for many extensions is scanning and is banned
// as one host.
type Guard struct {
	// cfg is replaced whole by setConfig; each event loads it once.
	cfg    atomic.Pointer[GuardConfig]
	exempt func(netip.Addr) bool // allowlist and trunk peers: never banned
	inZone func(netip.Addr) bool // inside the SIP zones: hosts, not ranges
	// shielded: a UDP flood carrying this address is no evidence against
	// it (SIP zones and trunk peers); see Packet.
	shielded func(netip.Addr) bool
	bans     *Bans
	rate     *windows[netip.Prefix]
	failPair *windows[pairKey]
	failUser *windows[string]

	mu        sync.Mutex
	throttles map[pairKey]throttle
	scans     map[netip.Prefix]*userSet
	// flows are the UDP address:ports that authenticated (they receive
	// our packets); each keeps its own rate budget while a spoofed flood
	// shares its address. limited holds the flood episodes already
	// reported, by key, until the window after them.
	flows    map[netip.AddrPort]time.Time
	limited  map[netip.Prefix]time.Time
	flowRate *windows[netip.AddrPort]

	queue    chan fwspec.Ban
	onBan    func(fwspec.Ban)
	onEvent  func(Throttle)     // a new throttle; nil: none
	onFlood  func(netip.Prefix) // a new flood episode of a shielded key; nil: none
	trunk    func(netip.Addr) bool
	Counters GuardCounters
}

func newGuard(cfg GuardConfig, bans *Bans, exempt func(netip.Addr) bool, onBan func(fwspec.Ban)) *Guard {
	g := &Guard{
		exempt:    exempt,
		inZone:    func(netip.Addr) bool { return true },
		shielded:  func(netip.Addr) bool { return true },
		flows:     map[netip.AddrPort]time.Time{},
		limited:   map[netip.Prefix]time.Time{},
		flowRate:  newWindows[netip.AddrPort](cfg.RateWindow, cfg.MaxTracked),
		bans:      bans,
		rate:      newWindows[netip.Prefix](cfg.RateWindow, cfg.MaxTracked),
		failPair:  newWindows[pairKey](cfg.FailWindow, cfg.MaxTracked),
		failUser:  newWindows[string](cfg.FailWindow, cfg.MaxTracked),
		throttles: map[pairKey]throttle{},
		scans:     map[netip.Prefix]*userSet{},
		queue:     make(chan fwspec.Ban, 1024),
		onBan:     onBan,
		trunk:     func(netip.Addr) bool { return false },
	}
	if cfg.MaxUsersPerSource < 1 {
		cfg.MaxUsersPerSource = 5
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
	if cfg.MaxUsersPerSource < 1 {
		cfg.MaxUsersPerSource = 5
	}
	g.rate.setSize(cfg.RateWindow)
	g.flowRate.setSize(cfg.RateWindow)
	g.failPair.setSize(cfg.FailWindow)
	g.failUser.setSize(cfg.FailWindow)
	g.cfg.Store(&cfg)
}

// Config returns the guard's current configuration.
func (g *Guard) Config() GuardConfig { return *g.cfg.Load() }

// key is the unit src is counted and banned as: inside the SIP zones the
// host (or the width an admin configured), outside sourceKey.
func (g *Guard) key(cfg *GuardConfig, src netip.Addr) netip.Prefix {
	src = src.Unmap()
	if !g.inZone(src) {
		return sourceKey(src)
	}
	bits := src.BitLen()
	switch {
	case src.Is4() && cfg.BanBitsV4 > 0:
		bits = cfg.BanBitsV4
	case src.Is6() && cfg.BanBitsV6 > 0:
		bits = cfg.BanBitsV6
	}
	p, _ := src.Prefix(bits)
	return p
}

// Key is the prefix src is counted and banned as under the current settings.
func (g *Guard) Key(src netip.Addr) netip.Prefix { return g.key(g.cfg.Load(), src) }

// Packet counts one packet from src; it reports true if the packet is to
// be dropped (src is banned, now or before, or over its rate).
//
// A UDP source address proves nothing: anyone can put a phone's, a
// trunk's or an admin's address on a flood. So a UDP flood carrying a
// shielded address (inside the SIP zones, a trunk peer) is never a ban:
// its excess is dropped here, uncounted (the address keeps a window's
// worth of packets), and reported once per episode. A flow that
// authenticated (address and port, see Proven) keeps its own budget, so
// the phone behind the address goes on registering through the flood.
// Reads on a TCP or TLS connection are the source's own (the handshake
// proved its address): their floods are banned as before, like floods
// from unshielded UDP sources (outside the zones: nobody we serve).
func (g *Guard) Packet(now time.Time, src netip.AddrPort, udp bool) bool {
	cfg := g.cfg.Load()
	a := src.Addr().Unmap()
	k := g.key(cfg, a)
	if g.rate.add(now, k, 1) <= float64(cfg.RateLimit) {
		return false
	}
	if udp && g.shielded(a) {
		return g.limit(now, cfg, src, a, k)
	}
	if g.ban(now, a, k, cfg.FloodBan, "sip-flood") {
		g.Counters.FloodBans.Add(1)
		return true
	}
	return false // exempt (allowlist, trunks over TCP), or banned before
}

// limit handles one packet over the rate from a shielded source: the
// packet is not counted against the address (so the window stays at the
// limit and keeps letting packets through) and passes only on the budget
// of a proven flow.
func (g *Guard) limit(now time.Time, cfg *GuardConfig, src netip.AddrPort, a netip.Addr, k netip.Prefix) bool {
	g.rate.add(now, k, -1)
	if g.exempt(a) && !g.trunk(a) {
		g.Counters.Exempt.Add(1)
		return false // the allowlist is never limited
	}
	g.mu.Lock()
	proven := now.Before(g.flows[netip.AddrPortFrom(a, src.Port())])
	fresh := !now.Before(g.limited[k])
	if fresh {
		if len(g.limited) >= cfg.MaxTracked {
			for key, until := range g.limited {
				if !now.Before(until) {
					delete(g.limited, key)
				}
			}
		}
		if len(g.limited) < cfg.MaxTracked {
			g.limited[k] = now.Add(cfg.RateWindow)
		}
	} else {
		g.limited[k] = now.Add(cfg.RateWindow)
	}
	g.mu.Unlock()
	if fresh {
		g.Counters.FloodLimited.Add(1)
		if g.onFlood != nil {
			g.onFlood(k)
		}
	}
	if proven && g.flowRate.add(now, netip.AddrPortFrom(a, src.Port()), 1) <= float64(cfg.RateLimit) {
		g.Counters.FloodFlowPassed.Add(1)
		return false
	}
	g.Counters.FloodDropped.Add(1)
	return true
}

// flowProofTTL is how long an authenticated UDP flow keeps its own budget
// under a flood: longer than the longest registration (max_expires, 1 h by
// default), so a phone renews it before it ends.
const flowProofTTL = 2 * time.Hour

// Prove records that the UDP flow src authenticated: a digest answer on a
// nonce the box sent to that very address and port's host verified, so
// the flow receives our packets. It keeps its own rate budget for ttl.
func (g *Guard) Prove(now time.Time, src netip.AddrPort, ttl time.Duration) {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	cfg := g.cfg.Load()
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.flows[src]; !ok && len(g.flows) >= cfg.MaxTracked {
		oldest, first := netip.AddrPort{}, time.Time{}
		for f, until := range g.flows {
			if !now.Before(until) {
				delete(g.flows, f)
			} else if first.IsZero() || until.Before(first) {
				oldest, first = f, until
			}
		}
		if len(g.flows) >= cfg.MaxTracked {
			delete(g.flows, oldest) // the proof closest to its end gives way
		}
	}
	g.flows[src] = now.Add(ttl)
}

// AuthFailed counts a failed authentication of user from src. The caller
// must only report failures that are evidence against src (a wrong
// response on a fresh nonce issued to src). A source failing for one
// extension is throttled for it; one failing for many is banned.
func (g *Guard) AuthFailed(now time.Time, src netip.Addr, user string) GuardOutcome {
	cfg := g.cfg.Load()
	k := g.key(cfg, src)
	pair := g.failPair.add(now, pairKey{k, user}, 1)
	byUser := g.failUser.add(now, user, 1)
	if g.scanned(now, cfg, k, user) >= cfg.MaxUsersPerSource {
		if g.ban(now, src, k, cfg.AuthBan, "sip-scan") {
			g.Counters.ScanBans.Add(1)
			g.Counters.AuthBans.Add(1)
			return GuardBanned
		}
		if g.bans.Banned(now, src) {
			return GuardBanned
		}
		// Exempt sources are never banned, but still throttled below.
	}
	if pair >= float64(cfg.MaxFailsPerSource) || byUser >= float64(cfg.MaxFailsPerUser) {
		reason := "failed authentications"
		if pair < float64(cfg.MaxFailsPerSource) {
			reason = "extension under attack"
		}
		if g.throttle(now, k, user, cfg.AuthBan, reason) {
			return GuardThrottled
		}
		// The throttle table is full of live entries: protection must not
		// stop, so the source is banned instead.
		g.Counters.ThrottleFull.Add(1)
		if g.ban(now, src, k, cfg.AuthBan, "sip-bruteforce") {
			g.Counters.AuthBans.Add(1)
			return GuardBanned
		}
	}
	return GuardCounted
}

// scanned records that the source k failed for user and returns for how
// many different extensions it failed within the window.
func (g *Guard) scanned(now time.Time, cfg *GuardConfig, k netip.Prefix, user string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	us := g.scans[k]
	if us != nil && now.Sub(us.start) >= cfg.FailWindow {
		us.start, us.users = now, us.users[:0]
	}
	if us == nil {
		if len(g.scans) >= cfg.MaxTracked {
			for key, old := range g.scans {
				if now.Sub(old.start) >= cfg.FailWindow {
					delete(g.scans, key)
				}
			}
			if len(g.scans) >= cfg.MaxTracked {
				return 0
			}
		}
		us = &userSet{start: now}
		g.scans[k] = us
	}
	if !slices.Contains(us.users, user) && len(us.users) < cfg.MaxUsersPerSource {
		us.users = append(us.users, user)
	}
	return len(us.users)
}

// throttle stops source k from authenticating as user until now+d; it
// reports false only when the table is full of live throttles.
func (g *Guard) throttle(now time.Time, k netip.Prefix, user string, d time.Duration, reason string) bool {
	cfg := g.cfg.Load()
	g.mu.Lock()
	pk := pairKey{k, user}
	old, had := g.throttles[pk]
	if !had && len(g.throttles) >= cfg.MaxTracked {
		for key, t := range g.throttles {
			if !now.Before(t.until) {
				delete(g.throttles, key)
			}
		}
		if len(g.throttles) >= cfg.MaxTracked {
			g.mu.Unlock()
			return false
		}
	}
	fresh := !had || !now.Before(old.until)
	t := throttle{since: now, until: now.Add(d), reason: reason}
	if !fresh {
		t.since = old.since
	}
	g.throttles[pk] = t
	g.mu.Unlock()
	if fresh {
		g.Counters.Throttles.Add(1)
		if g.onEvent != nil {
			g.onEvent(Throttle{Source: k, User: user, Reason: reason, Since: t.since, Until: t.until})
		}
	}
	return true
}

// Throttled reports whether src may not authenticate as user now.
func (g *Guard) Throttled(now time.Time, src netip.Addr, user string) bool {
	pk := pairKey{g.key(g.cfg.Load(), src), user}
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.throttles[pk]
	if !ok {
		return false
	}
	if !now.Before(t.until) {
		delete(g.throttles, pk)
		return false
	}
	g.Counters.ThrottledRequests.Add(1)
	return true
}

// Throttles lists the live throttles, oldest first.
func (g *Guard) Throttles(now time.Time) []Throttle {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Throttle, 0, len(g.throttles))
	for k, t := range g.throttles {
		if now.Before(t.until) {
			out = append(out, Throttle{Source: k.src, User: k.user, Reason: t.reason, Since: t.since, Until: t.until})
		}
	}
	slices.SortFunc(out, func(x, y Throttle) int { return x.Since.Compare(y.Since) })
	return out
}

// Lift ends the throttles of user ("": every user) for sources inside p
// (invalid p: every source) and clears their failure counts, so the next
// attempt starts afresh. It returns how many throttles it ended.
func (g *Guard) Lift(p netip.Prefix, user string) int {
	g.mu.Lock()
	n := 0
	var pairs []pairKey
	for k := range g.throttles {
		if (user == "" || k.user == user) && (!p.IsValid() || k.src.Overlaps(p)) {
			delete(g.throttles, k)
			pairs = append(pairs, k)
			n++
		}
	}
	if p.IsValid() && user == "" {
		for k := range g.scans {
			if k.Overlaps(p) {
				delete(g.scans, k)
			}
		}
	}
	g.mu.Unlock()
	for _, k := range pairs {
		g.failPair.reset(k)
	}
	if user != "" {
		g.failUser.reset(user)
	}
	return n
}

// AuthOK clears the failure count of user from src (a phone whose
// password was fixed); failures for other extensions still count.
func (g *Guard) AuthOK(src netip.Addr, user string) {
	g.failPair.reset(pairKey{g.key(g.cfg.Load(), src), user})
}

func (g *Guard) ban(now time.Time, src netip.Addr, p netip.Prefix, d time.Duration, reason string) bool {
	if g.exempt(src) {
		g.Counters.Exempt.Add(1)
		return false
	}
	if !g.bans.addReason(p, now, now.Add(d), reason) {
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
