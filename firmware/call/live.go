package call

import (
	"slices"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
)

// Live is one call in progress as the admin's calls panel shows it.
type Live struct {
	ID        string    `json:"id"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	Direction string    `json:"direction"`
	Trunk     string    `json:"trunk,omitempty"`
	Start     time.Time `json:"start"`
	Answer    time.Time `json:"answer,omitzero"` // zero while ringing
	Codec     string    `json:"codec,omitempty"`
	// SRTP per leg (caller side, callee side), known once answered.
	SRTPCaller bool `json:"srtp_caller"`
	SRTPCallee bool `json:"srtp_callee"`
	// MOS is the relay's estimate from RTCP reports so far; 0: none yet.
	MOS float64 `json:"mos,omitempty"`
}

// Live lists the calls in progress, oldest first.
func (b *B2BUA) Live() []Live {
	calls := b.liveCalls()
	out := make([]Live, 0, len(calls))
	for _, c := range calls {
		c.mu.Lock()
		if c.state == stEnded {
			c.mu.Unlock()
			continue
		}
		l := Live{ID: c.id, From: c.rec.From, To: c.rec.To, Direction: c.rec.Direction, Trunk: c.rec.Trunk,
			Start: c.rec.Start, Answer: c.rec.Answer, Codec: c.rec.Codec}
		// c.m is set before the answer, and the answer is recorded under
		// c.mu: once answered it is safe to read here.
		m := c.m
		answered := c.state == stConfirmed && !c.rec.Answer.IsZero()
		c.mu.Unlock()
		if answered && m != nil {
			l.SRTPCaller, l.SRTPCallee = m.Secured(media.A), m.Secured(media.B)
			l.MOS = m.Stats().MOS()
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Live) int { return a.Start.Compare(b.Start) })
	return out
}

// Hangup ends the call with this id from the box (BYE to both legs, or a
// CANCEL while it rings), as an admin's hang-up. It reports whether such a
// call was in progress.
func (b *B2BUA) Hangup(id, cause string) bool {
	for _, c := range b.liveCalls() {
		if c.id != id {
			continue
		}
		c.mu.Lock()
		ended := c.state == stEnded
		c.mu.Unlock()
		if ended {
			return false
		}
		c.hangup(-1, cause)
		return true
	}
	return false
}
