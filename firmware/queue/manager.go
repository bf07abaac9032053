package queue

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
)

// Poll is how long a caller waits before the queue looks for a free agent
// again when none was free (or every free one was just rung).
const Poll = time.Second

// Refusals.
var (
	ErrFull     = errors.New("queue: full")
	ErrNotAgent = errors.New("queue: not an agent of this queue")
	ErrStatic   = errors.New("queue: a static agent is always logged in")
)

// Manager is the live state and the statistics of every queue (since the
// daemon started: they are not stored). It is also a call.DialogObserver:
// an agent with a confirmed call (any call, not only the queue's) is
// talking and is not offered queue calls. Safe for concurrent use.
type Manager struct {
	now func() time.Time

	mu      sync.Mutex
	queues  map[string]*state          // queue number -> state
	talking map[string]map[string]bool // extension -> its confirmed dialogs
	ringing map[string]int             // extension -> queue offers ringing now
}

type state struct {
	agents  map[string]*agentState
	waiting []*Waiter // in the order they came
	stats   counters
}

type agentState struct {
	loggedIn   bool // dynamic agents
	lastEnd    time.Time
	wrapUntil  time.Time
	offered    int
	answered   int
	missed     int
	talk       time.Duration
	answeredAt time.Time
}

type counters struct {
	entered, answered, abandoned, timedOut, refused int
	waitAnswered, longest, talk                     time.Duration
}

// NewManager makes an empty manager; now is the clock (nil: time.Now).
func NewManager(now func() time.Time) *Manager {
	if now == nil {
		now = time.Now
	}
	return &Manager{now: now, queues: map[string]*state{}, talking: map[string]map[string]bool{}, ringing: map[string]int{}}
}

func (m *Manager) state(number string) *state {
	s := m.queues[number]
	if s == nil {
		s = &state{agents: map[string]*agentState{}}
		m.queues[number] = s
	}
	return s
}

func (s *state) agent(ext string) *agentState {
	a := s.agents[ext]
	if a == nil {
		a = &agentState{}
		s.agents[ext] = a
	}
	return a
}

// Login logs dynamic agent ext in to q.
func (m *Manager) Login(q Queue, ext string) error { return m.setLogin(q, ext, true) }

// Logout logs dynamic agent ext out of q.
func (m *Manager) Logout(q Queue, ext string) error { return m.setLogin(q, ext, false) }

func (m *Manager) setLogin(q Queue, ext string, in bool) error {
	a, ok := q.Agent(ext)
	if !ok {
		return fmt.Errorf("%w: %s in %s", ErrNotAgent, ext, q.Number)
	}
	if a.Static {
		return fmt.Errorf("%w: %s in %s", ErrStatic, ext, q.Number)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state(q.Number).agent(ext).loggedIn = in
	return nil
}

// LoggedIn reports whether ext is logged in to q.
func (m *Manager) LoggedIn(q Queue, ext string) bool {
	a, ok := q.Agent(ext)
	if !ok {
		return false
	}
	if a.Static {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state(q.Number).agent(ext).loggedIn
}

// DialogChanged implements call.DialogObserver: it only keeps which
// extensions have a confirmed call.
func (m *Manager) DialogChanged(ev call.DialogEvent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch ev.State {
	case call.DialogConfirmed:
		d := m.talking[ev.Entity]
		if d == nil {
			d = map[string]bool{}
			m.talking[ev.Entity] = d
		}
		d[ev.ID] = true
	case call.DialogTerminated:
		if d := m.talking[ev.Entity]; d != nil {
			delete(d, ev.ID)
			if len(d) == 0 {
				delete(m.talking, ev.Entity)
			}
		}
	}
}

// Waiter is one caller in a queue, from Enter to Ended.
type Waiter struct {
	m       *Manager
	q       string
	entered time.Time
	ringing []string
	by      string // the agent who answered
	left    bool   // answered, timed out or ended
}

// Enter puts a caller in q; ErrFull when q.Capacity callers wait.
func (m *Manager) Enter(q Queue) (*Waiter, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.state(q.Number)
	if len(s.waiting) >= q.Capacity() {
		s.stats.refused++
		return nil, ErrFull
	}
	w := &Waiter{m: m, q: q.Number, entered: m.now()}
	s.waiting = append(s.waiting, w)
	s.stats.entered++
	return w, nil
}

// Pick returns the agents to ring for w now, by q's strategy: logged
// in, not talking, not in wrap-up, not ringing for another caller, and
// not skipped (do-not-disturb, already rung in this round). None while a
// caller who came earlier waits without ringing anybody (first come,
// first served). The agents returned are counted as offered.
func (w *Waiter) Pick(q Queue, skip func(ext string) bool) []Agent {
	m := w.m
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.state(q.Number)
	for _, o := range s.waiting {
		if o == w {
			break
		}
		if len(o.ringing) == 0 {
			return nil
		}
	}
	now := m.now()
	var free []Agent
	for _, a := range q.Agents {
		st := s.agent(a.Extension)
		if !a.Static && !st.loggedIn || len(m.talking[a.Extension]) > 0 || m.ringing[a.Extension] > 0 ||
			now.Before(st.wrapUntil) || skip(a.Extension) {
			continue
		}
		free = append(free, a)
	}
	if len(free) == 0 {
		return nil
	}
	switch q.Strategy {
	case LeastRecent:
		// Stable: equal times keep the configured order.
		slices.SortStableFunc(free, func(x, y Agent) int {
			return s.agent(x.Extension).lastEnd.Compare(s.agent(y.Extension).lastEnd)
		})
		free = free[:1]
	case FewestCalls:
		slices.SortStableFunc(free, func(x, y Agent) int {
			ax, ay := s.agent(x.Extension), s.agent(y.Extension)
			if ax.answered != ay.answered {
				return ax.answered - ay.answered
			}
			return ax.lastEnd.Compare(ay.lastEnd)
		})
		free = free[:1]
	}
	for _, a := range free {
		s.agent(a.Extension).offered++
		m.ringing[a.Extension]++
		w.ringing = append(w.ringing, a.Extension)
	}
	return free
}

// NotAnswered ends the offer to the agents Pick returned last: nobody of
// them answered (ring time, busy, declined, unreachable).
func (w *Waiter) NotAnswered() {
	m := w.m
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.state(w.q)
	for _, ext := range w.ringing {
		s.agent(ext).missed++
	}
	w.stopRinging()
}

// stopRinging forgets w's offers; m.mu held.
func (w *Waiter) stopRinging() {
	for _, ext := range w.ringing {
		if m := w.m; m.ringing[ext] <= 1 {
			delete(m.ringing, ext)
		} else {
			m.ringing[ext]--
		}
	}
	w.ringing = nil
}

// leave takes w out of the waiting list; m.mu held.
func (w *Waiter) leave(s *state) time.Duration {
	w.left = true
	s.waiting = slices.DeleteFunc(s.waiting, func(o *Waiter) bool { return o == w })
	waited := w.m.now().Sub(w.entered)
	s.stats.longest = max(s.stats.longest, waited)
	return waited
}

// Answered records that agent ext answered w's call.
func (w *Waiter) Answered(ext string) {
	m := w.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if w.left || !slices.Contains(w.ringing, ext) {
		return // not one of this queue's offers (a fallback answered)
	}
	s := m.state(w.q)
	for _, o := range w.ringing {
		if o != ext {
			s.agent(o).missed++
		}
	}
	w.stopRinging()
	waited := w.leave(s)
	s.stats.answered++
	s.stats.waitAnswered += waited
	a := s.agent(ext)
	a.answered++
	a.answeredAt = m.now()
	w.by = ext
}

// TimedOut records that w waited the queue's longest wait (the call goes
// to the fallback).
func (w *Waiter) TimedOut() {
	m := w.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if w.left {
		return
	}
	s := m.state(w.q)
	w.stopRinging()
	w.leave(s)
	s.stats.timedOut++
}

// Ended records the end of w's call: an answered call's talk time and
// the agent's wrap-up (wrapUp) start now; a caller still waiting
// abandoned.
func (w *Waiter) Ended(wrapUp time.Duration) {
	m := w.m
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.state(w.q)
	now := m.now()
	if w.by != "" {
		a := s.agent(w.by)
		talk := now.Sub(a.answeredAt)
		a.talk += talk
		a.lastEnd = now
		a.wrapUntil = now.Add(wrapUp)
		s.stats.talk += talk
		w.by = ""
		return
	}
	if w.left {
		return
	}
	w.stopRinging()
	w.leave(s)
	s.stats.abandoned++
}

// Unreachable ends the offer to the agents Pick returned last: none of
// them had a phone registered, so it was no offer (not counted).
func (w *Waiter) Unreachable() {
	m := w.m
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.state(w.q)
	for _, ext := range w.ringing {
		s.agent(ext).offered--
	}
	w.stopRinging()
}

// Position is w's place among q's waiting callers (1: next), 0 when it
// no longer waits.
func (w *Waiter) Position() int {
	m := w.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if w.left {
		return 0
	}
	return slices.Index(m.state(w.q).waiting, w) + 1
}
