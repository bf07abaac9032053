package admin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Syslog is edgepbxd's remote syslog sender (*logs.Sender). The admin side
// stores the settings (bucket logs.syslog) and hands each saved version to
// the running sender.
type Syslog interface {
	Apply(logs.SyslogSettings) error
	Status() logs.SyslogStatus
	Test(context.Context, logs.SyslogSettings) error
}

// SyslogRequest is the body of PUT /api/v1/security/syslog.
type SyslogRequest = logs.SyslogSettings

// SyslogView is the answer of GET and PUT /api/v1/security/syslog.
type SyslogView struct {
	Settings logs.SyslogSettings `json:"settings"`
	Status   logs.SyslogStatus   `json:"status"`
	// Running: a sender runs on this box (false: settings stored only).
	Running bool `json:"running"`
	// Unencrypted: tcp or udp, messages cross the network in clear text.
	Unencrypted bool     `json:"unencrypted"`
	Facilities  []string `json:"facilities"`
	// Transports are the choices with their UI labels (clear text flagged).
	Transports []SyslogTransport `json:"transports"`
}

// SyslogTransport is one transport choice.
type SyslogTransport struct {
	Value string `json:"value"`
	Label string `json:"label"`
}

var syslogTransports = []SyslogTransport{
	{logs.TransportTLS, "TLS (RFC 5425, certificate verified)"},
	{logs.TransportTCP, "TCP: UNENCRYPTED (RFC 6587, legacy collectors)"},
	{logs.TransportUDP, "UDP: UNENCRYPTED (RFC 5426, legacy collectors)"},
}

// syslogAudit keeps the CA bundle by hash in the audit chain.
type syslogAudit struct {
	Enabled   bool   `json:"enabled"`
	Address   string `json:"address"`
	Transport string `json:"transport"`
	Facility  string `json:"facility"`
	CAPEM     string `json:"ca_pem_sha256,omitempty"`
}

func auditSyslog(c logs.SyslogSettings) syslogAudit {
	a := syslogAudit{Enabled: c.Enabled, Address: c.Address, Transport: c.Transport, Facility: c.Facility}
	if c.CAPEM != "" {
		sum := sha256.Sum256([]byte(c.CAPEM))
		a.CAPEM = hex.EncodeToString(sum[:])
	}
	return a
}

func (s *Server) syslogView() (SyslogView, error) {
	set, err := logs.LoadSyslogSettings(s.db)
	if err != nil {
		return SyslogView{}, err
	}
	v := SyslogView{Settings: set, Running: s.syslog != nil, Unencrypted: set.Unencrypted(), Facilities: logs.Facilities(), Transports: syslogTransports}
	if s.syslog != nil {
		v.Status = s.syslog.Status()
	}
	return v, nil
}

func (s *Server) apiSyslog(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	v, err := s.syslogView()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) apiSetSyslog(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" {
		return fmt.Errorf("%w: Content-Type must be application/json", errBadRequest)
	}
	req, err := logs.DecodeSyslogSettings(r.Body) // bounded by the decoder
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "logs.syslog.set"}
	if err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = s.audit.Record(ev)
		return fmt.Errorf("%w: %w", errBadRequest, err)
	}
	ev.Target = req.Address
	// Stored and audited in one transaction, then applied live.
	err = s.db.Update(func(tx *store.Tx) error {
		prev, err := logs.SaveSyslogSettingsTx(tx, req)
		if err != nil {
			return err
		}
		ev.Before, ev.After = auditSyslog(prev), auditSyslog(req)
		if req.Enabled && req.Unencrypted() {
			ev.Outcome, ev.Detail = audit.Warning, "remote syslog over "+req.Transport+": security events leave the box unencrypted"
		}
		return s.audit.RecordTx(tx, ev)
	})
	if err != nil {
		if errors.Is(err, logs.ErrSyslogSettings) {
			return fmt.Errorf("%w: %w", errBadRequest, err)
		}
		return err
	}
	if s.syslog != nil {
		if err := s.syslog.Apply(req); err != nil {
			return fmt.Errorf("syslog: apply saved settings: %w", err)
		}
	}
	v, err := s.syslogView()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// apiTestSyslog sends one test message to the saved collector over a new
// connection; the answer says whether it went out (ok) or why not.
func (s *Server) apiTestSyslog(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.syslog == nil {
		return errUnavailable
	}
	set, err := logs.LoadSyslogSettings(s.db)
	if err != nil {
		return err
	}
	if set.Address == "" {
		return fmt.Errorf("%w: no collector address saved", errBadRequest)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	terr := s.syslog.Test(ctx, set)
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "logs.syslog.test", Target: set.Address}
	ans := map[string]any{"ok": terr == nil}
	if terr != nil {
		ev.Outcome, ev.Detail = audit.Failed, terr.Error()
		ans["error"] = terr.Error()
	} else {
		ans["status"] = "test message sent to " + set.Address + " over " + set.Transport
	}
	if err := s.audit.Record(ev); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ans)
	return nil
}

// securityPageData is the security page: securityData plus remote syslog.
func (s *Server) securityPageData(r *http.Request, p auth.Principal) (any, error) {
	d, err := s.securityData(r, p)
	if err != nil {
		return nil, err
	}
	m, ok := d.(map[string]any)
	if !ok {
		return d, nil
	}
	if m["Syslog"], err = s.syslogView(); err != nil {
		return nil, err
	}
	if m["Metrics"], err = s.metricsView(); err != nil {
		return nil, err
	}
	return m, nil
}
