package admin

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// maxCertBody bounds a certificate upload: the largest chain and key
// certs accepts, JSON-escaped, plus the names.
const maxCertBody = 2*(certs.MaxChainPEM+certs.MaxKeyPEM) + 8<<10

// errUnavailable answers features whose backing part this edgepbxd lacks
// (no PID 1 in dev mode, no certificate manager in a test).
var errUnavailable = errors.New("not available on this box")

// TLSSettings are the admin HTTPS versions, stored in admin.settings "tls".
type TLSSettings struct {
	MinVersion string `json:"min_version"` // "1.2" | "1.3"
	MaxVersion string `json:"max_version"` // "1.2" | "1.3"
}

var tlsVersions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

// DefaultTLSSettings is the secure default: TLS 1.2 to 1.3.
func DefaultTLSSettings() TLSSettings { return TLSSettings{MinVersion: "1.2", MaxVersion: "1.3"} }

func (t TLSSettings) versions() (uint16, uint16, error) {
	lo, ok1 := tlsVersions[t.MinVersion]
	hi, ok2 := tlsVersions[t.MaxVersion]
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("%w: TLS versions must be \"1.2\" or \"1.3\"", errBadRequest)
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("%w: TLS minimum %s is above the maximum %s", errBadRequest, t.MinVersion, t.MaxVersion)
	}
	return lo, hi, nil
}

func (s *Server) tlsSettings() (TLSSettings, error) {
	t := DefaultTLSSettings()
	err := s.db.View(func(tx *store.Tx) error { _, err := tx.Get(bSettings, "tls", &t); return err })
	return t, err
}

// buildTLS makes the per-connection configuration for settings t.
func (s *Server) buildTLS(t TLSSettings) (*tls.Config, error) {
	lo, hi, err := t.versions()
	if err != nil {
		return nil, err
	}
	cfg, err := s.certs.TLSConfig(lo, hi)
	if err != nil {
		return nil, err
	}
	if s.keylog != nil {
		cfg.KeyLogWriter = s.keylog
	}
	return cfg, nil
}

// TLSConfig is the admin HTTPS server's configuration: the certificate
// manager's suites and certificates, with the stored version range applied
// to every new connection (so a change needs no restart) and the key log
// attached. It needs Deps.Certs.
func (s *Server) TLSConfig() (*tls.Config, error) {
	if s.certs == nil {
		return nil, fmt.Errorf("admin: TLS config: %w (no certificate manager)", errUnavailable)
	}
	t, err := s.tlsSettings()
	if err != nil {
		return nil, fmt.Errorf("admin: TLS settings: %w", err)
	}
	cur, err := s.buildTLS(t)
	if err != nil {
		// A stored setting this build refuses must not keep HTTPS down:
		// fall back to the defaults, loudly.
		s.log.Error("admin: stored TLS settings refused; using 1.2-1.3", "err", err)
		if cur, err = s.buildTLS(DefaultTLSSettings()); err != nil {
			return nil, err
		}
	}
	s.tlsCur.Store(cur)
	base := cur.Clone()
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.tlsCur.Load(), nil }
	return base, nil
}

// certNames are the names an upload must cover: the ones given, or else
// the name the admin reached the box by.
func certNames(r *http.Request, given []string) ([]string, error) {
	if len(given) > 16 {
		return nil, fmt.Errorf("%w: at most 16 names", errBadRequest)
	}
	var out []string
	for _, n := range given {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" {
			continue
		}
		if len(n) > 253 || strings.ContainsAny(n, "/@ \t\\") {
			return nil, fmt.Errorf("%w: invalid name %.60q", errBadRequest, n)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.Trim(strings.ToLower(host), "[]")
		if host == "" || len(host) > 253 {
			return nil, fmt.Errorf("%w: say which names the certificate is for", errBadRequest)
		}
		out = []string{host}
	}
	return out, nil
}

// CertificateRequest is the body of POST /api/v1/certificates.
type CertificateRequest struct {
	ChainPEM string   `json:"chain_pem"` // leaf first, then intermediates
	KeyPEM   string   `json:"key_pem"`   // unencrypted PKCS#8, SEC 1 or PKCS#1
	Names    []string `json:"names,omitempty"`
}

type certStatus struct {
	Current    certs.Info  `json:"current"`
	SelfSigned certs.Info  `json:"self_signed"`
	DaysLeft   int         `json:"days_left"`
	TLS        TLSSettings `json:"tls"`
	KeyLogOn   bool        `json:"keylog_on"`
	KeyLogTill time.Time   `json:"keylog_until,omitzero"`
	KeyLogSize int         `json:"keylog_bytes"`
}

func (s *Server) certStatus() (certStatus, error) {
	if s.certs == nil {
		return certStatus{}, errUnavailable
	}
	t, err := s.tlsSettings()
	if err != nil {
		return certStatus{}, err
	}
	cur := s.certs.Current()
	st := certStatus{Current: cur, SelfSigned: s.certs.SelfSigned(), TLS: t,
		DaysLeft: int(cur.NotAfter.Sub(s.clock.Now()).Hours() / 24)}
	if s.keylog != nil {
		st.KeyLogOn, st.KeyLogTill, st.KeyLogSize = s.keylog.Status()
	}
	return st, nil
}

func (s *Server) certData(r *http.Request, p auth.Principal) (any, error) {
	st, err := s.certStatus()
	if errors.Is(err, errUnavailable) {
		return map[string]any{"Unavailable": true}, nil
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"S": st, "Versions": []string{"1.2", "1.3"}}, nil
}

func (s *Server) apiCertificates(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	st, err := s.certStatus()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) apiUploadCertificate(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.certs == nil {
		return errUnavailable
	}
	var req CertificateRequest
	if err := decodeJSONLimit(r, &req, maxCertBody); err != nil {
		return err
	}
	names, err := certNames(r, req.Names)
	if err != nil {
		return err
	}
	before := s.certs.Current()
	b, err := certs.ParsePEM([]byte(req.ChainPEM), []byte(req.KeyPEM))
	if err == nil {
		err = s.certs.Install(b, names, certs.SourceUpload)
	}
	if err != nil {
		_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "certs.upload", Outcome: audit.Failed,
			Target: strings.Join(names, ","), Detail: err.Error()})
		return err
	}
	after := s.certs.Current()
	if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "certs.upload", Target: strings.Join(names, ","),
		Before: before, After: after}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "certificate installed", "current": after})
	return nil
}

func (s *Server) apiRollbackCertificate(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.certs == nil {
		return errUnavailable
	}
	before := s.certs.Current()
	if before.Source == certs.SourceSelfSigned {
		return fmt.Errorf("%w: already serving the self-signed certificate", errConflict)
	}
	if err := s.certs.Rollback(); err != nil {
		return err
	}
	after := s.certs.Current()
	if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "certs.rollback", Before: before, After: after}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "rolled back", "current": after})
	return nil
}

func (s *Server) apiSetTLS(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.certs == nil {
		return errUnavailable
	}
	var req TLSSettings
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	cfg, err := s.buildTLS(req)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *store.Tx) error {
		old := DefaultTLSSettings()
		if _, err := tx.Get(bSettings, "tls", &old); err != nil {
			return err
		}
		if err := tx.Put(bSettings, "tls", req); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: p.Actor(), Source: src(r), Action: "tls.versions.update", Before: old, After: req})
	})
	if err != nil {
		return err
	}
	s.tlsCur.Store(cfg) // new connections from now on
	writeJSON(w, http.StatusOK, map[string]string{"status": "saved"})
	return nil
}

// KeyLogRequest is the body of POST /api/v1/certificates/keylog.
type KeyLogRequest struct {
	Minutes int `json:"minutes"` // 1..1440
}

func (s *Server) apiKeyLogOn(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.keylog == nil {
		return errUnavailable
	}
	var req KeyLogRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Minutes < 1 || req.Minutes > int(certs.MaxKeyLogDuration/time.Minute) {
		return fmt.Errorf("%w: minutes must be 1..%d", errBadRequest, int(certs.MaxKeyLogDuration/time.Minute))
	}
	until, err := s.keylog.Enable(time.Duration(req.Minutes) * time.Minute)
	if err != nil {
		return err
	}
	_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "tls.keylog.enable", Outcome: audit.Warning,
		Detail: "TLS key log on until " + until.UTC().Format(time.RFC3339)})
	writeJSON(w, http.StatusOK, map[string]any{"status": "TLS key log on", "until": until})
	return nil
}

func (s *Server) apiKeyLogOff(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.keylog == nil {
		return errUnavailable
	}
	s.keylog.Disable()
	_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "tls.keylog.disable"})
	writeJSON(w, http.StatusOK, map[string]string{"status": "TLS key log off and erased"})
	return nil
}

func (s *Server) apiKeyLogDownload(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.keylog == nil {
		return errUnavailable
	}
	b, ok := s.keylog.Contents()
	if !ok {
		return fmt.Errorf("%w: the TLS key log is off", errConflict)
	}
	_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "tls.keylog.download", Outcome: audit.Warning,
		Detail: fmt.Sprintf("%d bytes", len(b))})
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="edgepbx-tls-keylog.txt"`)
	_, err := w.Write(b)
	return err
}

// keyLogBanner is shown on every page while the key log runs.
func (s *Server) keyLogBanner() string {
	if s.keylog == nil {
		return ""
	}
	on, until, _ := s.keylog.Status()
	if !on {
		return ""
	}
	return until.UTC().Format("2006-01-02 15:04 UTC")
}
