package call

import (
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// confirmFeature answers a feature code the dial plan carried out
// (dialplan.KindFeature: a forward set, DND off …): a 200 with the box's
// media, then BYE once the phone ACKed it. Phones show that as a short
// connected call, the usual confirmation; a refused code got its error
// status from the dial plan before this.
func (c *call) confirmFeature(reqA *sip.Request, txA sip.ServerTransaction, action string) {
	a := c.legs[media.A]
	_, remA, err := media.ParseSDP(reqA.Body())
	if err != nil {
		c.failA(txA, reqA, 488, cdr.Failed, "caller SDP: "+err.Error())
		return
	}
	a.peer = remA
	if c.m, err = c.b.cfg.Relay.NewCall(c.id); err != nil {
		c.failA(txA, reqA, 503, cdr.Failed, "media: "+err.Error())
		return
	}
	if unproven(c.caller, reqA.Transport()) {
		c.m.Withhold(media.A)
	}
	a.ver = 1
	if a.answered, err = c.m.Answer(c.b.ctx, media.A, remA, a.policy, a.sid, a.ver); err != nil {
		c.failA(txA, reqA, 488, cdr.Failed, "caller media: "+err.Error())
		return
	}
	body, err := media.Rewrite(remA, withAnswering(a.answered, remA))
	if err != nil {
		c.failA(txA, reqA, 500, cdr.Failed, "answer: "+err.Error())
		return
	}
	a.lastSDP = body
	// answerA without session timers: the box hangs up at once.
	res := c.responseToA(reqA, 200, body)
	c.mu.Lock()
	c.state = stConfirmed
	c.rec.Answer = time.Now()
	c.mu.Unlock()
	if err := txA.Respond(res); err != nil {
		c.hangup(-1, "feature code answer not sent")
		return
	}
	c.m.AnswerSent(media.A)
	if !c.waitAck(media.A, reqA.CSeq().SeqNo, txA, func() { _ = txA.Respond(res) }, sip.IsReliable(reqA.Transport())) {
		c.unprovenEnded(reqA)
		c.hangup(-1, "no ACK from caller")
		return
	}
	c.hangup(-1, "feature code "+action)
}
