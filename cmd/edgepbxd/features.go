package main

import (
	"fmt"

	"github.com/edgepbx/edgepbx/firmware/features"
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
	return features.New(plan, d.tel.Features, users, d.log), nil
}
