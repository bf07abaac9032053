package call

// Dialog observation: who is in a call and in which state, for busy-lamp
// fields (RFC 4235 dialog event package, served by firmware/presence).
// The B2BUA reports each extension's side of a call as it changes; the
// observer decides who may see what.

import (
	"sync"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// DialogState is an RFC 4235 dialog state, in the order a dialog passes
// through them (a later state never goes back).
type DialogState uint8

const (
	DialogTrying DialogState = iota + 1
	DialogEarly
	DialogConfirmed
	DialogTerminated
)

func (s DialogState) String() string {
	switch s {
	case DialogTrying:
		return "trying"
	case DialogEarly:
		return "early"
	case DialogConfirmed:
		return "confirmed"
	case DialogTerminated:
		return "terminated"
	}
	return "unknown"
}

// Direction is the entity's role in the dialog (RFC 4235 §4.1.1).
type Direction uint8

const (
	Initiator Direction = iota + 1 // the entity placed the call
	Recipient                      // the entity is being called
)

func (d Direction) String() string {
	if d == Initiator {
		return "initiator"
	}
	return "recipient"
}

// Party is the other side of an entity's dialog as the box knows it.
// Exactly one of Extension and Number is set; Private marks a caller that
// asked to hide its identity (RFC 3323) or came in anonymous.
type Party struct {
	Extension string
	Number    string
	Private   bool
}

// DialogEvent is one change of an entity's dialog. Entity is the
// extension (or, for events others raise, a park slot) whose dialog it
// is. ID names the dialog for that entity across its events (random, the
// box's own). CallID, LocalTag and RemoteTag identify the entity's SIP leg
// as its phone sees it (LocalTag is the phone's tag; empty while unknown).
// They are the credential of in-dialog requests on the box: an observer
// must not pass them to anybody but the entity itself.
type DialogEvent struct {
	Entity              string
	ID                  string
	CallID              string
	LocalTag, RemoteTag string
	State               DialogState
	Direction           Direction
	Remote              Party
}

// DialogObserver is told every dialog change of every extension in a call
// (Config.Observer). DialogChanged is called in order per call, with the
// call's observation lock held: it must not block or call back into the
// B2BUA.
type DialogObserver interface {
	DialogChanged(DialogEvent)
}

// observed is what a call has told its observer, so that the lamps of
// extensions that left the call (a transfer) go off and states only move
// forward.
type observed struct {
	mu      sync.Mutex
	private bool                   // the caller hid its identity
	sent    map[string]DialogEvent // entity -> last event sent
}

// observeSetup records what the caller asked to hide and reports both
// sides as trying.
func (c *call) observeSetup(reqA *sip.Request) {
	if c.b.cfg.Observer == nil {
		return
	}
	c.obs.mu.Lock()
	c.obs.private = privacyID(reqA)
	c.obs.mu.Unlock()
	c.observe(DialogTrying)
}

// observe reports the call's current parties in state st, and as
// terminated every extension reported before that is no longer a party.
func (c *call) observe(st DialogState) {
	o := c.b.cfg.Observer
	if o == nil {
		return
	}
	c.mu.Lock()
	caller, callee := c.caller, c.callee
	var legs [2]leg
	for i, l := range c.legs {
		if l != nil {
			legs[i] = leg{callID: l.callID, localTag: l.localTag, remoteTag: l.remoteTag}
		}
	}
	from, to := c.rec.From, c.rec.To
	c.mu.Unlock()
	slot := c.parkSlot()

	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	if c.obs.sent == nil {
		c.obs.sent = map[string]DialogEvent{}
	}
	callerParty := Party{Extension: caller.Extension, Private: c.obs.private}
	if caller.Extension == "" {
		callerParty = Party{Number: from, Private: c.obs.private || from == "anonymous"}
	}
	calleeParty := Party{Extension: callee.Extension}
	if callee.Extension == "" {
		calleeParty = Party{Number: to}
	}
	now := map[string]DialogEvent{}
	if caller.Extension != "" {
		now[caller.Extension] = DialogEvent{Entity: caller.Extension, ID: c.id + "a", CallID: legs[media.A].callID,
			LocalTag: legs[media.A].remoteTag, RemoteTag: legs[media.A].localTag,
			State: st, Direction: Initiator, Remote: calleeParty}
	}
	if callee.Extension != "" && callee.Extension != caller.Extension {
		now[callee.Extension] = DialogEvent{Entity: callee.Extension, ID: c.id + "b", CallID: legs[media.B].callID,
			LocalTag: legs[media.B].remoteTag, RemoteTag: legs[media.B].localTag,
			State: st, Direction: Recipient, Remote: callerParty}
	}
	if slot != "" {
		// A park slot's lamp: taken or free, never who waits (no
		// remote party, no dialog identifiers).
		now[slot] = DialogEvent{Entity: slot, ID: c.id + "p", State: st, Direction: Recipient, Remote: Party{Private: true}}
	}
	for ent, last := range c.obs.sent {
		if _, still := now[ent]; !still && last.State != DialogTerminated {
			last.State = DialogTerminated
			c.obs.sent[ent] = last
			o.DialogChanged(last)
		}
	}
	for ent, ev := range now {
		last, seen := c.obs.sent[ent]
		if seen && (last.State == DialogTerminated || last.State > ev.State ||
			last.State == ev.State && last.Remote == ev.Remote) {
			continue // states only move forward
		}
		c.obs.sent[ent] = ev
		o.DialogChanged(ev)
	}
}

// observeEnd reports every extension of the call as terminated.
func (c *call) observeEnd() {
	o := c.b.cfg.Observer
	if o == nil {
		return
	}
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	for ent, last := range c.obs.sent {
		if last.State != DialogTerminated {
			last.State = DialogTerminated
			c.obs.sent[ent] = last
			o.DialogChanged(last)
		}
	}
}
