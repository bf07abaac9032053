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
	items = append(items, registrationItem(d.registeredNow(now), len(exts)))
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
	items = append(items, licenceItem(lv, v))
	items = append(items, keysItem(d.id))
	if d.trunks != nil {
		items = append(items, trunkItems(d.trunks.States())...)
	}
	items = append(items, d.updateItems(ctx)...)
	return items
}

// keysItem says what protects the secrets at rest, and exactly what an
// attacker holding the disk (or a copy of /data) gets.
func keysItem(id bootstrap) admin.StatusItem {
	it := admin.StatusItem{Name: "Keys at rest"}
	switch id.KeyProtection {
	case "tpm":
		it.Value, it.OK = "device key sealed to this box's TPM: the disk or a copy of /data opens nothing elsewhere", true
	case "passphrase":
		it.Value, it.OK, it.Level = "no TPM; device key wrapped with the boot passphrase: a copy of the disk can be attacked offline by guessing it", true, admin.LevelWarn
	case "none":
		it.Value, it.Level = "no TPM and no passphrase: whoever has the disk or a copy of /data reads every secret (SIP and trunk passwords, TOTP seeds, TLS keys)", admin.LevelBad
	default:
		it.Value, it.Level = "development instance: the key is a plain file in the data directory", admin.LevelWarn
	}
	if id.KeyProtection != "" && !id.FloorsInTPM {
		it.Value += "; licence grace and version floor are kept on /data, so restoring an old /data rewinds them"
	}
	return it
}

// registrationItem is amber when no phone can work yet: no extension, or
// none registered.
func registrationItem(reg, exts int) admin.StatusItem {
	it := admin.StatusItem{Name: "SIP registrations", Value: fmt.Sprintf("%d of %d extensions", reg, exts), OK: true, Level: admin.LevelOK, Link: "/extensions"}
	switch {
	case exts == 0:
		it.OK, it.Level, it.Reason = false, admin.LevelWarn, "No extension exists yet: create one for each phone."
	case reg == 0:
		it.OK, it.Level, it.Reason = false, admin.LevelWarn, "No phone is registered: set one up with its extension's settings."
	}
	return it
}

// licenceItem: full is ok; not configured, warning or unknown is amber;
// degraded or broken phone-home is red.
func licenceItem(lv licenseView, value string) admin.StatusItem {
	it := admin.StatusItem{Name: "Licence", Value: value, Link: "/system"}
	switch {
	case lv.Error != "":
		it.Level, it.Reason = admin.LevelBad, lv.Error
	case !lv.Configured:
		it.Level, it.Reason = admin.LevelWarn, "No licence is configured: the box does not phone home for updates and advisories."
	case lv.Mode == string(license.ModeFull):
		it.OK, it.Level = true, admin.LevelOK
	case lv.Mode == string(license.ModeDegraded):
		it.Level, it.Reason = admin.LevelBad, "Degraded: new extensions and phones are refused until the licence server is reached."
	default:
		it.Level, it.Reason = admin.LevelWarn, "The licence server has not been reached lately."
	}
	return it
}

// trunkItems are the trunks' lines on the dashboard.
func trunkItems(states []telephony.TrunkState) []admin.StatusItem {
	var items []admin.StatusItem
	for _, ts := range states {
		it := admin.StatusItem{Name: "Trunk " + ts.Name, OK: ts.State == sipedge.RegRegistered || ts.State == telephony.StateIP, Link: "/calls"}
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
