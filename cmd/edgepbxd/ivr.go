package main

import (
	"context"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/ivr"
	"github.com/edgepbx/edgepbx/init/netconf/netspec"
)

// newIVR puts the menus and time conditions in front of the call
// features (the B2BUA's router) and makes the IVR the application
// endpoint's entry, with voicemail (vm, may be nil) behind it.
func (d *daemon) newIVR(next call.Router, feat *features.Engine, vm call.Apps) (call.Router, call.Apps) {
	zone := &boxZone{d: d}
	r := &ivr.Router{Next: next, Conf: d.tel.IVR, Box: zone.get}
	s := &ivr.Service{Conf: d.tel.IVR, Router: r, Route: feat.RouteOutbound, Next: vm, Log: d.log.With("svc", "ivr")}
	if d.media != nil {
		s.Prompts = d.media.prompts
	}
	return r, s
}

// boxZone is the box's time zone as PID 1 keeps it (the System page's
// setting), asked at most once a minute; UTC without PID 1 (dev mode) or
// when it does not answer.
type boxZone struct {
	d *daemon

	mu    sync.Mutex
	loc   *time.Location
	asked time.Time
}

const boxZoneRefresh = time.Minute

func (z *boxZone) get() *time.Location {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.d.ctrl == nil {
		return time.UTC
	}
	if z.loc != nil && time.Since(z.asked) < boxZoneRefresh {
		return z.loc
	}
	z.asked = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := z.d.ctrl.GetTime(ctx)
	if err == nil {
		if loc, err := netspec.LoadZone(st.Config.TimeZone); err == nil {
			z.loc = loc
		}
	}
	if z.loc == nil {
		return time.UTC
	}
	return z.loc
}
