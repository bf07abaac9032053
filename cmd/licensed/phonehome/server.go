// Package server is the reference vendor licence server behind cmd/licensed:
// it issues licences, records check-ins in bbolt, flags clones, publishes
// advisories and signs every answer with the vendor's Ed25519 key.
package phonehome

import (
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
}

// Server answers check-ins and the admin API.
type Server struct {
	db    *bolt.DB
	priv  ed25519.PrivateKey
	token string
	now   func() time.Time
	log   *slog.Logger
	// tickets are the TLS sessions behind the tickets boxes hold (tls.go).
	tickets sessions
}

// New prepares the buckets. adminToken protects /admin/ (empty disables it);
// now is the server's clock (tests pass a fake one).
func New(db *bolt.DB, priv ed25519.PrivateKey, adminToken string, now func() time.Time, log *slog.Logger) (*Server, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, errors.New("licensed: bad signing key")
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{bLicences, bAdvisories, bCheckins, bAnchors, bSeqs} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("licensed: buckets: %w", err)
	}
	return &Server{db: db, priv: priv, token: adminToken, now: now, log: log}, nil
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
	resp, err := s.Answer(&req, len(body))
	if err != nil {
		s.log.Error("check-in", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	out, err := license.SignResponse(s.priv, resp)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	// No Date and no Content-Type (nil stops net/http adding them): the box
	// reads one signed envelope from this path and nothing else, and every
	// header is paid for in its daily byte budget.
	h := w.Header()
	h["Date"], h["Content-Type"] = nil, nil
	w.Write(out)
}

// Answer records a validated check-in and builds the (unsigned) response.
func (s *Server) Answer(req *license.Request, size int) (*license.Response, error) {
	now := s.now().UTC()
	if req.RestoredFrom != "" {
		s.log.Info("box reports data restored from another box's backup", "serial", req.Serial, "install", req.InstallID,
			"licence", req.LicenceID, "restored_from", req.RestoredFrom)
	}
	resp := &license.Response{V: license.ProtocolVersion, Nonce: req.Nonce, Serial: req.Serial,
		InstallID: req.InstallID, LicenceID: req.LicenceID, ServerTime: now.Unix()} // Perf empty: ok
	err := s.db.Update(func(tx *bolt.Tx) error {
		lb := tx.Bucket([]byte(bLicences))
		var lic Licence
		raw := lb.Get([]byte(req.LicenceID))
		if raw == nil {
			resp.Status = license.StatusUnknown
		} else if err := json.Unmarshal(raw, &lic); err != nil {
			return fmt.Errorf("decode licence %s: %w", req.LicenceID, err)
		}
		if raw != nil {
			if !slices.Contains(lic.Fingerprints, req.Fingerprint) {
				if len(lic.Fingerprints) < maxFingerprints {
					lic.Fingerprints = append(lic.Fingerprints, req.Fingerprint)
				}
				if len(lic.Fingerprints) > 1 && !lic.Clone {
					lic.Clone = true
					lic.CloneReason = fmt.Sprintf("licence %s seen from %d different hardware fingerprints", lic.ID, len(lic.Fingerprints))
					s.log.Warn("clone flagged", "licence", lic.ID, "fingerprints", len(lic.Fingerprints))
				}
			}
			switch {
			case lic.Revoked:
				resp.Status = license.StatusRevoked
			case now.After(lic.ValidUntil):
				resp.Status = license.StatusExpired
			default:
				resp.Status = license.StatusOK
			}
			resp.ValidUntil = lic.ValidUntil.Unix()
			resp.Entitlements = license.Entitlements{MaxExtensions: lic.MaxExtensions, MaxTrunks: lic.MaxTrunks, Features: lic.Features}
			resp.Clone, resp.CloneReason = lic.Clone, lic.CloneReason
			v, err := json.Marshal(lic)
			if err != nil {
				return err
			}
			if err := lb.Put([]byte(lic.ID), v); err != nil {
				return err
			}
			if err := s.anchor(tx, req, now, resp); err != nil {
				return err
			}
			if err := s.checkSeq(tx, req, now, resp); err != nil {
				return err
			}
		}
		err := tx.Bucket([]byte(bAdvisories)).ForEach(func(_, v []byte) error {
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
		rec, err := json.Marshal(Checkin{Time: now, Serial: req.Serial, InstallID: req.InstallID,
			Fingerprint: req.Fingerprint, Firmware: req.Firmware, OfflineDays: req.OfflineDays, CertExpiry: req.CertNotAfter,
			Load: req.Load, Counts: req.Counts, Bytes: size})
		if err != nil {
			return err
		}
		cb, err := tx.Bucket([]byte(bCheckins)).CreateBucketIfNotExists([]byte(req.LicenceID))
		if err != nil {
			return err
		}
		seq, _ := cb.NextSequence()
		return cb.Put(fmt.Appendf(nil, "%020d", seq), rec)
	})
	if err != nil {
		return nil, fmt.Errorf("licensed: record check-in: %w", err)
	}
	return resp, nil
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
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket([]byte(bLicences)).Get([]byte(id))
		if raw == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(raw, &l)
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
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bAdvisories)).Put([]byte(a.ID), v) })
}

// DeleteAdvisory withdraws an advisory.
func (s *Server) DeleteAdvisory(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bAdvisories)).Delete([]byte(id)) })
}

// Checkins lists the recorded check-ins of a licence, oldest first.
func (s *Server) Checkins(id string) ([]Checkin, error) {
	var out []Checkin
	err := s.db.View(func(tx *bolt.Tx) error {
		cb := tx.Bucket([]byte(bCheckins)).Bucket([]byte(id))
		if cb == nil {
			return nil
		}
		return cb.ForEach(func(_, v []byte) error {
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
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bLicences))
		var l Licence
		raw := b.Get([]byte(id))
		if raw != nil {
			if err := json.Unmarshal(raw, &l); err != nil {
				return err
			}
		}
		if err := fn(&l, raw != nil); err != nil {
			return err
		}
		v, err := json.Marshal(l)
		if err != nil {
			return err
		}
		return b.Put([]byte(l.ID), v)
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
