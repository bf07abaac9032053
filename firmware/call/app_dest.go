package call

// Handing an application call over to one extension's phone, without the
// extension's forwards (a queue's agent: the queue's configuration chose
// it, the agent's own forwarding does not apply to queue offers).

import (
	"context"
	"fmt"
	"time"
)

// DestConnector is implemented by the Leg an application gets, like
// Connector: ConnectDest rings the extension d.Extension (its first
// registered contact) for at most ring and, once it answers, bridges the
// caller to it (ErrHandedOver). Nobody answering is an error wrapping
// ErrNotConnected; ErrUnreachable when the extension has no contact.
type DestConnector interface {
	ConnectDest(ctx context.Context, d Dest, ring time.Duration) error
}

// ErrUnreachable: the destination has no phone registered.
var ErrUnreachable = fmt.Errorf("%w: no phone registered", ErrNotConnected)

// ConnectDest implements DestConnector.
func (ep *appMedia) ConnectDest(ctx context.Context, d Dest, ring time.Duration) error {
	if d.Extension == "" || d.Trunk != "" || d.Lease != nil {
		return ErrNotConnected // only extensions: no lease to hold
	}
	c := ep.c
	c.mu.Lock()
	if c.state != stConfirmed || c.busy || c.app != ep {
		c.mu.Unlock()
		return ErrNotConnected
	}
	c.busy = true // no offer/answer with the caller while B is placed
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.busy = false
		c.mu.Unlock()
	}()
	tgts, ids, _ := c.stageTargets(Stage{Dests: []Dest{d}})
	if len(tgts) == 0 {
		return ErrUnreachable
	}
	return ep.ring(ctx, tgts[0], ids[0], ring)
}
