package license

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Mode is the service level the licence state allows.
type Mode string

// Modes, from best to worst.
const (
	ModeFull     Mode = "full"
	ModeWarning  Mode = "warning"  // full service, admins are warned
	ModeDegraded Mode = "degraded" // emergency-only trunks, no new extensions or provisioning
)

// Reason codes; stable strings for the UI, audit and security log.
const (
	ReasonOffline        = "offline"          // no good check-in for a while
	ReasonClone          = "clone"            // server saw this licence on other hardware
	ReasonLicence        = "licence"          // unknown, revoked or expired licence
	ReasonAdvisory       = "advisory"         // firmware has a known problem
	ReasonPerformance    = "performance"      // hardware too small for the load
	ReasonCertificate    = "certificate"      // certificate in use expires soon
	ReasonClock          = "clock"            // clock is behind signed server time
	ReasonNeverCheckedIn = "never-checked-in" // informational while within grace
	ReasonAuditChain     = "audit-chain"      // audit log no longer matches its anchors
	ReasonTampered       = "state-tampered"   // licence state missing or unreadable on a box that had one
	ReasonRollback       = "state-rollback"   // licence server saw a newer state than the box sent

)

// Reason explains a warning or the degradation.
type Reason struct {
	Code     string `json:"code"`
	Degrades bool   `json:"degrades"`
	Message  string `json:"message"`
}

// State is a snapshot for the UI, API and feature gates.
type State struct {
	Mode             Mode          `json:"mode"`
	Reasons          []Reason      `json:"reasons"`
	DaysOffline      int           `json:"days_offline"`
	Offline          time.Duration `json:"offline_ns"`
	LastGood         time.Time     `json:"last_good"`
	LastAttempt      time.Time     `json:"last_attempt"`
	LastError        string        `json:"last_error,omitempty"`
	NextCheck        time.Time     `json:"next_check"`
	LicenceStatus    string        `json:"licence_status,omitempty"`
	ValidUntil       time.Time     `json:"valid_until"`
	Entitlements     Entitlements  `json:"entitlements"`
	Advisories       []Advisory    `json:"advisories,omitempty"`
	DisabledFeatures []string      `json:"disabled_features,omitempty"`
	// AuditRollback is set while the licence server says the audit log no
	// longer matches the heads anchored in earlier check-ins. A security
	// event, not a licence problem: it warns and never degrades.
	AuditRollback *AuditRollback `json:"audit_rollback,omitempty"`
	// Banner is shown to every user when degraded and to admins on warnings.
	Banner string `json:"banner,omitempty"`
}

// AuditRollback is the licence server's verdict on the audit anchors.
type AuditRollback struct {
	Seq    uint64 `json:"seq"` // the anchored entry that no longer matches
	Reason string `json:"reason,omitempty"`
}

type stateKey string

func (s State) key() stateKey {
	return stateKey(string(s.Mode) + "|" + strings.Join(s.reasonCodes(), ","))
}

func (s State) reasonCodes() []string {
	out := make([]string, len(s.Reasons))
	for i, r := range s.Reasons {
		out[i] = r.Code
	}
	return out
}

// State returns the current mode and reasons.
func (m *Manager) State() State {
	now := m.clock.Now()
	m.mu.Lock()
	m.advanceLocked(now)
	st := m.stateLocked(now)
	d := m.st.Elapsed - m.savedElapsed
	m.mu.Unlock()
	if d >= persistEvery || d < 0 {
		if err := m.persist(); err != nil {
			m.log.Error("persist licence state", "err", err)
		}
	}
	return st
}

func (m *Manager) stateLocked(now time.Time) State {
	s := State{
		Offline:     m.st.Elapsed,
		DaysOffline: int(m.st.Elapsed / (24 * time.Hour)),
		LastGood:    m.st.LastGood,
		LastAttempt: m.st.LastAttempt,
		LastError:   m.st.LastError,
		NextCheck:   m.next,
	}
	add := func(code string, degrades bool, format string, a ...any) {
		s.Reasons = append(s.Reasons, Reason{Code: code, Degrades: degrades, Message: fmt.Sprintf(format, a...)})
	}
	// Trusted now: never earlier than the newest signed server time.
	trusted := now.Round(0)
	if trusted.Before(m.st.Floor) {
		trusted = m.st.Floor
		if m.st.Floor.Sub(now.Round(0)) > 5*time.Minute {
			add(ReasonClock, false, "system clock is behind the licence server's time (%s); check NTP", m.st.Floor.Format(time.RFC3339))
		}
	}
	if m.st.Tampered != "" {
		add(ReasonTampered, true, "licence state tampered with: %s; service is limited until the box checks in with the licence server", m.st.Tampered)
	}
	if m.st.Rollback != "" {
		add(ReasonRollback, false, "licence state rolled back: %s (reported to the vendor)", m.st.Rollback)
	}
	switch {
	case m.st.Elapsed > Grace:
		add(ReasonOffline, true, "no licence check-in for %d days: outbound calls are limited to emergency numbers and provisioning is off until the box checks in", s.DaysOffline)
	case m.st.Elapsed >= WarnAfter:
		left := int((Grace - m.st.Elapsed + 24*time.Hour - 1) / (24 * time.Hour))
		add(ReasonOffline, false, "no licence check-in for %d days: service will be limited in %d days unless the box reaches the licence server", s.DaysOffline, left)
	}
	if r := m.resp; r != nil {
		s.LicenceStatus = r.Status
		s.ValidUntil = unixTime(r.ValidUntil)
		s.Entitlements = r.Entitlements
		s.Advisories = r.Advisories
		if r.Status != StatusOK {
			add(ReasonLicence, true, "licence server says the licence is %s", r.Status)
		} else if r.ValidUntil > 0 && trusted.After(s.ValidUntil) {
			add(ReasonLicence, true, "licence expired on %s", s.ValidUntil.Format(time.DateOnly))
		}
		if r.Clone {
			why := r.CloneReason
			if why == "" {
				why = "the licence is in use on other hardware"
			}
			add(ReasonClone, true, "licence flagged as cloned: %s", why)
		}
		for _, a := range r.Advisories {
			for _, f := range a.Disable {
				if !slices.Contains(s.DisabledFeatures, f) {
					s.DisabledFeatures = append(s.DisabledFeatures, f)
				}
			}
			add(ReasonAdvisory, false, "advisory %s (%s): %s; disabled until updated: %s", a.ID, a.Severity, a.Message, strings.Join(a.Disable, ", "))
		}
		if r.AuditRollback {
			s.AuditRollback = &AuditRollback{Seq: r.AuditSeq, Reason: r.AuditReason}
			add(ReasonAuditChain, false, "audit chain anchor mismatch at seq %d: the audit log was rewritten or cut short since the licence server anchored it (%s)", r.AuditSeq, r.AuditReason)
		}
		if r.Perf == PerfTooSmall {
			add(ReasonPerformance, false, "hardware too small for the load: %s", r.PerfMessage)
		}
	} else if m.st.LastGood.IsZero() {
		add(ReasonNeverCheckedIn, false, "the box has not checked in with the licence server yet")
	}
	if m.cfg.CertNotAfter != nil {
		if na := m.cfg.CertNotAfter(); !na.IsZero() && na.Sub(trusted) < CertWarnBefore {
			add(ReasonCertificate, false, "TLS certificate expires on %s", na.UTC().Format(time.DateOnly))
		}
	}
	s.Mode = ModeFull
	for _, r := range s.Reasons {
		if r.Degrades {
			s.Mode = ModeDegraded
			break
		}
		if r.Code != ReasonNeverCheckedIn {
			s.Mode = ModeWarning
		}
	}
	var msgs []string
	for _, r := range s.Reasons {
		if r.Degrades || s.Mode == ModeWarning {
			msgs = append(msgs, r.Message)
		}
	}
	if s.Mode != ModeFull {
		s.Banner = strings.Join(msgs, " · ")
	}
	return s
}

func (m *Manager) degraded() bool {
	return m.State().Mode == ModeDegraded
}

// AllowOutboundCall reports whether a call to number may go out over a
// trunk. Emergency numbers are always allowed; in degraded mode nothing else
// is. Internal calls do not go through this gate.
func (m *Manager) AllowOutboundCall(number string) bool {
	if m.isEmergency(number) {
		return true
	}
	return !m.degraded()
}

// IsEmergency reports whether number is on the emergency list.
func (m *Manager) IsEmergency(number string) bool { return m.isEmergency(number) }

// AllowProvisioning reports whether phones may be provisioned.
func (m *Manager) AllowProvisioning() bool { return !m.degraded() }

// AllowNewExtension reports whether an admin may create an extension.
func (m *Manager) AllowNewExtension() bool { return !m.degraded() }

// FeatureEnabled reports whether a named feature is allowed: an advisory for
// this firmware can switch risky features off until the box is updated.
func (m *Manager) FeatureEnabled(name string) bool {
	return !slices.Contains(m.State().DisabledFeatures, name)
}

// Anchored is the audit sequence number the last good check-in anchored
// with the vendor (0: none). The next check-in re-sends that entry, so
// audit retention must not remove it (firmware/privacy asks here).
func (m *Manager) Anchored() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.Anchored
}
