package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/config"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
)

// Telephony is the stored dial plan configuration
// (*config.TelephonyStore); edgepbxd's dial plan reads the same store, so
// a saved change applies to the next call.
type Telephony interface {
	Current() config.Telephony
	Save(next config.Telephony, known func(string) bool) (config.Telephony, error)
}

// TelephonyRequest is the body of PUT /api/v1/telephony: the whole
// configuration with the version it was edited from. Trunk passwords are
// write-only: send one to set it, leave it out to keep the stored one.
type TelephonyRequest = config.Telephony

// SetTelephony attaches the dial plan configuration when it is built after
// the server (edgepbxd builds the calls last). Call it before serving.
func (s *Server) SetTelephony(t Telephony) { s.tel = t }

// knownExtension reports whether a SIP extension exists (DID targets).
func (s *Server) knownExtension() func(string) bool {
	if s.exts == nil {
		return nil
	}
	list := s.exts.List()
	return func(n string) bool { return slices.Contains(list, n) }
}

func (s *Server) apiTelephony(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.tel == nil {
		return errUnavailable
	}
	writeJSON(w, http.StatusOK, s.tel.Current())
	return nil
}

func (s *Server) apiSetTelephony(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.tel == nil {
		return errUnavailable
	}
	var req TelephonyRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	before := s.tel.Current()
	// After is what was asked for, without passwords (the audit log also
	// redacts password keys; this keeps them out of memory copies too).
	asked := req
	asked.Trunks = slices.Clone(req.Trunks)
	for i := range asked.Trunks {
		if asked.Trunks[i].Password != "" {
			asked.Trunks[i].Password, asked.Trunks[i].PasswordSet = "", true
		}
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "telephony.set", Before: before, After: asked}
	saved, err := s.tel.Save(req, s.knownExtension())
	if err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = s.audit.Record(ev)
		switch {
		case errors.Is(err, config.ErrVersion):
			return fmt.Errorf("%w: %w", errConflict, err)
		case errors.Is(err, config.ErrTelephony):
			return fmt.Errorf("%w: %w", errTelephonyRefused, err)
		}
		return err
	}
	ev.After, ev.Target = saved, fmt.Sprintf("version %d", saved.Version)
	if err := s.audit.Record(ev); err != nil {
		s.log.Error("audit telephony change", "err", err)
	}
	writeJSON(w, http.StatusOK, saved)
	return nil
}

// errTelephonyRefused marks a configuration that failed validation.
var errTelephonyRefused = errors.New("telephony configuration refused")

// telephonyData is the dial plan page: the configuration as tables and as
// the JSON the editor sends back.
func (s *Server) telephonyData(r *http.Request, p auth.Principal) (any, error) {
	if s.tel == nil {
		return map[string]any{"Unavailable": true}, nil
	}
	cur := s.tel.Current()
	raw, err := json.MarshalIndent(cur, "", "  ")
	if err != nil {
		return nil, err
	}
	var exts []string
	if s.exts != nil {
		exts = s.exts.List()
	}
	classes := map[string][]dialplan.Class{}
	for _, x := range cur.Extensions {
		classes[x.Number] = x.Classes
	}
	type row struct {
		Number  string
		Classes []dialplan.Class
		Default bool
	}
	var rows []row
	for _, n := range exts {
		c, ok := classes[n]
		if !ok || c == nil {
			c = cur.DefaultClasses
		}
		rows = append(rows, row{Number: n, Classes: c, Default: !ok})
	}
	country, _ := dialplan.LookupCountry(cur.Country)
	return map[string]any{"Config": cur, "JSON": string(raw), "Rows": rows,
		"Emergency": append(slices.Clone(country.Emergency), cur.Emergency...)}, nil
}
