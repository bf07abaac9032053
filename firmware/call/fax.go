package call

// T.38 fax pass-through: a peer's re-INVITE (or UPDATE) switching the call
// to m=image udptl t38 is offered to the other leg with the box's address
// and that leg's port; the relay then carries UDPTL on the legs' RTP ports
// with one pinhole each. The media is switched only once the other side
// accepted: a refusal (488, the usual answer of a peer without T.38)
// leaves both legs on audio, where fax machines fall back to G.711.
//
// SRTP policy: a T.38 stream is never encrypted (secure UDPTL, RFC 7345,
// is not relayed). A leg whose extension or trunk requires SRTP, or one
// on DTLS-SRTP, refuses T.38 with 488 without asking the other side:
// the requirement means no plain media on that leg, and the G.711
// fallback still carries the fax there, encrypted.

import (
	"errors"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// faxRefused reports why the call may not switch to T.38, or "".
func (c *call) faxRefused(l, o *leg) string {
	for _, x := range []*leg{l, o} {
		if x.policy == media.SRTPRequired {
			return "SRTP required on leg " + x.side.String()
		}
		if _, dtls := c.m.DTLSRole(x.side); dtls {
			return "DTLS-SRTP on leg " + x.side.String()
		}
	}
	return ""
}

// fax relays a T.38 offer f from leg l to leg o (see the file comment).
func (x *offerExchange) fax(f media.Fax) {
	c, s, l, o, req := x.c, x.s, x.l, x.o, x.req
	ctx := c.b.ctx
	if why := c.faxRefused(l, o); why != "" {
		c.b.log.Info("call: T.38 refused", "call", c.id, "from", s, "why", why)
		x.reply(488, nil)
		return
	}
	// The box's own address and o's port: Offer with SRTPOff adds no keys.
	off, err := c.m.Offer(o.side, media.SRTPOff, o.sid, o.ver+1)
	var out []byte
	if err == nil {
		out, err = media.RewriteFax(f, off, nil)
	}
	if err != nil {
		x.reply(500, nil)
		return
	}
	// The legs switch when o's 2xx arrives, before the ACK after which o
	// may send UDPTL (UPDATE has no ACK: switched on its 2xx alike).
	var fo media.Fax
	var faxErr, setErr error
	switchO := func(res *sip.Response) {
		if fo, faxErr = media.ParseFax(res.Body()); faxErr == nil && fo.Port == 0 {
			faxErr = media.ErrNotFax
		}
		if faxErr != nil {
			return
		}
		// Both legs at once: o's UDPTL goes to l's port from its offer.
		if setErr = c.m.SetPeer(ctx, o.side, media.FaxPeer(fo)); setErr == nil {
			setErr = c.m.SetPeer(ctx, s, media.FaxPeer(f))
		}
	}
	res, err := c.transactAck(o, c.newRequest(o, req.Method, out), switchO)
	if err != nil {
		x.reply(408, nil)
		c.b.spawn(func() { c.hangup(-1, "peer did not answer "+string(req.Method)) })
		return
	}
	if res.StatusCode >= 300 {
		// The fallback: nothing changed, the call stays on audio.
		code, _ := mapFailure(res.StatusCode)
		x.reply(code, nil)
		return
	}
	o.ver, o.lastSDP = o.ver+1, out
	if req.Method != sip.INVITE {
		switchO(res)
	}
	if err := faxErr; err != nil {
		// o accepted without a usable T.38 stream: put it back on audio
		// before telling l no.
		c.b.log.Info("call: T.38 answer unusable, back to audio", "call", c.id, "leg", o.side, "err", err)
		if err := c.backToAudio(l, o); err != nil {
			x.reply(488, nil)
			c.b.spawn(func() { c.hangup(-1, "T.38 answer unusable: "+err.Error()) })
			return
		}
		x.reply(488, nil)
		return
	}
	err = setErr
	var ans []byte
	if err == nil {
		loc := media.Local{Addr: off.Addr, RTPPort: c.m.LocalPort(s), SessionID: l.sid, SessionVersion: l.ver + 1}
		ans, err = media.RewriteFax(fo, loc, &f)
	}
	if err != nil {
		x.reply(488, nil)
		c.b.spawn(func() { c.hangup(-1, "T.38 switch failed: "+err.Error()) })
		return
	}
	l.ver, l.lastSDP = l.ver+1, ans
	c.mu.Lock()
	if c.state != stEnded {
		c.rec.Codec = "T.38"
	}
	c.mu.Unlock()
	c.touch(o.side)
	x.awaitAck(x.reply(200, ans))
}

// backToAudio re-offers o the audio it had before a T.38 offer it
// accepted without a T.38 stream.
func (c *call) backToAudio(l, o *leg) error {
	off, err := c.reoffer(o, o.offerPolicy, o.ver+1)
	var body []byte
	if err == nil {
		body, err = media.Rewrite(l.peer, off)
	}
	if err != nil {
		return err
	}
	res, err := c.transact(o, c.newRequest(o, sip.INVITE, body))
	if err != nil {
		return err
	}
	if res.StatusCode >= 300 {
		return errors.New("audio re-offer refused")
	}
	_, rem, err := media.ParseSDP(res.Body())
	if err == nil {
		err = c.m.Answered(c.b.ctx, o.side, off, rem, o.policy)
	}
	if err != nil {
		return err
	}
	o.ver, o.offered, o.lastSDP, o.peer = o.ver+1, off, body, rem
	return nil
}
