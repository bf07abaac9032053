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
	"net"
	"strconv"
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
	c.mu.Lock()
	if c.state != stConfirmed || c.busy || c.app != ep {
		c.mu.Unlock()
		return ErrNotConnected
	}
	c.busy = true // no offer/answer with the caller while B is placed
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.busy = false
		c.mu.Unlock()
	}()
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
		// One contact per stage: an application call rings like a blind
		// transfer (a ring-all stage rings its first reachable member).
		err := ep.ring(ctx, tgts[0], ids[0], r)
		if !errors.Is(err, ErrNotConnected) {
			return err
		}
		o = Outcome{TimedOut: true, Code: 408}
	}
	return ErrNotConnected
}

// ring INVITEs tgt for at most d and switches the call to it on 2xx.
func (ep *appMedia) ring(ctx context.Context, tgt Target, id Identity, d time.Duration) error {
	c := ep.c
	a := c.legs[media.A]
	nl := &leg{side: media.B, callID: sip.GenerateTagN(24), localTag: newTag(),
		target: tgt.URI, dest: tgt.Dest, transport: strings.ToLower(tgt.Transport),
		policy: c.b.cfg.Directory.Policy(id), sid: randSession(), ver: 1}
	host, _, _ := net.SplitHostPort(c.b.cfg.Contact)
	nl.local = sip.Uri{Scheme: "sip", User: c.rec.From, Host: host}
	nl.remote = sip.Uri{Scheme: "sip", User: tgt.URI.User, Host: tgt.URI.Host}
	nl.offerPolicy = offerPolicyFor(nl.policy, id, c.m.Secured(media.A))
	off, err := c.m.Offer(media.B, nl.offerPolicy, nl.sid, nl.ver)
	var body []byte
	if err == nil {
		// The caller was answered with one format: offer exactly that.
		body, err = media.Rewrite(ep.format.answerFrom(a.peer), off)
	}
	if err != nil {
		return ErrNotConnected
	}
	nl.lastSDP, nl.offered = body, off
	key := dialogKey(nl.callID, nl.localTag)
	c.addKey(key, nl)
	inv := c.newRequest(nl, sip.INVITE, body)
	inv.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(int(c.se/time.Second))))
	tx, err := c.b.cfg.Client.TransactionRequest(c.b.ctx, inv)
	if err != nil {
		c.b.forget(c, key)
		return ErrNotConnected
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	// want: the INVITE is to be withdrawn (ring time over, caller gone);
	// a CANCEL may go only after a provisional (RFC 3261 §9.1).
	early, want, cancelled, stop, expired := false, false, false, ctx.Done(), false
	withdraw := func() {
		want = true
		if early && !cancelled {
			cancelled = true
			c.b.spawn(func() { c.sendCancel(inv) })
		}
	}
	for {
		var res *sip.Response
		select {
		case res = <-tx.Responses():
		case <-tx.Done():
			select {
			case res = <-tx.Responses():
			default:
			}
			if res == nil {
				c.b.forget(c, key)
				return ErrNotConnected
			}
		case <-stop:
			stop = nil
			withdraw()
			continue
		case <-timer.C:
			if expired { // no final answer after the CANCEL: give up
				tx.Terminate()
				c.b.forget(c, key)
				return ErrNotConnected
			}
			expired = true
			withdraw()
			timer.Reset(transactionTimeout)
			continue
		}
		switch {
		case res.StatusCode < 200:
			if res.StatusCode > 100 {
				early = true
				if want {
					withdraw()
				}
			}
			continue
		case res.StatusCode >= 300:
			tx.Terminate()
			c.b.forget(c, key)
			return ErrNotConnected
		}
		if want { // answered after all: take it only if the caller is still there
			if ctx.Err() != nil {
				c.learnTarget(nl, res)
				_ = c.b.cfg.Client.WriteRequest(c.ackFor(nl, res))
				c.b.forget(c, key)
				c.b.spawn(func() { c.sendBye(nl) })
				return ErrNotConnected
			}
		}
		return ep.answered(ctx, nl, key, id, off, tx, res)
	}
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
