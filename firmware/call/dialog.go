package call

// The confirmed dialogs: requests of the box on a leg, offers of a peer
// (re-INVITE, UPDATE) passed to the other leg, session refreshes.

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

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

// transact sends req on l and returns the final response; a 2xx to an
// INVITE is ACKed.
func (c *call) transact(l *leg, req *sip.Request) (*sip.Response, error) {
	return c.transactAck(l, req, nil)
}

// transactAck is transact with accepted run on an INVITE's 2xx before the
// ACK goes out (the peer may send media as soon as it has the ACK).
func (c *call) transactAck(l *leg, req *sip.Request, accepted func(*sip.Response)) (*sip.Response, error) {
	ctx, stop := context.WithTimeout(c.b.ctx, transactionTimeout)
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
				if accepted != nil {
					accepted(res)
				}
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
						if accepted != nil {
							accepted(res)
						}
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

// offerFrom handles a re-INVITE or UPDATE from side s: a refresh without
// SDP, or a new offer (hold, resume, codec change) passed to the other leg.
func (c *call) offerFrom(s media.Side, req *sip.Request, tx sip.ServerTransaction) {
	l := c.legs[s]
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
	x := &offerExchange{c: c, s: s, l: l, o: c.legs[1-s], req: req, tx: tx, isInvite: req.Method == sip.INVITE}
	defer x.idle()
	if x.isInvite {
		_ = respond(tx, req, 100, "Trying")
	}
	c.touch(s)
	if len(req.Body()) == 0 {
		x.refresh()
		return
	}
	if x.o == nil { // an application call
		x.appOffer()
		return
	}
	x.relay()
}

// offerExchange is one re-INVITE or UPDATE of a peer (leg l on side s)
// while the call holds busy; o is the other leg.
type offerExchange struct {
	c        *call
	s        media.Side
	l, o     *leg
	req      *sip.Request
	tx       sip.ServerTransaction
	isInvite bool
	idleOnce sync.Once
}

// idle frees the call for the next exchange: once the final answer is
// sent (the ACK may still be on its way when the peer's next offer
// arrives).
func (x *offerExchange) idle() {
	x.idleOnce.Do(func() { x.c.mu.Lock(); x.c.busy = false; x.c.mu.Unlock() })
}

// reply sends the final answer.
func (x *offerExchange) reply(code int, body []byte) *sip.Response {
	c := x.c
	res := sip.NewResponseFromRequest(x.req, code, reasonPhrase(code), nil)
	if code >= 200 && code < 300 {
		res.AppendHeader(&sip.ContactHeader{Address: c.b.contactURI(x.l.transport)})
		c.addTimerHeaders(res, x.l, x.req)
	}
	if body != nil {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody(body)
	}
	// Free the call for the next offer before the peer can see this
	// answer: a phone may send its next re-INVITE right after the ACK.
	x.idle()
	_ = x.tx.Respond(res)
	return res
}

// awaitAck waits for a re-INVITE's ACK, resending final over UDP.
func (x *offerExchange) awaitAck(final *sip.Response) {
	if x.isInvite {
		x.c.waitAck(x.s, x.req.CSeq().SeqNo, x.tx, func() { _ = x.tx.Respond(final) }, sip.IsReliable(x.req.Transport()))
	}
}

// refresh answers a session refresh without SDP (a re-INVITE gets the
// last SDP again).
func (x *offerExchange) refresh() {
	var body []byte
	if x.isInvite {
		body = x.l.lastSDP
	}
	x.awaitAck(x.reply(200, body))
}

// relay answers a new offer with the other leg's answer to the box's
// offer made from it.
func (x *offerExchange) relay() {
	c, s, l, o, req := x.c, x.s, x.l, x.o, x.req
	ctx := c.b.ctx
	_, rem, err := media.ParseSDP(req.Body())
	if err != nil {
		if f, ferr := media.ParseFax(req.Body()); ferr == nil {
			x.fax(f) // fax.go
			return
		}
		x.reply(488, nil)
		return
	}
	held := c.holdState(s, rem) // hold.go: a resume ends the music at once
	loc, err := c.m.Reanswer(ctx, s, rem, l.policy, l.sid, l.ver+1)
	if err != nil {
		x.reply(488, nil)
		return
	}
	// The other leg is offered SRTP as firmly as this leg now has it; a
	// DTLS-SRTP leg keeps its association (same fingerprint and roles).
	offPol := offerPolicyFor(o.policy, c.identity(o.side), isSecured(loc))
	off, err := c.reoffer(o, offPol, o.ver+1)
	var out []byte
	if err == nil {
		out, err = media.Rewrite(c.holdOfferTo(rem, held), off)
	}
	if err != nil {
		x.reply(500, nil)
		return
	}
	res, err := c.transact(o, c.newRequest(o, req.Method, out))
	if err != nil {
		x.reply(408, nil)
		c.b.spawn(func() { c.hangup(-1, "peer did not answer "+string(req.Method)) })
		return
	}
	if res.StatusCode >= 300 {
		code, _ := mapFailure(res.StatusCode)
		x.reply(code, nil)
		return
	}
	_, remO, err := media.ParseSDP(res.Body())
	if err == nil {
		err = c.m.Answered(ctx, o.side, off, remO, o.policy)
	}
	var ans []byte
	if err == nil {
		ans, err = media.Rewrite(c.holdAnswer(rem, remO, held), withAnswering(loc, rem))
	}
	if err != nil {
		x.reply(488, nil)
		return
	}
	l.ver, l.answered, l.lastSDP, l.peer = l.ver+1, loc, ans, rem
	o.peer = remO
	c.negotiated(rem, remO)
	o.ver, o.offered, o.lastSDP, o.offerPolicy = o.ver+1, off, out, offPol
	c.touch(o.side)
	final := x.reply(200, ans)
	c.m.AnswerSent(s) // a new DTLS association handshakes from now
	if held {
		c.startMusic(o.side, remO)
	}
	x.awaitAck(final)
}

// reoffer is the box's subsequent offer to leg l: DTLS-SRTP keeping the
// association when l has one (RFC 8842 §5: same fingerprint, a=setup with
// the established role), else SDES (the key l already has) or RTP as pol
// says.
func (c *call) reoffer(l *leg, pol media.Policy, ver uint64) (media.Local, error) {
	if _, ok := c.m.DTLSRole(l.side); ok {
		return c.m.OfferDTLS(l.side, l.sid, ver, false)
	}
	return c.m.Reoffer(l.side, pol, l.sid, ver)
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
			err = c.m.Answered(c.b.ctx, l.side, off, rem, l.policy)
		}
		if err == nil {
			l.ver, l.offered, l.lastSDP, l.peer = l.ver+1, off, body, rem
			c.negotiated(c.legs[1-l.side].peer, rem)
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
		c.b.spawn(func() { c.hangup(-1, "DTLS-SRTP failed on leg "+s.String()) })
	}
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
