package call

// The answer phase: the caller's 2xx and its ACK, and the RFC 4028
// session timers armed once a call is up.

import (
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

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
	c.observe(DialogConfirmed)
	c.b.answered.Add(1)
	c.startTimers()
	if err := txA.Respond(res); err != nil {
		return false
	}
	c.m.AnswerSent(media.A) // a DTLS client leg handshakes from now
	if !c.waitAck(media.A, reqA.CSeq().SeqNo, txA, func() { _ = txA.Respond(res) }, sip.IsReliable(reqA.Transport())) {
		c.unprovenEnded(reqA)
		return false
	}
	if err := c.proven(); err != nil {
		c.b.log.Warn("call: caller media", "call", c.id, "err", err)
		return false
	}
	return true
}

func (c *call) waitAck(s media.Side, seq uint32, tx sip.ServerTransaction, resend func(), reliable bool) bool {
	deadline := time.NewTimer(c.b.cfg.ackWait)
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
		case ack := <-tx.Acks():
			if c.ackOnDialog(s, ack) {
				return true
			}
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
		case <-c.b.ctx.Done():
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

// startTimers arms RFC 4028 expiry per leg and the box's refreshes where
// the box is the refresher.
func (c *call) startTimers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.legs {
		if l != nil { // an application call has no B leg
			c.armLeg(l)
		}
	}
}

// armLeg starts l's session timers; c.mu is held.
func (c *call) armLeg(l *leg) {
	c.stopAllMusic() // a new leg: the hold it answered is over (hold.go)
	l.expiry = time.AfterFunc(c.se, func() {
		c.b.tracked(func() {
			c.b.sessionTimeouts.Add(1)
			c.hangup(-1, "session timer")
		})
	})
	if l.boxRefreshes {
		l.refresh = time.AfterFunc(c.se/2, func() { c.b.tracked(func() { c.refreshLeg(l) }) })
	}
}

func (c *call) touch(s media.Side) {
	c.mu.Lock()
	if l := c.legs[s]; l != nil && l.expiry != nil && c.state == stConfirmed {
		l.expiry.Reset(c.se)
	}
	c.mu.Unlock()
}
