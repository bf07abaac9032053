package metrics

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgepbx/edgepbx/firmware/auth"
)

// Tokens resolves bearer tokens (*auth.Service).
type Tokens interface {
	TokenPrincipal(secret string) (auth.Principal, error)
}

// Refusal reasons, the label of edgepbx_metrics_refused_total.
const (
	RefusedNetwork = "network" // source outside the allowed networks (or none configured)
	RefusedNoToken = "no_token"
	RefusedToken   = "bad_token" // unknown, expired or revoked
	RefusedScope   = "scope"     // a valid token without metrics.read
)

// Scrape limits: one scrape at a time per box is plenty for a monitoring
// system; more wait (then 503) rather than pile up collectors.
const (
	maxScrapesInFlight = 2
	scrapeTimeout      = 10 * time.Second
)

// Handler serves /metrics: the source network first (no store read for
// outsiders), then the bearer token, then its scope. Every refusal is an
// RFC 9457 problem+json and is counted.
type Handler struct {
	settings atomic.Pointer[Settings]
	tokens   Tokens
	log      *slog.Logger
	refused  *prometheus.CounterVec
	serve    http.Handler
}

// NewHandler serves reg's metrics to the callers s allows; Apply replaces
// s live. The refusal counter is registered on reg.
func NewHandler(reg *prometheus.Registry, tokens Tokens, s Settings, log *slog.Logger) (*Handler, error) {
	if reg == nil || tokens == nil {
		return nil, errors.New("metrics: registry and tokens are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{tokens: tokens, log: log,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgepbx_metrics_refused_total",
			Help: "Scrapes of /metrics refused, by reason (network, no_token, bad_token, scope)."}, []string{"reason"})}
	for _, r := range []string{RefusedNetwork, RefusedNoToken, RefusedToken, RefusedScope} {
		h.refused.WithLabelValues(r) // present at 0 so alerts can use rate()
	}
	if err := reg.Register(h.refused); err != nil {
		return nil, err
	}
	h.serve = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError, // one failing collector must not blank the rest
		MaxRequestsInFlight: maxScrapesInFlight,
		Timeout:             scrapeTimeout,
	})
	h.Apply(s)
	return h, nil
}

// Apply replaces the settings; the next request uses them.
func (h *Handler) Apply(s Settings) {
	s.Networks = append([]netip.Prefix(nil), s.Networks...)
	h.settings.Store(&s)
}

// Settings returns the settings in force.
func (h *Handler) Settings() Settings { return *h.settings.Load() }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	src := remoteAddr(r)
	if !h.settings.Load().Allows(src) {
		h.refuse(w, r, src, http.StatusForbidden, RefusedNetwork, "Source not allowed",
			"this source is not in the networks allowed to read metrics (security settings, metrics)")
		return
	}
	secret, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgepbx metrics"`)
		h.refuse(w, r, src, http.StatusUnauthorized, RefusedNoToken, "Token required",
			"send an API token with the metrics scope as Authorization: Bearer ebx_…")
		return
	}
	p, err := h.tokens.TokenPrincipal(secret)
	if err != nil {
		if !errors.Is(err, auth.ErrNoSession) {
			h.log.Error("metrics: token lookup", "err", err)
			problem(w, http.StatusInternalServerError, "Token lookup failed", "see the box's log")
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgepbx metrics", error="invalid_token"`)
		h.refuse(w, r, src, http.StatusUnauthorized, RefusedToken, "Invalid token",
			"the token is unknown, expired or revoked")
		return
	}
	if !p.Can(auth.PermMetricsRead) {
		h.refuse(w, r, src, http.StatusForbidden, RefusedScope, "Token lacks the metrics scope",
			"create a token with the metrics scope (it reads nothing else)")
		return
	}
	h.serve.ServeHTTP(w, r)
}

func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, src netip.Addr, status int, reason, title, detail string) {
	h.refused.WithLabelValues(reason).Inc()
	// A wrong token from an allowed network is worth a warning; sources
	// outside the networks are the firewall's business (debug only, so a
	// scanner cannot flood the log).
	level := slog.LevelWarn
	if reason == RefusedNetwork {
		level = slog.LevelDebug
	}
	h.log.Log(r.Context(), level, "metrics: scrape refused", "source", src, "reason", reason)
	problem(w, status, title, detail)
}

// problem writes an RFC 9457 problem+json answer.
func problem(w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": title, "status": status, "detail": detail})
}

// bearer is the token of an "Authorization: Bearer …" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// remoteAddr is the connection's peer address (never a forwarded header:
// nothing proxies the admin port).
func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}
