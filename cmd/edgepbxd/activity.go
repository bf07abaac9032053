package main

import (
	"context"
	"time"
)

// activityEvery is how often the dashboard's 24-hour series are sampled.
const activityEvery = time.Minute

// registeredNow counts extensions with at least one live registration.
func (d *daemon) registeredNow(now time.Time) int {
	reg := 0
	for _, u := range d.sip.Extensions().List() {
		if len(d.sip.Location().Lookup(now, u)) > 0 {
			reg++
		}
	}
	return reg
}

// attacksSinceStart adds up what the SIP edge refused as hostile: failed
// logins, scanner packets and bans.
func (d *daemon) attacksSinceStart() uint64 {
	c := d.sip.Counters()
	return c["auth_failed"] + c["filter_scanner"] + c["guard_auth_bans"] + c["guard_flood_bans"]
}

// runActivity samples registrations and attacks for the dashboard's charts
// until ctx ends.
func (d *daemon) runActivity(ctx context.Context) error {
	t := time.NewTicker(activityEvery)
	defer t.Stop()
	for {
		now := time.Now()
		d.activity.Sample(now, d.registeredNow(now), d.attacksSinceStart())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
