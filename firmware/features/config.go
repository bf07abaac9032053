package features

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/queue"
)

// Strategy says how a ring group rings its members.
type Strategy string

// Strategies.
const (
	RingAll    Strategy = "ring-all"    // every member at once for the group's ring time
	InOrder    Strategy = "in-order"    // one member after another, each for its own ring time
	RoundRobin Strategy = "round-robin" // in order, starting after the member the previous call started with
)

// Member is one extension of a ring group; Ring is its ring time in
// seconds for the sequential strategies (0: DefaultRing).
type Member struct {
	Extension string `json:"extension"`
	Ring      int    `json:"ring,omitempty"`
}

// RingGroup is a dial-plan destination (Number, dialled like an extension
// or reached by a DID) that rings several extensions.
type RingGroup struct {
	Number   string   `json:"number"`
	Name     string   `json:"name,omitempty"`
	Strategy Strategy `json:"strategy"`
	Members  []Member `json:"members"`
	// Ring is the ring time of ring-all in seconds (0: DefaultRing).
	Ring int `json:"ring,omitempty"`
	// Fallback is where a call nobody answered goes: an extension,
	// another group's number or "voicemail/<extension>"; "": the caller
	// hears the failure.
	Fallback string `json:"fallback,omitempty"`
}

// PickupGroup is a set of extensions that may pick up each other's ringing
// calls and watch each other's state (BLF, presence): MaySee.
type PickupGroup struct {
	Name    string   `json:"name"`
	Members []string `json:"members"`
}

// Config is the admin's part, stored in the telephony configuration.
type Config struct {
	// Codes is the feature-code table; nil: DefaultCodes.
	Codes        []Code        `json:"codes,omitempty"`
	Groups       []RingGroup   `json:"ring_groups,omitempty"`
	PickupGroups []PickupGroup `json:"pickup_groups,omitempty"`
	// Queues are call queues (firmware/queue); their numbers route like
	// ring groups.
	Queues []queue.Queue `json:"queues,omitempty"`
	// MaxHops bounds a chain of forwards (A to B to C …; 0: DefaultMaxHops).
	MaxHops int `json:"max_hops,omitempty"`
	// Park is the park slots (park.go).
	Park ParkSlots `json:"park,omitzero"`
}

// Defaults and bounds.
const (
	DefaultRing    = 20 // seconds
	MinRing        = 5
	MaxRing        = 300
	DefaultMaxHops = 4
	maxHopsLimit   = 10
	maxGroups      = 256
	maxMembers     = 32
	maxPickup      = 64
	maxPickupSize  = 256
	maxName        = 64
)

// ErrConfig wraps every validation failure of Config.
var ErrConfig = errors.New("features configuration invalid")

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
}

// Table is the feature-code table in force.
func (c Config) Table() []Code {
	if c.Codes == nil {
		return DefaultCodes()
	}
	return cloneCodes(c.Codes)
}

// Hops is the bound on chained forwards.
func (c Config) Hops() int {
	if c.MaxHops == 0 {
		return DefaultMaxHops
	}
	return c.MaxHops
}

// Validate reports the first problem. isExt says whether a number is an
// extension (SIP account or configured); group numbers must not be one.
func (c Config) Validate(isExt func(string) bool) error {
	if c.Codes != nil {
		if err := validateCodes(c.Codes); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	if c.MaxHops < 0 || c.MaxHops > maxHopsLimit {
		return bad("max_hops %d: want 1-%d", c.MaxHops, maxHopsLimit)
	}
	if len(c.Groups) > maxGroups {
		return bad("more than %d ring groups", maxGroups)
	}
	groups := map[string]bool{}
	for _, g := range c.Groups {
		if !digits(g.Number) {
			return bad("ring group number %q: digits only", g.Number)
		}
		if groups[g.Number] || isExt(g.Number) {
			return bad("ring group number %s is already an extension or a group", g.Number)
		}
		groups[g.Number] = true
	}
	for _, g := range c.Groups {
		if len(g.Name) > maxName || strings.ContainsFunc(g.Name, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return bad("ring group %s: name too long or with control characters", g.Number)
		}
		switch g.Strategy {
		case RingAll, InOrder, RoundRobin:
		default:
			return bad("ring group %s: strategy %q: want ring-all, in-order or round-robin", g.Number, g.Strategy)
		}
		if len(g.Members) == 0 || len(g.Members) > maxMembers {
			return bad("ring group %s: 1-%d members", g.Number, maxMembers)
		}
		seen := map[string]bool{}
		for _, m := range g.Members {
			if !isExt(m.Extension) || seen[m.Extension] {
				return bad("ring group %s: member %q is not an extension or is listed twice", g.Number, m.Extension)
			}
			seen[m.Extension] = true
			if err := ringOK(m.Ring); err != nil {
				return bad("ring group %s: member %s: %v", g.Number, m.Extension, err)
			}
		}
		if err := ringOK(g.Ring); err != nil {
			return bad("ring group %s: %v", g.Number, err)
		}
		if f := g.Fallback; f != "" {
			vm, isVM := strings.CutPrefix(f, "voicemail/")
			if !(isVM && isExt(vm)) && !isExt(f) && !groups[f] || f == g.Number {
				return bad("ring group %s: fallback %q: an extension, another group or voicemail/<extension>", g.Number, f)
			}
		}
	}
	if err := c.validateQueues(isExt, groups); err != nil {
		return err
	}
	taken := maps.Clone(groups)
	for _, q := range c.Queues {
		taken[q.Number] = true
	}
	if err := c.Park.validate(isExt, taken); err != nil {
		return err
	}
	if len(c.PickupGroups) > maxPickup {
		return bad("more than %d pickup groups", maxPickup)
	}
	names := map[string]bool{}
	for _, p := range c.PickupGroups {
		if p.Name == "" || len(p.Name) > maxName || names[p.Name] || strings.ContainsFunc(p.Name, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return bad("pickup group name %q: 1-%d characters, unique", p.Name, maxName)
		}
		names[p.Name] = true
		if len(p.Members) > maxPickupSize {
			return bad("pickup group %s: more than %d members", p.Name, maxPickupSize)
		}
		for _, m := range p.Members {
			if !isExt(m) {
				return bad("pickup group %s: %q is not an extension", p.Name, m)
			}
		}
	}
	return nil
}

func ringOK(s int) error {
	if s != 0 && (s < MinRing || s > MaxRing) {
		return fmt.Errorf("ring time %d s: want %d-%d", s, MinRing, MaxRing)
	}
	return nil
}

func ringOr(s, def int) int {
	if s == 0 {
		return def
	}
	return s
}

// Group returns the ring group with number n.
func (c Config) Group(n string) (RingGroup, bool) {
	for _, g := range c.Groups {
		if g.Number == n {
			return g, true
		}
	}
	return RingGroup{}, false
}

// GroupNumbers lists the ring groups' and queues' numbers (the dial plan
// routes them as internal destinations).
func (c Config) GroupNumbers() []string {
	out := make([]string, 0, len(c.Groups)+len(c.Queues))
	for _, g := range c.Groups {
		out = append(out, g.Number)
	}
	for _, q := range c.Queues {
		out = append(out, q.Number)
	}
	return out
}

// MaySee reports whether subscriber may see target's calls: pick up its
// ringing calls, and watch its dialog state and presence (BLF). An
// extension sees itself; otherwise both must be members of one pickup
// group the admin defined. Nobody sees anybody by default.
func (c Config) MaySee(subscriber, target string) bool {
	if subscriber == "" || target == "" {
		return false
	}
	if subscriber == target {
		return true
	}
	if c.Park.IsSlot(target) {
		return c.MayWatchSlot(subscriber)
	}
	for _, p := range c.PickupGroups {
		if slices.Contains(p.Members, subscriber) && slices.Contains(p.Members, target) {
			return true
		}
	}
	return false
}

// Clone copies c deeply (the stored value must not change under a caller).
func (c Config) Clone() Config {
	if c.Codes != nil {
		c.Codes = cloneCodes(c.Codes)
	}
	c.Groups = slices.Clone(c.Groups)
	for i := range c.Groups {
		c.Groups[i].Members = slices.Clone(c.Groups[i].Members)
	}
	c.Queues = slices.Clone(c.Queues)
	for i := range c.Queues {
		c.Queues[i] = c.Queues[i].Clone()
	}
	c.PickupGroups = slices.Clone(c.PickupGroups)
	for i := range c.PickupGroups {
		c.PickupGroups[i].Members = slices.Clone(c.PickupGroups[i].Members)
	}
	return c
}

func digits(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
