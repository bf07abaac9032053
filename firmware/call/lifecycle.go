package call

import (
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
)

// DefaultCloseGrace is how long Close lets the BYEs and CANCELs of the
// calls it hangs up run before it aborts what is left.
const DefaultCloseGrace = 2 * time.Second

// group counts the goroutines the B2BUA runs: those it starts (BYE,
// CANCEL, PRACK, transfers, the losing branches of a fork, timer
// callbacks) and the edge's handler goroutines while they are inside the
// B2BUA (net/http's Server tracks its connections the same way), so that
// Close can join every one of them. Unlike a sync.WaitGroup it may be
// waited on with a deadline while goroutines are still being added, and
// it refuses new ones once shut.
type group struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed while n == 0
	shut bool
}

func newGroup() *group {
	g := &group{idle: make(chan struct{})}
	close(g.idle)
	return g
}

// add counts one more goroutine; false once the group is shut.
func (g *group) add() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut {
		return false
	}
	if g.n == 0 {
		g.idle = make(chan struct{})
	}
	g.n++
	return true
}

func (g *group) done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 {
		close(g.idle)
	}
}

// wait returns when no goroutine is counted or when stop fires.
func (g *group) wait(stop <-chan time.Time) {
	for {
		g.mu.Lock()
		idle := g.idle
		g.mu.Unlock()
		select {
		case <-idle:
			// Another goroutine may have been added after idle closed.
			g.mu.Lock()
			n := g.n
			g.mu.Unlock()
			if n == 0 {
				return
			}
		case <-stop:
			return
		}
	}
}

// shutdown refuses new goroutines and waits for the counted ones.
func (g *group) shutdown() {
	g.mu.Lock()
	g.shut = true
	idle := g.idle
	g.mu.Unlock()
	<-idle
}

// spawn runs f on a new goroutine tied to the B2BUA's lifetime; once Close
// has joined everything, f is not run (the B2BUA sends nothing more).
func (b *B2BUA) spawn(f func()) {
	if !b.g.add() {
		return
	}
	go func() {
		defer b.g.done()
		f()
	}()
}

// tracked runs f on the current goroutine (an edge handler, a timer
// callback) counted by the group; false when the B2BUA is shut and f did
// not run.
func (b *B2BUA) tracked(f func()) bool {
	if !b.g.add() {
		return false
	}
	defer b.g.done()
	f()
	return true
}

// Close hangs up every call (BYE to both legs, CDR written), refuses new
// ones, and returns once every goroutine of the B2BUA has ended. The BYEs
// and CANCELs get Config.CloseGrace to finish; then every transaction
// still running is abandoned.
func (b *B2BUA) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.hangupAll()
	grace := time.NewTimer(b.cfg.CloseGrace)
	b.g.wait(grace.C)
	grace.Stop()
	b.stop()
	// Calls that connected meanwhile (their INVITE was past the closed
	// check): their BYEs are abandoned at once now.
	b.hangupAll()
	b.g.shutdown()
	// Whatever is left could not run its teardown: release it here.
	for _, c := range b.liveCalls() {
		c.mu.Lock()
		answered := !c.rec.Answer.IsZero()
		c.mu.Unlock()
		if answered {
			c.finish(cdr.Answered, 0, "shutdown")
		} else {
			c.finish(cdr.Failed, 503, "shutdown")
		}
	}
	return nil
}

func (b *B2BUA) hangupAll() {
	for _, c := range b.liveCalls() {
		c.hangup(-1, "shutdown")
	}
}

func (b *B2BUA) liveCalls() []*call {
	b.mu.Lock()
	defer b.mu.Unlock()
	cs := make([]*call, 0, len(b.calls))
	for c := range b.calls {
		cs = append(cs, c)
	}
	return cs
}
