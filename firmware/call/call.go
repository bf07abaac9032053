package call

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// Call states.
const (
	stSetup = iota
	stConfirmed
	stEnded
)

// transactionTimeout bounds one in-dialog transaction of the box (64×T1).
const transactionTimeout = 32 * time.Second

// leg is one of the call's two dialogs, from the box's point of view.
type leg struct {
	side                media.Side
	callID              string
	localTag, remoteTag string
	local, remote       sip.Uri // From/To addresses of the box's requests on this leg
	target              sip.Uri // the peer's Contact: Request-URI of in-dialog requests
	dest, transport     string  // where the box sends, and how
	cseq                uint32  // last CSeq the box used
	remoteCSeq          uint32  // last CSeq the peer used
	policy              media.Policy
	offerPolicy         media.Policy // what the box offers with (offerPolicyFor)
	sid, ver            uint64
	lastSDP             []byte       // the SDP the box last sent on this leg
	peer                media.Remote // the SDP the peer last sent (its offer or answer)
	offered             media.Local
	answered            media.Local // the box's answer to this leg's last offer
	boxRefreshes        bool
	expiry, refresh     *time.Timer
}

type call struct {
	b      *B2BUA
	id     string
	caller Identity
	callee Identity
	legs   [2]*leg
	m      *media.Call
	lease  *dialplan.Lease
	se     time.Duration

	mu        sync.Mutex
	state     int
	busy      bool // an offer/answer exchange is running (491 to another)
	rec       cdr.Record
	acks      [2]chan uint32
	cancel    chan struct{} // closed when the caller cancels
	cancelled bool
	withdrawn bool // cancelled by the box (semi-attended transfer), not the caller
	keys      []string
	leases    []*dialplan.Lease // of transfer targets
	xfer      *transfer         // a blind transfer in progress
	shown     presented         // the caller as the callee's leg shows it
	rel       *reliable         // the caller's unacknowledged reliable provisional (RFC 3262)
	rseq      uint32            // last RSeq sent to the caller
	endOnce   sync.Once
	ended     chan struct{} // closed when finish has run (CDR written)
}

func newCall(b *B2BUA, req *sip.Request, caller Identity) *call {
	c := &call{b: b, id: sip.GenerateTagN(20), caller: caller, se: b.cfg.SessionExpires,
		cancel: make(chan struct{}), ended: make(chan struct{})}
	c.acks[0] = make(chan uint32, 4)
	c.acks[1] = make(chan uint32, 4)
	c.rec = cdr.Record{ID: c.id, Start: time.Now()}
	return c
}

// setup runs the initial INVITE: route, media, B leg, answer to A.
func (c *call) setup(reqA *sip.Request, txA sip.ServerTransaction) {
	_ = respond(txA, reqA, 100, "Trying")
	from, to, cid, cseq := reqA.From(), reqA.To(), reqA.CallID(), reqA.CSeq()
	a := &leg{side: media.A, callID: cid.Value(), localTag: sip.GenerateTagN(16),
		local: to.Address, remote: from.Address, target: from.Address,
		dest: reqA.Source(), transport: strings.ToLower(reqA.Transport()),
		remoteCSeq: cseq.SeqNo, policy: c.b.cfg.Directory.Policy(c.caller), sid: randSession()}
	a.remoteTag, _ = from.Params.Get("tag")
	if ct := reqA.Contact(); ct != nil {
		a.target = ct.Address
	}
	c.legs[media.A] = a
	c.addKey(dialogKey(a.callID, a.localTag), a)
	txA.OnCancel(func(*sip.Request) { c.cancelByCaller() })

	if c.caller.Extension != "" {
		c.rec.From = c.caller.Extension
	} else {
		c.rec.From = callerNumber(from.Address.User)
		c.rec.Trunk = c.caller.Trunk
	}
	var (
		dec   dialplan.Decision
		lease *dialplan.Lease
		err   error
	)
	dialled := reqA.Recipient.User
	if c.caller.Extension != "" {
		dec, lease, err = c.b.cfg.Plan.RouteOutbound(c.caller.Extension, dialled)
	} else {
		dec, lease, err = c.b.cfg.Plan.RouteInbound(c.caller.Trunk, dialled)
	}
	c.rec.Dialled = dec.Dialled
	if err != nil {
		c.b.rejected.Add(1)
		c.failA(txA, reqA, dialplan.SIPStatus(err), cdr.Rejected, err.Error())
		return
	}
	c.lease = lease
	c.rec.To, c.rec.Direction = dec.Target, string(dec.Kind)
	if dec.Trunk != "" {
		c.rec.Trunk = dec.Trunk
	}

	// Where the B leg goes: every live contact of an extension at once
	// (forking), or the trunk.
	var tgts []Target
	var calleeID Identity
	switch dec.Kind {
	case dialplan.KindInternal, dialplan.KindInbound:
		tgts = c.b.cfg.Directory.Contacts(dec.Target)
		if len(tgts) == 0 {
			c.failA(txA, reqA, 480, cdr.Failed, "callee not registered")
			return
		}
		if len(tgts) > MaxBranches {
			tgts = tgts[:MaxBranches]
		}
		calleeID = Identity{Extension: dec.Target}
	default:
		t, ok := c.b.cfg.Directory.Trunk(dec.Trunk)
		if !ok {
			c.failA(txA, reqA, 503, cdr.Failed, "trunk "+dec.Trunk+" unknown")
			return
		}
		t.URI.User = dec.Target
		tgts, calleeID = []Target{t}, Identity{Trunk: dec.Trunk}
	}

	// Session timer the caller asked for (RFC 4028 §9).
	if h := reqA.GetHeader("Session-Expires"); h != nil {
		if v, ok := parseDelta(h.Value()); ok {
			if v < c.b.minSE {
				c.failA(txA, reqA, 422, cdr.Failed, "session interval too small",
					sip.NewHeader("Min-SE", strconv.Itoa(int(c.b.minSE/time.Second))))
				return
			}
			if v < c.se {
				c.se = v
			}
		}
	}

	// Media: the box answers A's offer and offers to B.
	_, remA, err := media.ParseSDP(reqA.Body())
	if err != nil {
		c.failA(txA, reqA, 488, cdr.Failed, "caller SDP: "+err.Error())
		return
	}
	c.rec.Codec = remA.Codec()
	a.peer = remA
	if c.m, err = c.b.cfg.Relay.NewCall(c.id); err != nil {
		c.failA(txA, reqA, 503, cdr.Failed, "media: "+err.Error())
		return
	}
	c.m.OnDTLSFailure(c.dtlsFailed)
	ctx := context.Background()
	a.ver = 1
	if a.answered, err = c.m.Answer(ctx, media.A, remA, a.policy, a.sid, a.ver); err != nil {
		c.failA(txA, reqA, 488, cdr.Failed, "caller media: "+err.Error())
		return
	}
	c.callee = calleeID
	if mf := reqA.MaxForwards(); mf != nil && mf.Val() <= 1 {
		c.failA(txA, reqA, 483, cdr.Failed, "too many hops")
		return
	}
	f := &fork{c: c, reqA: reqA, remA: remA, ch: make(chan branchEvent, 16), quit: make(chan struct{})}
	pol := c.b.cfg.Directory.Policy(calleeID)
	host, _, _ := net.SplitHostPort(c.b.cfg.Contact)
	c.shown = c.presentation(reqA, host)
	for _, tgt := range tgts {
		l := &leg{side: media.B, callID: sip.GenerateTagN(24), localTag: sip.GenerateTagN(16),
			target: tgt.URI, dest: tgt.Dest, transport: strings.ToLower(tgt.Transport),
			policy: pol, sid: randSession(), ver: 1}
		l.local = sip.Uri{Scheme: "sip", User: c.shown.user, Host: c.shown.host}
		l.remote = sip.Uri{Scheme: "sip", User: tgt.URI.User, Host: tgt.URI.Host}
		br := &branch{l: l}
		if err := f.offer(br, firstOffer(pol, calleeID, a.answered)); err != nil {
			c.failA(txA, reqA, 500, cdr.Failed, "offer: "+err.Error())
			f.stop()
			return
		}
		c.addKey(dialogKey(l.callID, l.localTag), l)
		f.branches = append(f.branches, br)
	}
	c.legs[media.B] = f.branches[0].l
	for _, br := range f.branches {
		if err := f.send(br, f.newInvite(br)); err != nil {
			br.done, br.final = true, 503
		}
	}
	f.run(txA)
}

// answerA sends the 200 to the caller and waits for its ACK, retransmitting
// over unreliable transports (RFC 3261 §13.3.1.4).
func (c *call) answerA(reqA *sip.Request, txA sip.ServerTransaction, body []byte) bool {
	c.awaitPRACK()
	res := c.responseToA(reqA, 200, body)
	c.addTimerHeaders(res, c.legs[media.A], reqA)
	c.mu.Lock()
	c.state = stConfirmed
	c.rec.Answer = time.Now()
	c.mu.Unlock()
	c.b.answered.Add(1)
	c.startTimers()
	if err := txA.Respond(res); err != nil {
		return false
	}
	c.m.AnswerSent(media.A) // a DTLS client leg handshakes from now
	return c.waitAck(media.A, reqA.CSeq().SeqNo, txA, func() { _ = txA.Respond(res) }, sip.IsReliable(reqA.Transport()))
}

func (c *call) waitAck(s media.Side, seq uint32, tx sip.ServerTransaction, resend func(), reliable bool) bool {
	deadline := time.NewTimer(transactionTimeout)
	defer deadline.Stop()
	interval := sip.T1
	retr := time.NewTimer(interval)
	defer retr.Stop()
	for {
		select {
		case n := <-c.acks[s]:
			if n == seq {
				return true
			}
		case <-tx.Acks():
			return true
		case <-retr.C:
			if !reliable {
				resend()
			}
			if interval = 2 * interval; interval > sip.T2 {
				interval = sip.T2
			}
			retr.Reset(interval)
		case <-deadline.C:
			return false
		}
	}
}

func (c *call) acked(s media.Side, req *sip.Request) {
	if cs := req.CSeq(); cs != nil {
		select {
		case c.acks[s] <- cs.SeqNo:
		default:
		}
	}
}

func (c *call) cancelByCaller() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancelled || c.state != stSetup {
		return
	}
	c.cancelled = true
	close(c.cancel)
}

func (c *call) isCancelled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cancelled
}

// failA gives the caller a final error answer and ends the call.
func (c *call) failA(txA sip.ServerTransaction, reqA *sip.Request, code int, result cdr.Result, cause string, hs ...sip.Header) {
	if !c.isCancelled() {
		res := c.responseToA(reqA, code, nil)
		for _, h := range hs {
			res.AppendHeader(h)
		}
		_ = txA.Respond(res)
	} else {
		result, cause = cdr.Cancelled, c.cancelCause(txA, reqA)
	}
	c.finish(result, code, cause)
}

// withdraw ends a ringing call on the box's own initiative (the caller
// turned it into a transfer): CANCEL to the callee, 487 to the caller.
func (c *call) withdraw() {
	c.mu.Lock()
	c.withdrawn = true
	c.mu.Unlock()
	c.cancelByCaller()
}

// cancelCause answers a withdrawn caller (a caller that sent CANCEL got
// its 487 from the transaction layer) and names the cause.
func (c *call) cancelCause(txA sip.ServerTransaction, reqA *sip.Request) string {
	c.mu.Lock()
	w := c.withdrawn
	c.mu.Unlock()
	if !w {
		return "caller CANCEL"
	}
	_ = txA.Respond(c.responseToA(reqA, 487, nil))
	return "transferred while ringing"
}

// responseToA builds a response to the caller with nothing of the B leg in
// it but the SDP the relay rewrote.
func (c *call) responseToA(reqA *sip.Request, code int, body []byte) *sip.Response {
	res := sip.NewResponseFromRequest(reqA, code, reasonPhrase(code), nil)
	if to := res.To(); to != nil {
		to.Params.Add("tag", c.legs[media.A].localTag)
	}
	if code > 100 && code < 300 {
		res.AppendHeader(&sip.ContactHeader{Address: c.b.contactURI(c.legs[media.A].transport)})
	}
	if body != nil {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody(body)
	}
	return res
}

// newRequest builds an in-dialog (or the initial) request of the box on l.
func (c *call) newRequest(l *leg, method sip.RequestMethod, body []byte) *sip.Request {
	req := sip.NewRequest(method, l.target)
	from := &sip.FromHeader{Address: l.local}
	from.Params.Add("tag", l.localTag)
	to := &sip.ToHeader{Address: l.remote}
	if l.remoteTag != "" {
		to.Params.Add("tag", l.remoteTag)
	}
	cid := sip.CallIDHeader(l.callID)
	c.mu.Lock()
	l.cseq++
	seq := l.cseq
	c.mu.Unlock()
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.ContactHeader{Address: c.b.contactURI(l.transport)})
	if method == sip.INVITE || method == sip.UPDATE {
		req.AppendHeader(sip.NewHeader("Supported", "timer"))
		req.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE, OPTIONS, REFER, NOTIFY, PRACK"))
	}
	if body != nil {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	req.SetBody(body)
	req.SetDestination(l.dest)
	req.SetTransport(strings.ToUpper(l.transport))
	return req
}

func (c *call) ackFor(l *leg, res *sip.Response) *sip.Request {
	ack := sip.NewRequest(sip.ACK, l.target)
	from := &sip.FromHeader{Address: l.local}
	from.Params.Add("tag", l.localTag)
	to := &sip.ToHeader{Address: l.remote}
	to.Params.Add("tag", l.remoteTag)
	cid := sip.CallIDHeader(l.callID)
	mf := sip.MaxForwardsHeader(70)
	ack.AppendHeader(from)
	ack.AppendHeader(to)
	ack.AppendHeader(&cid)
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: res.CSeq().SeqNo, MethodName: sip.ACK})
	ack.AppendHeader(&mf)
	ack.SetBody(nil)
	ack.SetDestination(l.dest)
	ack.SetTransport(strings.ToUpper(l.transport))
	return ack
}

// learnTarget takes the dialog's remote tag and target from a 2xx.
func (c *call) learnTarget(l *leg, res *sip.Response) {
	if to := res.To(); to != nil {
		l.remoteTag, _ = to.Params.Get("tag")
	}
	if ct := res.Contact(); ct != nil {
		l.target = ct.Address
	}
}

// authorize answers the trunk's digest challenge in res on inv with the
// trunk's credentials (RFC 3261 §22.2, §22.3). The password is never
// logged or put in an error.
func (c *call) authorize(inv *sip.Request, res *sip.Response, trunk string) error {
	user, pass, ok := c.b.cfg.Directory.Credentials(trunk)
	if !ok {
		return errors.New("no credentials for trunk " + trunk)
	}
	chName, authName := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		chName, authName = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := res.GetHeader(chName)
	if h == nil {
		return errors.New(strconv.Itoa(res.StatusCode) + " without " + chName)
	}
	if len(h.Value()) > maxChallenge {
		return errors.New(chName + " too long")
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return fmt.Errorf("%s: %w", chName, err)
	}
	chal.Algorithm = strings.ToUpper(chal.Algorithm)
	cred, err := digest.Digest(chal, digest.Options{Method: string(sip.INVITE), URI: inv.Recipient.Addr(), Username: user, Password: pass})
	if err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	inv.AppendHeader(sip.NewHeader(authName, cred.String()))
	return nil
}

// maxChallenge bounds a trunk's challenge header (untrusted input).
const maxChallenge = 2048

func (c *call) sendCancel(inv *sip.Request) {
	cancel := sip.NewRequest(sip.CANCEL, inv.Recipient)
	if v := inv.Via(); v != nil {
		cancel.AppendHeader(v.Clone())
	}
	for _, name := range []string{"From", "To", "Call-ID", "Max-Forwards"} {
		if h := inv.GetHeader(name); h != nil {
			cancel.AppendHeader(sip.HeaderClone(h))
		}
	}
	cancel.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	cancel.SetBody(nil)
	cancel.SetDestination(inv.Destination())
	cancel.SetTransport(inv.Transport())
	ctx, stop := context.WithTimeout(context.Background(), transactionTimeout)
	defer stop()
	tx, err := c.b.cfg.Client.TransactionRequest(ctx, cancel, sipgo.ClientRequestBuild)
	if err != nil {
		c.b.log.Warn("call: CANCEL not sent", "call", c.id, "error", err)
		return
	}
	defer tx.Terminate()
	select {
	case <-tx.Responses():
	case <-tx.Done():
	case <-ctx.Done():
	}
}

// transact sends req on l and returns the final response; a 2xx to an
// INVITE is ACKed.
func (c *call) transact(l *leg, req *sip.Request) (*sip.Response, error) {
	ctx, stop := context.WithTimeout(context.Background(), transactionTimeout)
	defer stop()
	tx, err := c.b.cfg.Client.TransactionRequest(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("send %s: %w", req.Method, err)
	}
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode < 200 {
				continue
			}
			if req.Method == sip.INVITE && res.StatusCode < 300 {
				// Left to Timer M: retransmitted 2xx get the ACK again.
				ack := c.ackFor(l, res)
				_ = c.b.cfg.Client.WriteRequest(ack)
				tx.OnRetransmission(func(*sip.Response) { _ = c.b.cfg.Client.WriteRequest(ack.Clone()) })
				return res, nil
			}
			tx.Terminate()
			return res, nil
		case <-tx.Done():
			select {
			case res := <-tx.Responses():
				if res.StatusCode >= 200 {
					if req.Method == sip.INVITE && res.StatusCode < 300 {
						_ = c.b.cfg.Client.WriteRequest(c.ackFor(l, res))
					}
					return res, nil
				}
			default:
			}
			return nil, fmt.Errorf("%s: %w", req.Method, tx.Err())
		case <-ctx.Done():
			tx.Terminate()
			return nil, fmt.Errorf("%s: %w", req.Method, ctx.Err())
		}
	}
}

func (c *call) sendBye(l *leg) {
	if _, err := c.transact(l, c.newRequest(l, sip.BYE, nil)); err != nil {
		c.b.log.Debug("call: BYE", "call", c.id, "side", l.side, "error", err)
	}
}

// offerFrom handles a re-INVITE or UPDATE from side s: a refresh without
// SDP, or a new offer (hold, resume, codec change) passed to the other leg.
func (c *call) offerFrom(s media.Side, req *sip.Request, tx sip.ServerTransaction) {
	l, o := c.legs[s], c.legs[1-s]
	seq := req.CSeq().SeqNo
	c.mu.Lock()
	switch {
	case c.state != stConfirmed || c.busy:
		c.mu.Unlock()
		_ = respond(tx, req, 491, "Request Pending")
		return
	case seq <= l.remoteCSeq:
		c.mu.Unlock()
		_ = respond(tx, req, 500, "Server Internal Error", sip.NewHeader("Retry-After", "1"))
		return
	}
	l.remoteCSeq = seq
	c.busy = true
	c.mu.Unlock()
	// The exchange is over once the final answer is sent (the ACK may
	// still be on its way when the peer's next offer arrives).
	var idleOnce sync.Once
	idle := func() { idleOnce.Do(func() { c.mu.Lock(); c.busy = false; c.mu.Unlock() }) }
	defer idle()
	isInvite := req.Method == sip.INVITE
	if isInvite {
		_ = respond(tx, req, 100, "Trying")
	}
	c.touch(s)
	reply := func(code int, body []byte) *sip.Response {
		res := sip.NewResponseFromRequest(req, code, reasonPhrase(code), nil)
		if code >= 200 && code < 300 {
			res.AppendHeader(&sip.ContactHeader{Address: c.b.contactURI(l.transport)})
			c.addTimerHeaders(res, l, req)
		}
		if body != nil {
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			res.SetBody(body)
		}
		// Free the call for the next offer before the peer can see this
		// answer: a phone may send its next re-INVITE right after the ACK.
		idle()
		_ = tx.Respond(res)
		return res
	}
	if len(req.Body()) == 0 { // session refresh only
		var body []byte
		if isInvite {
			body = l.lastSDP
		}
		res := reply(200, body)
		if isInvite {
			c.waitAck(s, seq, tx, func() { _ = tx.Respond(res) }, sip.IsReliable(req.Transport()))
		}
		return
	}
	ctx := context.Background()
	_, rem, err := media.ParseSDP(req.Body())
	if err != nil {
		reply(488, nil)
		return
	}
	loc, err := c.m.Answer(ctx, s, rem, l.policy, l.sid, l.ver+1)
	if err != nil {
		reply(488, nil)
		return
	}
	// The other leg is offered SRTP as firmly as this leg now has it; a
	// DTLS-SRTP leg keeps its association (same fingerprint and roles).
	offPol := offerPolicyFor(o.policy, c.identity(o.side), isSecured(loc))
	off, err := c.reoffer(o, offPol, o.ver+1)
	var out []byte
	if err == nil {
		out, err = media.Rewrite(rem, off)
	}
	if err != nil {
		reply(500, nil)
		return
	}
	res, err := c.transact(o, c.newRequest(o, req.Method, out))
	if err != nil {
		reply(408, nil)
		go c.hangup(-1, "peer did not answer "+string(req.Method))
		return
	}
	if res.StatusCode >= 300 {
		code, _ := mapFailure(res.StatusCode)
		reply(code, nil)
		return
	}
	_, remO, err := media.ParseSDP(res.Body())
	if err == nil {
		err = c.m.Answered(ctx, o.side, off, remO, o.policy)
	}
	var ans []byte
	if err == nil {
		ans, err = media.Rewrite(remO, withAnswering(loc, rem))
	}
	if err != nil {
		reply(488, nil)
		return
	}
	l.ver, l.answered, l.lastSDP, l.peer = l.ver+1, loc, ans, rem
	o.peer = remO
	o.ver, o.offered, o.lastSDP, o.offerPolicy = o.ver+1, off, out, offPol
	c.touch(o.side)
	final := reply(200, ans)
	c.m.AnswerSent(s) // a new DTLS association handshakes from now
	if isInvite {
		c.waitAck(s, seq, tx, func() { _ = tx.Respond(final) }, sip.IsReliable(req.Transport()))
	}
}

// hangup ends a call: BYE to every leg but from (-1: both), media closed,
// CDR written. A call still ringing is cancelled instead.
func (c *call) hangup(from int, cause string) {
	c.mu.Lock()
	switch c.state {
	case stEnded:
		c.mu.Unlock()
		return
	case stSetup:
		c.mu.Unlock()
		c.cancelByCaller()
		return
	}
	c.state = stEnded
	legs := c.legs
	if c.xfer != nil {
		close(c.xfer.stop)
	}
	c.mu.Unlock()
	for _, l := range legs {
		if l != nil && int(l.side) != from {
			go c.sendBye(l)
		}
	}
	c.finish(cdr.Answered, 0, cause)
}

// finish releases everything the call holds and writes its CDR, once.
func (c *call) finish(result cdr.Result, code int, cause string) {
	c.endOnce.Do(func() {
		c.mu.Lock()
		c.state = stEnded
		for _, l := range c.legs {
			if l == nil {
				continue
			}
			if l.expiry != nil {
				l.expiry.Stop()
			}
			if l.refresh != nil {
				l.refresh.Stop()
			}
		}
		c.mu.Unlock()
		c.rec.End = time.Now()
		c.rec.Result, c.rec.Cause = result, cause
		if !c.rec.Answer.IsZero() {
			c.rec.Duration = c.rec.End.Sub(c.rec.Answer)
		}
		if result != cdr.Answered {
			c.rec.SIPStatus = code
		}
		var st media.Stats
		if c.m != nil {
			st = c.m.Stats()
			c.rec.SRTPCaller, c.rec.SRTPCallee = c.m.Secured(media.A), c.m.Secured(media.B)
			c.rec.MOS = st.MOS()
			for _, lg := range st.Legs {
				c.rec.LossPct = max(c.rec.LossPct, lg.LossPct)
				c.rec.JitterMs = max(c.rec.JitterMs, lg.JitterMs)
			}
			if err := c.m.Close(); err != nil {
				c.b.log.Warn("call: media close", "call", c.id, "error", err)
			}
		}
		if c.lease != nil {
			c.lease.Release()
		}
		c.mu.Lock()
		keys, leases := c.keys, c.leases
		c.mu.Unlock()
		for _, l := range leases {
			l.Release()
		}
		c.b.active.Add(-1)
		if err := c.b.cfg.CDR.Write(c.rec); err != nil {
			c.b.log.Warn("call: CDR not written", "call", c.id, "error", err)
		}
		// Unregistered only once the CDR is written: until then Close
		// sees the call and waits for it (edgepbxd closes the store next).
		c.b.unregister(c, keys...)
		if c.b.cfg.Ended != nil {
			c.b.cfg.Ended(c.rec, st)
		}
		close(c.ended)
	})
}

func (c *call) addKey(k string, l *leg) {
	c.mu.Lock()
	c.keys = append(c.keys, k)
	c.mu.Unlock()
	c.b.register(c, k, l)
}

// startTimers arms RFC 4028 expiry per leg and the box's refreshes where
// the box is the refresher.
func (c *call) startTimers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.legs {
		c.armLeg(l)
	}
}

// armLeg starts l's session timers; c.mu is held.
func (c *call) armLeg(l *leg) {
	l.expiry = time.AfterFunc(c.se, func() {
		c.b.sessionTimeouts.Add(1)
		c.hangup(-1, "session timer")
	})
	if l.boxRefreshes {
		l.refresh = time.AfterFunc(c.se/2, func() { c.refreshLeg(l) })
	}
}

func (c *call) touch(s media.Side) {
	c.mu.Lock()
	if l := c.legs[s]; l != nil && l.expiry != nil && c.state == stConfirmed {
		l.expiry.Reset(c.se)
	}
	c.mu.Unlock()
}

// reoffer is the box's subsequent offer to leg l: DTLS-SRTP keeping the
// association when l has one (RFC 8842 §5: same fingerprint, a=setup with
// the established role), else SDES/RTP as pol says.
func (c *call) reoffer(l *leg, pol media.Policy, ver uint64) (media.Local, error) {
	if _, ok := c.m.DTLSRole(l.side); ok {
		return c.m.OfferDTLS(l.side, l.sid, ver, false)
	}
	return c.m.Offer(l.side, pol, l.sid, ver)
}

// dtlsFailed ends an established call whose leg lost DTLS-SRTP (a
// re-offer's new handshake failed, e.g. a wrong fingerprint): the leg
// carries nothing any more. During setup the failure only drops media, as
// a stalled handshake may still be retried by the phone.
func (c *call) dtlsFailed(s media.Side, err error) {
	c.mu.Lock()
	up := c.state == stConfirmed
	c.mu.Unlock()
	if up {
		// Not inline: hangup closes the media, which waits for the
		// handshake goroutine this runs on.
		go c.hangup(-1, "DTLS-SRTP failed on leg "+s.String())
	}
}

// refreshSDP is the body of the box's session refresh on l: the last SDP
// again (unchanged version: no media change), or for a DTLS-SRTP leg a new
// version of the offer with the established a=setup role (the last SDP may
// be the initial a=setup:actpass offer, which would let the peer swap
// roles and break the association).
func (c *call) refreshSDP(l *leg) (body []byte, off media.Local, dtls bool, err error) {
	if _, ok := c.m.DTLSRole(l.side); !ok {
		return l.lastSDP, media.Local{}, false, nil
	}
	o := c.legs[1-l.side]
	if o == nil {
		return l.lastSDP, media.Local{}, false, nil
	}
	if off, err = c.m.OfferDTLS(l.side, l.sid, l.ver+1, false); err != nil {
		return nil, off, false, err
	}
	body, err = media.Rewrite(o.peer, off)
	return body, off, true, err
}

// refreshLeg is the box's session refresh on l: a re-INVITE repeating the
// last SDP (for DTLS-SRTP legs see refreshSDP).
func (c *call) refreshLeg(l *leg) {
	c.mu.Lock()
	if c.state != stConfirmed || c.legs[l.side] != l {
		c.mu.Unlock()
		return
	}
	if c.busy { // an exchange is running (maybe the other leg's refresh): try again soon
		l.refresh.Reset(min(time.Second, c.se/10))
		c.mu.Unlock()
		return
	}
	c.busy = true
	c.mu.Unlock()
	body, off, renewed, err := c.refreshSDP(l)
	var res *sip.Response
	if err == nil {
		res, err = c.transact(l, c.newRequest(l, sip.INVITE, body))
	}
	if err == nil && res.StatusCode < 300 && renewed {
		// The answer keeps the association unless the peer changed it.
		var rem media.Remote
		if _, rem, err = media.ParseSDP(res.Body()); err == nil {
			err = c.m.Answered(context.Background(), l.side, off, rem, l.policy)
		}
		if err == nil {
			l.ver, l.offered, l.lastSDP, l.peer = l.ver+1, off, body, rem
		}
	}
	c.mu.Lock()
	c.busy = false
	c.mu.Unlock()
	if err != nil || res.StatusCode >= 300 {
		c.b.sessionTimeouts.Add(1)
		c.hangup(-1, "session refresh failed")
		return
	}
	c.touch(l.side)
	c.mu.Lock()
	if c.state == stConfirmed {
		l.refresh.Reset(c.se / 2)
	}
	c.mu.Unlock()
}

// addTimerHeaders puts Session-Expires on a 2xx to a refresh-capable peer.
func (c *call) addTimerHeaders(res *sip.Response, l *leg, req *sip.Request) {
	if !supportsTimer(req) {
		return
	}
	ref := "uac"
	if l.boxRefreshes {
		ref = "uas"
	}
	res.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(int(c.se/time.Second))+";refresher="+ref))
	res.AppendHeader(sip.NewHeader("Require", "timer"))
}

func (b *B2BUA) contactURI(transport string) sip.Uri {
	hp := b.cfg.Contact
	if transport == "tls" && b.cfg.ContactTLS != "" {
		hp = b.cfg.ContactTLS
	}
	host, port, _ := net.SplitHostPort(hp)
	p, _ := strconv.Atoi(port)
	u := sip.Uri{Scheme: "sip", Host: host, Port: p}
	if transport != "" && transport != "udp" {
		u.UriParams = sip.HeaderParams{{K: "transport", V: transport}}
	}
	return u
}

// offerPolicyFor is the policy the box offers a leg's peer with. When the
// other leg is encrypted (SDES or DTLS-SRTP) an extension is offered
// RTP/SAVP, not best effort: phones set to "SRTP mandatory" refuse keys on
// RTP/AVP, and a caller who encrypts should not silently lose it on the
// callee's leg. Trunks keep their policy (many answer 488 to RTP/SAVP).
func offerPolicyFor(pol media.Policy, id Identity, otherSecured bool) media.Policy {
	if pol == media.SRTPOptional && otherSecured && id.Extension != "" {
		return media.SRTPRequired
	}
	return pol
}

// isSecured reports whether the box's SDP carries keys (SDES) or a
// fingerprint (DTLS-SRTP) for its leg.
func isSecured(l media.Local) bool { return l.Crypto != nil || l.Fingerprint != nil }

// identity is who is on side s: the caller, or the callee the call was
// routed to.
func (c *call) identity(s media.Side) Identity {
	if s == media.A {
		return c.caller
	}
	return c.callee
}

func withAnswering(l media.Local, offer media.Remote) media.Local {
	l.Answering = &offer
	return l
}

func supportsTimer(req *sip.Request) bool {
	for _, h := range req.GetHeaders("Supported") {
		for _, v := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(v), "timer") {
				return true
			}
		}
	}
	return req.GetHeader("Session-Expires") != nil
}

// boxRefreshesUAS: on the B leg the box is the UAC; it refreshes unless the
// callee's 2xx made itself refresher.
func boxRefreshesUAS(res *sip.Response) bool {
	h := res.GetHeader("Session-Expires")
	if h == nil {
		return true
	}
	return !strings.Contains(strings.ToLower(h.Value()), "refresher=uas")
}

// parseDelta reads a Session-Expires value ("1800;refresher=uac").
func parseDelta(v string) (time.Duration, bool) {
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 || n > 86400 {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// callerNumber keeps a caller number from a trunk only if it is a number.
func callerNumber(u string) string {
	if n, err := dialplan.Normalize(u); err == nil {
		return n
	}
	return "anonymous"
}

// mapFailure maps the callee's final error to what the caller is told:
// redirects and authentication challenges are not passed through (they
// would leak the callee's contacts or realm).
func mapFailure(code int) (int, cdr.Result) {
	switch {
	case code == 486 || code == 600:
		return 486, cdr.Busy
	case code == 480 || code == 408:
		return code, cdr.NoAnswer
	case code == 487:
		return 487, cdr.Cancelled
	case code == 401 || code == 407 || code < 400:
		return 503, cdr.Failed
	case code == 603:
		return 603, cdr.Rejected
	case code >= 400 && code < 700:
		return code, cdr.Failed
	}
	return 500, cdr.Failed
}

func reasonPhrase(code int) string {
	switch code {
	case 100:
		return "Trying"
	case 180:
		return "Ringing"
	case 183:
		return "Session Progress"
	case 200:
		return "OK"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 422:
		return "Session Interval Too Small"
	case 480:
		return "Temporarily Unavailable"
	case 481:
		return "Call/Transaction Does Not Exist"
	case 483:
		return "Too Many Hops"
	case 486:
		return "Busy Here"
	case 487:
		return "Request Terminated"
	case 488:
		return "Not Acceptable Here"
	case 491:
		return "Request Pending"
	case 500:
		return "Server Internal Error"
	case 503:
		return "Service Unavailable"
	case 603:
		return "Decline"
	}
	return "Error"
}

// randSession is an SDP o= session id (RFC 4566: NTP-like, any 63-bit value).
func randSession() uint64 { return rand.Uint64() >> 1 }
