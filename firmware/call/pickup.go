package call

// Call pickup: an extension dials a pickup code (group or directed) and is
// bridged into a call that rings elsewhere. The dial plan (features)
// decides which ringing extensions the picker may see and routes the code
// to the application target PickupApp + "201,202,…"; the B2BUA finds the
// oldest call ringing one of them and hands the picker's INVITE to that
// call's fork, which answers the picker in place of its branches (they are
// CANCELled) and answers the caller. A picker who may see nothing, or
// finds nothing ringing, gets the same 404: a refusal tells nothing about
// calls of other groups. Pickup by INVITE with Replaces stays impossible
// (dialog ids are never shown to watchers).

import (
	"slices"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// PickupApp prefixes the decision target of a pickup code; the rest is the
// comma-separated extensions whose ringing calls the picker may take
// ("": none).
const PickupApp = "pickup/"

// maxPickupTargets bounds the extensions of one pickup decision.
const maxPickupTargets = 4096

// pickWait bounds the wait for a ringing call's fork to take a pickup (it
// may be between two hunt stages).
const pickWait = 2 * time.Second

// pickReq is a picker's INVITE handed to a ringing call.
type pickReq struct {
	req  *sip.Request
	tx   sip.ServerTransaction
	who  Identity
	rem  media.Remote
	from *call    // the picker's own call (its CANCEL)
	done chan int // 0: taken (the ringing call answers the picker); else the status for the picker
}

// pickupTargets parses the list after PickupApp.
func pickupTargets(list string) []string {
	var out []string
	for _, e := range strings.Split(list, ",") {
		if e = strings.TrimSpace(e); e != "" && len(out) < maxPickupTargets {
			out = append(out, e)
		}
	}
	return out
}

// pickup runs a pickup code dialled by c's caller.
func (c *call) pickup(reqA *sip.Request, txA sip.ServerTransaction, list string) {
	c.rec.To = "pickup"
	exts := pickupTargets(list)
	_, rem, err := media.ParseSDP(reqA.Body())
	if err != nil {
		c.failA(txA, reqA, 488, cdr.Failed, "picker SDP: "+err.Error())
		return
	}
	if !c.sessionInterval(reqA, txA) {
		return
	}
	for _, y := range c.b.pickable(c.caller.Extension, exts) {
		p := &pickReq{req: reqA, tx: txA, who: c.caller, rem: rem, from: c, done: make(chan int, 1)}
		t := time.NewTimer(pickWait)
		select {
		case y.picks <- p:
		case <-y.ended:
			t.Stop()
			continue
		case <-t.C:
			continue
		case <-c.b.ctx.Done():
			t.Stop()
			c.failA(txA, reqA, 503, cdr.Failed, "shutdown")
			return
		}
		t.Stop()
		switch code := <-p.done; code {
		case 0:
			c.b.log.Info("call: picked up", "picker", c.caller.Extension, "call", y.id)
			c.handOver(y)
			return
		case 404:
			continue // answered meanwhile: try the next one
		case 487:
			c.b.cancelled.Add(1)
			c.finish(cdr.Cancelled, 487, "caller CANCEL")
			return
		default:
			c.failA(txA, reqA, code, cdr.Failed, "pickup refused")
			return
		}
	}
	c.failA(txA, reqA, 404, cdr.Rejected, "pickup: nothing to pick up")
}

// handOver ends c, whose INVITE another call (y) answered: c's lease moves
// to y, and c leaves without a record (y's record is the call).
func (c *call) handOver(y *call) {
	c.endOnce.Do(func() {
		c.mu.Lock()
		c.state = stEnded
		keys, lease := c.keys, c.lease
		c.lease = nil
		c.mu.Unlock()
		y.hold(lease)
		c.b.active.Add(-1)
		close(c.ended)
		c.b.unregister(c, keys...)
	})
}

// pickable lists the calls ringing one of exts, oldest first, that picker
// may take (not its own calls, not applications).
func (b *B2BUA) pickable(picker string, exts []string) []*call {
	if len(exts) == 0 {
		return nil
	}
	b.mu.Lock()
	all := make([]*call, 0, len(b.calls))
	for y := range b.calls {
		all = append(all, y)
	}
	b.mu.Unlock()
	var out []*call
	for _, y := range all {
		if y.appCall.Load() || y.caller.Extension == picker {
			continue
		}
		y.mu.Lock()
		ok := y.state == stSetup && !y.cancelled && slices.ContainsFunc(y.ringing, func(e string) bool { return slices.Contains(exts, e) })
		y.mu.Unlock()
		if ok {
			out = append(out, y)
		}
	}
	slices.SortFunc(out, func(x, y *call) int { return x.rec.Start.Compare(y.rec.Start) })
	return out
}

// onPickup answers a picker in place of f's branches; true: the caller has
// its answer and run is over. It always answers p.done.
func (f *fork) onPickup(p *pickReq) bool {
	c := f.c
	if c.isCancelled() || f.timedOut {
		p.done <- 404
		return false
	}
	req := p.req
	from, to := req.From(), req.To()
	l := &leg{side: media.B, callID: req.CallID().Value(), localTag: newTag(),
		local: to.Address, remote: from.Address, target: from.Address,
		dest: req.Source(), transport: strings.ToLower(req.Transport()),
		remoteCSeq: req.CSeq().SeqNo, policy: c.b.cfg.Directory.Policy(p.who), sid: randSession(), ver: 1}
	l.remoteTag, _ = from.Params.Get("tag")
	if ct := req.Contact(); ct != nil {
		l.target = ct.Address
	}
	a := c.legs[media.A]
	ans, err := c.m.Answer(c.b.ctx, media.B, p.rem, l.policy, l.sid, l.ver)
	var bodyP, bodyA []byte
	if err == nil {
		bodyP, err = media.Rewrite(f.remA, withAnswering(ans, p.rem))
	}
	if err == nil {
		bodyA, err = media.Rewrite(p.rem, withAnswering(a.answered, f.remA))
	}
	if err != nil {
		c.b.log.Info("call: pickup media", "call", c.id, "err", err)
		f.restoreEarly()
		p.done <- 488
		return false
	}
	// The picker is answered first: a picker that CANCELled meanwhile
	// (its transaction answered 487) leaves the call ringing as it was.
	res := c.answerTaker(req, l, bodyP)
	// The picker's leg is known before its 2xx leaves (its ACK may come
	// at once).
	l.answered, l.peer, l.lastSDP = ans, p.rem, bodyP
	key := dialogKey(l.callID, l.localTag)
	c.mu.Lock()
	oldLeg, oldCallee := c.legs[media.B], c.callee
	c.legs[media.B], c.callee = l, p.who
	c.mu.Unlock()
	c.addKey(key, l)
	if p.from.isCancelled() || p.tx.Respond(res) != nil {
		c.b.forget(c, key)
		c.mu.Lock()
		c.legs[media.B], c.callee = oldLeg, oldCallee
		c.mu.Unlock()
		f.restoreEarly()
		p.done <- 487
		return false
	}
	// The branches give way to the picker.
	for _, o := range f.branches {
		c.b.forget(c, dialogKey(o.l.callID, o.l.localTag))
	}
	f.cancelAll(nil)
	rest := f.pending(nil)
	c.b.spawn(func() { f.drain(rest) })
	c.mu.Lock()
	c.ringing = nil
	c.mu.Unlock()
	p.done <- 0
	c.m.AnswerSent(media.B)
	a.lastSDP = bodyA
	c.negotiated(f.remA, p.rem)
	a.boxRefreshes = !supportsTimer(f.reqA)
	if !c.answerA(f.reqA, f.txA, bodyA) {
		c.hangup(-1, "no ACK from caller")
		return true
	}
	if !c.waitAck(media.B, req.CSeq().SeqNo, p.tx, func() { _ = p.tx.Respond(res) }, sip.IsReliable(req.Transport())) {
		c.hangup(-1, "no ACK from picker")
	}
	return true
}

// restoreEarly points the callee side of the relay back at the branch
// whose early media the caller hears, after a pickup that did not happen.
func (f *fork) restoreEarly() {
	if f.earlyBr != nil {
		_ = f.answered(f.earlyBr, f.earlyRem)
	}
}

// answerTaker is the 200 that makes a taker's INVITE (a picker, a park
// retriever) leg l of the call, with body as the answer.
func (c *call) answerTaker(req *sip.Request, l *leg, body []byte) *sip.Response {
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	if t := res.To(); t != nil {
		t.Params.Add("tag", l.localTag)
	}
	res.AppendHeader(&sip.ContactHeader{Address: c.b.contactURI(l.transport)})
	l.boxRefreshes = !supportsTimer(req)
	c.addTimerHeaders(res, l, req)
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res.SetBody(body)
	return res
}
