package features

import (
	"slices"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
)

// hunt is the stages of one call: the node it is at (an extension with
// its settings, a ring group, an outward forward) moves on with each
// forward. visited and hops bound forwarding chains: a loop (A to B to A)
// ends the call with 482 at the second visit, a chain longer than
// Config.MaxHops likewise.
type hunt struct {
	e       *Engine
	conf    Config
	visited map[string]bool
	hops    int
	cur     node
	qc      queueCalls // the queues this call waited in
}

// node is one place a call is being put through.
type node interface {
	next(h *hunt, o call.Outcome) (call.Stage, bool)
}

// Next implements call.Hunt.
func (h *hunt) Next(o call.Outcome) (call.Stage, bool) { return h.cur.next(h, o) }

const (
	codeBusy = 486
	codeLoop = 482
)

// end is a node with nothing more to ring.
type end struct{}

func (end) next(*hunt, call.Outcome) (call.Stage, bool) { return call.Stage{}, false }

// forward moves the call from extension from (or a group, from "") to
// dest and returns dest's first stage.
func (h *hunt) forward(from, dest string) (call.Stage, bool) {
	h.cur = end{}
	h.hops++
	if h.hops > h.conf.Hops() {
		h.e.log.Info("features: forwarding chain too long", "from", from, "to", dest)
		return call.Stage{Code: codeLoop}, true
	}
	if dest == Voicemail {
		return call.Stage{App: "voicemail/" + from}, true
	}
	if vm, ok := strings.CutPrefix(dest, "voicemail/"); ok {
		return call.Stage{App: "voicemail/" + vm}, true
	}
	n, err := dialplan.Normalize(dest)
	if err != nil {
		return call.Stage{Code: 480}, true
	}
	if q, ok := h.conf.Queue(n); ok {
		if h.visited["queue/"+n] {
			return call.Stage{Code: codeLoop}, true
		}
		h.cur = h.newQueue(q)
		return h.cur.next(h, call.Outcome{First: true})
	}
	if g, ok := h.conf.Group(n); ok {
		if h.visited["group/"+n] {
			return call.Stage{Code: codeLoop}, true
		}
		h.cur = h.newGroup(g)
		return h.cur.next(h, call.Outcome{First: true})
	}
	if from == "" { // a group's fallback: internal destinations only
		h.cur = h.newExt(n)
		return h.cur.next(h, call.Outcome{First: true})
	}
	// A forward is a call of the forwarding extension: routed, classed,
	// limited and admitted as one (the lease is held by the call).
	d, lease, err := h.e.base.RouteOutbound(from, n)
	if err != nil {
		h.e.log.Info("features: forward refused", "from", from, "to", n, "err", err)
		return call.Stage{Code: 480}, true
	}
	switch d.Kind {
	case dialplan.KindInternal:
		lease.Release() // the caller's own call already holds its slot
		if h.visited[d.Target] {
			h.e.log.Info("features: forwarding loop", "from", from, "to", d.Target)
			return call.Stage{Code: codeLoop}, true
		}
		h.cur = h.newExt(d.Target)
		return h.cur.next(h, call.Outcome{First: true})
	case dialplan.KindOutbound:
		return call.Stage{Dests: []call.Dest{{Trunk: d.Trunk, Number: d.Target, As: from, Lease: lease}}}, true
	}
	lease.Release()
	return call.Stage{Code: 480}, true
}

// dest is one follow-me number as a stage destination (nil: refused now).
func (h *hunt) dest(from, number string) *call.Dest {
	d, lease, err := h.e.base.RouteOutbound(from, number)
	if err != nil {
		h.e.log.Info("features: follow-me number refused", "from", from, "to", number, "err", err)
		return nil
	}
	switch d.Kind {
	case dialplan.KindInternal:
		lease.Release()
		if h.visited[d.Target] {
			return nil
		}
		return &call.Dest{Extension: d.Target}
	case dialplan.KindOutbound:
		return &call.Dest{Trunk: d.Trunk, Number: d.Target, As: from, Lease: lease}
	}
	lease.Release()
	return nil
}

// extNode rings an extension as its user set it up.
type extNode struct {
	ext   string
	s     Settings
	phase int
	fm    int // next follow-me number (sequential)
}

const (
	phStart = iota
	phRung
	phFollow
	phDone
)

func (h *hunt) newExt(ext string) node {
	h.visited[ext] = true
	return &extNode{ext: ext, s: h.e.users.Get(ext)}
}

func (n *extNode) followMe() bool { return n.s.FollowMe.On && len(n.s.FollowMe.Numbers) > 0 }

func (n *extNode) next(h *hunt, o call.Outcome) (call.Stage, bool) {
	s := n.s
	switch n.phase {
	case phStart:
		n.phase = phRung
		if s.Always != "" {
			return h.forward(n.ext, s.Always)
		}
		if s.DND {
			return n.busy(h)
		}
		st := call.Stage{Dests: []call.Dest{{Extension: n.ext}}}
		if s.NoAnswer != "" || n.followMe() {
			st.Ring = seconds(s.Ring, DefaultRing)
		}
		if n.followMe() && s.FollowMe.Together {
			for _, num := range s.FollowMe.Numbers {
				if d := h.dest(n.ext, num); d != nil {
					st.Dests = append(st.Dests, *d)
				}
			}
			n.fm = len(s.FollowMe.Numbers)
		}
		return st, true
	case phRung:
		n.phase = phFollow
		switch {
		case o.Unreachable && s.Unreachable != "":
			return h.forward(n.ext, s.Unreachable)
		case o.Code == 486 || o.Code == 600:
			return n.busy(h)
		case o.Code == 603:
			return call.Stage{}, false
		}
		return n.next(h, o)
	case phFollow:
		if n.followMe() && n.fm < len(s.FollowMe.Numbers) {
			for n.fm < len(s.FollowMe.Numbers) {
				num := s.FollowMe.Numbers[n.fm]
				n.fm++
				if d := h.dest(n.ext, num); d != nil {
					return call.Stage{Dests: []call.Dest{*d}, Ring: seconds(s.FollowMe.Ring, DefaultRing)}, true
				}
			}
		}
		n.phase = phDone
		if s.NoAnswer != "" {
			return h.forward(n.ext, s.NoAnswer)
		}
	}
	return call.Stage{}, false
}

func (n *extNode) busy(h *hunt) (call.Stage, bool) {
	n.phase = phDone
	if n.s.Busy != "" {
		st, ok := h.forward(n.ext, n.s.Busy)
		if st.App != "" {
			st.Reason = call.ReasonBusy // do-not-disturb too: the busy greeting
		}
		return st, ok
	}
	return call.Stage{Code: codeBusy}, true
}

// groupNode rings a ring group's members by its strategy, then its
// fallback.
type groupNode struct {
	g      RingGroup
	stages []call.Stage
	i      int
}

func (h *hunt) newGroup(g RingGroup) node {
	h.visited["group/"+g.Number] = true
	var avail []Member
	for _, m := range g.Members {
		// Members in do-not-disturb are skipped, not forwarded: a group
		// call is the group's, not the member's.
		if !h.e.users.Get(m.Extension).DND {
			avail = append(avail, m)
		}
	}
	n := &groupNode{g: g}
	switch g.Strategy {
	case RingAll:
		st := call.Stage{Ring: seconds(g.Ring, DefaultRing)}
		for _, m := range avail {
			st.Dests = append(st.Dests, call.Dest{Extension: m.Extension})
		}
		n.stages = []call.Stage{st}
	case InOrder, RoundRobin:
		if g.Strategy == RoundRobin && len(avail) > 0 {
			k := h.e.turn(g.Number, len(avail))
			avail = append(slices.Clone(avail[k:]), avail[:k]...)
		}
		for _, m := range avail {
			n.stages = append(n.stages, call.Stage{Dests: []call.Dest{{Extension: m.Extension}}, Ring: seconds(m.Ring, DefaultRing)})
		}
	}
	return n
}

func (n *groupNode) next(h *hunt, o call.Outcome) (call.Stage, bool) {
	if !o.First && o.Code == 603 {
		return call.Stage{}, false // a member declined the call for the group
	}
	if n.i < len(n.stages) {
		n.i++
		return n.stages[n.i-1], true
	}
	if n.g.Fallback != "" {
		return h.forward("", n.g.Fallback)
	}
	return call.Stage{}, false
}

// turn returns where a round-robin group's next call starts, and moves it
// on by one.
func (e *Engine) turn(group string, members int) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := e.rr[group] % members
	e.rr[group] = k + 1
	return k
}
