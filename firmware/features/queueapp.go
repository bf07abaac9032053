package features

// The queue/<n> application: a queued caller nobody answered at once is
// answered by the box (the application endpoint) and hears music on hold
// (and, if configured, its position) while the queue offers it to its
// agents by its strategy; an agent's answer hands the caller over to that
// agent (call.ParallelConnector: a ring-all offer rings its agents at
// once) and the music stops. At the longest wait the caller goes to the
// queue's fallback: through the same hand-over (call.Connector), to
// another queue by waiting there in this application (a bounded chain),
// or, for a mailbox, to the voicemail application on the same leg. The
// waiter stays the hunt's: its end (talk time, wrap-up, abandonment) is
// reported by the hunt when the call ends.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/queue"
)

// AppQueue is the application name of a waiting queue caller
// ("queue/<number>/<ticket>").
const AppQueue = "queue"

// QueueMedia is what a waiting caller hears (the daemon's music library
// and prompts).
type QueueMedia interface {
	// Music returns class's music on hold at rate as 20 ms frames.
	Music(class string, rate int) (func() []int16, error)
	// Position is the announcement of position n at rate.
	Position(n, rate int) []int16
}

// ticketTTL bounds how long a ticket waits for its call to open it (the
// hunt hands the caller to the application within one SIP exchange).
const ticketTTL = time.Minute

type ticket struct {
	q       queue.Queue
	w       *queue.Waiter
	h       *hunt
	issued  time.Time
	expires time.Time // the caller's longest wait
}

// queueApps is the queue application of an Engine.
type queueApps struct {
	e     *Engine
	media QueueMedia
	next  call.Apps // voicemail fallbacks (may be nil)

	mu      sync.Mutex
	tickets map[string]ticket
}

// QueueApp answers waiting queue callers with media's music (see the
// file comment) and returns the application to serve under AppQueue;
// next opens voicemail for a "voicemail/<ext>" fallback. Without it queue
// callers hear ringing while they wait. Call before calls are taken.
func (e *Engine) QueueApp(media QueueMedia, next call.Apps) call.Apps {
	a := &queueApps{e: e, media: media, next: next, tickets: map[string]ticket{}}
	e.qapp.Store(a)
	return a
}

// issue registers w's wait in the application and names its target.
func (a *queueApps) issue(t ticket) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	now := time.Now()
	t.issued = now
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, o := range a.tickets { // never opened (the hand-over failed)
		if now.Sub(o.issued) > ticketTTL {
			delete(a.tickets, k)
		}
	}
	a.tickets[id] = t
	return dialplan.AppTarget(AppQueue, t.q.Number+"/"+id)
}

// Open implements call.Apps: only a ticket the hunt issued opens.
func (a *queueApps) Open(app, arg string, _ call.Caller) (call.App, error) {
	n, id, ok := strings.Cut(arg, "/")
	if app != AppQueue || !ok {
		return nil, fmt.Errorf("%w: %.40q", call.ErrNoApp, app+"/"+arg)
	}
	a.mu.Lock()
	t, ok := a.tickets[id]
	delete(a.tickets, id)
	a.mu.Unlock()
	if !ok || t.q.Number != n {
		return nil, fmt.Errorf("%w: queue %.32q: no such waiting caller", call.ErrNoApp, n)
	}
	return &waitingCaller{a: a, t: t}, nil
}

// MaxQueueFallbacks bounds how many queues a caller passes through from
// the waiting application by their fallbacks (configurations with a
// longer chain, or a loop, are refused).
const MaxQueueFallbacks = 3

// waitingCaller is one caller on the queue application.
type waitingCaller struct {
	a       *queueApps
	t       ticket
	visited map[string]bool // the queues it waited in (fallbacks)
}

// Run implements call.App.
func (c *waitingCaller) Run(ctx context.Context, leg call.Leg) error {
	if _, ok := leg.(call.ParallelConnector); !ok {
		return errors.New("features: queue: the leg cannot be handed over")
	}
	c.visited = map[string]bool{c.t.q.Number: true}
	return c.serve(ctx, leg)
}

// serve offers the caller to c.t's queue until an agent answers or the
// caller waited the longest wait (then the fallback).
func (c *waitingCaller) serve(ctx context.Context, leg call.Leg) error {
	e, q, w := c.a.e, c.t.q, c.t.w
	pc := leg.(call.ParallelConnector)
	playCtx, stop := context.WithCancel(ctx)
	played := make(chan struct{})
	go func() { defer close(played); c.play(playCtx, leg, q, w) }()
	halt := func() { stop(); <-played }
	defer halt()
	tried := map[string]bool{}
	for {
		left := time.Until(c.t.expires)
		if left <= 0 {
			w.TimedOut()
			e.log.Info("features: queue caller waited the longest wait", "queue", q.Number)
			return c.fallback(ctx, leg, halt)
		}
		agents := w.Pick(q, func(ext string) bool { return tried[ext] || e.users.Get(ext).DND })
		if len(agents) == 0 {
			clear(tried) // a new round
			t := time.NewTimer(min(queue.Poll, left))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			continue
		}
		// The offer's agents ring at once (a ring-all offer: every free
		// agent for the queue's ring time; the others pick one).
		ds := make([]call.RingDest, 0, len(agents))
		for _, ag := range agents {
			tried[ag.Extension] = true
			ring := time.Duration(q.RingFor(ag)) * time.Second
			if q.Strategy == queue.RingAll {
				ring = time.Duration(q.RingFor(queue.Agent{})) * time.Second
			}
			ds = append(ds, call.RingDest{Dest: call.Dest{Extension: ag.Extension}, Ring: min(ring, left)})
		}
		i, err := pc.ConnectAll(ctx, ds)
		switch {
		case errors.Is(err, call.ErrHandedOver):
			w.Answered(agents[i].Extension)
			e.log.Info("features: queue caller bridged", "queue", q.Number, "agent", agents[i].Extension)
			return err
		case errors.Is(err, call.ErrUnreachable):
			w.Unreachable()
		default:
			w.NotAnswered()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// fallback sends the caller to the queue's fallback; nil (the box hangs
// up) when there is none or it cannot be reached.
func (c *waitingCaller) fallback(ctx context.Context, leg call.Leg, halt func()) error {
	e, f := c.a.e, c.t.q.Fallback
	for f != "" {
		if vm, ok := strings.CutPrefix(f, "voicemail/"); ok {
			if c.a.next == nil {
				return nil
			}
			app, err := c.a.next.Open(dialplan.AppVoicemail, vm, leg.Caller())
			if err != nil {
				e.log.Info("features: queue fallback", "queue", c.t.q.Number, "to", f, "err", err)
				return nil
			}
			halt()
			return app.Run(ctx, leg)
		}
		q, isQueue := e.conf().Queue(f)
		if !isQueue {
			break
		}
		// Another queue: the caller waits there, in this application.
		if c.visited[q.Number] || len(c.visited) > MaxQueueFallbacks || c.t.h == nil {
			e.log.Warn("features: queue fallback chain refused", "queue", c.t.q.Number, "to", f)
			return nil
		}
		c.visited[q.Number] = true
		w, err := e.queues.Enter(q)
		if err != nil { // full: that queue's own fallback
			e.log.Info("features: queue full", "queue", q.Number)
			c.t.q, f = q, q.Fallback
			continue
		}
		// The hunt reports the caller's end to every queue it waited in.
		c.t.h.qc.mu.Lock()
		c.t.h.qc.waiters = append(c.t.h.qc.waiters, waiting{w: w, wrapUp: time.Duration(q.WrapUp) * time.Second})
		c.t.h.qc.mu.Unlock()
		halt()
		e.log.Info("features: queue caller moved to the fallback queue", "queue", c.t.q.Number, "to", q.Number)
		c.t = ticket{q: q, w: w, h: c.t.h, expires: time.Now().Add(time.Duration(q.Wait()) * time.Second)}
		return c.serve(ctx, leg)
	}
	if f == "" {
		return nil
	}
	conn, ok := leg.(call.Connector)
	if !ok {
		return nil
	}
	err := conn.Connect(ctx, dialplan.Decision{Kind: dialplan.KindInternal, Class: dialplan.Internal, Target: f, Dialled: f},
		nil, time.Duration(queue.MaxRing)*time.Second)
	if errors.Is(err, call.ErrHandedOver) {
		return err
	}
	e.log.Info("features: queue fallback not connected", "queue", c.t.q.Number, "to", f, "err", err)
	return nil
}

// play sends music on hold (and the position every q.Announce seconds)
// until ctx ends.
func (c *waitingCaller) play(ctx context.Context, leg call.Leg, q queue.Queue, w *queue.Waiter) {
	rate := leg.Rate()
	next, err := c.a.media.Music(q.Music, rate)
	if err != nil {
		c.a.e.log.Warn("features: queue music", "queue", q.Number, "err", err)
		return
	}
	every := time.Duration(q.Announce) * time.Second
	due := time.Now().Add(every)
	for ctx.Err() == nil {
		if every > 0 && !time.Now().Before(due) {
			due = time.Now().Add(every)
			if n := w.Position(); n > 0 {
				if leg.Play(ctx, c.a.media.Position(n, rate)) != nil {
					return
				}
			}
		}
		if leg.Play(ctx, next()) != nil {
			return
		}
	}
}
