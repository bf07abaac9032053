package call

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// transfer is a blind transfer in progress: the transferor's leg old is
// being replaced by a new leg to the target on the same side.
type transfer struct {
	old      *leg
	released bool          // the transferor sent BYE (it may right after 202)
	stop     chan struct{} // closed when the call ends meanwhile
	// nl is the new leg to the target once its INVITE is built; nlBye
	// says the target sent BYE before the box switched to nl (it may
	// right after its 200), so the switch ends the call instead.
	nl    *leg
	nlBye bool
}

// maxReferTo bounds the Refer-To header (untrusted input).
const maxReferTo = 512

// refer accepts a REFER on l (202) and transfers the other party to the
// Refer-To extension in the background, reporting progress by NOTIFY.
func (c *call) refer(l *leg, req *sip.Request, tx sip.ServerTransaction) {
	who := c.identity(l.side)
	if who.Extension == "" { // trunks do not transfer the box's calls
		_ = respond(tx, req, 403, "Forbidden")
		return
	}
	target, rp, code := referTarget(req)
	if code != 0 {
		_ = respond(tx, req, code, reasonPhrase(code))
		return
	}
	if rp != nil && !c.referReplaces(l, who, *rp, req, tx) {
		return
	}
	dec, lease, err := c.b.cfg.Plan.RouteOutbound(who.Extension, target)
	if err != nil {
		code := dialplan.SIPStatus(err)
		_ = respond(tx, req, code, reasonPhrase(code))
		return
	}
	if dec.Kind == dialplan.KindApp && (strings.HasPrefix(dec.Target, ParkApp) || strings.HasPrefix(dec.Target, RetrieveApp)) {
		lease.Release() // the parked call keeps its own
		c.parkRefer(l, who, req, tx, dec.Target)
		return
	}
	if dec.Kind != dialplan.KindInternal { // no toll calls through a transfer
		lease.Release()
		_ = respond(tx, req, 403, "Forbidden")
		return
	}
	ts := c.b.cfg.Directory.Contacts(dec.Target)
	if len(ts) == 0 {
		lease.Release()
		_ = respond(tx, req, 480, "Temporarily Unavailable")
		return
	}
	c.mu.Lock()
	switch {
	case c.state != stConfirmed || c.busy || c.xfer != nil:
		c.mu.Unlock()
		lease.Release()
		_ = respond(tx, req, 491, "Request Pending")
		return
	case req.CSeq().SeqNo <= l.remoteCSeq:
		c.mu.Unlock()
		lease.Release()
		_ = respond(tx, req, 500, "Server Internal Error")
		return
	}
	l.remoteCSeq = req.CSeq().SeqNo
	c.busy = true // no offer/answer on the call while its leg is swapped
	x := &transfer{old: l, stop: make(chan struct{})}
	c.xfer = x
	c.leases = append(c.leases, lease)
	c.mu.Unlock()
	_ = respond(tx, req, 202, "Accepted")
	tgt := ts[0]
	c.b.spawn(func() { c.runTransfer(x, tgt, Identity{Extension: dec.Target}) })
}

// referTarget is the user part of a REFER's Refer-To (sip/sips URI) and,
// for an attended transfer, the dialog its embedded Replaces header names;
// or the SIP status to refuse it with.
func referTarget(req *sip.Request) (string, *replaces, int) {
	hs := req.GetHeaders("Refer-To")
	if len(hs) != 1 {
		return "", nil, 400
	}
	return parseReferTo(hs[0].Value())
}

func parseReferTo(v string) (string, *replaces, int) {
	v = strings.TrimSpace(v)
	if len(v) > maxReferTo {
		return "", nil, 400
	}
	if i := strings.IndexByte(v, '<'); i >= 0 {
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return "", nil, 400
		}
		v = v[i+1 : i+j]
	}
	var rp *replaces
	if i := strings.IndexByte(v, '?'); i >= 0 { // embedded headers (RFC 3261 §19.1.1)
		hdrs := v[i+1:]
		v = v[:i]
		for _, kv := range strings.Split(hdrs, "&") {
			k, val, _ := strings.Cut(kv, "=")
			if !strings.EqualFold(k, "Replaces") {
				return "", nil, 400 // nothing else may be smuggled into the new INVITE
			}
			if rp != nil {
				return "", nil, 400
			}
			dec, err := url.QueryUnescape(val)
			if err != nil {
				return "", nil, 400
			}
			r, err := parseReplaces(dec)
			if err != nil {
				return "", nil, 400
			}
			rp = &r
		}
	}
	var u sip.Uri
	if err := sip.ParseUri(v, &u); err != nil || u.User == "" || (u.Scheme != "sip" && u.Scheme != "sips") {
		return "", nil, 400
	}
	return u.User, rp, 0
}

// runTransfer places the new leg; on 2xx it takes the transferor's side of
// the media and the call, and the transferor's leg is released.
func (c *call) runTransfer(x *transfer, tgt Target, id Identity) {
	r := &blindRun{c: c, x: x, id: id, s: x.old.side}
	r.o = c.legs[1-r.s]
	c.notify(x, 100, false)
	if !r.place(tgt) {
		return
	}
	ring := time.NewTimer(c.b.cfg.RingTimeout)
	defer ring.Stop()
	r.stop = x.stop
	for {
		var res *sip.Response
		select {
		case res = <-r.tx.Responses():
		case <-r.tx.Done():
			select {
			case res = <-r.tx.Responses():
			default:
			}
			if res == nil {
				r.fail(408)
				return
			}
		case <-r.stop:
			r.stop = nil
			r.withdraw()
			continue
		case <-c.b.ctx.Done():
			r.tx.Terminate()
			r.fail(503)
			return
		case <-ring.C:
			r.withdraw()
			continue
		}
		if r.onResponse(res) {
			return
		}
	}
}

// blindRun is the box's INVITE to a blind transfer's target: the new leg
// nl on side s, which replaces the transferor's leg x.old; o is the
// remaining party's leg.
type blindRun struct {
	c     *call
	x     *transfer
	id    Identity
	s     media.Side
	o, nl *leg
	nlKey string // set once nl is registered
	off   media.Local
	inv   *sip.Request
	tx    sip.ClientTransaction
	stop  <-chan struct{} // x.stop until it fired

	early, cancelled bool
}

// place builds the new leg and sends its INVITE; false: failed (the
// transferor was told).
func (r *blindRun) place(tgt Target) bool {
	c, s, o := r.c, r.s, r.o
	nl := &leg{side: s, callID: sip.GenerateTagN(24), localTag: newTag(),
		target: tgt.URI, dest: tgt.Dest, transport: strings.ToLower(tgt.Transport),
		policy: c.b.cfg.Directory.Policy(r.id), sid: randSession(), ver: 1}
	host, _, _ := net.SplitHostPort(c.b.cfg.Contact)
	// The target sees the remaining party as the caller.
	from := c.rec.To
	if o.side == media.A {
		from = c.rec.From
	}
	nl.local = sip.Uri{Scheme: "sip", User: from, Host: host}
	nl.remote = sip.Uri{Scheme: "sip", User: tgt.URI.User, Host: tgt.URI.Host}
	nl.offerPolicy = offerPolicyFor(nl.policy, r.id, c.m.Secured(o.side))
	off, err := c.m.Offer(s, nl.offerPolicy, nl.sid, nl.ver)
	var body []byte
	if err == nil {
		body, err = media.Rewrite(o.peer, off)
	}
	if err != nil {
		r.fail(500)
		return false
	}
	nl.lastSDP, nl.offered = body, off
	r.nl, r.off = nl, off
	c.mu.Lock()
	r.x.nl = nl
	c.mu.Unlock()
	r.nlKey = dialogKey(nl.callID, nl.localTag)
	c.addKey(r.nlKey, nl)
	r.inv = c.newRequest(nl, sip.INVITE, body)
	r.inv.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(int(c.se/time.Second))))
	if r.tx, err = c.b.cfg.Client.TransactionRequest(c.b.ctx, r.inv); err != nil {
		r.fail(503)
		return false
	}
	return true
}

// fail gives up the transfer: the call is free again before the
// transferor hears of it.
func (r *blindRun) fail(code int) {
	c, x := r.c, r.x
	if r.nlKey != "" {
		c.b.forget(c, r.nlKey)
	}
	c.mu.Lock()
	c.xfer, c.busy = nil, false
	released := x.released
	c.mu.Unlock()
	if released { // nobody left on the transferor's side
		c.hangup(int(r.s), "transfer failed")
		return
	}
	c.notify(x, code, true)
}

// withdraw CANCELs the INVITE once it may be (RFC 3261 §9.1: after a
// provisional response); before that, the next provisional does it.
func (r *blindRun) withdraw() {
	if r.early && !r.cancelled {
		r.cancelled = true
		inv := r.inv
		r.c.b.spawn(func() { r.c.sendCancel(inv) })
	}
}

// onResponse handles one response of the target; true: the run is over.
func (r *blindRun) onResponse(res *sip.Response) bool {
	switch {
	case res.StatusCode < 200:
		if res.StatusCode > 100 {
			r.early = true
			if r.stop == nil { // the call ended meanwhile
				r.withdraw()
			}
			if res.StatusCode == 180 {
				r.c.notify(r.x, 180, false)
			}
		}
		return false
	case res.StatusCode >= 300:
		r.tx.Terminate()
		code, _ := mapFailure(res.StatusCode)
		r.fail(code)
		return true
	}
	r.answered(res)
	return true
}

// answered takes the target's 2xx: ACK it (and its retransmissions, Timer
// M), then switch the call's side s to the new leg.
func (r *blindRun) answered(res *sip.Response) {
	c, s, x, nl, old := r.c, r.s, r.x, r.nl, r.x.old
	c.learnTarget(nl, res)
	ack := c.ackFor(nl, res)
	_ = c.b.cfg.Client.WriteRequest(ack)
	r.tx.OnRetransmission(func(*sip.Response) { _ = c.b.cfg.Client.WriteRequest(ack.Clone()) })
	_, rem, err := media.ParseSDP(res.Body())
	if err == nil {
		err = c.m.Answered(c.b.ctx, s, r.off, rem, nl.policy)
	}
	if err != nil {
		c.b.spawn(func() { c.sendBye(nl) })
		r.fail(488)
		return
	}
	nl.peer, nl.boxRefreshes = rem, boxRefreshesUAS(res)
	c.negotiated(r.o.peer, rem)
	c.mu.Lock()
	if c.state != stConfirmed { // the call ended while the target rang
		c.mu.Unlock()
		c.b.forget(c, r.nlKey)
		c.b.spawn(func() { c.sendBye(nl) })
		return
	}
	stopTimers(old)
	c.legs[s] = nl
	c.armLeg(nl)
	if s == media.B {
		c.callee = r.id
	}
	c.xfer, c.busy = nil, false
	released, targetGone := x.released, x.nlBye
	c.mu.Unlock()
	c.observe(DialogConfirmed)
	c.b.transfers.Add(1)
	c.notify(x, 200, true)
	if !released {
		c.sendBye(old)
	}
	c.b.forget(c, dialogKey(old.callID, old.localTag))
	if targetGone { // its BYE was answered before the switch
		c.hangup(int(s), "transfer target BYE")
	}
}

// releasedByTransfer reports whether a BYE on r only ends a transferor's
// leg (during or after its transfer) and not the call.
func (c *call) releasedByTransfer(r dialogRef, _ *sip.Request) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if x := c.xfer; x != nil {
		switch r.l {
		case x.old:
			x.released = true
			return true
		case x.nl: // the target hung up before the switch: runTransfer ends the call
			x.nlBye = true
			return true
		}
	}
	return c.legs[r.side] != r.l
}

// notify tells the transferor how its REFER is doing (RFC 3515 §2.4.4:
// message/sipfrag with the target's status line), unless it hung up.
func (c *call) notify(x *transfer, code int, final bool) {
	c.mu.Lock()
	gone := x.released
	c.mu.Unlock()
	if gone {
		return
	}
	frag := []byte("SIP/2.0 " + strconv.Itoa(code) + " " + reasonPhrase(code) + "\r\n")
	req := c.newRequest(x.old, sip.NOTIFY, frag)
	req.RemoveHeader("Content-Type")
	req.AppendHeader(sip.NewHeader("Content-Type", "message/sipfrag;version=2.0"))
	req.AppendHeader(sip.NewHeader("Event", "refer"))
	state := "active;expires=60"
	if final {
		state = "terminated;reason=noresource"
	}
	req.AppendHeader(sip.NewHeader("Subscription-State", state))
	if _, err := c.transact(x.old, req); err != nil && !errors.Is(err, context.Canceled) {
		c.b.log.Debug("call: NOTIFY", "call", c.id, "err", err)
	}
}
