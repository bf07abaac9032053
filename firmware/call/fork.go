package call

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// MaxBranches bounds the parallel INVITEs of one call (contacts of the
// callee extension tried at once).
const MaxBranches = 8

// offerStep is how firmly a branch is offered SRTP; on 488 the branch is
// offered once more one step lower (interop with phones that lack it).
type offerStep int

const (
	stepOwn  offerStep = iota // the callee's own policy (best-effort SDES by default)
	stepSDES                  // RTP/SAVP with SDES keys
	stepDTLS                  // DTLS-SRTP, when the caller used it
)

// firstOffer is the offer a callee gets first: DTLS-SRTP when the caller's
// leg is DTLS-SRTP (an extension; trunks keep their policy), RTP/SAVP when
// it is otherwise encrypted, the callee's own policy else.
func firstOffer(pol media.Policy, id Identity, a media.Local) offerStep {
	switch {
	case a.Fingerprint != nil && id.Extension != "" && pol != media.SRTPOff:
		return stepDTLS
	case offerPolicyFor(pol, id, isSecured(a)) != pol:
		return stepSDES
	}
	return stepOwn
}

// branch is one INVITE of the box to one contact of the callee.
type branch struct {
	l    *leg
	who  Identity // the extension or trunk this branch rings
	step offerStep
	inv  *sip.Request
	tx   sip.ClientTransaction
	gen  int // bumps when inv is re-sent (challenge, re-offer): older events are stale

	early, cancelSent, cancelWanted, authTried, done bool
	final                                            int    // its final status once done
	rseq                                             uint32 // last reliable provisional PRACKed
	ack                                              *sip.Request
}

type branchEvent struct {
	br  *branch
	gen int
	res *sip.Response // nil: the transaction ended without a final response
}

// fork runs the B side of a call setup: parallel branches, first 2xx wins.
type fork struct {
	c        *call
	reqA     *sip.Request
	remA     media.Remote
	branches []*branch
	ch       chan branchEvent
	quit     chan struct{}

	// run's state
	txA      sip.ServerTransaction
	earlyBr  *branch       // the branch whose early media the caller gets
	earlyRem media.Remote  // its SDP (a pickup that failed goes back to it)
	best     int           // the best final status of the failed branches
	timedOut bool          // RingTimeout passed
	ring     time.Duration // this fork's ring time (a hunt stage's); 0: RingTimeout
	rang     bool          // the caller got a 180 without SDP from this fork
}

// offer makes br's SDP offer at step.
func (f *fork) offer(br *branch, step offerStep) error {
	c, l := f.c, br.l
	pol := l.policy
	if step >= stepSDES {
		pol = media.SRTPRequired
	}
	var off media.Local
	var err error
	if step == stepDTLS {
		// The relay's certificate fingerprint, as already given to the
		// caller; a=setup:actpass lets the callee choose its DTLS role (a
		// branch re-offered after a challenge starts afresh too).
		off, err = c.m.OfferDTLS(media.B, l.sid, l.ver, true)
	} else {
		off, err = c.m.Offer(media.B, pol, l.sid, l.ver)
	}
	if err != nil {
		return err
	}
	body, err := media.Rewrite(f.remA, off)
	if err != nil {
		return err
	}
	l.offered, l.lastSDP, l.offerPolicy, br.step = off, body, pol, step
	return nil
}

// lower is the step to re-offer with after a 488, if any.
func (f *fork) lower(br *branch) (offerStep, bool) {
	switch {
	case br.step == stepDTLS:
		return stepSDES, true
	case br.step == stepSDES && br.l.policy != media.SRTPRequired:
		return stepOwn, true
	}
	return 0, false
}

// answered applies the callee's SDP (in a 18x or the 2xx) on the B side.
func (f *fork) answered(br *branch, rem media.Remote) error {
	c, l := f.c, br.l
	// For DTLS-SRTP the answerer picked the roles (RFC 5763 §5).
	return c.m.Answered(c.b.ctx, media.B, l.offered, rem, l.policy)
}

// newInvite builds br's INVITE (again, with a new CSeq, after a challenge
// or a re-offer).
func (f *fork) newInvite(br *branch) *sip.Request {
	c := f.c
	inv := c.newRequest(br.l, sip.INVITE, br.l.lastSDP)
	inv.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(int(c.se/time.Second))))
	inv.RemoveHeader("Supported")
	inv.AppendHeader(sip.NewHeader("Supported", "timer, 100rel"))
	if mf := f.reqA.MaxForwards(); mf != nil {
		v := sip.MaxForwardsHeader(mf.Val() - 1)
		inv.ReplaceHeader(&v)
	}
	c.callerID(inv, f.reqA)
	return inv
}

// send starts inv as br's transaction.
func (f *fork) send(br *branch, inv *sip.Request) error {
	tx, err := f.c.b.cfg.Client.TransactionRequest(f.c.b.ctx, inv)
	if err != nil {
		return err
	}
	br.gen++
	br.inv, br.tx, br.early = inv, tx, false
	gen := br.gen
	f.c.b.spawn(func() { f.forward(br, gen, tx) })
	return nil
}

func (f *fork) forward(br *branch, gen int, tx sip.ClientTransaction) {
	post := func(res *sip.Response) bool {
		select {
		case f.ch <- branchEvent{br, gen, res}:
			return true
		case <-f.quit:
			return false
		}
	}
	for {
		select {
		case res := <-tx.Responses():
			if !post(res) {
				return
			}
		case <-tx.Done():
			for {
				select {
				case res := <-tx.Responses():
					if !post(res) {
						return
					}
					continue
				default:
				}
				break
			}
			post(nil)
			return
		case <-f.quit:
			return
		case <-f.c.b.ctx.Done():
			return
		}
	}
}

// cancel CANCELs br (RFC 3261 §9.1: only after a provisional response).
func (f *fork) cancel(br *branch) {
	if br.done || br.cancelSent {
		return
	}
	if !br.early {
		br.cancelWanted = true
		return
	}
	br.cancelSent = true
	inv := br.inv
	f.c.b.spawn(func() { f.c.sendCancel(inv) })
}

func (f *fork) cancelAll(except *branch) {
	for _, br := range f.branches {
		if br != except {
			f.cancel(br)
		}
	}
}

func (f *fork) pending(except *branch) []*branch {
	var out []*branch
	for _, br := range f.branches {
		if br != except && !br.done {
			out = append(out, br)
		}
	}
	return out
}

// stop ends the forwarders; the transactions still running are dropped.
func (f *fork) stop() {
	select {
	case <-f.quit:
	default:
		close(f.quit)
	}
	for _, br := range f.branches {
		if br.tx != nil && br.ack == nil {
			br.tx.Terminate()
		}
	}
}

// drain sees the losing branches to their end after the caller has its
// answer: CANCELled (once they rang), a late 2xx ACKed and hung up.
func (f *fork) drain(rest []*branch) {
	defer f.stop()
	c := f.c
	left := len(rest)
	deadline := time.NewTimer(transactionTimeout)
	defer deadline.Stop()
	for left > 0 {
		select {
		case e := <-f.ch:
			br := e.br
			if e.gen != br.gen || br.done || !contains(rest, br) {
				continue
			}
			switch {
			case e.res == nil:
				br.done = true
			case e.res.StatusCode < 200:
				if e.res.StatusCode > 100 {
					br.early = true
					f.prack(br, e.res)
					f.cancel(br)
				}
				continue
			case e.res.StatusCode < 300: // answered too late: ACK and BYE
				c.learnTarget(br.l, e.res)
				br.ack = c.ackFor(br.l, e.res)
				_ = c.b.cfg.Client.WriteRequest(br.ack)
				ack := br.ack
				br.tx.OnRetransmission(func(*sip.Response) { _ = c.b.cfg.Client.WriteRequest(ack.Clone()) })
				l := br.l
				c.b.spawn(func() { c.sendBye(l) })
				br.done = true
			default:
				br.done = true
			}
			left--
		case <-deadline.C:
			return
		case <-c.b.ctx.Done():
			return
		}
	}
}

func contains(bs []*branch, b *branch) bool {
	for _, x := range bs {
		if x == b {
			return true
		}
	}
	return false
}

// prack acknowledges a reliable provisional response (RFC 3262) on br's
// early dialog.
func (f *fork) prack(br *branch, res *sip.Response) {
	if !hasOption(res, "Require", "100rel") {
		return
	}
	h := res.GetHeader("RSeq")
	if h == nil {
		return
	}
	n, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32)
	if err != nil || n == 0 || uint32(n) <= br.rseq {
		return // a retransmission: the PRACK is on its way
	}
	br.rseq = uint32(n)
	c, l := f.c, br.l
	c.learnTarget(l, res)
	req := c.newRequest(l, sip.PRACK, nil)
	req.AppendHeader(sip.NewHeader("RAck", strconv.FormatUint(n, 10)+" "+strconv.Itoa(int(br.inv.CSeq().SeqNo))+" INVITE"))
	c.b.spawn(func() {
		if _, err := c.transact(l, req); err != nil {
			c.b.log.Debug("call: PRACK", "call", c.id, "err", err)
		}
	})
}

// hasOption reports whether an option tag is listed in header name.
func hasOption(m interface{ GetHeaders(string) []sip.Header }, name, tag string) bool {
	for _, h := range m.GetHeaders(name) {
		for _, v := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(v), tag) {
				return true
			}
		}
	}
	return false
}

// better reports whether final status a is a better answer for the caller
// than b when every branch failed (RFC 3261 §16.7 in short: 6xx, then
// 4xx before 5xx; busy before other 4xx).
func better(a, b int) bool {
	rank := func(c int) int {
		switch {
		case c >= 600:
			return 0
		case c == 486:
			return 1
		case c >= 400 && c < 500 && c != 408:
			return 2
		case c >= 500:
			return 3
		case c == 408:
			return 4
		}
		return 5
	}
	return b == 0 || rank(a) < rank(b)
}

// run waits for the branches: early media from one branch is relayed, the
// first 2xx wins (the others are CANCELled), a 6xx ends the search, and
// when all fail the best final answer is relayed.
func (f *fork) run(txA sip.ServerTransaction) {
	c := f.c
	f.txA = txA
	ringFor := c.b.cfg.RingTimeout
	if f.ring > 0 {
		ringFor = f.ring
	}
	ringCtx, stopRing := context.WithTimeout(context.Background(), ringFor)
	defer stopRing()
	ring, cancelCh := ringCtx.Done(), c.cancel
	for len(f.pending(nil)) > 0 {
		select {
		case e := <-f.ch:
			if f.onEvent(e) {
				return
			}
		case <-cancelCh:
			cancelCh = nil // fire once
			f.cancelAll(nil)
		case p := <-c.picks: // pickup.go
			if f.onPickup(p) {
				return
			}
		case <-ring:
			ring = nil // fire once
			f.timedOut = true
			f.cancelAll(nil)
		case <-c.b.ctx.Done(): // Close gave up on the branches
			f.stop()
			c.failA(txA, f.reqA, 503, cdr.Failed, "shutdown")
			return
		}
	}
	f.allFailed()
}

// fail ends br with final status code, remembering the best for the caller.
func (f *fork) fail(br *branch, code int) {
	br.done, br.final = true, code
	if better(code, f.best) {
		f.best = code
	}
}

// onEvent handles one response (or the end) of a branch; true: the caller
// has its final answer and run is over.
func (f *fork) onEvent(e branchEvent) bool {
	br, res := e.br, e.res
	if e.gen != br.gen || br.done {
		return false // a stale event of a re-sent INVITE, or a finished branch
	}
	if res == nil {
		code := 503
		if errors.Is(br.tx.Err(), sip.ErrTransactionTimeout) {
			code = 408
		}
		f.fail(br, code)
		return false
	}
	cancelled := f.c.isCancelled() || f.timedOut
	retry := !cancelled && !br.cancelSent && !br.cancelWanted
	switch {
	case res.StatusCode < 200:
		f.onProvisional(br, res, cancelled)
	case (res.StatusCode == 401 || res.StatusCode == 407) && !br.authTried && br.who.Trunk != "" && retry:
		f.onChallenge(br, res)
	case res.StatusCode == 488 && retry:
		f.onNotAcceptable(br)
	case res.StatusCode >= 300:
		return f.onFailure(br, res, cancelled)
	default: // 2xx: this branch wins
		f.win(f.txA, br, res)
		return true
	}
	return false
}

// onProvisional relays a branch's ringing or early media to the caller
// (only one branch's early media), or CANCELs a branch no longer wanted.
func (f *fork) onProvisional(br *branch, res *sip.Response, cancelled bool) {
	c := f.c
	if res.StatusCode == 100 {
		return
	}
	br.early = true
	f.prack(br, res)
	if br.cancelWanted || cancelled {
		f.cancel(br)
		return
	}
	code := res.StatusCode
	var body []byte
	if len(res.Body()) > 0 && (f.earlyBr == nil || f.earlyBr == br) {
		if _, remB, err := media.ParseSDP(res.Body()); err == nil {
			if err := f.answered(br, remB); err == nil {
				f.earlyBr, f.earlyRem = br, remB
				c.negotiated(f.remA, remB)
				body, _ = media.Rewrite(remB, withAnswering(c.legs[media.A].answered, f.remA))
			}
		}
	}
	if code != 180 && code != 183 {
		code = 180
	}
	if body != nil {
		code = 183
	} else if f.rang {
		return // the caller knows it rings: one 180 for all the branches
	}
	f.rang = f.rang || body == nil
	c.observe(DialogEarly)
	c.provisionalA(f.reqA, f.txA, code, body)
}

// onChallenge answers a trunk asking the box to authenticate: once, with
// the trunk's credentials (a second challenge fails the branch).
func (f *fork) onChallenge(br *branch, res *sip.Response) {
	c := f.c
	br.authTried = true
	br.tx.Terminate()
	inv := f.newInvite(br)
	err := c.authorize(inv, res, br.who.Trunk)
	if err == nil {
		err = f.send(br, inv)
	}
	if err != nil {
		c.b.log.Warn("call: trunk authentication", "call", c.id, "err", err)
		f.fail(br, 503)
	}
}

// onNotAcceptable re-offers a branch one step lower: the offer was
// upgraded (RTP/SAVP or DTLS-SRTP) because the caller's leg is encrypted,
// and a callee without it refuses.
func (f *fork) onNotAcceptable(br *branch) {
	step, ok := f.lower(br)
	if !ok {
		f.fail(br, 488)
		return
	}
	br.tx.Terminate()
	br.l.ver++
	err := f.offer(br, step)
	if err == nil {
		err = f.send(br, f.newInvite(br))
	}
	if err != nil {
		br.done, br.final = true, 500
	}
}

// onFailure ends a branch on its final error; a 6xx ends the search (RFC
// 3261 §16.7 step 5): true, the caller has its answer.
func (f *fork) onFailure(br *branch, res *sip.Response, cancelled bool) bool {
	c := f.c
	f.fail(br, res.StatusCode)
	br.tx.Terminate()
	if res.StatusCode < 600 || cancelled {
		return false
	}
	f.cancelAll(nil)
	code, result := mapFailure(res.StatusCode)
	c.failA(f.txA, f.reqA, code, result, "callee answered "+strconv.Itoa(res.StatusCode))
	rest := f.pending(nil)
	c.b.spawn(func() { f.drain(rest) })
	return true
}

// allFailed answers the caller when no branch is left.
func (f *fork) allFailed() {
	c := f.c
	if f.continueHunt() {
		return
	}
	f.stop()
	if c.isCancelled() {
		c.b.cancelled.Add(1)
		c.finish(cdr.Cancelled, 487, c.cancelCause(f.txA, f.reqA))
		return
	}
	if c.huntApp != "" && f.handOver() {
		return
	}
	code, result := mapFailure(f.best)
	if f.timedOut {
		code, result = 480, cdr.NoAnswer
	}
	c.failA(f.txA, f.reqA, code, result, "callee answered "+strconv.Itoa(f.best))
}

// win connects the caller to the branch that answered first.
func (f *fork) win(txA sip.ServerTransaction, br *branch, res *sip.Response) {
	c, reqA := f.c, f.reqA
	a, b := c.legs[media.A], br.l
	c.learnTarget(b, res)
	br.ack = c.ackFor(b, res)
	_ = c.b.cfg.Client.WriteRequest(br.ack)
	ack := br.ack
	br.tx.OnRetransmission(func(*sip.Response) { _ = c.b.cfg.Client.WriteRequest(ack.Clone()) })
	br.done = true
	c.mu.Lock()
	c.legs[media.B] = b
	c.callee = br.who
	if br.who.Trunk != "" { // a forward outwards: the record names its trunk
		c.rec.Trunk = br.who.Trunk
	}
	c.mu.Unlock()
	c.reportAnswered(br.who)
	for _, o := range f.branches {
		if o != br {
			c.b.forget(c, dialogKey(o.l.callID, o.l.localTag))
		}
	}
	f.cancelAll(br)
	rest := f.pending(br)
	c.b.spawn(func() { f.drain(rest) })
	if c.isCancelled() {
		c.b.spawn(func() { c.sendBye(b) })
		c.b.cancelled.Add(1)
		c.finish(cdr.Cancelled, 487, c.cancelCause(txA, reqA))
		return
	}
	b.boxRefreshes = boxRefreshesUAS(res)
	_, remB, err := media.ParseSDP(res.Body())
	if err == nil {
		err = f.answered(br, remB)
	}
	var bodyA []byte
	if err == nil {
		bodyA, err = media.Rewrite(remB, withAnswering(a.answered, f.remA))
	}
	if err != nil {
		c.b.spawn(func() { c.sendBye(b) })
		c.failA(txA, reqA, 488, cdr.Failed, "callee media: "+err.Error())
		return
	}
	a.lastSDP, b.peer = bodyA, remB
	c.negotiated(f.remA, remB)
	a.boxRefreshes = !supportsTimer(reqA)
	if !c.answerA(reqA, txA, bodyA) {
		c.hangup(-1, "no ACK from caller")
		return
	}
	c.startRecording()
}
