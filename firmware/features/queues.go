package features

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/queue"
)

// Queue returns the queue with number n.
func (c Config) Queue(n string) (queue.Queue, bool) {
	for _, q := range c.Queues {
		if q.Number == n {
			return q, true
		}
	}
	return queue.Queue{}, false
}

// validateQueues checks the queues: numbers are neither extensions nor
// ring groups nor another queue, each queue is valid, and a fallback is an
// extension, a group, another queue or voicemail/<extension>.
func (c Config) validateQueues(isExt func(string) bool, groups map[string]bool) error {
	if len(c.Queues) > queue.MaxQueues {
		return bad("more than %d queues", queue.MaxQueues)
	}
	nums := map[string]bool{}
	for _, q := range c.Queues {
		if nums[q.Number] || groups[q.Number] || isExt(q.Number) {
			return bad("queue number %s is already an extension, a group or a queue", q.Number)
		}
		nums[q.Number] = true
	}
	fallbackOK := func(f string) bool {
		vm, isVM := strings.CutPrefix(f, "voicemail/")
		return isVM && isExt(vm) || isExt(f) || groups[f] || nums[f]
	}
	byNum := map[string]queue.Queue{}
	for _, q := range c.Queues {
		if err := q.Validate(isExt, fallbackOK); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		byNum[q.Number] = q
	}
	// A caller moves from queue to queue by their fallbacks (queueapp.go):
	// no loop, and at most MaxQueueFallbacks moves.
	for _, q := range c.Queues {
		seen := map[string]bool{q.Number: true}
		for n, f := 0, q.Fallback; ; n++ {
			next, ok := byNum[f]
			if !ok {
				break
			}
			if seen[f] {
				return bad("queue %s: its fallbacks through queues loop back to %s", q.Number, f)
			}
			if n >= MaxQueueFallbacks {
				return bad("queue %s: more than %d queues in a row in its fallbacks", q.Number, MaxQueueFallbacks)
			}
			seen[f] = true
			f = next.Fallback
		}
	}
	return nil
}

// Option changes how New builds an Engine.
type Option func(*Engine)

// WithQueues serves the configured queues with m's live state (the admin
// API reads the same manager); without it the engine keeps its own.
func WithQueues(m *queue.Manager) Option { return func(e *Engine) { e.queues = m } }

// Queues is the queues' live state and statistics.
func (e *Engine) Queues() []queue.Stats {
	return e.queues.Stats(e.conf().Queues, func(ext string) bool { return e.users.Get(ext).DND })
}

// ErrNoQueue: the queue does not exist.
var ErrNoQueue = errors.New("features: no such queue")

// QueueLogin logs dynamic agent ext in to (in) or out of queue number;
// number "" means every queue ext is a dynamic agent of.
func (e *Engine) QueueLogin(ext, number string, in bool) error {
	conf := e.conf()
	var qs []queue.Queue
	if number == "" {
		for _, q := range conf.Queues {
			if a, ok := q.Agent(ext); ok && !a.Static {
				qs = append(qs, q)
			}
		}
		if len(qs) == 0 {
			return fmt.Errorf("%w: %s is no dynamic agent of any queue", queue.ErrNotAgent, ext)
		}
	} else {
		q, ok := conf.Queue(number)
		if !ok {
			return fmt.Errorf("%w: %.32s", ErrNoQueue, number)
		}
		qs = []queue.Queue{q}
	}
	for _, q := range qs {
		var err error
		if in {
			err = e.queues.Login(q, ext)
		} else {
			err = e.queues.Logout(q, ext)
		}
		if err != nil {
			return err
		}
		e.log.Info("features: queue agent", "queue", q.Number, "ext", ext, "logged_in", in)
	}
	return nil
}

// queueCode carries out the login/logout codes (*45<queue>, *46<queue>;
// no queue: all of the caller's). A refusal is the dial plan's 403, an
// unknown queue its 404.
func (e *Engine) queueCode(from, arg string, in bool) error {
	if arg != "" && !digits(arg) {
		return fmt.Errorf("%w: queue %q: %w", ErrNotAvailable, arg, dialplan.ErrNoRoute)
	}
	err := e.QueueLogin(from, arg, in)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNoQueue):
		return fmt.Errorf("%w: %w: %w", ErrNotAvailable, err, dialplan.ErrNoRoute)
	}
	e.log.Info("features: queue login refused", "ext", from, "queue", arg, "err", err)
	return fmt.Errorf("%w: %w: %w", ErrNotAvailable, err, dialplan.ErrBlocked)
}

// queueNode offers a queued caller to the queue's free agents until one
// answers or the caller waited the queue's longest wait (then the
// fallback rings).
type queueNode struct {
	q        queue.Queue
	w        *queue.Waiter // nil: the queue was full
	deadline time.Time
	tried    map[string]bool // agents rung in this round
	rang     bool
	offered  bool // an offer rang (or none could): the next wait is the application's
	done     bool
}

// queueCalls is what a hunt's queues need to hear about the call (the
// waiters of every queue it passed through).
type queueCalls struct {
	mu      sync.Mutex
	waiters []waiting
}

type waiting struct {
	w      *queue.Waiter
	wrapUp time.Duration
}

// Answered implements call.HuntReporter.
func (h *hunt) Answered(ext string) {
	h.qc.mu.Lock()
	ws := h.qc.waiters
	h.qc.mu.Unlock()
	for _, x := range ws {
		x.w.Answered(ext)
	}
}

// Ended implements call.HuntReporter.
func (h *hunt) Ended() {
	h.qc.mu.Lock()
	ws := h.qc.waiters
	h.qc.mu.Unlock()
	for _, x := range ws {
		x.w.Ended(x.wrapUp)
	}
}

func (h *hunt) newQueue(q queue.Queue) node {
	h.visited["queue/"+q.Number] = true
	n := &queueNode{q: q, tried: map[string]bool{}, deadline: time.Now().Add(time.Duration(q.Wait()) * time.Second)}
	w, err := h.e.queues.Enter(q)
	if err != nil {
		h.e.log.Info("features: queue full", "queue", q.Number)
		return n
	}
	n.w = w
	h.qc.mu.Lock()
	h.qc.waiters = append(h.qc.waiters, waiting{w: w, wrapUp: time.Duration(q.WrapUp) * time.Second})
	h.qc.mu.Unlock()
	return n
}

func (n *queueNode) next(h *hunt, o call.Outcome) (call.Stage, bool) {
	if n.done {
		return call.Stage{}, false
	}
	if n.w == nil {
		return n.fallback(h, 486)
	}
	if n.rang {
		n.rang = false
		if o.Unreachable {
			n.w.Unreachable()
		} else {
			n.w.NotAnswered()
		}
	}
	left := time.Until(n.deadline)
	if left <= 0 {
		n.w.TimedOut()
		return n.fallback(h, 480)
	}
	app := h.e.qapp.Load()
	if app != nil && !n.q.Ringback && n.offered {
		// Nobody answered at once: the caller is answered and waits
		// with music (queueapp.go); the hunt ends here.
		n.done = true
		return call.Stage{App: app.issue(ticket{q: n.q, w: n.w, h: h, expires: n.deadline})}, true
	}
	agents := n.w.Pick(n.q, func(ext string) bool { return n.tried[ext] || h.e.users.Get(ext).DND })
	n.offered = true
	if len(agents) == 0 && app != nil && !n.q.Ringback {
		return n.next(h, o)
	}
	if len(agents) == 0 {
		clear(n.tried) // a new round: who did not answer is offered again
		return call.Stage{Wait: min(queue.Poll, left), Uncounted: true}, true
	}
	n.rang = true
	st := call.Stage{Uncounted: true}
	ring := time.Duration(n.q.RingFor(agents[0])) * time.Second
	if n.q.Strategy == queue.RingAll {
		ring = time.Duration(n.q.RingFor(queue.Agent{})) * time.Second
	}
	st.Ring = min(ring, left)
	for _, a := range agents {
		n.tried[a.Extension] = true
		st.Dests = append(st.Dests, call.Dest{Extension: a.Extension})
	}
	return st, true
}

// fallback sends the call to the queue's fallback, or answers code.
func (n *queueNode) fallback(h *hunt, code int) (call.Stage, bool) {
	n.done = true
	if n.q.Fallback != "" {
		return h.forward("", n.q.Fallback)
	}
	return call.Stage{Code: code}, true
}
