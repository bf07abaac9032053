package main

import (
	"context"
	"fmt"
	"time"

	"github.com/edgepbx/edgepbx/init/control"
)

// healthInterval is how often edgepbxd tells PID 1 it is healthy; PID 1
// pets the watchdog only while reports are recent.
const healthInterval = 5 * time.Second

// healthReporter is the part of the control client edgepbxd's health loop uses.
type healthReporter interface {
	Health(ctx context.Context, h control.Health) error
}

func dialControl(path string) (*control.Client, error) {
	c, err := control.Dial(path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return c, nil
}

// reportHealth reports ready at once, then every healthInterval, and "not
// ready" on the way down. A failed report is logged, not fatal: the client
// re-dials, and PID 1 judges us by the reports it gets.
func (d *daemon) reportHealth(ctx context.Context, h healthReporter) error {
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	first := true
	for {
		rep := d.check()
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := h.Health(rctx, rep)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			d.log.Warn("health: report to PID 1 failed", "err", err)
		case err == nil && first:
			d.log.Info("health: reported ready to PID 1", "detail", rep.Detail)
			first = false
		}
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			h.Health(sctx, control.Health{Ready: false, Claimed: d.claimed.Load(), Detail: "stopping"})
			return nil
		case <-t.C:
		}
	}
}

// check is edgepbxd's own view of its health: the store answers and the
// listeners are up (a failed service stops the whole daemon). It also
// refreshes the claim state from the auth service.
func (d *daemon) check() control.Health {
	claimed, err := d.auth.Claimed()
	if err == nil {
		d.claimed.Store(claimed)
	}
	h := control.Health{Ready: true, Claimed: d.claimed.Load(), TLSFingerprint: d.certs.Fingerprint()}
	if lock, lerr := d.auth.AnyLockout(); lerr == nil {
		h.Lockout = lock
	}
	if err != nil {
		h.Ready = false
		h.Detail = truncate("auth: " + err.Error())
		return h
	}
	if _, err := d.db.Schema(); err != nil {
		h.Ready = false
		h.Detail = truncate("store: " + err.Error())
		return h
	}
	h.Detail = truncate(fmt.Sprintf("https %s, sip %s, licence %s, up %s", d.httpsLn.Addr(), d.sipAddrs(),
		d.licenseView().Mode, time.Since(d.started).Round(time.Second)))
	if lv := d.licenseView(); lv.Configured {
		h.Licence = lv.Mode
	}
	return h
}

// truncate keeps a health detail well inside a control frame.
func truncate(s string) string {
	if len(s) > 200 {
		return s[:200]
	}
	return s
}
