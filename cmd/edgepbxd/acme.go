package main

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
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// ACME loop timing: look twice a day (renewal is due about every two
// months, certs.ACMEDue); after a failure retry sooner, backing off to the
// normal interval so a broken setup does not hammer the CA.
const (
	acmeCheckEvery   = 12 * time.Hour
	acmeRetryFirst   = 15 * time.Minute
	acmeOrderTimeout = 5 * time.Minute
	acmeCAClientWait = 30 * time.Second
)

// Security-log kinds of the ACME loop (stable names, like firmware/logs').
const (
	kindACMEIssued logs.Kind = "certs.acme_issued"
	kindACMEFailed logs.Kind = "certs.acme_failed"
)

// acmeRunner obtains and renews the box certificate by ACME as the stored
// settings (certs.ACMESettings, edited on the admin certificates page) say.
// The challenges it answers are served by the admin HTTPS listener
// (TLS-ALPN-01, wired in serveHTTPS) or, for HTTP-01, by a listener it
// opens only while an order runs. New certificates go to the certificate
// manager, which keeps the self-signed one as fallback.
type acmeRunner struct {
	db     *store.DB
	certs  *certs.Manager
	ch     *certs.ACMEChallenges
	log    *slog.Logger
	secLog func(logs.Event)
	audit  func(audit.Event) error

	wake  chan struct{} // buffered 1: settings changed or renew now
	force atomic.Bool   // renew even if not due, at the next wake

	mu     sync.Mutex
	status certs.ACMEStatus
}

// newACME builds the ACME loop; it adds the stored public names to the
// names the admin side accepts as its own origin (they reach this box).
func (d *daemon) newACME() *acmeRunner {
	r := &acmeRunner{
		db: d.db, certs: d.certs, ch: certs.NewACMEChallenges(), log: d.log.With("part", "acme"),
		secLog: func(e logs.Event) {
			if d.secLog != nil {
				d.secLog.Record(e)
			}
		},
		audit: func(e audit.Event) error {
			if d.admin == nil {
				return nil
			}
			return d.admin.Audit().Record(e)
		},
		wake: make(chan struct{}, 1),
	}
	st, err := certs.LoadACMEStatus(d.db)
	if err != nil {
		r.log.Error("acme: stored status unreadable", "err", err)
	}
	if st.State == certs.ACMERunning {
		st.State = certs.ACMEIdle // the process that ran it is gone
	}
	r.status = st
	if set, err := certs.LoadACMESettings(d.db); err == nil && set.Enabled {
		d.names = append(d.names, set.Names...)
	}
	return r
}

// Kick makes the loop look at the settings now; force renews even when
// the certificate is not due ("renew now").
func (r *acmeRunner) Kick(force bool) {
	if force {
		r.force.Store(true)
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Status is the outcome of the last attempts, for the admin page.
func (r *acmeRunner) Status() certs.ACMEStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

func (r *acmeRunner) setStatus(mod func(*certs.ACMEStatus)) {
	r.mu.Lock()
	mod(&r.status)
	st := r.status
	r.mu.Unlock()
	if err := certs.SaveACMEStatus(r.db, st); err != nil {
		r.log.Error("acme: store status", "err", err)
	}
}

// run checks at start (so a box without its certificate asks for it at
// once), then on schedule and whenever kicked, until ctx ends. Failures
// never stop edgepbxd: the current certificate stays in use.
func (r *acmeRunner) run(ctx context.Context) error {
	for {
		wait := r.attempt(ctx, r.force.Swap(false))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// attempt does one check and returns how long to wait before the next.
func (r *acmeRunner) attempt(ctx context.Context, force bool) time.Duration {
	set, err := certs.LoadACMESettings(r.db)
	if err != nil {
		r.log.Error("acme: settings", "err", err)
		return acmeCheckEvery
	}
	if !set.Enabled {
		if r.Status().State != certs.ACMEOff {
			r.setStatus(func(s *certs.ACMEStatus) { s.State, s.NextCheck = certs.ACMEOff, time.Time{} })
		}
		return acmeCheckEvery
	}
	now := time.Now()
	if due, why := certs.ACMEDue(r.certs.Current(), set.Names, now); !due && !force {
		r.log.Info("acme: certificate current", "not_after", r.certs.Current().NotAfter, "next_check", now.Add(acmeCheckEvery))
		r.setStatus(func(s *certs.ACMEStatus) {
			if s.State != certs.ACMEFailed {
				s.State = certs.ACMEIdle
			}
			s.NextCheck = now.Add(acmeCheckEvery)
		})
		return acmeCheckEvery
	} else if force {
		r.log.Info("acme: renewal requested by an admin", "names", set.Names)
	} else {
		r.log.Info("acme: certificate due", "reason", why, "names", set.Names)
	}
	r.setStatus(func(s *certs.ACMEStatus) { s.State, s.LastAttempt = certs.ACMERunning, now })
	before := r.certs.Current()
	err = r.obtain(ctx, set)
	if ctx.Err() != nil {
		// Shutting down mid-order is not a failure worth reporting.
		r.setStatus(func(s *certs.ACMEStatus) { s.State = certs.ACMEIdle })
		return acmeCheckEvery
	}
	target := strings.Join(set.Names, ",")
	if err != nil {
		var wait time.Duration
		r.setStatus(func(s *certs.ACMEStatus) {
			s.State, s.LastError = certs.ACMEFailed, err.Error()
			s.Failures++
			wait = min(acmeCheckEvery, acmeRetryFirst<<min(s.Failures-1, 6))
			s.NextCheck = time.Now().Add(wait)
		})
		r.secLog(logs.Event{Kind: kindACMEFailed, User: target, Reason: err.Error()})
		if aerr := r.audit(audit.Event{Actor: "system", Action: "certs.acme", Target: target, Outcome: audit.Failed, Detail: err.Error()}); aerr != nil {
			r.log.Error("acme: audit", "err", aerr)
		}
		r.log.Warn("acme: certificate not obtained; the current one stays in use", "err", err, "retry_in", wait)
		return wait
	}
	after := r.certs.Current()
	r.setStatus(func(s *certs.ACMEStatus) {
		s.State, s.LastError, s.Failures = certs.ACMEIdle, "", 0
		s.LastSuccess, s.NextCheck = time.Now(), time.Now().Add(acmeCheckEvery)
	})
	r.secLog(logs.Event{Kind: kindACMEIssued, User: target, Reason: "fingerprint " + after.Fingerprint})
	if aerr := r.audit(audit.Event{Actor: "system", Action: "certs.acme", Target: target, Before: before, After: after}); aerr != nil {
		r.log.Error("acme: audit", "err", aerr)
	}
	r.log.Info("acme: certificate installed", "fingerprint", after.Fingerprint, "names", after.DNSNames, "not_after", after.NotAfter)
	return acmeCheckEvery
}

// obtain runs one order with the settings' CA, answering its challenges.
func (r *acmeRunner) obtain(ctx context.Context, set certs.ACMESettings) error {
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
	a, err := certs.NewACME(r.db, r.certs, certs.ACMEConfig{
		DirectoryURL: set.DirectoryURL, Names: set.Names, Contact: set.Contact(),
		Challenge: set.Challenge, Challenges: r.ch, HTTPClient: client, Logger: r.log,
	})
	if err != nil {
		return err
	}
	if set.Challenge == certs.ChallengeHTTP01 {
		stop, err := r.serveHTTP01(set.HTTPAddr)
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
func (r *acmeRunner) serveHTTP01(addr string) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("acme: http-01 listener %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           r.ch.HTTPHandler(nil),
		ReadHeaderTimeout: httpsHeaderTimeout,
		ReadTimeout:       httpsReadTimeout,
		WriteTimeout:      httpsWriteTimeout,
		MaxHeaderBytes:    httpsMaxHeader,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Warn("acme: http-01 listener", "err", err)
		}
	}()
	return func() { srv.Close(); <-done }, nil
}

// acmeTLS wraps the admin HTTPS configuration so that the CA's
// TLS-ALPN-01 hellos get the challenge certificate (only while one is
// pending), and ends those connections after the handshake.
func (r *acmeRunner) acmeTLS(srv *http.Server) {
	srv.TLSConfig = r.ch.TLSConfig(srv.TLSConfig)
	if srv.TLSNextProto == nil {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	srv.TLSNextProto[certs.ALPNProto] = func(_ *http.Server, c *tls.Conn, _ http.Handler) { c.Close() }
}
