package call

import (
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// reliable is a provisional response sent reliably to the caller (RFC
// 3262), retransmitted until the caller PRACKs it.
type reliable struct {
	rseq  uint32
	sdp   bool          // it carried the answer: the 2xx waits for its PRACK
	acked chan struct{} // closed by the PRACK
	gone  chan struct{} // closed when retransmission gave up
}

// provisionalA relays a 180/183 to the caller: reliably when the caller
// supports or requires 100rel, one at a time (§3: no second reliable
// provisional before the first is PRACKed; later ones are dropped, the
// 2xx carries the answer anyway).
func (c *call) provisionalA(reqA *sip.Request, txA sip.ServerTransaction, code int, body []byte) {
	res := c.responseToA(reqA, code, body)
	if !hasOption(reqA, "Supported", "100rel") && !hasOption(reqA, "Require", "100rel") {
		if txA.Respond(res) == nil && body != nil {
			c.m.EarlyAnswerSent(media.A) // early media: the caller has the answer
		}
		return
	}
	c.mu.Lock()
	if p := c.rel; p != nil {
		select {
		case <-p.acked:
		case <-p.gone:
		default:
			c.mu.Unlock()
			return
		}
	}
	c.rseq++
	r := &reliable{rseq: c.rseq, sdp: body != nil, acked: make(chan struct{}), gone: make(chan struct{})}
	c.rel = r
	c.mu.Unlock()
	res.AppendHeader(sip.NewHeader("Require", "100rel"))
	res.AppendHeader(sip.NewHeader("RSeq", strconv.FormatUint(uint64(r.rseq), 10)))
	if err := txA.Respond(res); err != nil {
		close(r.gone)
		return
	}
	if body != nil {
		c.m.EarlyAnswerSent(media.A)
	}
	reliableT := sip.IsReliable(reqA.Transport())
	if !c.b.g.add() {
		close(r.gone)
		return
	}
	go func() {
		defer c.b.g.done()
		defer close(r.gone)
		interval := sip.T1
		giveUp := time.NewTimer(64 * sip.T1)
		defer giveUp.Stop()
		t := time.NewTimer(interval)
		defer t.Stop()
		for {
			select {
			case <-r.acked:
				return
			case <-giveUp.C:
				return
			case <-txA.Done():
				return
			case <-c.b.ctx.Done():
				return
			case <-t.C:
				if !reliableT {
					_ = txA.Respond(res)
				}
				interval *= 2
				t.Reset(interval)
			}
		}
	}()
}

// awaitPRACK holds the 2xx while a reliable provisional with the answer is
// unacknowledged (RFC 3262 §3).
func (c *call) awaitPRACK() {
	c.mu.Lock()
	r := c.rel
	c.mu.Unlock()
	if r == nil || !r.sdp {
		return
	}
	select {
	case <-r.acked:
	case <-r.gone:
	case <-c.b.ctx.Done():
	}
}

// OnPrack handles a PRACK (RFC 3262) from the caller for a reliable
// provisional response of the box; the edge dispatches in-dialog PRACKs
// here as it does BYEs.
func (b *B2BUA) OnPrack(req *sip.Request, tx sip.ServerTransaction) {
	if !b.tracked(func() { b.onPrack(req, tx) }) {
		respond(tx, req, 503, "Service Unavailable")
	}
}

func (b *B2BUA) onPrack(req *sip.Request, tx sip.ServerTransaction) {
	r, ok := b.lookup(req)
	if !ok || !r.current() || r.side != media.A {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	rseq, cseq, ok := parseRAck(req)
	c := r.c
	c.mu.Lock()
	p := c.rel
	match := ok && p != nil && p.rseq == rseq && cseq == c.legs[media.A].remoteCSeq
	c.mu.Unlock()
	if !match {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	// Answered before the 2xx it releases can leave.
	respond(tx, req, 200, "OK")
	// The PRACK echoed the box's To tag and RSeq: the caller's source is
	// real, early media may flow to it.
	if err := c.proven(); err != nil {
		b.log.Warn("call: caller media", "call", c.id, "err", err)
	}
	c.mu.Lock()
	select {
	case <-p.acked:
	default:
		close(p.acked)
	}
	c.mu.Unlock()
}

// parseRAck reads "RAck: <rseq> <cseq> INVITE".
func parseRAck(req *sip.Request) (rseq, cseq uint32, ok bool) {
	h := req.GetHeader("RAck")
	if h == nil || len(h.Value()) > 64 {
		return 0, 0, false
	}
	f := strings.Fields(h.Value())
	if len(f) != 3 || !strings.EqualFold(f[2], "INVITE") {
		return 0, 0, false
	}
	a, err1 := strconv.ParseUint(f[0], 10, 32)
	b, err2 := strconv.ParseUint(f[1], 10, 32)
	if err1 != nil || err2 != nil || a == 0 {
		return 0, 0, false
	}
	return uint32(a), uint32(b), true
}
