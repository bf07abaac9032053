package call

// Music on hold: when one party holds (a re-INVITE or UPDATE offering
// a=sendonly, a=inactive or c=0.0.0.0) the offer still goes to the other
// party as before, so its phone shows the hold and keeps the keys the
// box's re-offer gives it, but the box now plays music to it through the
// relay (media.Call.Inject) in the codec it answered, until the holder
// resumes. The other party must be able to receive for that: an inactive
// offer is passed on as sendonly (the box sends), and the holder is
// answered inactive as its offer requires. See docs/architecture.md.

import (
	"sync"

	"github.com/edgepbx/edgepbx/firmware/media"
)

// HoldMusic plays music on hold (cmd/edgepbxd: the music library through
// media.Call.Inject).
type HoldMusic interface {
	// Play starts the music to side of m, whose peer answered the hold
	// offer with ans; holder is who held. It returns stop (nil: nothing
	// plays, why says why for the log). stop ends the music at once and
	// may be called more than once and after the call closed.
	Play(m *media.Call, side media.Side, ans media.Remote, holder Identity) (stop func(), why string)
}

// holdMusic is a call's music per side (its own lock: stopAll runs with
// c.mu held, when a leg is replaced).
type holdMusic struct {
	mu   sync.Mutex
	stop [2]func()
}

// isHoldOffer reports whether an offer puts the call on hold: the sender
// will not receive (RFC 3264 §8.4), or the RFC 2543 c=0.0.0.0.
func isHoldOffer(r media.Remote) bool {
	return r.Direction == "sendonly" || r.Direction == "inactive" || (r.Addr.IsValid() && r.Addr.IsUnspecified())
}

// holdOfferTo is the hold offer as passed on when music plays: the held
// party must receive it.
func (c *call) holdOfferTo(rem media.Remote, held bool) media.Remote {
	if held && c.b.cfg.Hold != nil && rem.Direction == "inactive" {
		rem.Direction = "sendonly"
	}
	return rem
}

// holdAnswer is the answer to the holder: an inactive offer is answered
// inactive whatever the held party said to the box's sendonly.
func (c *call) holdAnswer(rem, ans media.Remote, held bool) media.Remote {
	if held && c.b.cfg.Hold != nil && rem.Direction == "inactive" {
		ans.Direction = "inactive"
	}
	return ans
}

// startMusic plays to side (held by the other side) unless it plays
// already: a repeated hold offer (a refresh) keeps the music, whose
// packets use the leg's keys of the moment.
func (c *call) startMusic(side media.Side, ans media.Remote) {
	hm := c.b.cfg.Hold
	if hm == nil || c.m == nil {
		return
	}
	c.moh.mu.Lock()
	playing := c.moh.stop[side] != nil
	c.moh.mu.Unlock()
	if playing {
		return
	}
	stop, why := hm.Play(c.m, side, ans, c.identity(1-side))
	if stop == nil {
		c.b.log.Info("call: no music on hold", "call", c.id, "held", side.String(), "why", why)
		return
	}
	c.moh.mu.Lock()
	if c.moh.stop[side] != nil { // a concurrent start won
		c.moh.mu.Unlock()
		stop()
		return
	}
	c.moh.stop[side] = stop
	c.moh.mu.Unlock()
	c.b.log.Info("call: music on hold", "call", c.id, "held", side.String())
}

// stopMusic ends the music to side (resume).
func (c *call) stopMusic(side media.Side) {
	c.moh.mu.Lock()
	stop := c.moh.stop[side]
	c.moh.stop[side] = nil
	c.moh.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// stopAllMusic ends the music of the call: a leg was replaced (transfer,
// pickup, hand-over) and the hold it answered is over.
func (c *call) stopAllMusic() {
	c.stopMusic(media.A)
	c.stopMusic(media.B)
}

// holdState is what relay needs of an offer from side s: whether it holds
// (music to the other side after the exchange) or resumes (the music to
// the other side ends at once, before the other party is asked).
func (c *call) holdState(s media.Side, rem media.Remote) bool {
	held := isHoldOffer(rem)
	if !held {
		c.stopMusic(1 - s)
	}
	return held
}
