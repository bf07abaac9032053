// Package queue holds call queues: a number callers dial (or a DID
// reaches) where they wait until one of the queue's agents is free and
// answers. It owns the queues' live state (which dynamic agents are
// logged in, when each agent last finished a call, its wrap-up, the
// callers waiting) and their statistics. The configuration (Queue) lives
// in the telephony configuration beside the ring groups
// (features.Config.Queues); firmware/features turns a queued call into
// the stages the B2BUA rings (call.Hunt).
package queue

import (
	"errors"
	"fmt"
	"strings"
)

// Strategy says which free agents a queued call rings.
type Strategy string

// Strategies.
const (
	RingAll     Strategy = "ring-all"     // every free agent at once
	LeastRecent Strategy = "least-recent" // the free agent whose last queue call ended longest ago
	FewestCalls Strategy = "fewest-calls" // the free agent who answered fewest calls of the queue
)

// Agent is an extension that answers a queue's calls. A static agent is
// always logged in; a dynamic one only after logging in (feature code,
// UI or API). Only listed extensions may log in: a phone cannot join a
// queue the admin did not put it in.
type Agent struct {
	Extension string `json:"extension"`
	Static    bool   `json:"static,omitempty"`
	// Ring is how long this agent rings per offer, seconds (0: the
	// queue's Ring).
	Ring int `json:"ring,omitempty"`
}

// Queue is one call queue.
type Queue struct {
	Number   string   `json:"number"`
	Name     string   `json:"name,omitempty"`
	Strategy Strategy `json:"strategy"`
	Agents   []Agent  `json:"agents"`
	// Ring is how long an agent rings per offer, seconds (0: DefaultRing).
	Ring int `json:"ring,omitempty"`
	// MaxWait is how long a caller waits at most, seconds (0:
	// DefaultMaxWait); then the call goes to Fallback.
	MaxWait int `json:"max_wait,omitempty"`
	// MaxCallers bounds the callers waiting at once (0:
	// DefaultMaxCallers); one more goes to Fallback at once.
	MaxCallers int `json:"max_callers,omitempty"`
	// WrapUp is how long an agent is not offered calls after a queue
	// call ended, seconds.
	WrapUp int `json:"wrap_up,omitempty"`
	// Fallback is where a call goes at MaxWait or when the queue is
	// full: an extension, a ring group, another queue or
	// "voicemail/<extension>"; "": the caller hears 480 (486 when full).
	Fallback string `json:"fallback,omitempty"`
	// Music is the music-on-hold class a waiting caller hears ("": the
	// default class).
	Music string `json:"music,omitempty"`
	// Announce is how often a waiting caller hears its position,
	// seconds (0: never).
	Announce int `json:"announce,omitempty"`
	// Ringback keeps waiting callers unanswered, hearing ringing, instead
	// of answering them with music on hold (the queue/<n> application).
	Ringback bool `json:"ringback,omitempty"`
}

// Defaults and bounds.
const (
	DefaultRing       = 15 // seconds
	MinRing           = 5
	MaxRing           = 120
	DefaultMaxWait    = 300 // seconds
	MinMaxWait        = 5
	MaxMaxWait        = 3600
	DefaultMaxCallers = 32
	MaxCallersLimit   = 256
	MaxWrapUp         = 600 // seconds
	MinAnnounce       = 10  // seconds
	MaxAnnounce       = 600
	MaxQueues         = 64
	MaxAgents         = 64
	maxName           = 64
)

// ErrConfig wraps every validation failure of a Queue.
var ErrConfig = errors.New("queue configuration invalid")

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
}

// RingFor is how long agent a rings per offer, seconds.
func (q Queue) RingFor(a Agent) int {
	switch {
	case a.Ring != 0:
		return a.Ring
	case q.Ring != 0:
		return q.Ring
	}
	return DefaultRing
}

// Wait is the longest a caller waits, seconds.
func (q Queue) Wait() int {
	if q.MaxWait == 0 {
		return DefaultMaxWait
	}
	return q.MaxWait
}

// Capacity is how many callers may wait at once.
func (q Queue) Capacity() int {
	if q.MaxCallers == 0 {
		return DefaultMaxCallers
	}
	return q.MaxCallers
}

// Agent returns q's agent ext.
func (q Queue) Agent(ext string) (Agent, bool) {
	for _, a := range q.Agents {
		if a.Extension == ext {
			return a, true
		}
	}
	return Agent{}, false
}

// Validate reports q's first problem. isExt says whether a number is an
// extension; fallbackOK whether Fallback names a destination that exists
// (checked by the caller, who knows groups and queues).
func (q Queue) Validate(isExt func(string) bool, fallbackOK func(string) bool) error {
	if !digits(q.Number) {
		return bad("queue number %q: digits only", q.Number)
	}
	if len(q.Name) > maxName || strings.ContainsFunc(q.Name, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return bad("queue %s: name too long or with control characters", q.Number)
	}
	switch q.Strategy {
	case RingAll, LeastRecent, FewestCalls:
	default:
		return bad("queue %s: strategy %q: want ring-all, least-recent or fewest-calls", q.Number, q.Strategy)
	}
	if len(q.Agents) == 0 || len(q.Agents) > MaxAgents {
		return bad("queue %s: 1-%d agents", q.Number, MaxAgents)
	}
	seen := map[string]bool{}
	for _, a := range q.Agents {
		if !isExt(a.Extension) || seen[a.Extension] {
			return bad("queue %s: agent %q is not an extension or is listed twice", q.Number, a.Extension)
		}
		seen[a.Extension] = true
		if a.Ring != 0 && (a.Ring < MinRing || a.Ring > MaxRing) {
			return bad("queue %s: agent %s: ring time %d s: want %d-%d", q.Number, a.Extension, a.Ring, MinRing, MaxRing)
		}
	}
	if q.Ring != 0 && (q.Ring < MinRing || q.Ring > MaxRing) {
		return bad("queue %s: ring time %d s: want %d-%d", q.Number, q.Ring, MinRing, MaxRing)
	}
	if q.MaxWait != 0 && (q.MaxWait < MinMaxWait || q.MaxWait > MaxMaxWait) {
		return bad("queue %s: max_wait %d s: want %d-%d", q.Number, q.MaxWait, MinMaxWait, MaxMaxWait)
	}
	if q.MaxCallers < 0 || q.MaxCallers > MaxCallersLimit {
		return bad("queue %s: max_callers %d: want 1-%d", q.Number, q.MaxCallers, MaxCallersLimit)
	}
	if q.WrapUp < 0 || q.WrapUp > MaxWrapUp {
		return bad("queue %s: wrap_up %d s: want 0-%d", q.Number, q.WrapUp, MaxWrapUp)
	}
	if q.Announce != 0 && (q.Announce < MinAnnounce || q.Announce > MaxAnnounce) {
		return bad("queue %s: announce %d s: want %d-%d", q.Number, q.Announce, MinAnnounce, MaxAnnounce)
	}
	if q.Music != "" && !className(q.Music) {
		return bad("queue %s: music class %q: 1-32 of a-z, 0-9, -, _", q.Number, q.Music)
	}
	if q.Fallback != "" && (q.Fallback == q.Number || !fallbackOK(q.Fallback)) {
		return bad("queue %s: fallback %q: an extension, a group, another queue or voicemail/<extension>", q.Number, q.Fallback)
	}
	return nil
}

// Clone copies q deeply.
func (q Queue) Clone() Queue {
	q.Agents = append([]Agent(nil), q.Agents...)
	return q
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

// className is the music library's rule for class names (moh.ErrClass).
func className(s string) bool {
	if s == "" || len(s) > 32 || s[0] == '-' || s[0] == '_' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
