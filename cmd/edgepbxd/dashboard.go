package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/firmware/telephony"
)

// dashboard is edgepbxd's part of the admin dashboard: health, SIP
// registrations and counters, calls, licence, and one line per trunk.
func (d *daemon) dashboard(ctx context.Context) []admin.StatusItem {
	items := []admin.StatusItem{{Name: "Version", Value: version, OK: true},
		{Name: "Up", Value: time.Since(d.started).Round(time.Second).String(), OK: true}}
	if _, err := d.db.Schema(); err != nil {
		items = append(items, admin.StatusItem{Name: "Store", Value: "unavailable: " + err.Error()})
	} else {
		items = append(items, admin.StatusItem{Name: "Store", Value: "ok", OK: true})
	}
	now := time.Now()
	exts := d.sip.Extensions().List()
	reg := 0
	for _, u := range exts {
		if len(d.sip.Location().Lookup(now, u)) > 0 {
			reg++
		}
	}
	items = append(items, admin.StatusItem{Name: "SIP registrations", Value: fmt.Sprintf("%d of %d extensions", reg, len(exts)), OK: true})
	c := d.sip.Counters()
	// Bans and throttles in force have their own line (amber or red, from
	// the admin side); this one counts since start.
	items = append(items, admin.StatusItem{Name: "SIP authentication", OK: true,
		Value: fmt.Sprintf("since start: %d ok, %d failed, %d throttles, %d bans", c["auth_ok"], c["auth_failed"], c["guard_throttles"], c["guard_auth_bans"]+c["guard_flood_bans"])})
	items = append(items, admin.StatusItem{Name: "SIP filter", OK: true,
		Value: fmt.Sprintf("%d scanner packets dropped, %d oversize, %d malformed", c["filter_scanner"], c["filter_oversize"], c["filter_malformed"])})
	if d.calls != nil {
		c := d.calls.Counters()
		items = append(items, admin.StatusItem{Name: "Active calls", OK: true,
			Value: fmt.Sprintf("%d now (%d since start, %d answered, %d rejected)", d.calls.Active(), c.Calls, c.Answered, c.Rejected)})
	} else {
		items = append(items, admin.StatusItem{Name: "Active calls", Value: "calls disabled (see the log)"})
	}
	if d.sipSet != nil {
		if cur, run := d.sipSet.Current().Version, d.sipSet.Running(); cur != run {
			items = append(items, admin.StatusItem{Name: "SIP settings",
				Value: fmt.Sprintf("version %d in effect except %s (after a restart)", cur, strings.Join(d.sipSet.Pending(), ", "))})
		}
	}
	lv := d.licenseView()
	v := lv.Mode
	if lv.Configured && lv.Error == "" {
		v = fmt.Sprintf("%s, %d days offline", lv.Mode, lv.DaysOffline)
	}
	items = append(items, admin.StatusItem{Name: "Licence", Value: v,
		OK: lv.Error == "" && (lv.Mode == string(license.ModeFull) || !lv.Configured)})
	if d.trunks != nil {
		items = append(items, trunkItems(d.trunks.States())...)
	}
	items = append(items, d.updateItems(ctx)...)
	return items
}

// trunkItems are the trunks' lines on the dashboard.
func trunkItems(states []telephony.TrunkState) []admin.StatusItem {
	var items []admin.StatusItem
	for _, ts := range states {
		it := admin.StatusItem{Name: "Trunk " + ts.Name, OK: ts.State == sipedge.RegRegistered || ts.State == telephony.StateIP}
		switch ts.State {
		case telephony.StateIP:
			it.Value = "identified by address"
		case sipedge.RegRegistered:
			it.Value = "registered until " + ts.Expires.UTC().Format("15:04:05") + " UTC"
		case sipedge.RegFailed:
			it.Value = "registration failed: " + ts.LastError
		default:
			it.Value = ts.State
		}
		items = append(items, it)
	}
	return items
}
