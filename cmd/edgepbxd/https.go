package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// HTTPS limits: slow or oversized clients are cut off, and concurrent
// connections are capped so a flood cannot exhaust memory.
const (
	httpsMaxConns      = 256
	httpsHeaderTimeout = 5 * time.Second
	httpsReadTimeout   = 30 * time.Second
	httpsWriteTimeout  = 30 * time.Second
	httpsIdleTimeout   = 120 * time.Second
	httpsMaxHeader     = 16 << 10
	httpsShutdownGrace = 5 * time.Second
)

// routes is the one place HTTPS handlers are registered: /healthz and
// /metrics (its own network and token checks) here, everything else to the
// admin UI and API (which gates an unclaimed box to
// its claim page). securityHeaders wraps them all.
func (d *daemon) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", d.healthz)
	mux.Handle("GET /metrics", d.metrics)
	mux.Handle("/", d.admin)
	return mux
}

// securityHeaders sets safe defaults on every response before the handler
// runs; a handler may replace them (the admin UI sets its own CSP with
// 'self' and a longer HSTS), as Header().Set overwrites.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Strict-Transport-Security", "max-age=63072000")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("Cache-Control", "no-store")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

type healthzResponse struct {
	Status  string      `json:"status"`
	Version string      `json:"version"`
	Uptime  float64     `json:"uptime_seconds"`
	License licenseView `json:"license"`
}

func (d *daemon) healthz(w http.ResponseWriter, r *http.Request) {
	status, code := "ok", http.StatusOK
	if _, err := d.db.Schema(); err != nil {
		status, code = "store unavailable", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(healthzResponse{
		Status:  status,
		Version: version,
		Uptime:  time.Since(d.started).Round(time.Millisecond).Seconds(),
		License: d.licenseView(),
	})
}

// serveHTTPS serves the mux on the already-bound listener until ctx ends,
// then stops accepting and lets requests in flight finish.
func (d *daemon) serveHTTPS(ctx context.Context) error {
	// The admin's TLS version settings apply per connection; the key log
	// is attached (off unless an admin turns it on).
	tlsCfg, err := d.admin.TLSConfig()
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           securityHeaders(d.routes()),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: httpsHeaderTimeout,
		ReadTimeout:       httpsReadTimeout,
		WriteTimeout:      httpsWriteTimeout,
		IdleTimeout:       httpsIdleTimeout,
		MaxHeaderBytes:    httpsMaxHeader,
		// Numbers connections: a firewall change is confirmed only on a
		// connection opened under the new ruleset.
		ConnContext: d.admin.ConnContext,
		// Handshake failures from scanners are routine: debug level, so they
		// do not flood PID 1's ring buffer.
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}
	d.acme.WrapServer(srv) // TLS-ALPN-01 challenges on this port
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(netutil.LimitListener(d.httpsLn, httpsMaxConns), "", "") }()
	select {
	case err := <-done:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), httpsShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
