package features

// Call park: the admin's park slots (a run of numbers such as 71-78), the
// routing of the park code and of slot numbers, and who may retrieve or
// watch a slot. The B2BUA holds which call waits in which slot
// (firmware/call park.go); the waiting party is answered by the park
// application (parkapp.go).

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
)

// ParkSlots is the park-slot configuration; Count 0: park is off (the code is
// answered like an unknown number).
type ParkSlots struct {
	// First is the first slot's number; the others follow it (71, 72 …,
	// keeping its width: 0701, 0702 …).
	First string `json:"first,omitempty"`
	Count int    `json:"count,omitempty"`
	// Timeout is how long a call waits parked before it rings its parker
	// back, in seconds (0: DefaultParkTimeout).
	Timeout int `json:"timeout,omitempty"`
	// Fallback is where a parked call goes when its parker does not
	// answer the ring-back and has no no-answer forward: an extension, a
	// ring group or "voicemail/<extension>"; "": the parker's voicemail
	// when it has a mailbox, else the call is parked once more.
	Fallback string `json:"fallback,omitempty"`
	// Music is the music-on-hold class parked calls hear ("": default).
	Music string `json:"music,omitempty"`
}

// Bounds of the park configuration.
const (
	DefaultParkTimeout = 120 // seconds
	MinParkTimeout     = 10
	MaxParkTimeout     = 3600
	MaxParkSlots       = 64
	// ParkRing is how long the parker's phone rings at the ring-back.
	ParkRing = 30 // seconds
)

// Slots lists the slot numbers (none when park is off or invalid).
func (p ParkSlots) Slots() []string {
	if p.Count <= 0 || p.Count > MaxParkSlots || !digits(p.First) || len(p.First) > 9 {
		return nil
	}
	n, err := strconv.Atoi(p.First)
	if err != nil {
		return nil
	}
	out := make([]string, 0, p.Count)
	for i := 0; i < p.Count; i++ {
		s := strconv.Itoa(n + i)
		if len(s) < len(p.First) {
			s = strings.Repeat("0", len(p.First)-len(s)) + s
		}
		out = append(out, s)
	}
	return out
}

// IsSlot reports whether n is a park slot's number.
func (p ParkSlots) IsSlot(n string) bool {
	for _, s := range p.Slots() {
		if s == n {
			return true
		}
	}
	return false
}

// TimeoutSeconds is the park timeout in force.
func (p ParkSlots) TimeoutSeconds() int { return ringOr(p.Timeout, DefaultParkTimeout) }

// validate checks the park slots against the other numbers (isExt:
// extensions; taken: ring groups, queues).
func (p ParkSlots) validate(isExt func(string) bool, taken map[string]bool) error {
	if p.Count == 0 && p.First == "" && p.Timeout == 0 && p.Fallback == "" && p.Music == "" {
		return nil
	}
	if p.Count < 1 || p.Count > MaxParkSlots {
		return bad("park: count %d: want 1-%d", p.Count, MaxParkSlots)
	}
	if !digits(p.First) || len(p.First) > 9 {
		return bad("park: first slot %q: 1-9 digits", p.First)
	}
	slots := p.Slots()
	last := slots[len(slots)-1]
	if len(last) != len(p.First) {
		return bad("park: slots %s-%s change width", p.First, last)
	}
	for _, s := range slots {
		if isExt(s) || taken[s] {
			return bad("park: slot %s is already an extension, a group or a queue", s)
		}
	}
	if p.Timeout != 0 && (p.Timeout < MinParkTimeout || p.Timeout > MaxParkTimeout) {
		return bad("park: timeout %d s: want %d-%d", p.Timeout, MinParkTimeout, MaxParkTimeout)
	}
	if f := p.Fallback; f != "" {
		vm, isVM := strings.CutPrefix(f, "voicemail/")
		if !(isVM && isExt(vm)) && !isExt(f) && !taken[f] {
			return bad("park: fallback %q: an extension, a group or voicemail/<extension>", f)
		}
	}
	if len(p.Music) > maxName || strings.Trim(p.Music, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		return bad("park: music class %q: lower-case letters, digits, '-' and '_'", p.Music)
	}
	return nil
}

// park routes the park code dialled (or transferred to) by from: the
// B2BUA parks the call in the first free slot (call.ParkApp).
func (e *Engine) park(from string) (dialplan.Decision, error) {
	slots := e.conf().Park.Slots()
	if len(slots) == 0 || from == "" {
		return dialplan.Decision{}, fmt.Errorf("%w: park: no park slots: %w", ErrNotAvailable, dialplan.ErrNoRoute)
	}
	return dialplan.Decision{Kind: dialplan.KindApp, Class: dialplan.Internal,
		Target: call.ParkApp + strings.Join(slots, ",")}, nil
}

// slot routes a slot number dialled by from: the B2BUA bridges from to
// the call waiting there if its parker is one of the extensions from may
// see (call.RetrieveApp "<slot>/<visible,…>"); a transfer to it parks the
// call in that slot (directed park).
func (e *Engine) slot(from, n string) dialplan.Decision {
	return dialplan.Decision{Kind: dialplan.KindApp, Class: dialplan.Internal, Dialled: n,
		Target: call.RetrieveApp + n + "/" + strings.Join(e.conf().Visible(from), ",")}
}

// MayWatchSlot reports whether subscriber may watch a park slot's lamp:
// an extension of a pickup group (one the admin let see others). The
// lamp shows only whether the slot is taken, never who waits there.
func (c Config) MayWatchSlot(subscriber string) bool {
	for _, p := range c.PickupGroups {
		for _, m := range p.Members {
			if m == subscriber {
				return true
			}
		}
	}
	return false
}
