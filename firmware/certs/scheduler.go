package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// ACME schedule: look twice a day (renewal is due about every two months,
// ACMEDue); after a failure retry sooner, backing off to the normal
// interval so a broken setup does not hammer the CA.
const (
	acmeCheckEvery   = 12 * time.Hour
	acmeRetryFirst   = 15 * time.Minute
	acmeOrderTimeout = 5 * time.Minute
	acmeCAClientWait = 30 * time.Second
)

// Limits of the HTTP-01 listener, open only while an order runs.
const (
	http01HeaderTimeout = 5 * time.Second
	http01ReadTimeout   = 30 * time.Second
	http01WriteTimeout  = 30 * time.Second
	http01MaxHeader     = 16 << 10
)

// Security-log kinds of the ACME scheduler (stable names).
const (
	KindACMEIssued logs.Kind = "certs.acme_issued"
	KindACMEFailed logs.Kind = "certs.acme_failed"
)

// SecurityLog receives the scheduler's security events (*logs.Log).
type SecurityLog interface {
	Record(logs.Event)
}

// AuditLog receives the scheduler's audit entries (*audit.Log).
type AuditLog interface {
	Record(audit.Event) error
	RecordTx(*store.Tx, audit.Event) error
}

// ACMESchedulerConfig is what the scheduler needs; all fields but Logger
// are required.
type ACMESchedulerConfig struct {
	DB       *store.DB
	Certs    *Manager // receives new certificates; keeps the self-signed fallback
	Security SecurityLog
	Audit    AuditLog
	Logger   *slog.Logger // nil: slog.Default()
}

// ACMEScheduler obtains and renews the box certificate by ACME as the
// stored settings (ACMESettings, edited on the admin certificates page)
// say. The admin HTTPS listener answers TLS-ALPN-01 challenges through
// Challenges (WrapServer); for HTTP-01 the scheduler opens a listener only
// while an order runs. Its status is kept in the store across restarts.
type ACMEScheduler struct {
	db       *store.DB
	certs    *Manager
	ch       *ACMEChallenges
	log      *slog.Logger
	security SecurityLog
	audit    AuditLog

	wake  chan struct{} // buffered 1: settings changed or renew now
	force atomic.Bool   // renew even if not due, at the next wake

	mu     sync.Mutex
	status ACMEStatus
}

// NewACMEScheduler loads the stored status; an order the previous process
// was running when it ended is shown as idle.
func NewACMEScheduler(c ACMESchedulerConfig) (*ACMEScheduler, error) {
	if c.DB == nil || c.Certs == nil || c.Security == nil || c.Audit == nil {
		return nil, errors.New("certs: acme scheduler needs DB, Certs, Security and Audit")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	s := &ACMEScheduler{db: c.DB, certs: c.Certs, ch: NewACMEChallenges(), log: c.Logger.With("part", "acme"),
		security: c.Security, audit: c.Audit, wake: make(chan struct{}, 1)}
	st, err := LoadACMEStatus(c.DB)
	if err != nil {
		s.log.Error("acme: stored status unreadable", "err", err)
	}
	if st.State == ACMERunning {
		st.State = ACMEIdle // the process that ran it is gone
	}
	s.status = st
	return s, nil
}

// Kick makes the scheduler look at the settings now; force renews even
// when the certificate is not due ("renew now").
func (s *ACMEScheduler) Kick(force bool) {
	if force {
		s.force.Store(true)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Status is the outcome of the last attempts, for the admin page.
func (s *ACMEScheduler) Status() ACMEStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *ACMEScheduler) setStatus(mod func(*ACMEStatus)) {
	s.mu.Lock()
	mod(&s.status)
	st := s.status
	s.mu.Unlock()
	if err := SaveACMEStatus(s.db, st); err != nil {
		s.log.Error("acme: store status", "err", err)
	}
}

// Run checks at start (so a box without its certificate asks for it at
// once), then on schedule and whenever kicked, until ctx ends. Failures
// never end it: the current certificate stays in use.
func (s *ACMEScheduler) Run(ctx context.Context) error {
	for {
		wait := s.attempt(ctx, s.force.Swap(false))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// acmeRetryAfter is the wait after the n-th failure in a row (n ≥ 1):
// 15 min, doubling, at most the normal check interval.
func acmeRetryAfter(n int) time.Duration {
	return min(acmeCheckEvery, acmeRetryFirst<<min(max(n, 1)-1, 6))
}

// attempt does one check and returns how long to wait before the next.
func (s *ACMEScheduler) attempt(ctx context.Context, force bool) time.Duration {
	set, err := LoadACMESettings(s.db)
	if err != nil {
		s.log.Error("acme: settings", "err", err)
		return acmeCheckEvery
	}
	if !set.Enabled {
		if s.Status().State != ACMEOff {
			s.setStatus(func(st *ACMEStatus) { st.State, st.NextCheck = ACMEOff, time.Time{} })
		}
		return acmeCheckEvery
	}
	now := time.Now()
	if due, why := ACMEDue(s.certs.Current(), set.Names, now); !due && !force {
		s.log.Info("acme: certificate current", "not_after", s.certs.Current().NotAfter, "next_check", now.Add(acmeCheckEvery))
		s.setStatus(func(st *ACMEStatus) {
			if st.State != ACMEFailed {
				st.State = ACMEIdle
			}
			st.NextCheck = now.Add(acmeCheckEvery)
		})
		return acmeCheckEvery
	} else if force {
		s.log.Info("acme: renewal requested by an admin", "names", set.Names)
	} else {
		s.log.Info("acme: certificate due", "reason", why, "names", set.Names)
	}
	s.setStatus(func(st *ACMEStatus) { st.State, st.LastAttempt = ACMERunning, now })
	err = s.obtain(ctx, set)
	if ctx.Err() != nil {
		// Shutting down mid-order is not a failure worth reporting.
		s.setStatus(func(st *ACMEStatus) { st.State = ACMEIdle })
		return acmeCheckEvery
	}
	target := strings.Join(set.Names, ",")
	if err != nil {
		var wait time.Duration
		s.setStatus(func(st *ACMEStatus) {
			st.State, st.LastError = ACMEFailed, err.Error()
			st.Failures++
			wait = acmeRetryAfter(st.Failures)
			st.NextCheck = time.Now().Add(wait)
		})
		s.security.Record(logs.Event{Kind: KindACMEFailed, User: target, Reason: err.Error()})
		if aerr := s.audit.Record(audit.Event{Actor: "system", Action: "certs.acme", Target: target, Outcome: audit.Failed, Detail: err.Error()}); aerr != nil {
			s.log.Error("acme: audit", "err", aerr)
		}
		s.log.Warn("acme: certificate not obtained; the current one stays in use", "err", err, "retry_in", wait)
		return wait
	}
	after := s.certs.Current() // the audit entry went in with it (obtain)
	s.setStatus(func(st *ACMEStatus) {
		st.State, st.LastError, st.Failures = ACMEIdle, "", 0
		st.LastSuccess, st.NextCheck = time.Now(), time.Now().Add(acmeCheckEvery)
	})
	s.security.Record(logs.Event{Kind: KindACMEIssued, User: target, Reason: "fingerprint " + after.Fingerprint})
	s.log.Info("acme: certificate installed", "fingerprint", after.Fingerprint, "names", after.DNSNames, "not_after", after.NotAfter)
	return acmeCheckEvery
}

// obtain runs one order with the settings' CA, answering its challenges.
func (s *ACMEScheduler) obtain(ctx context.Context, set ACMESettings) error {
	roots, err := set.Roots()
	if err != nil {
		return err
	}
	client := &http.Client{
		Timeout: acmeCAClientWait,
		Transport: &http.Transport{
			TLSClientConfig:        &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:    15 * time.Second,
			ResponseHeaderTimeout:  20 * time.Second,
			MaxResponseHeaderBytes: 16 << 10,
		},
	}
	defer client.CloseIdleConnections()
	a, err := NewACME(s.db, s.certs, ACMEConfig{
		DirectoryURL: set.DirectoryURL, Names: set.Names, Contact: set.Contact(),
		Challenge: set.Challenge, Challenges: s.ch, HTTPClient: client, Logger: s.log,
		Installed: func(tx *store.Tx, before, after Info) error {
			return s.audit.RecordTx(tx, audit.Event{Actor: "system", Action: "certs.acme", Target: strings.Join(set.Names, ","), Before: before, After: after})
		},
	})
	if err != nil {
		return err
	}
	if set.Challenge == ChallengeHTTP01 {
		stop, err := s.serveHTTP01(set.HTTPAddr)
		if err != nil {
			return err
		}
		defer stop()
	}
	octx, cancel := context.WithTimeout(ctx, acmeOrderTimeout)
	defer cancel()
	return a.Obtain(octx)
}

// serveHTTP01 listens on addr for the CA's HTTP-01 fetches while an order
// runs; it answers nothing else.
func (s *ACMEScheduler) serveHTTP01(addr string) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("acme: http-01 listener %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           s.ch.HTTPHandler(nil),
		ReadHeaderTimeout: http01HeaderTimeout,
		ReadTimeout:       http01ReadTimeout,
		WriteTimeout:      http01WriteTimeout,
		MaxHeaderBytes:    http01MaxHeader,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("acme: http-01 listener", "err", err)
		}
	}()
	return func() { srv.Close(); <-done }, nil
}

// WrapServer makes srv (the admin HTTPS server) answer the CA's
// TLS-ALPN-01 hellos with the challenge certificate while one is pending,
// and end those connections after the handshake.
func (s *ACMEScheduler) WrapServer(srv *http.Server) {
	srv.TLSConfig = s.ch.TLSConfig(srv.TLSConfig)
	if srv.TLSNextProto == nil {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	srv.TLSNextProto[ALPNProto] = func(_ *http.Server, c *tls.Conn, _ http.Handler) { c.Close() }
}
