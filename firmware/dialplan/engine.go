package dialplan

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
)

// Gate is the licence check for outbound calls; firmware/license.Manager
// implements it (emergency numbers pass it in every mode).
type Gate interface {
	AllowOutboundCall(number string) bool
}

// Events receives security events; *logs.Log implements it.
type Events interface {
	Record(logs.Event)
}

// Security event kinds raised by the dial plan (stable names).
const (
	KindBlocked   logs.Kind = "dialplan.blocked"   // class of service refused a number
	KindBurst     logs.Kind = "dialplan.burst"     // refused attempts beyond the burst threshold
	KindSuspended logs.Kind = "dialplan.suspended" // extension suspended after a burst
)

// Refusals. The B2BUA maps them to SIP answers with SIPStatus.
var (
	ErrUnknownExtension = errors.New("dialplan: unknown calling extension")
	ErrNoRoute          = errors.New("dialplan: no route")
	ErrBlocked          = errors.New("dialplan: class of service does not allow this number")
	ErrLicence          = errors.New("dialplan: licence does not allow outbound calls")
	ErrSuspended        = errors.New("dialplan: extension suspended")
	ErrConcurrent       = errors.New("dialplan: too many concurrent calls")
	ErrRate             = errors.New("dialplan: too many calls this hour")
)

// SIPStatus is the response code the B2BUA should send for a refusal.
// Fraud-related refusals all get 403 so a caller learns nothing about the
// limits from the code.
func SIPStatus(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrNoRoute), errors.Is(err, ErrInvalidNumber) && !errors.Is(err, ErrFeatureCode):
		return 404
	case errors.Is(err, ErrConcurrent) && !errors.Is(err, errTrunk):
		return 486
	case errors.Is(err, errTrunk):
		return 503
	}
	return 403
}

// errTrunk marks limits that are the trunk's, not the caller's.
var errTrunk = errors.New("trunk limit")

// Kind says what sort of call a Decision is.
type Kind string

// Kinds of call.
const (
	KindInternal  Kind = "internal"  // extension to extension
	KindOutbound  Kind = "outbound"  // over a trunk
	KindEmergency Kind = "emergency" // over a trunk, never refused by policy
	KindInbound   Kind = "inbound"   // DID from a trunk to an extension
	KindApp       Kind = "app"       // answered by the box itself: Target is "<app>/<arg>" (apps.go)
)

// Decision is where a call goes.
type Decision struct {
	Kind  Kind
	Class Class
	// Target is the extension (internal, inbound) or the number to send
	// to the trunk (after the route's strip/add).
	Target string
	Trunk  string
	// Dialled is the normalised number as dialled (for the CDR).
	Dialled string
}

// Lease holds a call's place in the concurrency counters; Release it when
// the call ends (any outcome). Release is idempotent.
type Lease struct {
	once sync.Once
	fn   func()
}

// Release frees the call's slots.
func (l *Lease) Release() {
	if l != nil {
		l.once.Do(l.fn)
	}
}

// Engine applies a Plan. It is safe for concurrent use.
type Engine struct {
	plan    Plan
	country Country
	gate    Gate
	events  Events
	now     func() time.Time

	exts      map[string]*Extension
	trunks    map[string]Limits
	emergency []string
	premium   []string

	// st is the live state: calls, admitted attempts, suspensions. Rebuild
	// hands it to the engine of the next plan version.
	st *state
}

// state is what an Engine learns while it runs. It is shared by the
// engines of successive plan versions (Rebuild), so leases taken on an
// older engine release into the same counters.
type state struct {
	mu        sync.Mutex
	ext       map[string]*counter
	trk       map[string]*counter
	suspended map[string]time.Time
}

func newState() *state {
	return &state{ext: map[string]*counter{}, trk: map[string]*counter{}, suspended: map[string]time.Time{}}
}

// counter tracks live calls and admitted attempts (sliding hour) of one
// extension or trunk; refused tracks refused attempts for burst detection.
type counter struct {
	active   int
	admitted []time.Time // bounded by MaxPerHour
	refused  []time.Time // bounded by the burst threshold
}

// Option changes an Engine's defaults.
type Option func(*Engine)

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(e *Engine) { e.now = now } }

// New validates plan and builds an engine. gate and events may be nil
// (no licence gate; events dropped).
func New(plan Plan, gate Gate, events Events, opts ...Option) (*Engine, error) {
	if err := plan.Validate(); err != nil {
		return nil, err
	}
	if plan.BurstAttempts == 0 {
		plan.BurstAttempts = DefaultBurstAttempts
	}
	if plan.BurstWindow == 0 {
		plan.BurstWindow = DefaultBurstWindow
	}
	// The engine keeps its own copy: a caller editing its plan later
	// must not change what a live engine allows.
	plan.Routes = slices.Clone(plan.Routes)
	for i := range plan.Routes {
		plan.Routes[i].FeatureCodes = slices.Clone(plan.Routes[i].FeatureCodes)
	}
	plan.DIDs = slices.Clone(plan.DIDs)
	c, _ := LookupCountry(plan.Country)
	e := &Engine{
		plan: plan, country: c, gate: gate, events: events, now: time.Now,
		exts: map[string]*Extension{}, trunks: map[string]Limits{},
		st: newState(),
	}
	for i := range plan.Extensions {
		x := plan.Extensions[i]
		if x.Classes == nil {
			x.Classes = DefaultClasses()
		}
		x.Limits = x.Limits.orDefault(DefaultExtConcurrent, DefaultExtPerHour)
		e.exts[x.Number] = &x
	}
	for _, t := range plan.Trunks {
		e.trunks[t.Name] = t.Limits.orDefault(DefaultTrunkConcurrent, DefaultTrunkPerHour)
	}
	e.emergency = append(slices.Clone(c.Emergency), plan.Emergency...)
	e.premium = slices.Clone(plan.PremiumPrefixes)
	for _, o := range opts {
		o(e)
	}
	return e, nil
}

// IsEmergency reports whether a dialled number is an emergency number
// (in any form: separators, URI, Unicode digits, feature codes in front).
func (e *Engine) IsEmergency(dialled string) bool {
	n, err := e.country.Parse(dialled)
	return err == nil && slices.Contains(e.emergency, n.Core)
}

// Classify classifies a dialled number as routing does: feature codes and
// separators removed, internal if it is an extension, else by the
// country's numbering plan and the plan's premium prefixes. The returned
// National is the one form routes match and a trunk is sent.
func (e *Engine) Classify(dialled string) (Number, Classification, error) {
	n, err := e.country.Parse(dialled)
	if err != nil {
		return Number{}, Classification{}, err
	}
	if n.Core == "" {
		return n, Classification{}, fmt.Errorf("%w: %s alone", ErrFeatureCode, n.Codes)
	}
	if _, ok := e.exts[n.Core]; ok {
		return n, Classification{Class: Internal, National: n.Core}, nil
	}
	cl, err := e.country.Classify(n.Core)
	if err != nil {
		return n, Classification{}, err
	}
	if cl.Class == National {
		for _, p := range e.premium {
			if strings.HasPrefix(cl.National, p) {
				cl.Class, cl.Label = Premium, "premium prefix "+p
			}
		}
	}
	return n, cl, nil
}

// RouteOutbound decides a call placed by extension from to the dialled
// number and, if allowed, admits it: the returned Lease must be released
// at call end. Emergency numbers are admitted whatever the class, limits,
// suspension or licence state, with or without feature codes in front
// (the trunk gets the emergency number alone). A trunk is sent exactly
// the classified number (Classification.National, after the route's
// strip/add), preceded by feature codes only when the route lists them.
func (e *Engine) RouteOutbound(from, dialled string) (Decision, *Lease, error) {
	ext, ok := e.exts[from]
	if !ok {
		return Decision{}, nil, ErrUnknownExtension
	}
	n, cl, err := e.Classify(dialled)
	if n.Core != "" && slices.Contains(e.emergency, n.Core) {
		return e.routeEmergency(from, n)
	}
	if err != nil {
		var ne *NumberError
		if errors.As(err, &ne) && ne.Suspicious || errors.Is(err, ErrFeatureCode) {
			e.record(logs.Event{Kind: KindBlocked, User: from, Reason: fmt.Sprintf("refused number %q: %v", clip(dialled), err)})
			e.refused(ext, err.Error())
		}
		return Decision{Dialled: n.String()}, nil, err
	}
	if cl.Class == Internal {
		d := Decision{Kind: KindInternal, Class: Internal, Target: n.Core, Dialled: n.String()}
		lease, err := e.admit(ext, "", false)
		return d, lease, err
	}
	refuse := Decision{Class: cl.Class, Dialled: n.String()}
	e.st.mu.Lock()
	_, susp := e.st.suspended[from]
	e.st.mu.Unlock()
	if susp {
		return refuse, nil, ErrSuspended
	}
	if !slices.Contains(ext.Classes, cl.Class) {
		e.record(logs.Event{Kind: KindBlocked, User: from, Reason: fmt.Sprintf("%s number %s%s", cl.Class, n, label(cl))})
		e.refused(ext, string(cl.Class))
		return refuse, nil, fmt.Errorf("%w (%s%s)", ErrBlocked, cl.Class, label(cl))
	}
	if e.gate != nil && !e.gate.AllowOutboundCall(n.Core) {
		return refuse, nil, ErrLicence
	}
	r, ok := e.route(cl.National)
	if !ok {
		return refuse, nil, ErrNoRoute
	}
	if n.Codes != "" && !slices.Contains(r.FeatureCodes, n.Codes) {
		err := fmt.Errorf("%w: %s before %s (route %q to %s does not list it)", ErrFeatureCode, n.Codes, cl.National, r.Prefix, r.Trunk)
		e.record(logs.Event{Kind: KindBlocked, User: from, Reason: err.Error()})
		e.refused(ext, "feature code "+n.Codes)
		return refuse, nil, err
	}
	d := Decision{Kind: KindOutbound, Class: cl.Class, Trunk: r.Trunk, Target: n.Codes + r.Add + cl.National[r.Strip:], Dialled: n.String()}
	lease, err := e.admit(ext, r.Trunk, true)
	return d, lease, err
}

func label(cl Classification) string {
	if cl.Label == "" {
		return ""
	}
	return ": " + cl.Label
}

// clip bounds untrusted text copied into an event.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func (e *Engine) routeEmergency(from string, num Number) (Decision, *Lease, error) {
	n := num.Core
	d := Decision{Kind: KindEmergency, Class: National, Target: n, Dialled: num.String()}
	if e.plan.EmergencyTrunk != "" {
		d.Trunk = e.plan.EmergencyTrunk
	} else {
		r, ok := e.route(n)
		if !ok {
			return d, nil, ErrNoRoute
		}
		d.Trunk, d.Target = r.Trunk, r.Add+n[r.Strip:]
	}
	// Counted (so the counters stay right) but never refused.
	e.st.mu.Lock()
	ec, tc := e.counter(e.st.ext, from), e.counter(e.st.trk, d.Trunk)
	ec.active++
	tc.active++
	e.st.mu.Unlock()
	return d, e.lease(ec, tc), nil
}

// route finds the longest prefix match for a national-format number.
func (e *Engine) route(nat string) (Route, bool) {
	var best Route
	found := false
	for _, r := range e.plan.Routes {
		if strings.HasPrefix(nat, r.Prefix) && (!found || len(r.Prefix) > len(best.Prefix)) && len(nat) >= r.Strip {
			best, found = r, true
		}
	}
	return best, found
}

// RouteInbound maps a number called on trunk to its extension and admits
// the call against the trunk's and the extension's concurrency limits.
func (e *Engine) RouteInbound(trunk, called string) (Decision, *Lease, error) {
	num, err := e.country.Parse(called)
	if err != nil {
		return Decision{}, nil, err
	}
	if num.Codes != "" || num.Core == "" {
		return Decision{}, nil, invalid(true, "feature code in a called number from a trunk")
	}
	n := num.Core
	if _, ok := e.trunks[trunk]; !ok {
		return Decision{}, nil, fmt.Errorf("%w: unknown trunk %q", ErrNoRoute, trunk)
	}
	nat := n
	if cl, err := e.country.Classify(n); err == nil {
		nat = cl.National
	}
	for _, d := range e.plan.DIDs {
		if d.Trunk != "" && d.Trunk != trunk {
			continue
		}
		if d.Number == n || d.Number == nat {
			dec := Decision{Kind: KindInbound, Class: National, Target: d.Extension, Trunk: trunk, Dialled: n}
			lease, err := e.admitInbound(e.exts[d.Extension], trunk)
			return dec, lease, err
		}
	}
	return Decision{}, nil, ErrNoRoute
}

func (e *Engine) counter(m map[string]*counter, key string) *counter {
	c, ok := m[key]
	if !ok {
		c = &counter{}
		m[key] = c
	}
	return c
}

func (e *Engine) lease(cs ...*counter) *Lease {
	return &Lease{fn: func() {
		e.st.mu.Lock()
		defer e.st.mu.Unlock()
		for _, c := range cs {
			c.active--
		}
	}}
}

// prune drops timestamps older than window.
func prune(ts []time.Time, now time.Time, window time.Duration) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= window {
		i++
	}
	return ts[i:]
}

// admit checks the caller's (and for external calls the trunk's) limits and
// takes a slot in each.
func (e *Engine) admit(ext *Extension, trunk string, external bool) (*Lease, error) {
	now := e.now()
	e.st.mu.Lock()
	ec := e.counter(e.st.ext, ext.Number)
	var err error
	var tc *counter
	var tl Limits
	if external {
		tc = e.counter(e.st.trk, trunk)
		tl = e.trunks[trunk]
		ec.admitted = prune(ec.admitted, now, time.Hour)
		tc.admitted = prune(tc.admitted, now, time.Hour)
	}
	switch {
	case ec.active >= ext.Limits.MaxConcurrent:
		err = ErrConcurrent
	case external && len(ec.admitted) >= ext.Limits.MaxPerHour:
		err = ErrRate
	case external && tc.active >= tl.MaxConcurrent:
		err = fmt.Errorf("%w: %w", ErrConcurrent, errTrunk)
	case external && len(tc.admitted) >= tl.MaxPerHour:
		err = fmt.Errorf("%w: %w", ErrRate, errTrunk)
	}
	if err != nil {
		e.st.mu.Unlock()
		if external {
			e.refused(ext, fmt.Sprintf("limit: %v", err))
		}
		return nil, err
	}
	ec.active++
	cs := []*counter{ec}
	if external {
		ec.admitted = append(ec.admitted, now)
		tc.admitted = append(tc.admitted, now)
		tc.active++
		cs = append(cs, tc)
	}
	e.st.mu.Unlock()
	return e.lease(cs...), nil
}

func (e *Engine) admitInbound(ext *Extension, trunk string) (*Lease, error) {
	now := e.now()
	e.st.mu.Lock()
	defer e.st.mu.Unlock()
	tc := e.counter(e.st.trk, trunk)
	tl := e.trunks[trunk]
	tc.admitted = prune(tc.admitted, now, time.Hour)
	ec := e.counter(e.st.ext, ext.Number)
	switch {
	case tc.active >= tl.MaxConcurrent:
		return nil, fmt.Errorf("%w: %w", ErrConcurrent, errTrunk)
	case len(tc.admitted) >= tl.MaxPerHour:
		return nil, fmt.Errorf("%w: %w", ErrRate, errTrunk)
	case ec.active >= ext.Limits.MaxConcurrent:
		return nil, ErrConcurrent
	}
	tc.active++
	tc.admitted = append(tc.admitted, now)
	ec.active++
	return e.lease(ec, tc), nil
}

// refused counts a refused external attempt; past the burst threshold it
// raises a security event and suspends the extension.
func (e *Engine) refused(ext *Extension, why string) {
	now := e.now()
	e.st.mu.Lock()
	c := e.counter(e.st.ext, ext.Number)
	c.refused = append(prune(c.refused, now, e.plan.BurstWindow), now)
	burst := len(c.refused) >= e.plan.BurstAttempts
	suspend := false
	if burst {
		c.refused = c.refused[:0]
		if _, already := e.st.suspended[ext.Number]; !already && !ext.NoSuspend {
			e.st.suspended[ext.Number] = now
			suspend = true
		}
	}
	e.st.mu.Unlock()
	if burst {
		e.record(logs.Event{Kind: KindBurst, User: ext.Number, Reason: fmt.Sprintf("%d refused outbound attempts within %s, last: %s", e.plan.BurstAttempts, e.plan.BurstWindow, why)})
	}
	if suspend {
		e.record(logs.Event{Kind: KindSuspended, User: ext.Number, Reason: "outbound calls suspended after a burst (emergency calls still allowed)"})
	}
}

func (e *Engine) record(ev logs.Event) {
	if e.events != nil {
		ev.Time = e.now()
		e.events.Record(ev)
	}
}

// Suspended reports whether an extension is suspended and since when.
func (e *Engine) Suspended(ext string) (time.Time, bool) {
	e.st.mu.Lock()
	defer e.st.mu.Unlock()
	t, ok := e.st.suspended[ext]
	return t, ok
}

// Unsuspend lifts a suspension (an admin action; audit it at the caller).
func (e *Engine) Unsuspend(ext string) {
	e.st.mu.Lock()
	defer e.st.mu.Unlock()
	delete(e.st.suspended, ext)
}

// Active reports the live calls of an extension and of a trunk.
func (e *Engine) Active(ext, trunk string) (extCalls, trunkCalls int) {
	e.st.mu.Lock()
	defer e.st.mu.Unlock()
	if c, ok := e.st.ext[ext]; ok {
		extCalls = c.active
	}
	if c, ok := e.st.trk[trunk]; ok {
		trunkCalls = c.active
	}
	return extCalls, trunkCalls
}

// Rebuild returns an engine for plan (a new version of the configuration)
// with e's clock, gate and events, which carries on e's live state: calls
// in progress, attempts admitted this hour, refused attempts and
// suspensions of the extensions and trunks plan still has. The state of
// extensions and trunks plan no longer has is dropped (a number added
// again later starts clean). Leases taken on e release into the shared
// counters, so e may still be finishing calls. On error e is unchanged.
func (e *Engine) Rebuild(plan Plan) (*Engine, error) {
	n, err := New(plan, e.gate, e.events, WithClock(e.now))
	if err != nil {
		return nil, err
	}
	n.st = e.st
	n.st.mu.Lock()
	defer n.st.mu.Unlock()
	for k := range n.st.ext {
		if _, ok := n.exts[k]; !ok {
			delete(n.st.ext, k)
		}
	}
	for k := range n.st.suspended {
		if _, ok := n.exts[k]; !ok {
			delete(n.st.suspended, k)
		}
	}
	for k := range n.st.trk {
		if _, ok := n.trunks[k]; !ok {
			delete(n.st.trk, k)
		}
	}
	return n, nil
}
