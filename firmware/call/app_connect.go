package call

// Handing an application call over to a destination (the IVR's choice):
// the box INVITEs the destination on the relay's B side with the format
// the caller was answered with, and on its 2xx the B side leaves the
// application's socket for the new leg; from then on the call is an
// ordinary bridged call. The destination is always a routed decision of
// the application's configuration: nothing the caller typed is dialled.

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// Connector is implemented by the Leg an application gets: Connect rings
// the routed destination dec (an extension or ring group, through the
// Hunter's stages; or an outbound decision over its trunk, held under
// lease) for at most ring per stage and, once it answers, bridges the
// caller to it. It returns ErrHandedOver when the caller is connected
// (the application must then return it from Run and stop using the Leg),
// or an error wrapping ErrNotConnected when nobody answered (the
// application carries on).
type Connector interface {
	Connect(ctx context.Context, dec dialplan.Decision, lease *dialplan.Lease, ring time.Duration) error
}

// Outcomes of Connect.
var (
	ErrHandedOver   = errors.New("call: caller handed over from the application")
	ErrNotConnected = errors.New("call: destination not connected")
)

// Connect implements Connector.
func (ep *appMedia) Connect(ctx context.Context, dec dialplan.Decision, lease *dialplan.Lease, ring time.Duration) error {
	c := ep.c
	c.hold(lease)
	if !ep.claim() {
		return ErrNotConnected
	}
	defer ep.release()
	switch dec.Kind {
	case dialplan.KindOutbound:
		t, ok := c.b.cfg.Directory.Trunk(dec.Trunk)
		if !ok {
			return ErrNotConnected
		}
		t.URI.User = strings.ReplaceAll(dec.Target, "#", "%23")
		return ep.ring(ctx, t, Identity{Trunk: dec.Trunk}, ring)
	case dialplan.KindInternal, dialplan.KindInbound:
	default:
		return ErrNotConnected
	}
	var h Hunt
	if c.b.cfg.Hunter != nil {
		h = c.b.cfg.Hunter.Hunt("", dec)
	}
	if h == nil {
		ts := c.b.cfg.Directory.Contacts(dec.Target)
		if len(ts) == 0 {
			return ErrNotConnected
		}
		return ep.ring(ctx, ts[0], Identity{Extension: dec.Target}, ring)
	}
	o := Outcome{First: true}
	for i := 0; i < MaxStages; i++ {
		st, ok := h.Next(o)
		if !ok || len(st.Dests) == 0 {
			if !ok || st.App != "" || st.Code != 0 {
				return ErrNotConnected
			}
			o = Outcome{Code: 480, Unreachable: true}
			continue
		}
		tgts, ids, _ := c.stageTargets(st)
		if len(tgts) == 0 {
			o = Outcome{Code: 480, Unreachable: true}
			continue
		}
		r := st.Ring
		if r == 0 || r > ring {
			r = ring
		}
		// Every contact of the stage at once (a ring-all group rings all
		// its members; in-order ones come one per stage).
		bs := make([]appBranch, len(tgts))
		for i := range tgts {
			bs[i] = appBranch{tgt: tgts[i], id: ids[i], ring: r}
		}
		_, code, err := ep.ringAll(ctx, bs)
		if !errors.Is(err, ErrNotConnected) {
			return err
		}
		if ctx.Err() != nil {
			return ErrNotConnected
		}
		o = Outcome{TimedOut: true, Code: 408}
		if code != 0 && code != 408 {
			o = Outcome{Code: code} // busy, declined: the hunt's rules for them
		}
	}
	return ErrNotConnected
}

// ring INVITEs tgt for at most d and switches the call to it on 2xx
// (the one-branch case of ringAll).
func (ep *appMedia) ring(ctx context.Context, tgt Target, id Identity, d time.Duration) error {
	_, _, err := ep.ringAll(ctx, []appBranch{{tgt: tgt, id: id, ring: d}})
	return err
}

// answered takes the destination's 2xx: ACK it, point the relay's B side
// at it, and make the call an ordinary bridged one.
func (ep *appMedia) answered(ctx context.Context, nl *leg, key string, id Identity, off media.Local, tx sip.ClientTransaction, res *sip.Response) error {
	c := ep.c
	// The application is silent from the 2xx on, whether or not the
	// switch succeeds (the caller then hears nothing more of it).
	ep.mute()
	c.learnTarget(nl, res)
	ack := c.ackFor(nl, res)
	_ = c.b.cfg.Client.WriteRequest(ack)
	tx.OnRetransmission(func(*sip.Response) { _ = c.b.cfg.Client.WriteRequest(ack.Clone()) })
	_, rem, err := media.ParseSDP(res.Body())
	if err == nil && ctx.Err() == nil {
		err = c.m.Answered(c.b.ctx, media.B, off, rem, nl.policy)
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		c.b.forget(c, key)
		c.b.spawn(func() { c.sendBye(nl) })
		ep.muted.Store(false) // the application carries on
		return ErrNotConnected
	}
	nl.peer, nl.boxRefreshes = rem, boxRefreshesUAS(res)
	c.negotiated(c.legs[media.A].peer, rem)
	c.mu.Lock()
	if c.state != stConfirmed { // the caller hung up meanwhile
		c.mu.Unlock()
		c.b.forget(c, key)
		c.b.spawn(func() { c.sendBye(nl) })
		return ErrNotConnected
	}
	c.legs[media.B] = nl
	c.armLeg(nl)
	c.callee = id
	c.app = nil
	c.appCall.Store(false)
	if id.Extension != "" {
		c.rec.To = id.Extension
	}
	c.mu.Unlock()
	c.observe(DialogConfirmed)
	return ErrHandedOver
}
