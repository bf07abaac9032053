package main

import (
	"context"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/telephony"
)

// newTelephony reads the stored telephony configuration (the dial plan
// page) and builds the trunk registrations over it, also when the calls
// cannot start, so the admin pages can fix it. An unreadable
// configuration leaves telephony off, with the error in the log.
func (d *daemon) newTelephony() {
	tel, err := pbxconfig.LoadTelephony(d.db)
	if err != nil {
		d.log.Error("telephony: stored configuration unreadable; calls and trunks disabled", "err", err)
		return
	}
	d.tel = tel
	d.trunks = telephony.NewTrunks(tel, d.sip, d.log)
}

// telephonyStore is the admin side's view of the telephony configuration:
// a save also applies the trunks. Nil interface when it is unreadable.
func (d *daemon) telephonyStore() admin.Telephony {
	if d.trunks == nil {
		return nil
	}
	return d.trunks.Store()
}

// trunkStatus is the admin side's view of the trunks' state.
func (d *daemon) trunkStatus() admin.TrunkStatus {
	if d.trunks == nil {
		return nil
	}
	return trunkStatus{d.trunks}
}

// trunkStatus gives telephony's trunk states the admin API's JSON form.
type trunkStatus struct{ t *telephony.Trunks }

func (s trunkStatus) TrunkStates() []admin.TrunkState {
	l := s.t.States()
	out := make([]admin.TrunkState, len(l))
	for i, ts := range l {
		out[i] = admin.TrunkState(ts)
	}
	return out
}

// TestTrunk runs telephony's trunk test for the admin side.
func (s trunkStatus) TestTrunk(ctx context.Context, name string) (admin.TrunkTestResult, error) {
	r, err := s.t.Test(ctx, name, trunkTestTimeout)
	if err != nil {
		return admin.TrunkTestResult{}, err
	}
	return admin.TrunkTestResult{Name: r.Name, Host: r.Host, Transport: r.Transport, Auth: r.Auth, Peers: r.Peers,
		Addrs: r.Addrs, DNS: r.DNS, Target: r.Target, Options: r.Options, Status: r.Probe.Status, Reason: r.Probe.Reason,
		RTT: r.Probe.RTT, State: admin.TrunkState(r.State)}, nil
}

// trunkTestTimeout bounds each network step of a trunk test.
const trunkTestTimeout = 5 * time.Second

// runTelephony is the calls' background work: trunk registrations (the
// CDR retention is the privacy sweep's, privacy.go).
func (d *daemon) runTelephony(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if d.trunks != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.trunks.Run(ctx); err != nil {
				d.log.Error("trunks: stopped", "err", err)
			}
		}()
	}
	<-ctx.Done()
	return nil
}
