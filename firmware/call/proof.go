package call

import (
	"crypto/rand"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// KindTrunkUnproven is the security event of a call from an
// IP-authenticated trunk over UDP whose caller never proved its source
// (no ACK echoing the box's To tag): typically an INVITE with a forged
// source address. The callee may have rung; no media went to the caller.
const KindTrunkUnproven logs.Kind = "call.trunk_unproven"

// newTag is a dialog tag of the box. The box's tags are the credential of
// in-dialog requests (they are not digest-challenged) and the proof that
// a UDP caller receives what the box sends to its source address, so they
// come from crypto/rand (sipgo's GenerateTagN makes no such promise).
func newTag() string { return rand.Text() }

// unproven reports whether a new call's caller may come from a forged
// source: over UDP a trunk is identified by the source address alone, and
// a forger chooses both that address and the SDP address the callee's
// media would go to. TCP and TLS prove the address by their handshake,
// extensions by their digest.
func unproven(caller Identity, transport string) bool {
	return caller.Trunk != "" && !sip.IsReliable(transport)
}

// proven is called when the caller echoed the box's To tag, which went
// only to the caller's source address (in the 2xx, or a reliable 18x that
// it PRACKed): the source is real, and the caller's leg, withheld so far,
// starts carrying media. Until then the callee's media went nowhere.
func (c *call) proven() error {
	c.proveMu.Lock()
	defer c.proveMu.Unlock()
	if c.m == nil || !c.m.Withheld(media.A) {
		return nil
	}
	if err := c.m.Release(c.b.ctx, media.A); err != nil {
		return err
	}
	c.m.AnswerSent(media.A) // a DTLS association of the caller starts only now
	return nil
}

// unprovenEnded records that an unproven caller never confirmed the call.
func (c *call) unprovenEnded(reqA *sip.Request) {
	if c.m == nil || !c.m.Withheld(media.A) || c.b.ctx.Err() != nil { // not for a shutdown
		return
	}
	c.b.log.Warn("call: trunk caller never proved its source", "call", c.id, "trunk", c.caller.Trunk, "source", reqA.Source())
	if c.b.cfg.Events != nil {
		c.b.cfg.Events.Record(logs.Event{Kind: KindTrunkUnproven, Source: reqA.Source(), Transport: reqA.Transport(),
			User: c.caller.Trunk, Reason: "no ACK with the box's To tag to the 2xx sent to the source address"})
	}
}

// ackOnDialog reports whether ack belongs to side s's dialog: sipgo passes an
// ACK to the INVITE server transaction by its Via branch and source, both
// of which the sender of a forged INVITE knows; only the To tag is the
// box's own.
func (c *call) ackOnDialog(s media.Side, ack *sip.Request) bool {
	to := ack.To()
	if to == nil {
		return false
	}
	tag, _ := to.Params.Get("tag")
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.legs[s]
	return l != nil && tag == l.localTag
}
