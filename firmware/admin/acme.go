package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// maxACMEBody bounds PUT /api/v1/certificates/acme: a private CA bundle
// (JSON-escaped) plus the other fields.
const maxACMEBody = 2*64<<10 + 8<<10

// ACME is edgepbxd's certificate issuance loop (cmd/edgepbxd). The admin
// side stores the settings itself (certs.SaveACMESettings) and only asks
// the loop to look at them again.
type ACME interface {
	// Kick makes the loop check now; force renews even when the
	// certificate is not due.
	Kick(force bool)
	// Status is the outcome of the last attempts.
	Status() certs.ACMEStatus
}

// ACMERequest is the body of PUT /api/v1/certificates/acme.
type ACMERequest = certs.ACMESettings

// ACMEView is the answer of GET and PUT /api/v1/certificates/acme.
type ACMEView struct {
	Settings certs.ACMESettings `json:"settings"`
	Status   certs.ACMEStatus   `json:"status"`
	// Running: an issuance loop runs on this box (false: settings are
	// stored but nothing acts on them).
	Running bool `json:"running"`
}

// acmeAudit is what the audit chain keeps of the settings: the CA bundle
// by hash, not 64 KB of PEM.
type acmeAudit struct {
	Enabled   bool     `json:"enabled"`
	Directory string   `json:"directory_url"`
	Email     string   `json:"email,omitempty"`
	Names     []string `json:"names"`
	Challenge string   `json:"challenge"`
	HTTPAddr  string   `json:"http_addr,omitempty"`
	CAPEM     string   `json:"ca_pem_sha256,omitempty"`
}

func auditACME(s certs.ACMESettings) acmeAudit {
	a := acmeAudit{Enabled: s.Enabled, Directory: s.DirectoryURL, Email: s.Email, Names: s.Names, Challenge: s.Challenge, HTTPAddr: s.HTTPAddr}
	if s.CAPEM != "" {
		sum := sha256.Sum256([]byte(s.CAPEM))
		a.CAPEM = hex.EncodeToString(sum[:])
	}
	return a
}

func (s *Server) acmeView() (ACMEView, error) {
	set, err := certs.LoadACMESettings(s.db)
	if err != nil {
		return ACMEView{}, err
	}
	v := ACMEView{Settings: set, Running: s.acme != nil}
	if s.acme != nil {
		v.Status = s.acme.Status()
	} else if v.Status, err = certs.LoadACMEStatus(s.db); err != nil {
		return ACMEView{}, err
	}
	return v, nil
}

func (s *Server) apiACME(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	v, err := s.acmeView()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) apiSetACME(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req ACMERequest
	if err := decodeJSONLimit(r, &req, maxACMEBody); err != nil {
		return err
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "certs.acme.set"}
	// The settings and their audit entry commit in one transaction.
	_, saved, err := certs.SaveACMESettingsWith(s.db, req, func(tx *store.Tx, prev, saved certs.ACMESettings) error {
		ev.Target, ev.Before, ev.After = strings.Join(saved.Names, ","), auditACME(prev), auditACME(saved)
		return s.audit.RecordTx(tx, ev)
	})
	if err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		ev.Target, ev.Before, ev.After = strings.Join(saved.Names, ","), nil, auditACME(saved)
		_ = s.audit.Record(ev)
		if errors.Is(err, certs.ErrACMESettings) {
			return fmt.Errorf("%w: %w", errBadRequest, err)
		}
		return err
	}
	if s.acme != nil {
		s.acme.Kick(false)
	}
	v, err := s.acmeView()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) apiRenewACME(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.acme == nil {
		return errUnavailable
	}
	set, err := certs.LoadACMESettings(s.db)
	if err != nil {
		return err
	}
	if !set.Enabled {
		return fmt.Errorf("%w: ACME is off; enable it first", errConflict)
	}
	if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "certs.acme.renew",
		Target: strings.Join(set.Names, ",")}); err != nil {
		return err
	}
	s.acme.Kick(true)
	writeJSON(w, http.StatusAccepted, map[string]any{"status": "renewal started; the result shows on the certificates page"})
	return nil
}

// certPageData is the certificates page: certData plus the ACME section.
func (s *Server) certPageData(r *http.Request, p auth.Principal) (any, error) {
	d, err := s.certData(r, p)
	if err != nil {
		return nil, err
	}
	m, ok := d.(map[string]any)
	if !ok {
		return d, nil
	}
	v, err := s.acmeView()
	if err != nil {
		return nil, err
	}
	m["ACME"] = v
	m["ACMENames"] = strings.Join(v.Settings.Names, "\n")
	return m, nil
}
