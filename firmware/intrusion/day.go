package intrusion

import (
	"net/netip"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/logs"
)

// Sketch sizes: what one day may hold at most, whatever arrives. A day's
// stored value stays under maxDayBytes (TestFloodBounded).
const (
	capSources    = 256
	capCountries  = 64
	capExtensions = 128
	capAgents     = 32
	capReasons    = 16
	capAdmin      = 64
	capFraud      = 32
	maxKinds      = 64
	otherKind     = logs.Kind("other")
	// maxDayBytes bounds one stored day: every sketch full of
	// 128-byte keys, and 64 kinds.
	maxDayBytes = 64 << 10
)

// day is one UTC day's aggregates. Only the aggregator's goroutines touch
// it, under its mutex.
type day struct {
	date string // 2006-01-02

	events     map[logs.Kind]uint64 // every kind, offending or not
	bans       uint64               // sources cut off (SIP edge, admin port)
	throttles  uint64               // one source stopped from trying one extension
	authFail   uint64               // SIP digest failures and nonce replays
	scanners   uint64
	floods     uint64
	invalid    uint64
	adminFail  uint64
	adminBans  uint64
	fraud      uint64
	reasons    *topK[string]     // ban reasons
	sources    *topK[netip.Addr] // offending sources
	countries  *topK[string]     // their countries (GeoIP at record time)
	extensions *topK[string]     // extensions targeted by failures and throttles
	agents     *topK[string]     // scanner User-Agents
	admin      *topK[netip.Addr] // sources of admin-port attacks
	fraudExt   *topK[string]     // extensions the toll-fraud guards stopped
}

func newDay(date string) *day {
	return &day{date: date, events: map[logs.Kind]uint64{},
		reasons: newTopK(capReasons, strings.Clone), sources: newTopK[netip.Addr](capSources, nil),
		countries: newTopK(capCountries, strings.Clone), extensions: newTopK(capExtensions, strings.Clone),
		agents: newTopK(capAgents, strings.Clone), admin: newTopK[netip.Addr](capAdmin, nil),
		fraudExt: newTopK(capFraud, strings.Clone)}
}

// throttlePrefix marks a SIP-edge ban that covers one extension only.
const throttlePrefix = "sip-throttle:"

// observe adds e; country is its source's country ("" unknown).
func (d *day) observe(e *logs.Event, src netip.Addr, country string) {
	k := e.Kind
	if _, ok := d.events[k]; !ok && len(d.events) >= maxKinds {
		k = otherKind
	}
	d.events[k]++
	offending := true
	switch e.Kind {
	case logs.KindBan:
		if strings.HasPrefix(e.Reason, throttlePrefix) {
			d.throttles++
			d.extension(e.User)
		} else {
			d.bans++
			d.reasons.add(reasonLabel(e.Reason), 1)
		}
	case logs.KindAuthFailure, logs.KindNonceReplay:
		d.authFail++
		d.extension(e.User)
	case logs.KindScanner:
		d.scanners++
		if e.UserAgent != "" {
			d.agents.add(e.UserAgent, 1)
		}
	case logs.KindFlood:
		d.floods++
	case logs.KindInvalid:
		d.invalid++
	case logs.KindAdminLoginFailure:
		d.adminFail++
		if src.IsValid() {
			d.admin.add(src, 1)
		}
	case logs.KindAdminBan:
		d.adminBans++
		d.bans++
		d.reasons.add("admin-login-spray", 1)
		if src.IsValid() {
			d.admin.add(src, 1)
		}
	default:
		offending = false
		if isFraud(e.Kind) {
			d.fraud++
			if e.User != "" {
				d.fraudExt.add(e.User, 1)
			}
		}
	}
	if offending && src.IsValid() {
		d.sources.add(src, 1)
		if country != "" {
			d.countries.add(country, 1)
		}
	}
}

func (d *day) extension(user string) {
	if user != "" {
		d.extensions.add(user, 1)
	}
}

// reasonLabel keeps a ban reason's label ("sip-flood: 400 packets in 1s"
// → "sip-flood"), so figures do not split per detail.
func reasonLabel(r string) string {
	if i := strings.IndexByte(r, ':'); i > 0 {
		r = r[:i]
	}
	if r == "" {
		return "unspecified"
	}
	return r
}

// isFraud: call fraud events of the dial plan (blocked numbers, bursts,
// suspensions) and the B2BUA (denied replaces, unproven trunk callers).
func isFraud(k logs.Kind) bool {
	s := string(k)
	return strings.HasPrefix(s, "dialplan.") || strings.HasPrefix(s, "call.")
}

// parseSource reads an event's source: ip:port, ip, or a banned prefix
// (its network address); no allocation.
func parseSource(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap()
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().Addr().Unmap()
	}
	return netip.Addr{}
}
