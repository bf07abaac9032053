package admin

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/metrics"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Metrics is edgepbxd's /metrics handler (*metrics.Handler). The admin
// side stores its settings (bucket metrics.settings) and hands each saved
// version to it.
type Metrics interface {
	Apply(metrics.Settings)
}

// MetricsRequest is the body of PUT /api/v1/security/metrics: the
// networks as strings ("192.0.2.0/24").
type MetricsRequest struct {
	Networks []string `json:"networks"`
}

// MetricsView is the answer of GET and PUT /api/v1/security/metrics.
type MetricsView struct {
	Settings metrics.Settings `json:"settings"`
	Enabled  bool             `json:"enabled"` // some network may scrape
	Running  bool             `json:"running"` // /metrics is served on this box
	Path     string           `json:"path"`
	Scope    string           `json:"token_scope"` // the scope a scraping token needs
}

func (s *Server) metricsView() (MetricsView, error) {
	set, err := metrics.LoadSettings(s.db)
	if err != nil {
		return MetricsView{}, err
	}
	return MetricsView{Settings: set, Enabled: set.Enabled(), Running: s.metrics != nil, Path: "/metrics", Scope: auth.ScopeMetrics}, nil
}

func (s *Server) apiMetrics(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	v, err := s.metricsView()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) apiSetMetrics(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" {
		return fmt.Errorf("%w: Content-Type must be application/json", errBadRequest)
	}
	req, err := metrics.DecodeSettings(r.Body) // bounded by the decoder
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "metrics.settings.set"}
	if err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = s.audit.Record(ev)
		return fmt.Errorf("%w: %w", errBadRequest, err)
	}
	// Stored and audited in one transaction, then applied live.
	err = s.db.Update(func(tx *store.Tx) error {
		prev, err := metrics.SaveSettingsTx(tx, req)
		if err != nil {
			return err
		}
		ev.Before, ev.After = prev, req
		return s.audit.RecordTx(tx, ev)
	})
	if err != nil {
		if errors.Is(err, metrics.ErrSettings) {
			return fmt.Errorf("%w: %w", errBadRequest, err)
		}
		return err
	}
	if s.metrics != nil {
		s.metrics.Apply(req)
	}
	v, err := s.metricsView()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}
