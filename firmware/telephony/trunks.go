package telephony

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// StateIP is the state of a trunk identified by its source addresses:
// there is nothing to register.
const StateIP = "ip"

// TrunkState is one stored trunk with its live state.
type TrunkState struct {
	Name      string
	Auth      string // config.TrunkAuthIP or config.TrunkAuthRegister
	Transport string
	Registrar string // registering trunks only
	// State: StateIP, or a registration state (sip.RegRegistering,
	// sip.RegRegistered, sip.RegFailed, ...).
	State       string
	LastError   string
	Expires     time.Time // registration valid until
	LastSuccess time.Time // last 2xx from the registrar
	Peers       []string  // source prefixes that identify it
}

// Trunks drives the SIP edge's outbound trunk registrations and inbound
// trunk identification from the stored telephony configuration: every
// saved change is applied at once (a registering trunk added starts
// registering, one removed un-registers, changed credentials register
// anew).
type Trunks struct {
	tel  *pbxconfig.TelephonyStore
	edge *sipedge.Server
	log  *slog.Logger

	regs atomic.Pointer[sipedge.TrunkRegistrations] // nil until Run starts
	kick chan struct{}                              // a saved change to apply (buffer 1: changes coalesce)

	// Resolver looks up trunk host names for Test; nil: the system's.
	Resolver *net.Resolver
}

// NewTrunks applies nothing until Run.
func NewTrunks(tel *pbxconfig.TelephonyStore, edge *sipedge.Server, log *slog.Logger) *Trunks {
	return &Trunks{tel: tel, edge: edge, log: log, kick: make(chan struct{}, 1)}
}

// Changed asks Run to apply the configuration in force (never blocks).
func (m *Trunks) Changed() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run keeps the registrations in line with the stored trunks until ctx
// ends; then every registered trunk un-registers before it returns.
func (m *Trunks) Run(ctx context.Context) error {
	regs := m.edge.TrunkRegistrations(ctx)
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
func (m *Trunks) apply(regs *sipedge.TrunkRegistrations) {
	var list []sipedge.TrunkRegistration
	cur := m.tel.Current()
	var peers []pbxconfig.Trunk
	for _, tr := range cur.Trunks {
		if len(tr.Peers) > 0 {
			peers = append(peers, pbxconfig.Trunk{Name: tr.Name, Peers: tr.Peers})
		}
	}
	// Inbound identification first: a trunk just saved is recognised by its
	// source addresses before its registration completes.
	m.edge.SetTrunkPeers(peers)
	for _, tr := range cur.Trunks {
		if tr.Auth != pbxconfig.TrunkAuthRegister {
			continue
		}
		pw, err := m.tel.TrunkPassword(tr.Name)
		if err != nil {
			m.log.Error("trunks: registration left out", "trunk", tr.Name, "err", err)
			continue
		}
		list = append(list, sipedge.TrunkRegistration{Name: tr.Name, Registrar: tr.Host, Transport: tr.Transport,
			Username: tr.Username, Domain: tr.Domain, Password: string(pw)})
	}
	if err := regs.Set(list); err != nil {
		m.log.Error("trunks: registrations not changed", "err", err)
		return
	}
	m.log.Info("trunks: registrations applied", "version", m.tel.Version(), "registering", len(list))
}

// States is every trunk of the configuration in force with its live state.
func (m *Trunks) States() []TrunkState {
	live := map[string]sipedge.TrunkRegState{}
	if regs := m.regs.Load(); regs != nil {
		for _, st := range regs.States() {
			live[st.Name] = st
		}
	}
	var out []TrunkState
	for _, tr := range m.tel.Current().Trunks {
		ts := TrunkState{Name: tr.Name, Auth: tr.Auth, Transport: tr.Transport}
		for _, p := range tr.Peers {
			ts.Peers = append(ts.Peers, p.String())
		}
		if tr.Auth != pbxconfig.TrunkAuthRegister {
			ts.State = StateIP
			out = append(out, ts)
			continue
		}
		ts.Registrar = tr.Host
		if st, ok := live[tr.Name]; ok {
			ts.State, ts.LastError, ts.Expires, ts.LastSuccess = st.State, st.LastError, st.Expires, st.LastSuccess
		} else {
			// Saved a moment ago, or its password did not unseal (logged).
			ts.State = sipedge.RegRegistering
		}
		out = append(out, ts)
	}
	return out
}

// Store is the stored telephony configuration as the admin side edits it:
// a successful Save also applies the trunks at once.
type Store struct {
	*pbxconfig.TelephonyStore
	trunks *Trunks
}

// Store is tel with Save wired to Changed.
func (m *Trunks) Store() Store { return Store{TelephonyStore: m.tel, trunks: m} }

// Save stores next (config.TelephonyStore.Save) and, when it is stored,
// applies its trunks.
func (s Store) Save(next pbxconfig.Telephony, known func(string) bool) (pbxconfig.Telephony, error) {
	return s.SaveWith(next, known, nil)
}

// SaveWith is Save with also in the same transaction (the admin side's
// audit entry). It must be defined here: the embedded store's SaveWith
// would store without applying the trunks.
func (s Store) SaveWith(next pbxconfig.Telephony, known func(string) bool, also func(*store.Tx, pbxconfig.Telephony) error) (pbxconfig.Telephony, error) {
	out, err := s.TelephonyStore.SaveWith(next, known, also)
	if err == nil {
		s.trunks.Changed()
	}
	return out, err
}
