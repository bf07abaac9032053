package admin

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/connlog"
	"github.com/edgepbx/edgepbx/firmware/privacy"
)

// The privacy settings (firmware/privacy) own retention, anonymisation and
// subject requests; the connection log (firmware/connlog) is read here.

// PrivacyRequest is the body of PUT /api/v1/privacy/{category}. A change
// that deletes data now (a shorter retention, earlier masking) needs the
// caller's current password and second factor.
type PrivacyRequest struct {
	privacy.Policy
	auth.Proof
}

// SubjectRequest names a data subject: an extension, an admin user or an
// external number. Forget also needs the caller's current password and
// second factor.
type SubjectRequest struct {
	privacy.Subject
	auth.Proof
}

func (s *Server) privacyReg() (*privacy.Registry, error) {
	if s.priv == nil {
		return nil, fmt.Errorf("%w: privacy settings are not wired on this box", errUnavailable)
	}
	return s.priv, nil
}

// privacyErr maps the registry's refusals to answers that name the field.
func privacyErr(err error) error {
	switch {
	case errors.Is(err, privacy.ErrUnknown):
		return errors.Join(errNotFound, err)
	case errors.Is(err, privacy.ErrPolicy), errors.Is(err, privacy.ErrSubject), errors.Is(err, connlog.ErrFilter):
		return errors.Join(errBadRequest, err)
	}
	return err
}

func (s *Server) apiPrivacy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	reg, err := s.privacyReg()
	if err != nil {
		return err
	}
	o, err := reg.Overview()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}

func (s *Server) apiSetPrivacy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	reg, err := s.privacyReg()
	if err != nil {
		return err
	}
	var req PrivacyRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	name := r.PathValue("category")
	old, err := reg.Policy(name)
	if err != nil {
		return privacyErr(err)
	}
	if privacy.Deletes(old, req.Policy) {
		// Shortening a retention deletes evidence: a stolen session alone
		// must not be enough to wipe the logs.
		if err := s.auth.Reauthenticate(r.Context(), p, clientOf(r), req.Proof, "privacy.settings"); err != nil {
			return err
		}
	}
	if err := reg.Set(p.Actor(), src(r), name, req.Policy); err != nil {
		return privacyErr(err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "saved; the next sweep (within the hour) applies it", "category": name, "policy": req.Policy})
	return nil
}

func (s *Server) apiPrivacyFind(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	reg, err := s.privacyReg()
	if err != nil {
		return err
	}
	var req privacy.Subject
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	found, err := reg.Find(req)
	if err != nil {
		return privacyErr(err)
	}
	parts := make([]string, 0, len(found))
	for _, f := range found {
		parts = append(parts, fmt.Sprintf("%s %d", f.Category, f.Items))
	}
	sort.Strings(parts)
	writeJSON(w, http.StatusOK, map[string]any{"status": "held: " + strings.Join(parts, ", "), "found": found})
	return nil
}

func (s *Server) apiPrivacyExport(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	reg, err := s.privacyReg()
	if err != nil {
		return err
	}
	var req privacy.Subject
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ex, err := reg.Export(p.Actor(), src(r), req)
	if err != nil {
		return privacyErr(err)
	}
	w.Header().Set("Content-Disposition", `attachment; filename="edgepbx-subject-access.json"`)
	writeJSON(w, http.StatusOK, ex)
	return nil
}

func (s *Server) apiPrivacyForget(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	reg, err := s.privacyReg()
	if err != nil {
		return err
	}
	var req SubjectRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := req.Subject.Validate(); err != nil {
		return privacyErr(err)
	}
	if err := s.auth.Reauthenticate(r.Context(), p, clientOf(r), req.Proof, "privacy.forget"); err != nil {
		return err
	}
	out, err := reg.Forget(p.Actor(), src(r), req.Subject)
	if err != nil {
		return privacyErr(err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "deleted; reference " + out.Reference, "reference": out.Reference, "deleted": out.Deleted})
	return nil
}

func (s *Server) apiConnections(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.conlog == nil {
		return fmt.Errorf("%w: the connection log is not wired on this box", errUnavailable)
	}
	if len(r.URL.RawQuery) > 2048 {
		return errors.Join(errBadRequest, errors.New("query string too long"))
	}
	f, err := connlog.ParseFilter(r.URL.Query())
	if err != nil {
		return privacyErr(err)
	}
	page, err := s.conlog.Query(f)
	if err != nil {
		return privacyErr(err)
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

func (s *Server) privacyData(r *http.Request, p auth.Principal) (any, error) {
	d := map[string]any{"Available": s.priv != nil, "Modes": []privacy.Mode{privacy.Full, privacy.Truncate, privacy.Hash}}
	if s.priv != nil {
		o, err := s.priv.Overview()
		if err != nil {
			return nil, err
		}
		d["Overview"] = o
	}
	if s.conlog != nil {
		page, err := s.conlog.Query(connlog.Filter{Limit: 50})
		if err != nil {
			return nil, err
		}
		d["Connections"] = page.Entries
	}
	return d, nil
}
