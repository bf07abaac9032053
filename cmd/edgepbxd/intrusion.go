package main

import (
	"context"
	"net/netip"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/intrusion"
	"github.com/edgepbx/edgepbx/firmware/logs"
)

// adminAttackEvent is an admin-port attack as a security-log event.
func adminAttackEvent(a auth.AdminAttack) logs.Event {
	if a.Ban {
		return logs.Event{Kind: logs.KindAdminBan, Source: a.Prefix.String(), Reason: a.Reason}
	}
	return logs.Event{Kind: logs.KindAdminLoginFailure, Source: a.Source.String(), User: a.User, Reason: a.Reason}
}

// geoLookup is the auth service's GeoIP database as the report's Geo.
type geoLookup struct{ s *auth.Service }

func (g geoLookup) Country(a netip.Addr) string { return g.s.Country(a) }

// GeoIPLoaded says whether a country database is in use.
func (g geoLookup) GeoIPLoaded() bool { _, ok := g.s.GeoIP(); return ok }

// newIntrusion builds the intrusion report over the store and hands it
// every security event together with the remote syslog sender. A store
// it cannot read leaves the report off; edgepbxd runs on.
func (d *daemon) newIntrusion() {
	a, err := intrusion.New(intrusion.Config{DB: d.db, Geo: geoLookup{d.auth}, Summary: d.syslog,
		Mask: d.privacy.IntrusionMask(), Logger: d.log})
	if err != nil {
		d.log.Error("intrusion report: disabled", "err", err)
		d.secLog.Forward(d.syslog.Event)
		return
	}
	d.intrusion = a
	d.secLog.Forward(func(e logs.Event) {
		a.Observe(e)
		d.syslog.Event(e)
	})
}

// runIntrusion writes the report's aggregates and sends the daily summary
// until ctx ends.
func (d *daemon) runIntrusion(ctx context.Context) error {
	if d.intrusion == nil {
		<-ctx.Done()
		return nil
	}
	return d.intrusion.Run(ctx, secLogFlush)
}
