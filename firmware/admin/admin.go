// Package admin is the appliance's local HTTPS administration: the
// server-rendered UI and the JSON API under /api/v1. Both go through one
// guard (origin, session or token, CSRF, restriction, role) driven by the
// route table in routes.go. Bucket: admin.settings (origin allowlist).
package admin

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/connlog"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/privacy"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// CookieName uses the __Host- prefix: the browser only accepts it Secure,
// host-only and with Path=/, so a sibling host cannot plant or read it.
const CookieName = "__Host-edgepbx_session"

// csrfHeader carries the session's CSRF token on every state change.
const csrfHeader = "X-CSRF-Token"

// Deps are what the admin server needs from edgepbxd.
type Deps struct {
	Store *store.DB
	// Audit is the audit chain and Auth the accounts, sessions and claim
	// state; edgepbxd builds both before the admin side. Required.
	Audit  *audit.Log
	Auth   *auth.Service
	Clock  auth.Clock   // nil: wall clock
	Logger *slog.Logger // nil: slog.Default()
	// Names are the host names and addresses the box is reached by (as in
	// its certificate); an Origin on any port of these is the box itself.
	Names []string
	// AllowHTTPOrigin accepts http:// origins of Names too (make dev on loopback).
	AllowHTTPOrigin bool
	// Certs serves the certificate pages and TLSConfig; nil: not available.
	Certs *certs.Manager
	// KeyLog is the opt-in TLS key log; nil: not offered.
	KeyLog *certs.KeyLog
	// Extensions are the SIP credentials; nil: no SIP edge.
	Extensions Extensions
	// Firewall and System reach PID 1 (the control client); nil in dev mode.
	Firewall Firewall
	System   System
	// Reset is PID 1's factory reset; nil: not offered (dev mode).
	Reset Resetter
	// Network is PID 1's network and clock settings; nil in dev mode.
	Network Network
	// Status adds edgepbxd's own lines (health, registrations, licence)
	// to the dashboard; nil: none.
	Status func(context.Context) []StatusItem
	// Licence is the phone-home state (*license.Manager); nil: no phone-home,
	// nothing limited.
	Licence Licence
	// Telephony is the stored dial plan configuration
	// (*config.TelephonyStore); nil: not available.
	Telephony Telephony
	// Features is each extension's forwarding and do-not-disturb
	// (*features.Engine); nil: not available.
	Features Features
	// Queues is the call queues' state and agent login
	// (*features.Engine); nil: not available.
	Queues Queues
	// SIPSettings are the stored SIP edge settings (*config.SIPStore);
	// nil: not available.
	SIPSettings SIPSettings
	// ACME is the certificate issuance scheduler (*certs.ACMEScheduler);
	// nil: ACME settings are stored but nothing issues.
	ACME ACME
	// TrunkStatus is every trunk's live state; nil: no trunk state.
	TrunkStatus TrunkStatus
	// Syslog is the running remote syslog sender (*logs.Sender); nil:
	// settings are stored but nothing sends.
	Syslog Syslog
	// SIPBlocks are the SIP edge's bans and throttles; nil: no SIP edge.
	SIPBlocks SIPBlocks
	// Voicemail lists, plays, deletes messages and resets PINs; nil: off.
	Voicemail Voicemail
	// Conference is the conference rooms; Music the music on hold;
	// nil: off.
	Conference Conference
	Music      MusicOnHold
	// Mail is the outgoing mail server (voicemail to e-mail); nil: off.
	Mail Mail
	// Prompts is the prompt library (uploads per language); nil: off.
	Prompts Prompts
	// Recordings lists, plays and deletes recordings and holds the call
	// recording policy; nil: no recording store.
	Recordings Recordings
	// Intrusion is the intrusion report (*intrusion.Aggregator); nil:
	// none (the page says so, the API answers 409).
	Intrusion Intrusion
	// Metrics is the /metrics handler (*metrics.Handler); nil: settings
	// are stored but nothing serves them.
	Metrics Metrics
	// Backups make, keep and restore encrypted backups (*backup.Service);
	// nil: the API answers 409.
	Backups Backups
	// Phones is the provisioning service (*provision.Service); nil: the
	// Phones page says provisioning is not running.
	Phones Phones
	// Privacy is the data-category registry (retention, anonymisation,
	// subject requests); nil: the privacy page says not available.
	Privacy *privacy.Registry
	// Connections is the connection log; nil: not available. Refused API
	// tokens are recorded in it too.
	Connections *connlog.Log
	// Live is the running SIP edge and calls (registrations, calls in
	// progress, hang-up, ports and realm); nil: the pages say not running.
	Live Live
	// Activity is the dashboard's 24-hour series edgepbxd samples
	// (registered phones, attacks); nil: those charts stay empty.
	Activity *Activity
	// Updates is PID 1's firmware installer; nil: the API answers 409.
	Updates Updates
	// Pull is the pulled-update policy and repository check
	// (*update.Service); nil: the API answers 409.
	Pull UpdatePolicy
}

// Licence is what the admin side needs from firmware/license: its banner
// and the gates of degraded mode.
type Licence interface {
	State() license.State
	AllowNewExtension() bool
}

// Server is the admin handler.
type Server struct {
	auth   *auth.Service
	audit  *audit.Log
	db     *store.DB
	clock  auth.Clock
	log    *slog.Logger
	names  []string
	http   bool
	mux    *http.ServeMux
	routes []route
	pages  *pages

	certs     *certs.Manager
	keylog    *certs.KeyLog
	lic       Licence
	tlsCur    atomic.Pointer[tls.Config] // per-connection TLS config, swapped on settings changes
	tlsc      tlsCommit                  // certificate or TLS change awaiting confirmation (tls.go)
	exts      Extensions
	tel       Telephony
	features  Features
	queues    Queues
	trunks    TrunkStatus // nil: no trunk state
	sipset    SIPSettings
	acme      ACME
	syslog    Syslog // remote syslog sender; nil: settings stored only
	fw        Firewall
	sys       System
	reset     Resetter
	netw      Network
	status    func(context.Context) []StatusItem
	sipblk    SIPBlocks
	vm        Voicemail   // nil: voicemail disabled
	conf      Conference  // nil: conference disabled
	moh       MusicOnHold // nil: music on hold disabled
	mail      Mail        // nil: no outgoing mail
	prompts   Prompts     // nil: no prompt library
	promptMu  sync.Mutex  // one prompt upload parsed at a time (memory bound)
	recs      Recordings  // nil: no recording store
	intrusion Intrusion
	metrics   Metrics // /metrics handler; nil: settings stored only
	backups   Backups
	phones    Phones
	priv      *privacy.Registry
	conlog    *connlog.Log
	live      Live // registrations and calls in progress; nil: none
	// trunkTests counts trunk tests under way (each holds a request for
	// seconds): at most maxTrunkTests at once.
	trunkTests atomic.Int32
	updates    Updates
	pull       UpdatePolicy

	conns connSeq // connection numbers for firewall confirmations

	owners *owners // mailbox owner sessions (owner.go)

	zc       zoneCache // the box's display time zone (uiformat.go)
	activity *Activity // dashboard series (dashboard.go); nil: empty

	refusedMu sync.Mutex
	refused   map[string][]time.Time // per-source refusal log budget
}

// New builds the admin HTTP handler.
func New(d Deps) (http.Handler, error) { return NewServer(d) }

// NewServer is New returning the concrete type.
func NewServer(d Deps) (*Server, error) {
	if d.Store == nil || d.Audit == nil || d.Auth == nil {
		return nil, errors.New("admin: Store, Audit and Auth are required")
	}
	if d.Clock == nil {
		d.Clock = auth.SystemClock{}
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	pg, err := loadPages()
	if err != nil {
		return nil, err
	}
	s := &Server{auth: d.Auth, audit: d.Audit, db: d.Store, clock: d.Clock, log: d.Logger, http: d.AllowHTTPOrigin,
		mux: http.NewServeMux(), pages: pg, refused: map[string][]time.Time{},
		certs: d.Certs, keylog: d.KeyLog, lic: d.Licence, exts: d.Extensions, tel: d.Telephony, features: d.Features, sipset: d.SIPSettings, fw: d.Firewall, sys: d.System, reset: d.Reset, netw: d.Network, status: d.Status,
		trunks: d.TrunkStatus, syslog: d.Syslog, sipblk: d.SIPBlocks, intrusion: d.Intrusion, metrics: d.Metrics, phones: d.Phones,
		priv: d.Privacy, conlog: d.Connections, vm: d.Voicemail,
		conf: d.Conference, moh: d.Music, mail: d.Mail, prompts: d.Prompts}
	s.acme = d.ACME
	s.recs = d.Recordings
	s.backups = d.Backups
	s.live = d.Live
	s.queues = d.Queues
	s.activity = d.Activity
	s.updates = d.Updates
	s.pull = d.Pull
	for _, n := range d.Names {
		s.names = append(s.names, strings.ToLower(strings.Trim(n, "[]")))
	}
	s.routes = append(s.routeTable(), s.backupRoutes()...)
	s.routes = append(s.routes, s.updateRoutes()...)
	s.owners = newOwners()
	s.routes = append(s.routes, s.ownerRoutes()...)
	for _, rt := range s.routes {
		s.mux.Handle(rt.method+" "+rt.path, s.guard(rt))
	}
	s.mux.Handle("GET /static/", staticHandler())
	return s, nil
}

func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
}

// ServeHTTP applies the headers and the claim gate, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w.Header())
	if !strings.HasPrefix(r.URL.Path, "/static/") {
		w.Header().Set("Cache-Control", "no-store")
	}
	claimed, err := s.auth.Claimed()
	if err != nil {
		s.log.Error("claim state", "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "")
		return
	}
	p := r.URL.Path
	if !claimed && p != "/claim" && p != "/api/v1/claim" && !strings.HasPrefix(p, "/static/") {
		// An unclaimed box serves the claim page and nothing else.
		if strings.HasPrefix(p, "/api/") {
			problem(w, http.StatusConflict, "not claimed", "claim the box with the setup code from its console first")
			return
		}
		http.Redirect(w, r, "/claim", http.StatusSeeOther)
		return
	}
	if claimed && p == "/claim" {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && !strings.HasPrefix(p, "/api/") && !strings.HasPrefix(p, "/static/") {
		if _, pat := s.mux.Handler(r); pat == "" {
			s.notFound(w, r)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

func clientOf(r *http.Request) auth.Client {
	host, port, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	pn, _ := strconv.ParseUint(port, 10, 16)
	return auth.Client{Addr: a.Unmap(), Port: uint16(pn), UserAgent: r.UserAgent()}
}

func isStateChange(m string) bool {
	return m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions
}

var errForeignOrigin = errors.New("request from a foreign origin")

// checkOrigin refuses state changes from other sites: the Origin must be
// one of the box's names or on the admin's allowlist.
func (s *Server) checkOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		switch r.Header.Get("Sec-Fetch-Site") {
		case "", "same-origin", "none":
			return nil // non-browser client, or an old browser: the CSRF token still guards cookie sessions
		}
		return fmt.Errorf("%w: Sec-Fetch-Site %s", errForeignOrigin, r.Header.Get("Sec-Fetch-Site"))
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Path != "" || (u.Scheme != "https" && !(s.http && u.Scheme == "http")) {
		return fmt.Errorf("%w: %.100q", errForeignOrigin, origin)
	}
	host := strings.ToLower(u.Hostname())
	if slices.Contains(s.names, host) || s.ownAddress(r, host) {
		return nil
	}
	// The names of the certificate in use (uploaded or from ACME) reach the
	// box too, also ones added after start. Exact names only: a wildcard
	// would admit every other host of the domain.
	if s.certs != nil && slices.ContainsFunc(s.certs.Current().DNSNames, func(n string) bool {
		return !strings.HasPrefix(n, "*") && strings.EqualFold(strings.TrimSuffix(n, "."), host)
	}) {
		return nil
	}
	allow, err := s.origins()
	if err != nil {
		return err
	}
	if slices.Contains(allow, strings.ToLower(u.Scheme+"://"+u.Host)) {
		return nil
	}
	return fmt.Errorf("%w: %.100q", errForeignOrigin, origin)
}

// ownAddress reports whether host is an IP literal equal to the local
// address the request's connection was accepted on: the page was loaded
// from the box at that address, which a network change may have made new
// since start (the names were computed then). A literal address cannot be
// rebound by DNS, so no other site can present it as its origin.
func (s *Server) ownAddress(r *http.Request, host string) bool {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	ap, err := netip.ParseAddrPort(la.String())
	return err == nil && ap.Addr().Unmap().WithZone("") == a.Unmap() && !a.IsUnspecified()
}

// principal resolves the bearer token or the session cookie.
func (s *Server) principal(r *http.Request) (auth.Principal, bool, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return auth.Principal{}, false, auth.ErrNoSession
		}
		p, err := s.auth.TokenPrincipal(strings.TrimSpace(tok))
		if err != nil && s.conlog != nil {
			c := clientOf(r)
			s.conlog.Record(connlog.Entry{Kind: connlog.APITokenFailed, Source: netip.AddrPortFrom(c.Addr, c.Port).String(), Method: "token", Result: connlog.Failed, Detail: "unknown, expired or revoked token"})
		}
		return p, false, err
	}
	c, err := r.Cookie(CookieName)
	if err != nil {
		return auth.Principal{}, false, auth.ErrNoSession
	}
	p, err := s.auth.SessionPrincipal(c.Value)
	return p, true, err
}

// refuse logs a refused request to the audit log, at most 10 per source per
// minute so a flood of refusals cannot flood the log; slog gets them all.
func (s *Server) refuse(r *http.Request, p auth.Principal, action, detail string) {
	c := clientOf(r)
	s.log.Warn("request refused", "action", action, "source", c.String(), "path", r.URL.Path, "detail", detail)
	now := s.clock.Now()
	s.refusedMu.Lock()
	key := c.Addr.String()
	h := s.refused[key]
	for len(h) > 0 && now.Sub(h[0]) > time.Minute {
		h = h[1:]
	}
	ok := len(h) < 10
	if ok {
		h = append(h, now)
	}
	if len(s.refused) > 4096 {
		clear(s.refused)
	}
	s.refused[key] = h
	s.refusedMu.Unlock()
	if ok {
		_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: c.String(), Action: action, Target: r.Method + " " + r.URL.Path,
			Outcome: audit.Denied, Detail: detail})
	}
}

type ctxKey struct{}

func (s *Server) guard(rt route) http.Handler {
	if rt.owner {
		return s.ownerGuard(rt)
	}
	isAPI := strings.HasPrefix(rt.path, "/api/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isStateChange(r.Method) {
			if err := s.checkOrigin(r); err != nil {
				s.refuse(r, auth.Principal{}, "http.origin_refused", err.Error())
				problem(w, http.StatusForbidden, "forbidden", "cross-origin request refused")
				return
			}
		}
		var p auth.Principal
		if !rt.public {
			var cookie bool
			var err error
			p, cookie, err = s.principal(r)
			if err != nil {
				if !errors.Is(err, auth.ErrNoSession) {
					s.log.Error("resolve principal", "err", err)
				}
				if !isAPI {
					http.Redirect(w, r, "/login", http.StatusSeeOther)
					return
				}
				problem(w, http.StatusUnauthorized, "unauthorized", auth.ErrNoSession.Error())
				return
			}
			if cookie && isStateChange(r.Method) {
				tok := r.Header.Get(csrfHeader)
				if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(p.CSRF)) != 1 {
					s.refuse(r, p, "http.csrf_refused", "missing or wrong CSRF token")
					problem(w, http.StatusForbidden, "forbidden", "missing or wrong CSRF token; reload the page")
					return
				}
			}
			if p.Restriction != auth.RestrictNone && !rt.restrictedOK {
				if !isAPI {
					http.Redirect(w, r, "/account", http.StatusSeeOther)
					return
				}
				problem(w, http.StatusForbidden, "forbidden", "finish first: "+string(p.Restriction))
				return
			}
			if !p.Can(rt.perm) {
				s.refuse(r, p, "http.forbidden", "role "+string(p.Role)+" lacks "+string(rt.perm))
				problem(w, http.StatusForbidden, "forbidden", "your role does not allow this")
				return
			}
		}
		ctx := context.WithValue(r.Context(), ctxKey{}, p)
		if err := rt.h(w, r.WithContext(ctx), p); err != nil {
			s.writeError(w, r, err)
		}
	})
}
