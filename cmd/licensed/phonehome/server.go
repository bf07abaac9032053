// Package phonehome is the reference vendor licence server behind
// cmd/licensed: it issues licences, records check-ins in a Store (bbolt, or
// PostgreSQL shared by replicas), flags clones, publishes advisories and
// signs every answer with the vendor's Ed25519 key.
package phonehome

import (
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/init/strictjson"
	bolt "go.etcd.io/bbolt"
)

const (
	bLicences    = "licences"
	bAdvisories  = "advisories"
	bCheckins    = "checkins"
	maxAdminBody = 16 << 10
	// maxFingerprints bounds the list of hardware seen per licence.
	maxFingerprints = 16
)

// Licence is the vendor's record of one licence.
type Licence struct {
	ID            string    `json:"id"`
	ValidUntil    time.Time `json:"valid_until"`
	MaxExtensions int       `json:"max_ext"`
	MaxTrunks     int       `json:"max_trunks"`
	Features      []string  `json:"features,omitempty"`
	Revoked       bool      `json:"revoked"`
	// Fingerprints are the hardware fingerprints seen with this licence, the
	// first one is the bound box. A second one flags the licence as cloned.
	Fingerprints []string `json:"fingerprints,omitempty"`
	Clone        bool     `json:"clone"`
	CloneReason  string   `json:"clone_reason,omitempty"`
}

// Advisory is a published problem in some firmware versions.
type Advisory struct {
	license.Advisory
	Firmware []string `json:"firmware"` // affected versions, exact match
}

// Checkin is one recorded check-in.
type Checkin struct {
	Time        time.Time      `json:"time"`
	Serial      string         `json:"serial"`
	InstallID   string         `json:"install"`
	Fingerprint string         `json:"hw"`
	Firmware    string         `json:"fw"`
	OfflineDays int            `json:"offline_days"`
	CertExpiry  int64          `json:"cert_exp,omitempty"`
	Load        license.Load   `json:"load"`
	Counts      license.Counts `json:"counts"`
	Bytes       int            `json:"bytes"`
	// RestoredFrom is the serial of another box whose backup this box
	// restored: the vendor sees a restore elsewhere, not a clone.
	RestoredFrom string `json:"restored_from,omitempty"`
}

// Server answers check-ins and the admin API.
type Server struct {
	store   Store
	priv    ed25519.PrivateKey
	token   string
	now     func() time.Time
	log     *slog.Logger
	metrics *metrics
}

// New serves from a bbolt database (see NewWithStore).
func New(db *bolt.DB, priv ed25519.PrivateKey, adminToken string, now func() time.Time, log *slog.Logger) (*Server, error) {
	st, err := NewBoltStore(db)
	if err != nil {
		return nil, err
	}
	return NewWithStore(st, priv, adminToken, now, log)
}

// NewWithStore serves from st (the caller closes it). adminToken protects
// /admin/ (empty disables it); now is the server's clock (tests pass a
// fake one).
func NewWithStore(st Store, priv ed25519.PrivateKey, adminToken string, now func() time.Time, log *slog.Logger) (*Server, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, errors.New("licensed: bad signing key")
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Server{store: st, priv: priv, token: adminToken, now: now, log: log, metrics: newMetrics()}, nil
}

// Handler serves POST /v1/checkin and the admin API under /admin/.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+license.CheckinPath, s.checkin)
	mux.HandleFunc("PUT /admin/licences/{id}", s.admin(s.putLicence))
	mux.HandleFunc("GET /admin/licences/{id}", s.admin(s.getLicence))
	mux.HandleFunc("POST /admin/licences/{id}/revoke", s.admin(s.revoke))
	mux.HandleFunc("POST /admin/licences/{id}/unflag", s.admin(s.unflag))
	mux.HandleFunc("GET /admin/licences/{id}/checkins", s.admin(s.checkins))
	mux.HandleFunc("GET /admin/licences/{id}/anchors", s.admin(s.anchors))
	mux.HandleFunc("POST /admin/licences/{id}/anchors/{install}/clear", s.admin(s.clearAnchorFlag))
	mux.HandleFunc("GET /admin/licences/{id}/seqs", s.admin(s.seqs))
	mux.HandleFunc("POST /admin/licences/{id}/seqs/{install}/clear", s.admin(s.clearRollbackFlag))
	mux.HandleFunc("PUT /admin/advisories/{id}", s.admin(s.putAdvisory))
	mux.HandleFunc("DELETE /admin/advisories/{id}", s.admin(s.deleteAdvisory))
	mux.Handle("GET /admin/metrics", s.admin(s.metrics.handler().ServeHTTP))
	mux.HandleFunc("GET /admin/fleet", s.admin(s.fleet))
	mux.HandleFunc("GET /fleet", fleetAsset(fleetPage, "text/html; charset=utf-8"))
	mux.HandleFunc("GET /fleet.js", fleetAsset(fleetJS, "text/javascript; charset=utf-8"))
	return mux
}

func (s *Server) checkin(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, license.MaxRequestBytes))
	if err != nil {
		http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		return
	}
	var req license.Request
	if err := strictjson.Unmarshal(body, &req); err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := req.Validate(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	start := time.Now()
	defer func() { s.metrics.duration.Observe(time.Since(start).Seconds()) }()
	resp, err := s.answer(r.Context(), &req, len(body))
	if err != nil {
		// Never a signed answer built without the database: a box that
		// gets none keeps its grace and tries again later.
		s.log.Error("check-in", "err", err)
		if errors.Is(err, ErrUnavailable) {
			s.metrics.checkins.WithLabelValues("unavailable").Inc()
			w.Header().Set("Retry-After", retryAfter)
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		s.metrics.checkins.WithLabelValues("error").Inc()
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	out, err := license.SignResponse(s.priv, resp)
	if err != nil {
		s.metrics.checkins.WithLabelValues("error").Inc()
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	s.metrics.checkins.WithLabelValues(resp.Status).Inc()
	// No Date and no Content-Type (nil stops net/http adding them): the box
	// reads one signed envelope from this path and nothing else, and every
	// header is paid for in its daily byte budget.
	h := w.Header()
	h["Date"], h["Content-Type"] = nil, nil
	w.Write(out)
}

// retryAfter is what a box is told to wait when the database is away (it
// keeps its own schedule; the header is for other clients and operators).
const retryAfter = "600"

// Answer records a validated check-in and builds the (unsigned) response.
func (s *Server) Answer(req *license.Request, size int) (*license.Response, error) {
	return s.answer(context.Background(), req, size)
}

func (s *Server) answer(ctx context.Context, req *license.Request, size int) (*license.Response, error) {
	if req.RestoredFrom != "" {
		s.log.Info("box reports data restored from another box's backup", "serial", req.Serial, "install", req.InstallID,
			"licence", req.LicenceID, "restored_from", req.RestoredFrom)
	}
	var resp *license.Response
	var ev events
	// All of a licence's check-ins, on every replica, run one after the
	// other (lock: the licence id), each against the latest commit.
	err := s.store.Update(ctx, req.LicenceID, func(tx Tx) error {
		ev = nil
		// Built inside: a retried transaction starts from scratch.
		now := s.now().UTC()
		resp = &license.Response{V: license.ProtocolVersion, Nonce: req.Nonce, Serial: req.Serial,
			InstallID: req.InstallID, LicenceID: req.LicenceID, ServerTime: now.Unix()} // Perf empty: ok
		var lic Licence
		found, err := getJSON(tx, tLicences, "", req.LicenceID, &lic)
		if err != nil {
			return err
		}
		if !found {
			resp.Status = license.StatusUnknown
		}
		if found {
			if !slices.Contains(lic.Fingerprints, req.Fingerprint) {
				if len(lic.Fingerprints) < maxFingerprints {
					lic.Fingerprints = append(lic.Fingerprints, req.Fingerprint)
				}
				if len(lic.Fingerprints) > 1 && !lic.Clone {
					lic.Clone = true
					lic.CloneReason = fmt.Sprintf("licence %s seen from %d different hardware fingerprints", lic.ID, len(lic.Fingerprints))
					id, n := lic.ID, len(lic.Fingerprints)
					ev.add(func() {
						s.log.Warn("clone flagged", "licence", id, "fingerprints", n)
						s.metrics.flags.WithLabelValues("clone").Inc()
					})
				}
			}
			resp.Status = licenceStatus(lic, now)
			resp.ValidUntil = lic.ValidUntil.Unix()
			resp.Entitlements = license.Entitlements{MaxExtensions: lic.MaxExtensions, MaxTrunks: lic.MaxTrunks, Features: lic.Features}
			resp.Clone, resp.CloneReason = lic.Clone, lic.CloneReason
			if err := putJSON(tx, tLicences, "", lic.ID, lic); err != nil {
				return err
			}
			if err := s.anchor(tx, &ev, req, now, resp); err != nil {
				return err
			}
			if err := s.checkSeq(tx, &ev, req, now, resp); err != nil {
				return err
			}
		}
		err = tx.List(tAdvisories, "", func(_ string, v []byte) error {
			var a Advisory
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			if slices.Contains(a.Firmware, req.Firmware) {
				resp.Advisories = append(resp.Advisories, a.Advisory)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("advisories: %w", err)
		}
		if req.Load.CPUPercent >= 85 || req.Load.MemPercent >= 90 {
			resp.Perf = license.PerfTooSmall
			resp.PerfMessage = fmt.Sprintf("average load cpu %d%% memory %d%%: use a larger model", req.Load.CPUPercent, req.Load.MemPercent)
		}
		if !found {
			// Nothing is stored for a licence id the vendor never issued:
			// anyone who reaches licensed could otherwise grow the database.
			return nil
		}
		if err := s.recordBox(tx, req, now, resp); err != nil {
			return err
		}
		rec, err := json.Marshal(Checkin{Time: now, Serial: req.Serial, InstallID: req.InstallID,
			Fingerprint: req.Fingerprint, Firmware: req.Firmware, OfflineDays: req.OfflineDays, CertExpiry: req.CertNotAfter,
			Load: req.Load, Counts: req.Counts, Bytes: size, RestoredFrom: req.RestoredFrom})
		if err != nil {
			return err
		}
		return tx.Append(tCheckins, req.LicenceID, rec)
	})
	if err != nil {
		return nil, fmt.Errorf("licensed: record check-in: %w", err)
	}
	ev.run()
	return resp, nil
}

func licenceStatus(l Licence, now time.Time) string {
	switch {
	case l.Revoked:
		return license.StatusRevoked
	case now.After(l.ValidUntil):
		return license.StatusExpired
	}
	return license.StatusOK
}

// PutLicence creates or replaces a licence (keeping what was seen of it).
func (s *Server) PutLicence(l Licence) error {
	if l.ID == "" || len(l.ID) > 64 || strings.ContainsAny(l.ID, "/ \t\r\n") {
		return errors.New("licensed: bad licence id")
	}
	return s.update(l.ID, func(old *Licence, exists bool) error {
		if exists {
			l.Fingerprints, l.Clone, l.CloneReason = old.Fingerprints, old.Clone, old.CloneReason
		}
		*old = l
		return nil
	})
}

// Unflag clears the clone flag and rebinds the licence to the next box that
// checks in (after a legitimate hardware replacement).
func (s *Server) Unflag(id string) error {
	return s.update(id, func(l *Licence, exists bool) error {
		if !exists {
			return errors.New("licensed: no such licence")
		}
		l.Clone, l.CloneReason, l.Fingerprints = false, "", nil
		return nil
	})
}

// GetLicence returns a licence.
func (s *Server) GetLicence(id string) (Licence, bool, error) {
	var l Licence
	var ok bool
	err := s.store.View(context.Background(), func(tx Tx) error {
		var err error
		ok, err = getJSON(tx, tLicences, "", id, &l)
		return err
	})
	return l, ok, err
}

// PutAdvisory publishes an advisory.
func (s *Server) PutAdvisory(a Advisory) error {
	if a.ID == "" || len(a.ID) > 64 || len(a.Message) > 256 || len(a.Disable) > 64 {
		return errors.New("licensed: bad advisory")
	}
	v, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.store.Update(context.Background(), "advisory "+a.ID, func(tx Tx) error { return tx.Put(tAdvisories, "", a.ID, v) })
}

// DeleteAdvisory withdraws an advisory.
func (s *Server) DeleteAdvisory(id string) error {
	return s.store.Update(context.Background(), "advisory "+id, func(tx Tx) error { return tx.Delete(tAdvisories, "", id) })
}

// Checkins lists the recorded check-ins of a licence, oldest first.
func (s *Server) Checkins(id string) ([]Checkin, error) {
	var out []Checkin
	err := s.store.View(context.Background(), func(tx Tx) error {
		return tx.List(tCheckins, id, func(_ string, v []byte) error {
			var c Checkin
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	})
	return out, err
}

func (s *Server) update(id string, fn func(*Licence, bool) error) error {
	return s.store.Update(context.Background(), id, func(tx Tx) error {
		var l Licence
		found, err := getJSON(tx, tLicences, "", id, &l)
		if err != nil {
			return err
		}
		if err := fn(&l, found); err != nil {
			return err
		}
		return putJSON(tx, tLicences, "", l.ID, l)
	})
}

// admin checks the bearer token in constant time.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if s.token == "" || !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxAdminBody)
		h(w, r)
	}
}

func (s *Server) putLicence(w http.ResponseWriter, r *http.Request) {
	var l Licence
	if err := strictjson.Decode(r.Body, maxAdminBody, &l); err != nil {
		http.Error(w, "bad licence: "+err.Error(), http.StatusBadRequest)
		return
	}
	l.ID = r.PathValue("id")
	reply(w, nil, s.PutLicence(l))
}

func (s *Server) getLicence(w http.ResponseWriter, r *http.Request) {
	l, ok, err := s.GetLicence(r.PathValue("id"))
	if err == nil && !ok {
		http.Error(w, "no such licence", http.StatusNotFound)
		return
	}
	reply(w, l, err)
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	reply(w, nil, s.update(r.PathValue("id"), func(l *Licence, exists bool) error {
		if !exists {
			return errors.New("licensed: no such licence")
		}
		l.Revoked = true
		return nil
	}))
}

func (s *Server) unflag(w http.ResponseWriter, r *http.Request) {
	reply(w, nil, s.Unflag(r.PathValue("id")))
}

func (s *Server) checkins(w http.ResponseWriter, r *http.Request) {
	c, err := s.Checkins(r.PathValue("id"))
	reply(w, c, err)
}

func (s *Server) anchors(w http.ResponseWriter, r *http.Request) {
	a, err := s.Anchors(r.PathValue("id"))
	reply(w, a, err)
}

func (s *Server) clearAnchorFlag(w http.ResponseWriter, r *http.Request) {
	reply(w, nil, s.ClearAuditFlag(r.PathValue("id"), r.PathValue("install")))
}

func (s *Server) seqs(w http.ResponseWriter, r *http.Request) {
	l, err := s.Seqs(r.PathValue("id"))
	reply(w, l, err)
}

func (s *Server) clearRollbackFlag(w http.ResponseWriter, r *http.Request) {
	reply(w, nil, s.ClearRollbackFlag(r.PathValue("id"), r.PathValue("install")))
}

func (s *Server) putAdvisory(w http.ResponseWriter, r *http.Request) {
	var a Advisory
	if err := strictjson.Decode(r.Body, maxAdminBody, &a); err != nil {
		http.Error(w, "bad advisory: "+err.Error(), http.StatusBadRequest)
		return
	}
	a.ID = r.PathValue("id")
	reply(w, nil, s.PutAdvisory(a))
}

func (s *Server) deleteAdvisory(w http.ResponseWriter, r *http.Request) {
	reply(w, nil, s.DeleteAdvisory(r.PathValue("id")))
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if v == nil {
		v = map[string]bool{"ok": true}
	}
	json.NewEncoder(w).Encode(v)
}
