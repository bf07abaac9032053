package call

import (
	"errors"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// KindReplaceDenied is the security event of a REFER or INVITE that tried
// to replace (take over) a dialog its sender is not a party of.
const KindReplaceDenied logs.Kind = "call.replace_denied"

// Events receives security events; *logs.Log implements it.
type Events interface {
	Record(logs.Event)
}

// replaces names a dialog (RFC 3891 Replaces header value).
type replaces struct {
	callID, toTag, fromTag string
	earlyOnly              bool
}

// maxReplaces bounds a Replaces value (untrusted input).
const maxReplaces = 400

// parseReplaces reads "call-id;to-tag=x;from-tag=y[;early-only]".
func parseReplaces(v string) (replaces, error) {
	var r replaces
	if len(v) > maxReplaces {
		return r, errors.New("replaces: too long")
	}
	parts := strings.Split(v, ";")
	r.callID = strings.TrimSpace(parts[0])
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "to-tag":
			r.toTag = strings.TrimSpace(val)
		case "from-tag":
			r.fromTag = strings.TrimSpace(val)
		case "early-only":
			r.earlyOnly = true
		}
	}
	if !sipToken(r.callID, true) || !sipToken(r.toTag, false) || !sipToken(r.fromTag, false) {
		return replaces{}, errors.New("replaces: malformed call-id or tags")
	}
	return r, nil
}

// sipToken reports whether s is a non-empty token (RFC 3261 §25.1; a
// Call-ID also allows '@').
func sipToken(s string, callID bool) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-.!%*_+`'~", c) >= 0:
		case callID && strings.IndexByte("@()<>:\\\"/[]?{}", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// findReplaced is the current leg of a confirmed call that rp names. The
// tags are as the peer of that leg sees them; both orders are accepted
// (a transferor names its own dialog from its side, RFC 5589 §7).
func (b *B2BUA) findReplaced(rp replaces) (dialogRef, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range [2][2]string{{rp.toTag, rp.fromTag}, {rp.fromTag, rp.toTag}} {
		if r, ok := b.dialogs[dialogKey(rp.callID, t[0])]; ok && r.l.remoteTag == t[1] && !r.c.appCall.Load() {
			return r, true
		}
	}
	return dialogRef{}, false
}

// denyReplace refuses an attempt to take over a dialog of somebody else.
// The event is recorded before the 403 goes out, so whoever sees the
// refusal also finds the event.
func (b *B2BUA) denyReplace(tx sip.ServerTransaction, req *sip.Request, who Identity, why string) {
	b.log.Warn("call: replace denied", "from", who.Extension, "source", req.Source(), "reason", why)
	if b.cfg.Events != nil {
		b.cfg.Events.Record(logs.Event{Kind: KindReplaceDenied, Source: req.Source(), Transport: req.Transport(),
			User: who.Extension, Reason: why})
	}
	b.replaceDenied.Add(1)
	_ = respond(tx, req, 403, "Forbidden")
}

// referReplaces handles an attended transfer: the transferor, on leg l of
// c, asks to replace its dialog rp (on another call) with the party that
// remains on c. The box bridges the two remaining parties in c and ends the
// other call. If that call still rings (semi-attended transfer), it is
// withdrawn and true tells the caller to transfer blind to the Refer-To
// target instead.
func (c *call) referReplaces(l *leg, who Identity, rp replaces, req *sip.Request, tx sip.ServerTransaction) (blind bool) {
	r, ok := c.b.findReplaced(rp)
	if !ok || !r.current() {
		_ = respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return false
	}
	if r.c == c || r.c.identity(r.side) != who {
		c.b.denyReplace(tx, req, who, "REFER names a dialog of another party")
		return false
	}
	y := r.c
	y.mu.Lock()
	ringing := y.state == stSetup && r.side == media.A && !y.cancelled
	y.mu.Unlock()
	if ringing {
		y.withdraw("transferred while ringing")
		return true
	}
	c.mu.Lock()
	switch {
	case c.state != stConfirmed || c.busy || c.xfer != nil:
		c.mu.Unlock()
		_ = respond(tx, req, 491, "Request Pending")
		return false
	case req.CSeq().SeqNo <= l.remoteCSeq:
		c.mu.Unlock()
		_ = respond(tx, req, 500, "Server Internal Error")
		return false
	}
	l.remoteCSeq = req.CSeq().SeqNo
	x := &transfer{old: l, stop: make(chan struct{})}
	c.busy, c.xfer = true, x
	c.mu.Unlock()
	// The calls are locked one after the other (never both): the busy
	// marks keep every other exchange off them meanwhile.
	y.mu.Lock()
	if y.state != stConfirmed || y.busy || y.xfer != nil || y.legs[r.side] != r.l {
		y.mu.Unlock()
		c.mu.Lock()
		c.busy, c.xfer = false, nil
		c.mu.Unlock()
		_ = respond(tx, req, 491, "Request Pending")
		return false
	}
	y.busy = true
	y.mu.Unlock()
	_ = respond(tx, req, 202, "Accepted")
	yl := r.l
	c.b.spawn(func() { c.runAttended(x, y, yl) })
	return false
}

// runAttended moves the party on y's other side into c in place of the
// transferor's leg x.old: a re-INVITE points its media at c's relay leg,
// then y ends (its transferor leg gets BYE) and x.old is released.
func (c *call) runAttended(x *transfer, y *call, yOld *leg) {
	s := x.old.side
	o := c.legs[1-s]
	ys := 1 - yOld.side
	yo := y.legs[ys]
	yid := y.identity(ys)
	c.notify(x, 100, false)
	ctx := c.b.ctx
	pol := offerPolicyFor(yo.policy, yid, c.m.Secured(o.side))
	var off media.Local
	var err error
	if _, ok := y.m.DTLSRole(ys); ok {
		// The party did DTLS-SRTP with y's relay leg; c's leg is another
		// transport (and c's association there belongs to the
		// transferor): a new association, roles open (actpass).
		off, err = c.m.OfferDTLS(s, yo.sid, yo.ver+1, true)
	} else {
		off, err = c.m.Offer(s, pol, yo.sid, yo.ver+1)
	}
	var body []byte
	if err == nil {
		body, err = media.Rewrite(o.peer, off)
	}
	if err != nil {
		c.attendedFailed(x, y, 500)
		return
	}
	res, err := c.transact(yo, c.newRequest(yo, sip.INVITE, body))
	if err != nil {
		c.attendedFailed(x, y, 408)
		return
	}
	if res.StatusCode >= 300 {
		code, _ := mapFailure(res.StatusCode)
		c.attendedFailed(x, y, code)
		return
	}
	_, rem, err := media.ParseSDP(res.Body())
	if err == nil {
		// The party answered for c's leg: the transferor's DTLS
		// association there is not the party's, whatever it looks like.
		c.m.RenewDTLS(s)
		err = c.m.Answered(ctx, s, off, rem, yo.policy)
	}
	if err != nil {
		// The party's media already points at c's relay leg: it cannot
		// go back to y. End y; the transferor keeps its call on c.
		y.unbusy()
		y.hangup(-1, "attended transfer failed")
		c.mu.Lock()
		c.xfer, c.busy = nil, false
		c.mu.Unlock()
		c.notify(x, 488, true)
		return
	}
	// y gives up its leg to c, then ends without a BYE to that party.
	y.mu.Lock()
	if y.state != stConfirmed || y.legs[ys] != yo {
		y.mu.Unlock()
		c.attendedFailed(x, y, 487)
		return
	}
	y.state = stEnded
	y.legs[ys] = nil
	stopTimers(yo)
	y.mu.Unlock()

	c.mu.Lock()
	if c.state != stConfirmed { // the remaining party left meanwhile
		c.mu.Unlock()
		c.b.spawn(func() { c.sendBye(yo) })
		y.endTransferred(yOld)
		return
	}
	stopTimers(x.old)
	yo.side = s
	yo.ver, yo.offered, yo.lastSDP, yo.offerPolicy, yo.peer = yo.ver+1, off, body, pol, rem
	c.legs[s] = yo
	if s == media.A {
		c.caller = yid
	} else {
		c.callee = yid
	}
	c.armLeg(yo)
	c.xfer, c.busy = nil, false
	released := x.released
	c.mu.Unlock()
	c.observe(DialogConfirmed)
	c.negotiated(o.peer, rem)
	c.addKey(dialogKey(yo.callID, yo.localTag), yo)
	y.endTransferred(yOld)
	c.b.transfers.Add(1)
	c.notify(x, 200, true)
	if !released {
		c.sendBye(x.old)
	}
	c.b.forget(c, dialogKey(x.old.callID, x.old.localTag))
}

// unbusy frees a call held for an exchange or transfer.
func (c *call) unbusy() {
	c.mu.Lock()
	c.busy = false
	c.mu.Unlock()
}

// attendedFailed ends an attended transfer x of c to y's party that could
// not be completed: both calls are free again, and the transferor is told
// (or, if it already left, its side of c is hung up).
func (c *call) attendedFailed(x *transfer, y *call, code int) {
	y.unbusy()
	c.mu.Lock()
	c.xfer, c.busy = nil, false
	released := x.released
	c.mu.Unlock()
	if released {
		c.hangup(int(x.old.side), "transfer failed")
		return
	}
	c.notify(x, code, true)
}

// endTransferred ends a call whose other party was moved to another call:
// only the transferor's leg gets a BYE.
func (c *call) endTransferred(transferor *leg) {
	c.mu.Lock()
	c.state = stEnded
	c.mu.Unlock()
	c.b.spawn(func() { c.sendBye(transferor) })
	c.finish(cdr.Answered, 0, "attended transfer")
}

func stopTimers(l *leg) {
	if l.expiry != nil {
		l.expiry.Stop()
	}
	if l.refresh != nil {
		l.refresh.Stop()
	}
}

// inviteReplaces handles an INVITE with Replaces (RFC 3891) from an
// authenticated extension: its new dialog takes the place of one of its
// own legs (a call pulled to another phone of the same extension, or a
// completed attended transfer).
func (b *B2BUA) inviteReplaces(req *sip.Request, tx sip.ServerTransaction, caller Identity) {
	hs := req.GetHeaders("Replaces")
	if len(hs) != 1 {
		respond(tx, req, 400, "Bad Request")
		return
	}
	rp, err := parseReplaces(hs[0].Value())
	if err != nil {
		respond(tx, req, 400, "Bad Request")
		return
	}
	r, ok := b.findReplaced(rp)
	if !ok || !r.current() {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	c, s := r.c, r.side
	if caller.Extension == "" || c.identity(s) != caller {
		b.denyReplace(tx, req, caller, "INVITE replaces a dialog of another party")
		return
	}
	if rp.earlyOnly {
		respond(tx, req, 486, "Busy Here") // RFC 3891 §3: the dialog is confirmed
		return
	}
	c.mu.Lock()
	if c.state != stConfirmed || c.busy || c.xfer != nil || c.legs[s] != r.l {
		c.mu.Unlock()
		respond(tx, req, 491, "Request Pending")
		return
	}
	x := &transfer{old: r.l, stop: make(chan struct{})}
	c.busy, c.xfer = true, x
	c.mu.Unlock()
	_ = respond(tx, req, 100, "Trying")
	from, to, cid, cseq := req.From(), req.To(), req.CallID(), req.CSeq()
	nl := &leg{side: s, callID: cid.Value(), localTag: newTag(),
		local: to.Address, remote: from.Address, target: from.Address,
		dest: req.Source(), transport: strings.ToLower(req.Transport()),
		remoteCSeq: cseq.SeqNo, policy: b.cfg.Directory.Policy(caller), sid: randSession(), ver: 1}
	nl.remoteTag, _ = from.Params.Get("tag")
	if ct := req.Contact(); ct != nil {
		nl.target = ct.Address
	}
	fail := func(code int) {
		c.mu.Lock()
		c.xfer, c.busy = nil, false
		c.mu.Unlock()
		respond(tx, req, code, reasonPhrase(code))
	}
	o := c.legs[1-s]
	_, rem, err := media.ParseSDP(req.Body())
	if err != nil {
		fail(488)
		return
	}
	// From here the media of side s goes to the new phone, with a DTLS
	// association of its own (a new dialog: never the replaced phone's).
	c.m.RenewDTLS(s)
	loc, err := c.m.Answer(c.b.ctx, s, rem, nl.policy, nl.sid, nl.ver)
	var body []byte
	if err == nil {
		body, err = media.Rewrite(o.peer, withAnswering(loc, rem))
	}
	if err != nil {
		fail(488)
		c.hangup(-1, "replacing phone's media refused")
		return
	}
	nl.answered, nl.peer, nl.lastSDP = loc, rem, body
	nl.boxRefreshes = !supportsTimer(req)
	key := dialogKey(nl.callID, nl.localTag)
	c.addKey(key, nl)
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.To().Params.Add("tag", nl.localTag)
	res.AppendHeader(&sip.ContactHeader{Address: b.contactURI(nl.transport)})
	c.addTimerHeaders(res, nl, req)
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res.SetBody(body)
	// The new leg is in place before the phone can ACK and talk on it.
	c.mu.Lock()
	if c.state != stConfirmed {
		c.mu.Unlock()
		b.forget(c, key)
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	old := c.legs[s]
	stopTimers(old)
	c.legs[s] = nl
	c.armLeg(nl)
	c.xfer, c.busy = nil, false
	released := x.released
	c.mu.Unlock()
	err = tx.Respond(res)
	if err == nil {
		c.m.AnswerSent(s) // the replacing phone's DTLS handshake starts now
	}
	if err != nil || !c.waitAck(s, cseq.SeqNo, tx, func() { _ = tx.Respond(res) }, sip.IsReliable(req.Transport())) {
		c.hangup(-1, "no ACK from replacing phone")
		return
	}
	b.transfers.Add(1)
	if !released {
		c.b.spawn(func() { c.sendBye(old) })
	}
	b.forget(c, dialogKey(old.callID, old.localTag))
}
