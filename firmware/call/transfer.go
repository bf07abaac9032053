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
	old := x.old
	s := old.side
	o := c.legs[1-s]
	c.notify(x, 100, false)
	fail := func(code int) {
		// The call is free again before the transferor hears of it.
		c.mu.Lock()
		c.xfer, c.busy = nil, false
		released := x.released
		c.mu.Unlock()
		if released { // nobody left on the transferor's side
			c.hangup(int(s), "transfer failed")
			return
		}
		c.notify(x, code, true)
	}
	nl := &leg{side: s, callID: sip.GenerateTagN(24), localTag: newTag(),
		target: tgt.URI, dest: tgt.Dest, transport: strings.ToLower(tgt.Transport),
		policy: c.b.cfg.Directory.Policy(id), sid: randSession(), ver: 1}
	host, _, _ := net.SplitHostPort(c.b.cfg.Contact)
	// The target sees the remaining party as the caller.
	from := c.rec.To
	if o.side == media.A {
		from = c.rec.From
	}
	nl.local = sip.Uri{Scheme: "sip", User: from, Host: host}
	nl.remote = sip.Uri{Scheme: "sip", User: tgt.URI.User, Host: tgt.URI.Host}
	nl.offerPolicy = offerPolicyFor(nl.policy, id, c.m.Secured(o.side))
	off, err := c.m.Offer(s, nl.offerPolicy, nl.sid, nl.ver)
	var body []byte
	if err == nil {
		body, err = media.Rewrite(o.peer, off)
	}
	if err != nil {
		fail(500)
		return
	}
	nl.lastSDP, nl.offered = body, off
	nlKey := dialogKey(nl.callID, nl.localTag)
	c.mu.Lock()
	x.nl = nl
	c.mu.Unlock()
	c.addKey(nlKey, nl)
	fail0 := fail
	fail = func(code int) { c.b.forget(c, nlKey); fail0(code) }
	inv := c.newRequest(nl, sip.INVITE, body)
	inv.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(int(c.se/time.Second))))
	ctx := c.b.ctx
	tx, err := c.b.cfg.Client.TransactionRequest(ctx, inv)
	if err != nil {
		fail(503)
		return
	}
	ring := time.NewTimer(c.b.cfg.RingTimeout)
	defer ring.Stop()
	stop := x.stop
	early, cancelled := false, false
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
				fail(408)
				return
			}
		case <-stop:
			stop = nil
			if early && !cancelled {
				cancelled = true
				c.b.spawn(func() { c.sendCancel(inv) })
			}
			continue
		case <-c.b.ctx.Done():
			tx.Terminate()
			fail(503)
			return
		case <-ring.C:
			if early && !cancelled {
				cancelled = true
				c.b.spawn(func() { c.sendCancel(inv) })
			}
			continue
		}
		switch {
		case res.StatusCode < 200:
			if res.StatusCode > 100 {
				early = true
				if stop == nil && !cancelled {
					cancelled = true
					c.b.spawn(func() { c.sendCancel(inv) })
				}
				if res.StatusCode == 180 {
					c.notify(x, 180, false)
				}
			}
			continue
		case res.StatusCode >= 300:
			tx.Terminate()
			code, _ := mapFailure(res.StatusCode)
			fail(code)
			return
		}
		// 2xx: ACK it (and its retransmissions, Timer M), then switch.
		c.learnTarget(nl, res)
		ack := c.ackFor(nl, res)
		_ = c.b.cfg.Client.WriteRequest(ack)
		tx.OnRetransmission(func(*sip.Response) { _ = c.b.cfg.Client.WriteRequest(ack.Clone()) })
		_, rem, err := media.ParseSDP(res.Body())
		if err == nil {
			err = c.m.Answered(ctx, s, off, rem, nl.policy)
		}
		if err != nil {
			c.b.spawn(func() { c.sendBye(nl) })
			fail(488)
			return
		}
		nl.peer, nl.boxRefreshes = rem, boxRefreshesUAS(res)
		c.negotiated(o.peer, rem)
		c.mu.Lock()
		if c.state != stConfirmed { // the call ended while the target rang
			c.mu.Unlock()
			c.b.forget(c, nlKey)
			c.b.spawn(func() { c.sendBye(nl) })
			return
		}
		if old.expiry != nil {
			old.expiry.Stop()
		}
		if old.refresh != nil {
			old.refresh.Stop()
		}
		c.legs[s] = nl
		c.armLeg(nl)
		if s == media.B {
			c.callee = id
		}
		c.xfer, c.busy = nil, false
		released, targetGone := x.released, x.nlBye
		c.mu.Unlock()
		c.b.transfers.Add(1)
		c.notify(x, 200, true)
		if !released {
			c.sendBye(old)
		}
		c.b.forget(c, dialogKey(old.callID, old.localTag))
		if targetGone { // its BYE was answered before the switch
			c.hangup(int(s), "transfer target BYE")
		}
		return
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
