// Package callrec records bridged calls: the recording policy per
// extension, trunk and outbound route (never, on demand, always), and the
// sessions that tap the media relay's plaintext RTP of a two-party call
// into the encrypted recording store (firmware/mediaserver/recording).
//
// Precedence when several rules apply to one call: never > on demand >
// always. The rule that protects the people on the call wins: an
// extension marked never (a works council, a doctor's line) is not
// recorded through an always trunk, and an on-demand party keeps control
// of the recording against an always rule elsewhere. Only an extension's
// phone can toggle an on-demand recording; the far end of a trunk cannot.
package callrec

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Mode is what a rule asks for.
type Mode string

// Modes.
const (
	Never    Mode = "never"
	OnDemand Mode = "on-demand"
	Always   Mode = "always"
)

// rank orders modes by precedence: the highest applicable rank wins.
func (m Mode) rank() int {
	switch m {
	case Never:
		return 3
	case OnDemand:
		return 2
	case Always:
		return 1
	}
	return 0
}

// RouteRule applies to outbound calls through a trunk whose dialled number
// starts with Prefix (the dial plan's route prefixes); the longest
// matching prefix applies.
type RouteRule struct {
	Prefix string `json:"prefix"`
	Mode   Mode   `json:"mode"`
}

// Policy is the stored recording configuration. Extensions, trunks and
// routes without a rule are not recorded unless another rule of the call
// says so.
type Policy struct {
	Extensions map[string]Mode `json:"extensions,omitempty"`
	Trunks     map[string]Mode `json:"trunks,omitempty"`
	Routes     []RouteRule     `json:"routes,omitempty"`
	// RetentionDays per recording category ("call", "voicemail"); absent:
	// the store's default (183 days).
	RetentionDays map[string]int `json:"retention_days,omitempty"`
	// Announce plays the recording notice to both parties whenever a
	// recording starts (at the answer, or on the toggle code).
	Announce bool `json:"announce,omitempty"`
}

// ErrPolicy wraps every validation refusal.
var ErrPolicy = errors.New("callrec: invalid policy")

// Bounds of a policy.
const (
	maxRules      = 4096
	maxRoutes     = 256
	maxRetention  = 3650
	maxCategories = 16
)

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	prefixRE   = regexp.MustCompile(`^[0-9*#+]{0,32}$`)
	categoryRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
)

// Validate checks bounds and names; it changes nothing.
func (p Policy) Validate() error {
	if len(p.Extensions)+len(p.Trunks) > maxRules || len(p.Routes) > maxRoutes {
		return fmt.Errorf("%w: more than %d rules or %d routes", ErrPolicy, maxRules, maxRoutes)
	}
	for what, m := range map[string]map[string]Mode{"extension": p.Extensions, "trunk": p.Trunks} {
		for k, v := range m {
			if !nameRE.MatchString(k) {
				return fmt.Errorf("%w: %s %q", ErrPolicy, what, k)
			}
			if v.rank() == 0 {
				return fmt.Errorf("%w: %s %s: mode %q (never, on-demand, always)", ErrPolicy, what, k, v)
			}
		}
	}
	seen := map[string]bool{}
	for _, r := range p.Routes {
		if !prefixRE.MatchString(r.Prefix) || seen[r.Prefix] {
			return fmt.Errorf("%w: route prefix %q (digits, '*', '#', '+', unique)", ErrPolicy, r.Prefix)
		}
		seen[r.Prefix] = true
		if r.Mode.rank() == 0 {
			return fmt.Errorf("%w: route %q: mode %q", ErrPolicy, r.Prefix, r.Mode)
		}
	}
	if len(p.RetentionDays) > maxCategories {
		return fmt.Errorf("%w: more than %d retention categories", ErrPolicy, maxCategories)
	}
	for c, d := range p.RetentionDays {
		if !categoryRE.MatchString(c) || d < 1 || d > maxRetention {
			return fmt.Errorf("%w: retention %q: %d days (1..%d)", ErrPolicy, c, d, maxRetention)
		}
	}
	return nil
}

// Parties are who a call connects, as the B2BUA knows them.
type Parties struct {
	CallerExt, CalleeExt string // extensions ("" for a trunk party)
	Trunk                string // the trunk of an inbound or outbound call
	Outbound             bool   // routed out through Trunk
	Dialled              string // normalised number as dialled
}

// Decision is the policy's outcome for one call.
type Decision struct {
	Mode Mode
	// Toggle says which sides may toggle an on-demand recording: only
	// extensions (index 0: the caller, 1: the callee).
	Toggle [2]bool
	// Why names the rules that applied, for the log.
	Why []string
	// Announce: both parties hear the recording notice when a recording
	// starts (Policy.Announce).
	Announce bool
}

// Resolve applies the precedence never > on demand > always to the rules
// of the call's extensions, trunk and route. No rule: Never.
func (p Policy) Resolve(c Parties) Decision {
	d := Decision{Mode: Never, Announce: p.Announce}
	best := 0
	apply := func(m Mode, why string) {
		if m.rank() == 0 {
			return
		}
		d.Why = append(d.Why, why+"="+string(m))
		if m.rank() > best {
			best, d.Mode = m.rank(), m
		}
	}
	if c.CallerExt != "" {
		apply(p.Extensions[c.CallerExt], "extension "+c.CallerExt)
	}
	if c.CalleeExt != "" {
		apply(p.Extensions[c.CalleeExt], "extension "+c.CalleeExt)
	}
	if c.Trunk != "" {
		apply(p.Trunks[c.Trunk], "trunk "+c.Trunk)
	}
	if c.Outbound && c.Trunk != "" {
		var r *RouteRule
		for i := range p.Routes {
			if strings.HasPrefix(c.Dialled, p.Routes[i].Prefix) && (r == nil || len(p.Routes[i].Prefix) > len(r.Prefix)) {
				r = &p.Routes[i]
			}
		}
		if r != nil {
			apply(r.Mode, "route "+r.Prefix)
		}
	}
	d.Toggle = [2]bool{c.CallerExt != "", c.CalleeExt != ""}
	return d
}

// Clone deep-copies p.
func (p Policy) Clone() Policy {
	q := Policy{Routes: slices.Clone(p.Routes), Announce: p.Announce}
	if p.Extensions != nil {
		q.Extensions = make(map[string]Mode, len(p.Extensions))
		for k, v := range p.Extensions {
			q.Extensions[k] = v
		}
	}
	if p.Trunks != nil {
		q.Trunks = make(map[string]Mode, len(p.Trunks))
		for k, v := range p.Trunks {
			q.Trunks[k] = v
		}
	}
	if p.RetentionDays != nil {
		q.RetentionDays = make(map[string]int, len(p.RetentionDays))
		for k, v := range p.RetentionDays {
			q.RetentionDays[k] = v
		}
	}
	return q
}
