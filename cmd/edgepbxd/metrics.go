package main

import (
	"fmt"

	"github.com/edgepbx/edgepbx/firmware/metrics"
)

// newMetrics builds /metrics over the services built before it, with the
// stored settings (none: metrics off). A stored setting that no longer
// validates turns metrics off rather than stopping the box.
func (d *daemon) newMetrics() error {
	set, err := metrics.LoadSettings(d.db)
	if err != nil {
		d.log.Error("metrics: off", "err", err)
		set = metrics.Settings{}
	}
	reg, err := metrics.NewRegistry(metrics.Sources{
		SIP:               d.sip,
		Registrar:         d.sip.Location(),
		Calls:             ifSet[metrics.Calls](d.calls),
		Media:             ifSet[metrics.Media](d.relay),
		Logins:            d.auth,
		Licence:           ifSet[metrics.Licence](d.lic),
		LicenceConfigured: d.cfg.licenseURL != "",
		Certificates:      d.certs,
		StorePath:         d.db.Path(),
		Version:           version,
	})
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if d.metrics, err = metrics.NewHandler(reg, d.auth, set, d.log); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
