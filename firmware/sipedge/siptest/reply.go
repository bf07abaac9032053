package siptest

import (
	"sync"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Ring makes the phone ring on every INVITE (180) without answering until
// the caller or the box cancels it (sipgo answers the CANCEL with 487).
const Ring = 180

// Reply sets how the phone answers INVITEs from now on: 0 answers 200
// (the default), Ring rings until cancelled, any 4xx-6xx code is the
// final answer (486 busy, 603 decline).
func (p *Phone) Reply(code int) { p.reply.Store(int32(code)) }

// Pick answers (200) the INVITE the phone rings with (Reply(Ring)), or
// its next one, as a user picking up.
func (p *Phone) Pick() {
	select {
	case p.pick <- struct{}{}:
	default:
	}
}

// replyOther answers an INVITE the way Reply set, reporting every INVITE on
// Invites; false: answer 200 as usual.
func (p *Phone) replyOther(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) bool {
	select {
	case p.Invites <- req:
	default:
	}
	switch code := int(p.reply.Load()); {
	case code == 0:
		return false
	case code == Ring:
		// A cancelled INVITE's transaction lives on for a while (487,
		// its ACK, timer I): it no longer takes a Pick.
		cancelled := make(chan struct{})
		var once sync.Once
		tx.OnCancel(func(r *sip.Request) {
			select {
			case p.Cancels <- r:
			default:
			}
			once.Do(func() { close(cancelled) })
		})
		_ = d.Respond(180, "Ringing", nil)
		select {
		case <-tx.Done():
		case <-cancelled:
		case <-p.pick:
			_ = d.Respond(200, "OK", p.sdp(), sip.NewHeader("Content-Type", "application/sdp"))
			p.Answered <- req
		}
	default:
		_ = d.Respond(code, "Refused", nil)
	}
	return true
}
