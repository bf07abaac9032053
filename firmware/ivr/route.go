package ivr

import (
	"fmt"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
)

// Router puts menus and time conditions in front of the B2BUA's router
// (the call features): a call routed to a menu's number is answered by
// the IVR, one routed to a time condition's number goes where the
// condition says now. It is the B2BUA's call.Router.
type Router struct {
	Next call.Router
	Conf func() Config
	// Box is the box's time zone (nil: UTC); Now the clock (nil:
	// time.Now).
	Box func() *time.Location
	Now func() time.Time
}

// RouteOutbound implements call.Router.
func (r *Router) RouteOutbound(from, dialled string) (dialplan.Decision, *dialplan.Lease, error) {
	d, lease, err := r.Next.RouteOutbound(from, dialled)
	if err != nil {
		return d, lease, err
	}
	return r.resolve(d, lease)
}

// RouteInbound implements call.Router: a DID may name a menu or a time
// condition.
func (r *Router) RouteInbound(trunk, called string) (dialplan.Decision, *dialplan.Lease, error) {
	d, lease, err := r.Next.RouteInbound(trunk, called)
	if err != nil {
		return d, lease, err
	}
	return r.resolve(d, lease)
}

func (r *Router) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Router) box() *time.Location {
	if r.Box != nil {
		return r.Box()
	}
	return nil
}

// resolve turns a decision for a menu or time condition number into
// where the call goes now.
func (r *Router) resolve(d dialplan.Decision, lease *dialplan.Lease) (dialplan.Decision, *dialplan.Lease, error) {
	if d.Kind != dialplan.KindInternal && d.Kind != dialplan.KindInbound {
		return d, lease, nil
	}
	conf := r.Conf()
	for hop := 0; hop < MaxHops; hop++ {
		if _, ok := conf.Menu(d.Target); ok {
			d.Kind, d.Target = dialplan.KindApp, dialplan.AppTarget(dialplan.AppIVR, d.Target)
			return d, lease, nil
		}
		t, ok := conf.TimeCondition(d.Target)
		if !ok {
			return d, lease, nil // an extension or a ring group
		}
		dest, err := ParseDest(conf.Resolve(t, r.now(), r.box()))
		if err != nil {
			lease.Release()
			return dialplan.Decision{}, nil, fmt.Errorf("%w: time condition %s: %v", dialplan.ErrNoRoute, t.Number, err)
		}
		switch {
		case dest.Voicemail:
			d.Kind, d.Target = dialplan.KindApp, dialplan.AppTarget(dialplan.AppVoicemail, dest.Number)
			return d, lease, nil
		case dest.External != "":
			// The admin named this number; it is a call of the extension
			// it is charged to, admitted as one (class, limits, fraud
			// guards) under that extension's lease.
			lease.Release()
			return r.Next.RouteOutbound(dest.As, dest.External)
		}
		d.Target = dest.Number
	}
	lease.Release()
	return dialplan.Decision{}, nil, fmt.Errorf("%w: more than %d menus and time conditions in a row", dialplan.ErrNoRoute, MaxHops)
}
