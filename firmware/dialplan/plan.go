// Package dialplan decides where a call goes and whether it may: extension
// to extension, outbound over trunks by prefix, inbound DIDs, classes of
// service, licence degradation, emergency numbers, and the per-extension and
// per-trunk limits that stop toll fraud. The plan is data (Plan); Engine
// applies it and keeps the live counters.
package dialplan

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Class is a class of service: which kinds of destination an extension may
// call.
type Class string

// The classes, cheapest first. Emergency numbers are not a class: they are
// always allowed.
const (
	Internal      Class = "internal"
	National      Class = "national"
	International Class = "international"
	Premium       Class = "premium"
)

// DefaultClasses is what an extension may call unless configured otherwise:
// international and premium are blocked by default.
var defaultClasses = []Class{Internal, National}

// DefaultClasses returns the default classes of service.
func DefaultClasses() []Class { return slices.Clone(defaultClasses) }

// Limits bound calls of one extension or trunk. Zero fields take defaults.
type Limits struct {
	MaxConcurrent int `json:"max_concurrent"`
	MaxPerHour    int `json:"max_per_hour"` // outbound (external) call attempts admitted per hour
}

// Extension is one internal number.
type Extension struct {
	Number  string  `json:"number"`
	Classes []Class `json:"classes"` // nil: DefaultClasses
	Limits  Limits  `json:"limits"`
	// NoSuspend keeps the extension usable after a fraud burst (for a
	// reception desk that must keep working); the event is still raised.
	NoSuspend bool `json:"no_suspend"`
}

// Trunk is an ITSP that routes carry calls over.
type Trunk struct {
	Name   string `json:"name"`
	Limits Limits `json:"limits"`
}

// Route sends numbers whose classified form (Classification.National:
// national format, or "+" for international) starts with Prefix over
// Trunk. The longest matching prefix wins. Strip removes leading digits
// and Add prepends digits before sending. An empty Prefix is the default
// route.
type Route struct {
	Prefix string `json:"prefix"`
	Trunk  string `json:"trunk"`
	Strip  int    `json:"strip"`
	Add    string `json:"add"`
	// FeatureCodes are the leading codes (e.g. "#31#" towards a GSM
	// gateway) this route passes to its trunk in front of the number,
	// exactly as listed. Empty: a number dialled with '*' or '#' codes is
	// refused on this route (the trunk might act on them).
	FeatureCodes []string `json:"feature_codes,omitempty"`
}

// maxRouteCodes bounds Route.FeatureCodes.
const maxRouteCodes = 16

// DID maps an inbound number on a trunk (empty Trunk: any) to an extension.
type DID struct {
	Number    string `json:"number"`
	Trunk     string `json:"trunk"`
	Extension string `json:"extension"`
}

// Plan is the whole dial plan as data.
type Plan struct {
	Country string `json:"country"` // ISO 3166 alpha-2, selects numbering facts
	// Emergency adds numbers to the country's emergency list.
	Emergency []string `json:"emergency"`
	// EmergencyTrunk carries emergency calls; empty: the normal routes.
	EmergencyTrunk string `json:"emergency_trunk"`
	// PremiumPrefixes adds national-format premium prefixes.
	PremiumPrefixes []string    `json:"premium_prefixes"`
	Extensions      []Extension `json:"extensions"`
	Trunks          []Trunk     `json:"trunks"`
	Routes          []Route     `json:"routes"`
	DIDs            []DID       `json:"dids"`
	// Burst: this many refused external attempts by one extension within
	// BurstWindow raise a security event and suspend it.
	BurstAttempts int           `json:"burst_attempts"`
	BurstWindow   time.Duration `json:"burst_window"`
}

// Defaults for zero values.
const (
	DefaultExtConcurrent   = 4
	DefaultExtPerHour      = 30
	DefaultTrunkConcurrent = 30
	DefaultTrunkPerHour    = 600
	DefaultBurstAttempts   = 10
	DefaultBurstWindow     = 10 * time.Minute
	maxPerHourLimit        = 100000
)

// Validate checks the plan and reports the first problem. A plan that fails
// is never applied.
func (p Plan) Validate() error {
	if _, ok := LookupCountry(p.Country); !ok {
		return fmt.Errorf("dialplan: unknown country %q", p.Country)
	}
	trunks := map[string]bool{}
	for _, t := range p.Trunks {
		if t.Name == "" || trunks[t.Name] {
			return fmt.Errorf("dialplan: trunk name %q empty or repeated", t.Name)
		}
		if err := t.Limits.validate(); err != nil {
			return fmt.Errorf("dialplan: trunk %s: %w", t.Name, err)
		}
		trunks[t.Name] = true
	}
	exts := map[string]bool{}
	for _, e := range p.Extensions {
		n := e.Number
		if !digitsOnly(n) {
			return fmt.Errorf("dialplan: extension %q: must be plain digits", e.Number)
		}
		if exts[n] {
			return fmt.Errorf("dialplan: extension %s repeated", n)
		}
		exts[n] = true
		for _, c := range e.Classes {
			switch c {
			case Internal, National, International, Premium:
			default:
				return fmt.Errorf("dialplan: extension %s: unknown class %q", n, c)
			}
		}
		if err := e.Limits.validate(); err != nil {
			return fmt.Errorf("dialplan: extension %s: %w", n, err)
		}
	}
	c, _ := LookupCountry(p.Country)
	for _, r := range p.Routes {
		if r.Prefix != "" && r.Prefix != "+" && !plainNumber(r.Prefix) {
			return fmt.Errorf("dialplan: route prefix %q: digits, optionally with a leading +", r.Prefix)
		}
		if !trunks[r.Trunk] {
			return fmt.Errorf("dialplan: route %s: unknown trunk %q", r.Prefix, r.Trunk)
		}
		if r.Strip < 0 || r.Strip > len(r.Prefix) {
			return fmt.Errorf("dialplan: route %s: strip %d", r.Prefix, r.Strip)
		}
		if r.Add != "" && !plainNumber(r.Add) {
			return fmt.Errorf("dialplan: route %s: add %q: digits, optionally with a leading +", r.Prefix, r.Add)
		}
		if len(r.FeatureCodes) > maxRouteCodes {
			return fmt.Errorf("dialplan: route %s: more than %d feature codes", r.Prefix, maxRouteCodes)
		}
		for _, fc := range r.FeatureCodes {
			if n, err := c.Parse(fc); err != nil || n.Core != "" || n.Codes != fc {
				return fmt.Errorf("dialplan: route %s: feature code %q: want codes such as *31# or #31#", r.Prefix, fc)
			}
		}
	}
	if p.EmergencyTrunk != "" && !trunks[p.EmergencyTrunk] {
		return fmt.Errorf("dialplan: unknown emergency trunk %q", p.EmergencyTrunk)
	}
	for _, d := range p.DIDs {
		if !plainNumber(d.Number) {
			return fmt.Errorf("dialplan: DID %q", d.Number) // the admin API maps this exact form to the field
		}
		if !exts[d.Extension] {
			return fmt.Errorf("dialplan: DID %s: unknown extension %q", d.Number, d.Extension)
		}
		if d.Trunk != "" && !trunks[d.Trunk] {
			return fmt.Errorf("dialplan: DID %s: unknown trunk %q", d.Number, d.Trunk)
		}
	}
	for _, n := range append(slices.Clone(p.Emergency), p.PremiumPrefixes...) {
		if !digitsOnly(n) {
			return fmt.Errorf("dialplan: number %q must be plain digits", n)
		}
	}
	if p.BurstAttempts < 0 || p.BurstWindow < 0 {
		return errors.New("dialplan: negative burst settings")
	}
	return nil
}

func (l Limits) validate() error {
	if l.MaxConcurrent < 0 || l.MaxPerHour < 0 || l.MaxPerHour > maxPerHourLimit || l.MaxConcurrent > maxPerHourLimit {
		return fmt.Errorf("limits out of range (%d concurrent, %d per hour)", l.MaxConcurrent, l.MaxPerHour)
	}
	return nil
}

func (l Limits) orDefault(concurrent, perHour int) Limits {
	if l.MaxConcurrent == 0 {
		l.MaxConcurrent = concurrent
	}
	if l.MaxPerHour == 0 {
		l.MaxPerHour = perHour
	}
	return l
}
