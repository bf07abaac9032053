package call

// Teardown: BYE and CANCEL of the box, and the end of a call (media
// closed, leases released, CDR written) exactly once.

import (
	"context"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

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
	ctx, stop := context.WithTimeout(c.b.ctx, transactionTimeout)
	defer stop()
	tx, err := c.b.cfg.Client.TransactionRequest(ctx, cancel, sipgo.ClientRequestBuild)
	if err != nil {
		c.b.log.Warn("call: CANCEL not sent", "call", c.id, "err", err)
		return
	}
	defer tx.Terminate()
	select {
	case <-tx.Responses():
	case <-tx.Done():
	case <-ctx.Done():
	}
}

func (c *call) sendBye(l *leg) {
	if _, err := c.transact(l, c.newRequest(l, sip.BYE, nil)); err != nil {
		c.b.log.Debug("call: BYE", "call", c.id, "side", l.side, "err", err)
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
		c.withdraw(cause)
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
			c.b.spawn(func() { c.sendBye(l) })
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
		if n := c.parkNotes(); n != "" {
			cause = n + "; " + cause
		}
		c.rec.Result, c.rec.Cause = result, cause
		if !c.rec.Answer.IsZero() {
			c.rec.Duration = c.rec.End.Sub(c.rec.Answer)
		}
		if result != cdr.Answered {
			c.rec.SIPStatus = code
		}
		c.closeApp()
		c.stopRecording()
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
				c.b.log.Warn("call: media close", "call", c.id, "err", err)
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
			c.b.log.Warn("call: CDR not written", "call", c.id, "err", err)
		}
		close(c.ended)
		// Unregistered only once the CDR is written: until then Close
		// sees the call and waits for it (edgepbxd closes the store next).
		c.b.unregister(c, keys...)
		c.observeEnd()
		c.reportEnded()
		if c.b.cfg.Ended != nil {
			c.b.cfg.Ended(c.rec, st)
		}
	})
}

// byeCommitWait bounds how long a BYE's 200 waits for the call's CDR
// commit (an fsync; far below the peer's 32 s transaction timer).
const byeCommitWait = 5 * time.Second

// waitEnded waits until finish has written the call's record, at most
// d. A call still being set up (a BYE on an early dialog) ends through
// its CANCEL, which the BYE's answer does not wait for: d bounds that.
func (c *call) waitEnded(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.ended:
	case <-t.C:
	case <-ctx.Done():
	}
}
