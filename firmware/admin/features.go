package admin

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Features is each extension's forwarding, do-not-disturb and follow-me
// (*features.Engine: it checks destinations against the extension's class
// of service when they are set).
type Features interface {
	Settings(ext string) features.Settings
	SetSettings(ext string, s features.Settings, also func(*store.Tx, features.Settings) error) (features.Settings, error)
	// Forgot drops a deleted extension's settings from memory after
	// features.ForgetTx erased them in the deleting transaction.
	Forgot(ext string)
}

// FeatureSettingsRequest is the body of PUT /api/v1/extensions/{name}/features.
type FeatureSettingsRequest = features.Settings

// featureCodes is the table in force (the telephony configuration's, or
// the defaults).
func (s *Server) featureCodes() []features.Code {
	if s.tel == nil {
		return features.DefaultCodes()
	}
	return s.tel.Current().Features.Table()
}

func (s *Server) apiFeatureCodes(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	writeJSON(w, http.StatusOK, features.Table(s.featureCodes()))
	return nil
}

// apiFeatureCodesText is the table as plain text, to print for users.
func (s *Server) apiFeatureCodesText(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, err := w.Write([]byte(features.Print(s.featureCodes())))
	return err
}

func (s *Server) featureExtension(r *http.Request) (string, error) {
	if s.features == nil || s.exts == nil {
		return "", errUnavailable
	}
	ext := r.PathValue("name")
	if !slices.Contains(s.exts.List(), ext) {
		return "", fmt.Errorf("%w: extension %.64s", errNotFound, ext)
	}
	return ext, nil
}

func (s *Server) apiExtensionFeatures(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	ext, err := s.featureExtension(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.features.Settings(ext))
	return nil
}

// apiSetExtensionFeatures replaces an extension's settings. A destination
// the extension may not call (class of service, suspension, an emergency
// number) is refused now with 403, not only when a call would use it.
func (s *Server) apiSetExtensionFeatures(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	ext, err := s.featureExtension(r)
	if err != nil {
		return err
	}
	var req FeatureSettingsRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "telephony.features.set", Target: ext,
		Before: s.features.Settings(ext), After: req}
	_, err = s.features.SetSettings(ext, req, func(tx *store.Tx, saved features.Settings) error {
		ev.After = saved
		return s.audit.RecordTx(tx, ev)
	})
	if err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = s.audit.Record(ev)
		if errors.Is(err, features.ErrDestination) {
			status := http.StatusUnprocessableEntity
			if dialplan.SIPStatus(err) == 403 {
				status = http.StatusForbidden
			}
			problem(w, status, "forwarding refused", err.Error())
			return nil
		}
		return err
	}
	writeJSON(w, http.StatusOK, s.features.Settings(ext))
	return nil
}

// forwardRow is one extension's settings on the dial plan page.
type forwardRow struct {
	Extension string
	S         features.Settings
}

// forwardRows lists the extensions whose calls do not simply ring.
func (s *Server) forwardRows(exts []string) []forwardRow {
	if s.features == nil {
		return nil
	}
	var rows []forwardRow
	for _, e := range exts {
		st := s.features.Settings(e)
		if st.Always != "" || st.Busy != "" || st.NoAnswer != "" || st.Unreachable != "" || st.DND || st.FollowMe.On {
			rows = append(rows, forwardRow{Extension: e, S: st})
		}
	}
	return rows
}
