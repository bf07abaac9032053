package admin

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
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
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		s.expireTLSChange() // a change past its deadline must not serve this connection
		return s.tlsCur.Load(), nil
	}
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
	Pending    *TLSPendingView `json:"pending,omitempty"`
	Current    certs.Info      `json:"current"`
	SelfSigned certs.Info      `json:"self_signed"`
	DaysLeft   int             `json:"days_left"`
	TLS        TLSSettings     `json:"tls"`
	KeyLogOn   bool            `json:"keylog_on"`
	KeyLogTill time.Time       `json:"keylog_until,omitzero"`
	KeyLogSize int             `json:"keylog_bytes"`
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
	st := certStatus{Pending: s.tlsPendingView(), Current: cur, SelfSigned: s.certs.SelfSigned(), TLS: t,
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
	s.tlsc.mu.Lock()
	defer s.tlsc.mu.Unlock()
	if err := s.tlsChangeFreeLocked(); err != nil {
		return err
	}
	b, err := certs.ParsePEM([]byte(req.ChainPEM), []byte(req.KeyPEM))
	ch := s.newTLSChange(&tlsChange{Kind: changeCertificate})
	if err == nil {
		// The pending certificate and its audit entry are one transaction.
		ch.Cert, err = s.certs.InstallPendingWith(b, names, certs.SourceUpload, func(tx *store.Tx, after certs.Info) error {
			return s.audit.RecordTx(tx, audit.Event{Actor: p.Actor(), Source: src(r), Action: "certs.upload", Target: strings.Join(names, ","),
				Detail: "pending until " + ch.Deadline.UTC().Format(time.RFC3339), Before: before, After: after})
		})
	}
	if err != nil {
		_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "certs.upload", Outcome: audit.Failed,
			Target: strings.Join(names, ","), Detail: err.Error()})
		if errors.Is(err, certs.ErrPending) {
			err = fmt.Errorf("%w: %w", errConflict, err)
		}
		return err
	}
	s.beginTLSChangeLocked(ch)
	s.answerPending(w, ch)
	return nil
}

func (s *Server) apiRollbackCertificate(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.certs == nil {
		return errUnavailable
	}
	s.tlsc.mu.Lock()
	defer s.tlsc.mu.Unlock()
	if err := s.tlsChangeFreeLocked(); err != nil {
		return err
	}
	before := s.certs.Current()
	if before.Source == certs.SourceSelfSigned {
		return fmt.Errorf("%w: already serving the self-signed certificate", errConflict)
	}
	err := s.certs.RollbackWith(func(tx *store.Tx, was, now certs.Info) error {
		return s.audit.RecordTx(tx, audit.Event{Actor: p.Actor(), Source: src(r), Action: "certs.rollback", Before: was, After: now})
	})
	if err != nil {
		return err
	}
	after := s.certs.Current()
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
	s.tlsc.mu.Lock()
	defer s.tlsc.mu.Unlock()
	if err := s.tlsChangeFreeLocked(); err != nil {
		return err
	}
	old, err := s.tlsSettings()
	if err != nil {
		return err
	}
	s.tlsCur.Store(cfg) // new connections from now on; stored only when confirmed
	ch := s.beginTLSChangeLocked(&tlsChange{Kind: changeTLSVersions, Old: old, New: req})
	_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "tls.versions.update", Before: old, After: req,
		Detail: "pending until " + ch.Deadline.UTC().Format(time.RFC3339)})
	s.answerPending(w, ch)
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

// Commit only when healthy, for the admin HTTPS itself: an uploaded
// certificate or a TLS version change is applied at once (new connections
// get it) but kept only if the admin confirms it, within tlsConfirmWindow,
// from a connection opened after the change, which proves a browser still
// gets through with the new settings. Otherwise it is reverted: by a timer,
// and by the next handshake or request that finds the deadline passed (the
// server's clock decides, so tests drive it with a fake clock). The answer
// to the change closes its connection, as for firewall changes (policy.go).

// tlsConfirmWindow is how long a change waits for its confirmation.
const tlsConfirmWindow = 120 * time.Second

// Kinds of pending change.
const (
	changeCertificate = "certificate"
	changeTLSVersions = "tls-versions"
)

type tlsChange struct {
	ID       string
	Kind     string
	Deadline time.Time
	Cert     certs.Info  // certificate: the one being tried
	Old, New TLSSettings // tls-versions
	timer    *time.Timer
}

// tlsCommit holds the one change that may be pending at a time.
type tlsCommit struct {
	mu  sync.Mutex
	cur *tlsChange
}

// TLSPendingView shows a pending change on the certificates page and API.
type TLSPendingView struct {
	ID          string       `json:"id"`
	Kind        string       `json:"kind"` // "certificate" | "tls-versions"
	Deadline    time.Time    `json:"deadline"`
	RevertIn    int          `json:"revert_in_seconds"`
	Certificate *certs.Info  `json:"certificate,omitempty"`
	TLS         *TLSSettings `json:"tls,omitempty"`
}

func (s *Server) tlsPendingView() *TLSPendingView {
	s.tlsc.mu.Lock()
	defer s.tlsc.mu.Unlock()
	ch := s.currentTLSChangeLocked()
	if ch == nil {
		return nil
	}
	v := &TLSPendingView{ID: ch.ID, Kind: ch.Kind, Deadline: ch.Deadline,
		RevertIn: max(0, int(ch.Deadline.Sub(s.clock.Now()).Round(time.Second)/time.Second))}
	if ch.Kind == changeCertificate {
		v.Certificate = &ch.Cert
	} else {
		v.TLS = &ch.New
	}
	return v
}

// tlsChangeFreeLocked refuses a new change while one is pending.
func (s *Server) tlsChangeFreeLocked() error {
	if ch := s.currentTLSChangeLocked(); ch != nil {
		return fmt.Errorf("%w: a %s change awaits confirmation for %s more; confirm or revert it first", errConflict,
			ch.Kind, ch.Deadline.Sub(s.clock.Now()).Round(time.Second))
	}
	return nil
}

// newTLSChange gives ch its id and deadline, so that they can go into the
// audit entry written with the change, before beginTLSChangeLocked starts it.
func (s *Server) newTLSChange(ch *tlsChange) *tlsChange {
	ch.ID = hex.EncodeToString(randomID())
	ch.Deadline = s.clock.Now().Add(tlsConfirmWindow)
	return ch
}

func (s *Server) beginTLSChangeLocked(ch *tlsChange) *tlsChange {
	if ch.ID == "" {
		s.newTLSChange(ch)
	}
	s.markPending(ch.ID)
	ch.timer = time.AfterFunc(tlsConfirmWindow, s.expireTLSChange)
	s.tlsc.cur = ch
	s.log.Warn("admin: TLS change pending confirmation", "kind", ch.Kind, "id", ch.ID, "deadline", ch.Deadline)
	return ch
}

func randomID() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand does not fail on Linux
	return b
}

// expireTLSChange reverts the pending change once its deadline has passed.
func (s *Server) expireTLSChange() {
	s.tlsc.mu.Lock()
	defer s.tlsc.mu.Unlock()
	s.currentTLSChangeLocked()
}

// currentTLSChangeLocked returns the pending change, reverting it first if
// its time is up.
func (s *Server) currentTLSChangeLocked() *tlsChange {
	ch := s.tlsc.cur
	if ch == nil || s.clock.Now().Before(ch.Deadline) {
		return ch
	}
	s.revertTLSChangeLocked("-", "", "not confirmed within "+tlsConfirmWindow.String())
	return nil
}

func (s *Server) revertTLSChangeLocked(actor, source, why string) {
	ch := s.tlsc.cur
	s.tlsc.cur = nil
	ch.timer.Stop()
	ev := audit.Event{Actor: actor, Source: source, Target: ch.ID, Outcome: audit.Warning, Detail: "reverted: " + why}
	recorded := false
	switch ch.Kind {
	case changeCertificate:
		ev.Action, ev.Before = "certs.revert", ch.Cert
		// The revert and its audit entry are one transaction. The revert is
		// the way back to a reachable box, so if that fails it is retried
		// alone and audited separately.
		err := s.certs.RevertPendingWith(func(tx *store.Tx, after certs.Info) error {
			e := ev
			e.After = after
			return s.audit.RecordTx(tx, e)
		})
		recorded = err == nil
		if err != nil && !errors.Is(err, certs.ErrNoPending) {
			if err = s.certs.RevertPending(); err != nil && !errors.Is(err, certs.ErrNoPending) {
				s.log.Error("admin: revert certificate", "err", err)
				ev.Outcome, ev.Detail = audit.Failed, ev.Detail+": "+err.Error()
			}
		}
		ev.After = s.certs.Current()
	case changeTLSVersions:
		ev.Action, ev.Before, ev.After = "tls.versions.revert", ch.New, ch.Old
		cfg, err := s.buildTLS(ch.Old)
		if err != nil {
			cfg, err = s.buildTLS(DefaultTLSSettings())
		}
		if err != nil {
			s.log.Error("admin: revert TLS versions", "err", err)
			ev.Outcome, ev.Detail = audit.Failed, ev.Detail+": "+err.Error()
		} else {
			s.tlsCur.Store(cfg)
		}
	}
	s.log.Warn("admin: TLS change reverted", "kind", ch.Kind, "id", ch.ID, "why", why)
	if !recorded {
		_ = s.audit.Record(ev)
	}
}

func (s *Server) answerPending(w http.ResponseWriter, ch *tlsChange) {
	// Close this connection: the confirmation must come on a new one.
	w.Header().Set("Connection", "close")
	writeJSON(w, http.StatusAccepted, PendingAnswer{Status: "pending", ID: ch.ID, Deadline: ch.Deadline,
		RevertIn: int(tlsConfirmWindow / time.Second)})
}

// errOldSettings refuses a confirmation from a connection that did not use
// the new settings.
var errOldSettings = errors.New("confirm over a connection that uses the new settings")

// checkNewSettings makes sure the confirming connection was served what is
// being confirmed: a version inside the new range, and a certificate
// covering the name the browser asked for (otherwise that connection got
// the self-signed fallback and proves nothing about the new one).
func checkNewSettings(r *http.Request, ch *tlsChange) error {
	if r.TLS == nil {
		return nil // plain HTTP only in make dev and handler tests
	}
	switch ch.Kind {
	case changeTLSVersions:
		lo, hi, err := ch.New.versions()
		if err != nil || r.TLS.Version < lo || r.TLS.Version > hi {
			return fmt.Errorf("%w: %w: this connection uses %s", errConflict, errOldSettings, tls.VersionName(r.TLS.Version))
		}
	case changeCertificate:
		if n := r.TLS.ServerName; n != "" && !infoCovers(ch.Cert, n) {
			return fmt.Errorf("%w: %w: the new certificate does not cover %q, so this connection got the fallback; open the box by a name it covers", errConflict, errOldSettings, n)
		}
	}
	return nil
}

// infoCovers reports whether name matches one of the certificate's names
// (one wildcard label allowed, as in x509.VerifyHostname).
func infoCovers(c certs.Info, name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for _, ip := range c.IPs {
		if ip == name {
			return true
		}
	}
	for _, d := range c.DNSNames {
		d = strings.ToLower(d)
		if d == name {
			return true
		}
		if rest, ok := strings.CutPrefix(d, "*."); ok {
			if _, tail, found := strings.Cut(name, "."); found && tail == rest {
				return true
			}
		}
	}
	return false
}

func (s *Server) apiConfirmTLSChange(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.certs == nil {
		return errUnavailable
	}
	var req ConfirmRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	s.tlsc.mu.Lock()
	defer s.tlsc.mu.Unlock()
	ch := s.currentTLSChangeLocked()
	if ch == nil || ch.ID != req.ID {
		return fmt.Errorf("%w: no pending change %.40q (it may have been reverted)", errConflict, req.ID)
	}
	if err := s.newConnSince(r, ch.ID); err != nil {
		s.refuse(r, p, "tls.confirm_refused", err.Error())
		return fmt.Errorf("%w: %w", errConflict, err)
	}
	if err := checkNewSettings(r, ch); err != nil {
		s.refuse(r, p, "tls.confirm_refused", err.Error())
		return err
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Target: ch.ID}
	switch ch.Kind {
	case changeCertificate:
		ev.Action, ev.After = "certs.confirm", ch.Cert
		if err := s.certs.ConfirmPendingWith(func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
			return err
		}
	case changeTLSVersions:
		ev.Action, ev.Before, ev.After = "tls.versions.confirm", ch.Old, ch.New
		err := s.db.Update(func(tx *store.Tx) error {
			if err := tx.Put(bSettings, "tls", ch.New); err != nil {
				return err
			}
			return s.audit.RecordTx(tx, ev)
		})
		if err != nil {
			return err
		}
	}
	ch.timer.Stop()
	s.tlsc.cur = nil
	writeJSON(w, http.StatusOK, map[string]string{"status": "confirmed"})
	return nil
}

func (s *Server) apiRevertTLSChange(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.certs == nil {
		return errUnavailable
	}
	s.tlsc.mu.Lock()
	defer s.tlsc.mu.Unlock()
	if s.currentTLSChangeLocked() == nil {
		return fmt.Errorf("%w: nothing pending", errConflict)
	}
	s.revertTLSChangeLocked(p.Actor(), src(r), "by the admin")
	writeJSON(w, http.StatusOK, map[string]string{"status": "reverted"})
	return nil
}
