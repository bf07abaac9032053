package main

import (
	"fmt"

	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/queue"
	"github.com/edgepbx/edgepbx/firmware/telephony"
)

// newFeatures puts the call features (feature codes, forwarding, DND,
// follow-me, ring groups) in front of the dial plan: the result is the
// B2BUA's router and hunter, and the admin API's per-extension settings.
func (d *daemon) newFeatures(plan *telephony.Plan) (*features.Engine, error) {
	users, err := features.LoadStore(d.db)
	if err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	if d.events != nil {
		// Presence shows DND (busy lamps and PIDF notes).
		users.WatchDND(d.events.SetDND)
	}
	d.queues = queue.NewManager(nil)
	return features.New(plan, d.tel.Features, users, d.log, features.WithQueues(d.queues)), nil
}

// featureVisibility is the pickup/visibility groups of the call features
// for the event server: who may watch whose dialogs and presence.
// d.features is set by newCalls while the daemon is built, before the SIP
// edge serves; without features each extension sees only itself.
type featureVisibility struct{ d *daemon }

func (v featureVisibility) MaySee(subscriber, target string) bool {
	if f := v.d.features; f != nil {
		return f.MaySee(subscriber, target)
	}
	return subscriber == target
}
