// Package telephony applies the stored telephony configuration
// (config.TelephonyStore, edited on the admin dial plan page) to the
// running PBX: the dial plan the B2BUA routes by, rebuilt when the
// configuration or the extensions change; the trunk directory (where a
// trunk's calls go, its SRTP policy, credentials and the caller ID
// presented over it); and the SIP edge's trunk registrations and inbound
// trunk identification.
package telephony

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
)

// Extensions lists the SIP extensions that exist now (*sipedge.Extensions).
type Extensions interface {
	List() []string
}

// Plan is the dial plan over the stored telephony configuration and the
// extensions that exist now (numeric names). The engine is rebuilt when
// either changes, so a saved change applies to the next call without a
// restart; the rebuilt engine keeps the live counters and suspensions of
// the extensions and trunks that still exist (dialplan.Engine.Rebuild).
// It is the B2BUA's router (call.Router).
type Plan struct {
	exts   Extensions
	tel    *pbxconfig.TelephonyStore
	gate   dialplan.Gate
	events dialplan.Events

	mu  sync.Mutex
	key string // configuration version and extension numbers eng was built from
	eng *dialplan.Engine
}

// NewPlan builds nothing yet: the first call (or Engine) does. gate may be
// nil (no licence limits).
func NewPlan(exts Extensions, tel *pbxconfig.TelephonyStore, gate dialplan.Gate, events dialplan.Events) *Plan {
	return &Plan{exts: exts, tel: tel, gate: gate, events: events}
}

// Engine is the dial plan for the configuration and extensions in force,
// rebuilt only when they changed since the last call.
func (p *Plan) Engine() (*dialplan.Engine, error) {
	var nums []string
	for _, n := range p.exts.List() {
		if m, err := dialplan.Normalize(n); err == nil && m == n && !strings.HasPrefix(n, "+") {
			nums = append(nums, n)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	key := strconv.FormatInt(p.tel.Version(), 10) + "|" + strings.Join(nums, ",")
	if p.eng != nil && key == p.key {
		return p.eng, nil
	}
	cur := p.tel.Current()
	// Ring group numbers route like extensions (firmware/features rings
	// their members). A SIP extension created later with a group's number
	// is not listed twice (the group rings).
	// Menus and time conditions likewise (firmware/ivr answers or
	// resolves them in front of the features).
	for _, g := range append(cur.Features.GroupNumbers(), cur.IVR.Numbers()...) {
		if !slices.Contains(nums, g) {
			nums = append(nums, g)
		}
	}
	plan := cur.Plan(nums)
	var eng *dialplan.Engine
	var err error
	if p.eng != nil {
		eng, err = p.eng.Rebuild(plan)
	} else {
		eng, err = dialplan.New(plan, p.gate, p.events)
	}
	if err != nil {
		return nil, fmt.Errorf("dial plan: %w", err)
	}
	p.key, p.eng = key, eng
	return eng, nil
}

// RouteOutbound routes a number dialled by an extension.
func (p *Plan) RouteOutbound(from, dialled string) (dialplan.Decision, *dialplan.Lease, error) {
	e, err := p.Engine()
	if err != nil {
		return dialplan.Decision{}, nil, err
	}
	return e.RouteOutbound(from, dialled)
}

// RouteInbound routes a number called over a trunk.
func (p *Plan) RouteInbound(trunk, called string) (dialplan.Decision, *dialplan.Lease, error) {
	e, err := p.Engine()
	if err != nil {
		return dialplan.Decision{}, nil, err
	}
	return e.RouteInbound(trunk, called)
}

// AdmitApp takes extension from's concurrency slot for a call the box
// answers itself (the engine's AdmitApp).
func (p *Plan) AdmitApp(from string) (*dialplan.Lease, error) {
	e, err := p.Engine()
	if err != nil {
		return nil, err
	}
	return e.AdmitApp(from)
}

// Check reports whether extension from may call number now, without
// admitting a call (forward destinations, checked when set).
func (p *Plan) Check(from, number string) (dialplan.Decision, error) {
	e, err := p.Engine()
	if err != nil {
		return dialplan.Decision{}, err
	}
	return e.Check(from, number)
}
