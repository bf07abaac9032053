package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/config"
)

// SIPSettings is the stored SIP edge configuration (*config.SIPStore).
// The SIP edge takes it when edgepbxd starts (firmware/sip has no live
// setters), so Running can lag the saved version until a restart.
type SIPSettings interface {
	Current() config.SIPSettings
	Running() int64
	Save(next config.SIPSettings) (config.SIPSettings, error)
}

// SIPSettingsRequest is the body of PUT /api/v1/sip/settings: all settings
// with the version they were edited from.
type SIPSettingsRequest = config.SIPSettings

// SIPSettingsView is the answer of GET and PUT /api/v1/sip/settings.
type SIPSettingsView struct {
	Settings config.SIPSettings `json:"settings"`
	// RunningVersion is the version the SIP edge runs with.
	RunningVersion int64 `json:"running_version"`
	// RestartRequired: the saved version applies after a restart (system page).
	RestartRequired bool `json:"restart_required"`
}

// SetSIPSettings attaches the SIP edge settings when they are built after
// the server. Call it before serving.
func (s *Server) SetSIPSettings(c SIPSettings) { s.sipset = c }

// errSIPRefused marks SIP settings that failed validation.
var errSIPRefused = errors.New("sip settings refused")

func (s *Server) sipView() SIPSettingsView {
	cur, run := s.sipset.Current(), s.sipset.Running()
	return SIPSettingsView{Settings: cur, RunningVersion: run, RestartRequired: cur.Version != run}
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
	saved, err := s.sipset.Save(req)
	if err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = s.audit.Record(ev)
		switch {
		case errors.Is(err, config.ErrSIPVersion):
			return fmt.Errorf("%w: %w", errConflict, err)
		case errors.Is(err, config.ErrSIPSettings):
			return fmt.Errorf("%w: %w", errSIPRefused, err)
		}
		return err
	}
	ev.After, ev.Target, ev.Detail = saved, fmt.Sprintf("version %d", saved.Version), "applies after restart"
	if err := s.audit.Record(ev); err != nil {
		s.log.Error("audit sip settings change", "err", err)
	}
	writeJSON(w, http.StatusOK, s.sipView())
	return nil
}

// sipData is the SIP edge part of the security page.
func (s *Server) sipData() (map[string]any, error) {
	if s.sipset == nil {
		return nil, nil
	}
	v := s.sipView()
	raw, err := json.MarshalIndent(v.Settings, "", "  ")
	if err != nil {
		return nil, err
	}
	return map[string]any{"View": v, "JSON": string(raw)}, nil
}
