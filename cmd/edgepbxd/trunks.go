package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	sipconfig "github.com/edgepbx/edgepbx/firmware/config"
	"github.com/edgepbx/edgepbx/firmware/sip"
)

// cdrRetentionEvery is how often the CDR retention setting is applied.
const cdrRetentionEvery = time.Hour

// trunkManager drives the SIP edge's outbound trunk registrations from the
// stored telephony configuration (config.telephony, the dial plan page):
// every saved change is applied at once (a registering trunk added starts
// registering, one removed un-registers, changed credentials register
// anew). It also reports every trunk's state to the admin side.
type trunkManager struct {
	tel *sipconfig.TelephonyStore
	sip *sip.Server
	log *slog.Logger

	regs atomic.Pointer[sip.TrunkRegistrations] // nil until run starts
	kick chan struct{}                          // a saved change to apply (buffer 1: changes coalesce)
}

func newTrunkManager(tel *sipconfig.TelephonyStore, s *sip.Server, log *slog.Logger) *trunkManager {
	return &trunkManager{tel: tel, sip: s, log: log, kick: make(chan struct{}, 1)}
}

// changed asks run to apply the configuration in force (never blocks).
func (m *trunkManager) changed() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// run keeps the registrations in line with the stored trunks until ctx
// ends; then every registered trunk un-registers.
func (m *trunkManager) run(ctx context.Context) error {
	regs := m.sip.TrunkRegistrations(ctx)
	m.regs.Store(regs)
	m.apply(regs)
	for {
		select {
		case <-ctx.Done():
			regs.Wait()
			return nil
		case <-m.kick:
			m.apply(regs)
		}
	}
}

// apply sets the registrations to the registering trunks of the
// configuration in force; a trunk whose password does not unseal is left
// out (and logged) rather than stopping the others.
func (m *trunkManager) apply(regs *sip.TrunkRegistrations) {
	var list []sip.TrunkRegistration
	cur := m.tel.Current()
	var peers []sipconfig.Trunk
	for _, tr := range cur.Trunks {
		if len(tr.Peers) > 0 {
			peers = append(peers, sipconfig.Trunk{Name: tr.Name, Peers: tr.Peers})
		}
	}
	// Inbound identification first: a trunk just saved is recognised by its
	// source addresses before its registration completes.
	m.sip.SetTrunkPeers(peers)
	for _, tr := range cur.Trunks {
		if tr.Auth != sipconfig.TrunkAuthRegister {
			continue
		}
		pw, err := m.tel.TrunkPassword(tr.Name)
		if err != nil {
			m.log.Error("trunks: registration left out", "trunk", tr.Name, "err", err)
			continue
		}
		list = append(list, sip.TrunkRegistration{Name: tr.Name, Registrar: tr.Host, Transport: tr.Transport,
			Username: tr.Username, Domain: tr.Domain, Password: string(pw)})
	}
	if err := regs.Set(list); err != nil {
		m.log.Error("trunks: registrations not changed", "err", err)
		return
	}
	m.log.Info("trunks: registrations applied", "version", m.tel.Version(), "registering", len(list))
}

// TrunkStates is every trunk of the configuration in force with its live
// state (admin.TrunkStatus).
func (m *trunkManager) TrunkStates() []admin.TrunkState {
	live := map[string]sip.TrunkRegState{}
	if regs := m.regs.Load(); regs != nil {
		for _, st := range regs.States() {
			live[st.Name] = st
		}
	}
	var out []admin.TrunkState
	for _, tr := range m.tel.Current().Trunks {
		ts := admin.TrunkState{Name: tr.Name, Auth: tr.Auth, Transport: tr.Transport}
		for _, p := range tr.Peers {
			ts.Peers = append(ts.Peers, p.String())
		}
		if tr.Auth != sipconfig.TrunkAuthRegister {
			ts.State = "ip"
			out = append(out, ts)
			continue
		}
		ts.Registrar = tr.Host
		st, ok := live[tr.Name]
		switch {
		case !ok:
			// Saved a moment ago, or its password did not unseal (logged).
			ts.State = sip.RegRegistering
		default:
			ts.State, ts.LastError, ts.Expires, ts.LastSuccess = st.State, st.LastError, st.Expires, st.LastSuccess
		}
		out = append(out, ts)
	}
	return out
}

// dashboardItems are the trunks' lines on the dashboard.
func (m *trunkManager) dashboardItems() []admin.StatusItem {
	var items []admin.StatusItem
	for _, ts := range m.TrunkStates() {
		it := admin.StatusItem{Name: "Trunk " + ts.Name, OK: ts.State == sip.RegRegistered || ts.State == "ip"}
		switch ts.State {
		case "ip":
			it.Value = "identified by address"
		case sip.RegRegistered:
			it.Value = "registered until " + ts.Expires.UTC().Format("15:04:05") + " UTC"
		case sip.RegFailed:
			it.Value = "registration failed: " + ts.LastError
		default:
			it.Value = ts.State
		}
		items = append(items, it)
	}
	return items
}

// telephonySaver is the admin side's view of the stored telephony
// configuration: a successful save also tells the trunk manager.
type telephonySaver struct {
	*sipconfig.TelephonyStore
	saved func()
}

func (t telephonySaver) Save(next sipconfig.Telephony, known func(string) bool) (sipconfig.Telephony, error) {
	out, err := t.TelephonyStore.Save(next, known)
	if err == nil {
		t.saved()
	}
	return out, err
}

// runTelephony is the calls' background work: trunk registrations and
// the CDR retention. Without calls (newCalls failed) it only waits.
func (d *daemon) runTelephony(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if d.trunks != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.trunks.run(ctx); err != nil {
				d.log.Error("trunks: stopped", "err", err)
			}
		}()
	}
	if err := cdr.New(d.db).RunRetention(ctx, cdrRetentionEvery, d.log); err != nil {
		return fmt.Errorf("cdr retention: %w", err)
	}
	return nil
}

// statusWithTrunks is the dashboard: edgepbxd's lines and one per trunk.
func (d *daemon) statusWithTrunks(ctx context.Context) []admin.StatusItem {
	items := d.dashboardStatus(ctx)
	if d.trunks != nil {
		items = append(items, d.trunks.dashboardItems()...)
	}
	return items
}
