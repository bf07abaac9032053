// Package pending is PID 1's one "commit when healthy, revert otherwise"
// type: a change is applied at once and stays pending until it is
// confirmed (by an admin over a connection opened after the change, or by
// a health check that held for long enough); when its deadline passes
// unconfirmed it is reverted. The firewall policy (netfw), the network
// (netconf) and a firmware trial boot (init/update) all use it.
//
// A Gate holds only the pending change's id, deadline and timer. It has no
// lock of its own: the owner calls it under the lock that guards the
// change itself, so "is this id still pending" and "revert it" are one step
// (see Expire).
package pending

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"time"
)

// Errors of a gate.
var (
	ErrNone   = errors.New("no change is pending")
	ErrID     = errors.New("pending change id does not match")
	ErrClosed = errors.New("closed")
)

// Timer is what a gate needs of time; tests inject a manual clock.
type Timer interface {
	Now() time.Time
	// AfterFunc runs f after d; the returned func stops it (false if it
	// already ran or was stopped).
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// Wall is the real clock.
type Wall struct{}

// Now is time.Now.
func (Wall) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (Wall) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// Gate is one pending change at a time. The zero value is not usable: New.
type Gate struct {
	timer    Timer
	id       string
	deadline time.Time
	stop     func() bool
	closed   bool
}

// New returns a gate on t (Wall{} if nil).
func New(t Timer) *Gate {
	if t == nil {
		t = Wall{}
	}
	return &Gate{timer: t}
}

// Now is the gate's clock.
func (g *Gate) Now() time.Time { return g.timer.Now() }

// Arm makes a new change pending for d, replacing one already pending
// (whose revert no longer runs). When d passes, expire runs with the new
// id, from the timer's goroutine and without any lock: it must take the
// owner's lock and call Expire(id) before reverting.
func (g *Gate) Arm(d time.Duration, expire func(id string)) (id string, deadline time.Time, err error) {
	if g.closed {
		return "", time.Time{}, ErrClosed
	}
	g.disarm()
	b := make([]byte, 16)
	rand.Read(b)
	id = hex.EncodeToString(b)
	g.id, g.deadline = id, g.timer.Now().Add(d)
	g.stop = g.timer.AfterFunc(d, func() { expire(id) })
	return id, g.deadline, nil
}

// Pending reports the pending change: its id, deadline and time left.
func (g *Gate) Pending() (id string, deadline time.Time, remaining time.Duration, ok bool) {
	if g.id == "" {
		return "", time.Time{}, 0, false
	}
	return g.id, g.deadline, max(0, g.deadline.Sub(g.timer.Now())), true
}

// Check reports whether id names the pending change.
func (g *Gate) Check(id string) error {
	if g.id == "" {
		return ErrNone
	}
	if len(id) != len(g.id) || subtle.ConstantTimeCompare([]byte(id), []byte(g.id)) != 1 {
		return ErrID
	}
	return nil
}

// Confirm makes the pending change id permanent: commit runs first (it
// persists the change), and only if it succeeds is the revert disarmed. A
// failed commit leaves the change pending, so it still reverts unless a
// retry succeeds.
func (g *Gate) Confirm(id string, commit func() error) error {
	if err := g.Check(id); err != nil {
		return err
	}
	if commit != nil {
		if err := commit(); err != nil {
			return err
		}
	}
	g.disarm()
	return nil
}

// Expire is called by the owner's expire func under its lock: it reports
// whether id is still the pending change, and if so ends it (the owner
// reverts). A change confirmed or replaced in the meantime is not.
func (g *Gate) Expire(id string) bool {
	if g.Check(id) != nil {
		return false
	}
	g.id, g.deadline, g.stop = "", time.Time{}, nil
	return true
}

// Close disarms a pending revert without running it (shutdown) and
// refuses later changes.
func (g *Gate) Close() {
	g.disarm()
	g.closed = true
}

// Closed reports whether Close was called: owners refuse a change before
// applying it.
func (g *Gate) Closed() bool { return g.closed }

func (g *Gate) disarm() {
	if g.stop != nil {
		g.stop()
	}
	g.id, g.deadline, g.stop = "", time.Time{}, nil
}

// Steady tells when a health condition has held without a break for a
// duration: the "healthy for N minutes" of a trial boot. One failed
// observation starts the count again.
type Steady struct {
	For   time.Duration
	since time.Time
	up    bool
}

// Observe records one health observation at now and reports whether the
// condition has held continuously for at least s.For.
func (s *Steady) Observe(now time.Time, healthy bool) bool {
	if !healthy {
		s.up = false
		return false
	}
	if !s.up {
		s.up, s.since = true, now
	}
	return now.Sub(s.since) >= s.For
}

// Since is when the current healthy run began (zero if unhealthy).
func (s *Steady) Since() time.Time {
	if !s.up {
		return time.Time{}
	}
	return s.since
}
