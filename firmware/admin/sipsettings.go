package admin

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// SIPSettings is the stored SIP edge configuration (*config.SIPStore).
// When Live, a save is applied to the running SIP edge before it is
// stored (a version the edge refuses is not stored: config.ErrSIPApply);
// the few settings the edge takes only at start are listed by Pending.
type SIPSettings interface {
	Current() pbxconfig.SIPSettings
	Running() int64
	Live() bool
	Pending() []string
	// SaveWith stores next and runs also (the audit entry) in the same
	// transaction; pending names the fields that wait for a restart.
	SaveWith(next pbxconfig.SIPSettings, also func(tx *store.Tx, saved pbxconfig.SIPSettings, pending []string) error) (pbxconfig.SIPSettings, error)
}

// SIPSettingsRequest is the body of PUT /api/v1/sip/settings: all settings
// with the version they were edited from.
type SIPSettingsRequest = pbxconfig.SIPSettings

// SIPSettingsView is the answer of GET and PUT /api/v1/sip/settings.
type SIPSettingsView struct {
	Settings pbxconfig.SIPSettings `json:"settings"`
	// RunningVersion is the version the SIP edge runs completely.
	RunningVersion int64 `json:"running_version"`
	// Live: saves are applied to the running edge at once.
	Live bool `json:"live"`
	// RestartRequired: part of the saved version applies only after a
	// restart (system page): RestartFields when Live, else all of it.
	RestartRequired bool `json:"restart_required"`
	// RestartFields names the saved settings (JSON names, "guard.max_tracked"
	// for nested ones) that the running edge takes only at its next start.
	RestartFields []string `json:"restart_fields"`
}

// errSIPRefused marks SIP settings that failed validation or that the
// running edge refused.
var errSIPRefused = errors.New("sip settings refused")

func (s *Server) sipView() SIPSettingsView {
	cur, run, live := s.sipset.Current(), s.sipset.Running(), s.sipset.Live()
	v := SIPSettingsView{Settings: cur, RunningVersion: run, Live: live, RestartRequired: cur.Version != run, RestartFields: []string{}}
	if live {
		if p := s.sipset.Pending(); p != nil {
			v.RestartFields = p
		}
	}
	return v
}

func (s *Server) apiSIPSettings(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.sipset == nil {
		return errUnavailable
	}
	writeJSON(w, http.StatusOK, s.sipView())
	return nil
}

func (s *Server) apiSetSIPSettings(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.sipset == nil {
		return errUnavailable
	}
	var req SIPSettingsRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "sip.settings.set", Before: s.sipset.Current(), After: req}
	// The change and its audit entry commit in one transaction: a power
	// cut cannot leave a change nobody is recorded to have made.
	live := s.sipset.Live()
	_, err := s.sipset.SaveWith(req, func(tx *store.Tx, saved pbxconfig.SIPSettings, pending []string) error {
		ev.After, ev.Target = saved, fmt.Sprintf("version %d", saved.Version)
		switch {
		case !live:
			ev.Detail = "applies after restart"
		case len(pending) > 0:
			ev.Detail = "applied to the running SIP edge; after restart: " + strings.Join(pending, ", ")
		default:
			ev.Detail = "applied to the running SIP edge"
		}
		return s.audit.RecordTx(tx, ev)
	})
	if err != nil {
		ev.Outcome, ev.Detail, ev.After, ev.Target = audit.Failed, err.Error(), req, ""
		_ = s.audit.Record(ev)
		switch {
		case errors.Is(err, pbxconfig.ErrSIPVersion):
			return fmt.Errorf("%w: %w", errConflict, err)
		case errors.Is(err, pbxconfig.ErrSIPSettings), errors.Is(err, pbxconfig.ErrSIPApply):
			return fmt.Errorf("%w: %w", errSIPRefused, err)
		}
		return err
	}
	v := s.sipView()
	writeJSON(w, http.StatusOK, v)
	return nil
}

// sipForm is the SIP settings form: durations in whole seconds and lists
// one entry per line, as the page edits them (static/sipsettings.js turns
// them back into a SIPSettingsRequest).
type sipForm struct {
	View                                          SIPSettingsView
	Zones, Allowlist, Scanners                    string
	SHA256, MD5                                   bool
	IdleTimeout, NonceTTL, MinExpires, MaxExpires int64
	RateWindow, FloodBan, FailWindow, AuthBan     int64
	StartOnly                                     map[string]bool
	Pending                                       map[string]bool
}

func secsOf(d time.Duration) int64 { return int64(d / time.Second) }

func prefixLines(ps []netip.Prefix) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// sipData is the SIP edge part of the security page.
func (s *Server) sipData() (*sipForm, error) {
	if s.sipset == nil {
		return nil, nil
	}
	v := s.sipView()
	c, g := v.Settings, v.Settings.Guard
	f := &sipForm{View: v, Zones: prefixLines(c.AllowedZones), Allowlist: prefixLines(c.Allowlist),
		SHA256: slices.Contains(c.Algorithms, "SHA-256"), MD5: slices.Contains(c.Algorithms, "MD5"),
		IdleTimeout: secsOf(c.IdleTimeout), NonceTTL: secsOf(c.NonceTTL), MinExpires: secsOf(c.MinExpires), MaxExpires: secsOf(c.MaxExpires),
		RateWindow: secsOf(g.RateWindow), FloodBan: secsOf(g.FloodBan), FailWindow: secsOf(g.FailWindow), AuthBan: secsOf(g.AuthBan),
		StartOnly: map[string]bool{}, Pending: map[string]bool{}}
	if len(c.ScannerUserAgents) > 0 {
		f.Scanners = strings.Join(c.ScannerUserAgents, "\n") + "\n"
	}
	for _, n := range pbxconfig.SIPStartOnly() { // the form marks them
		f.StartOnly[n] = true
	}
	for _, n := range v.RestartFields {
		f.Pending[n] = true
	}
	return f, nil
}
