// Package sip is the SIP edge of edgepbxd: transports (UDP, TCP, TLS, WSS)
// on sipgo, the security chain, the registrar and trunk registrations.
//
// The chain runs in this order, each stage a small type with counters:
//  1. ReadFilter (raw bytes): banned source, scanner User-Agent, oversize;
//     it also feeds the Guard's per-source packet rate;
//  2. parse (sipgo, size-limited, strict Contact) + Validator (RFC 3261/4475);
//  3. Policy.Domain; 4. Policy.Zone;
//  5. Authenticator (Digest SHA-256/MD5, stateless nonces, nc tracking);
//  6. Guard (flood and brute force, per source and per extension) → Banner;
//  7. handlers (registrar, OPTIONS).
//
// UDP is read by udpFront (one SO_REUSEPORT socket per CPU, each read by
// its own worker; the kernel keeps a source on one socket). Workers run
// stage 1 and answer every REGISTER statelessly (statelessUDP: no sipgo transaction;
// a bounded cache gives retransmissions the first answer). Other UDP
// requests, trunk sources and the stream transports take sipgo's stateful
// path (handle). Both paths share stages 2 to 7.
package sipedge

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/connlog"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Deps are what the SIP edge needs from edgepbxd.
type Deps struct {
	Store    *store.DB // extensions (HA1s) and trunk secrets
	Banner   Banner    // PID 1 control client; nil: bans stay local to this process
	Security *logs.Log // the security log (firmware/logs); required
	// Connections gets every registration, unregistration and failed
	// registration (firmware/connlog); nil: not recorded there.
	Connections *connlog.Log
	TLS         *tls.Config // certificate for TLS and WSS; required when they are enabled
	Logger      *slog.Logger
	// Host is the box's address put in Via and Contact of requests the
	// edge sends (calls) when a transport is bound to an unspecified
	// address; empty: the bound address.
	Host string
}

// retransEntryBytes is the average size budgeted per cached answer (a 200
// with a few contacts is ~500 bytes); the byte bound keeps a flood of large
// requests from making the cache large.
const retransEntryBytes = 768

// wsSetupTimeout bounds a WSS client's TLS handshake plus upgrade request.
const wsSetupTimeout = 10 * time.Second

// Server is the SIP edge.
type Server struct {
	cfg    pbxconfig.SIP
	deps   Deps
	logger *slog.Logger

	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	client *sipgo.Client

	bans      *Bans
	filter    *ReadFilter
	validator *Validator
	policy    *Policy
	auth      *Authenticator
	guard     *Guard
	location  *Location
	exts      *Extensions
	conns     ConnCounters
	limiter   *connLimiter
	retrans   *respCache // answers of the stateless UDP REGISTER path
	fpSeed    maphash.Seed
	bufs      sync.Pool                // *bytes.Buffer for serialising stateless answers
	stateful  atomic.Uint64            // requests that took sipgo's transaction path
	calls     atomic.Pointer[callsBox] // the B2BUA; nil: INVITE gets 501

	// events is the subscription server (events.go); nil: SUBSCRIBE gets 501.
	events atomic.Pointer[eventsBox]

	parser          *sip.Parser
	udp             net.PacketConn // front: answers are written to it
	front           *udpFront      // reads the UDP sockets for the chain and for sipgo
	tcp, tlsL, wssL net.Listener
	closeOnce       sync.Once
	closed          atomic.Bool // Close was called: Serve's listeners stopping is no failure
	down            atomic.Bool // the sockets are closed: nothing more is sent
	now             func() time.Time

	// Background work Serve starts (guard bans, the startup trunks'
	// registrations, the location sweep) runs under bgCtx and is joined
	// by Close; bgMu orders a start against Close's Wait.
	bgMu     sync.Mutex
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	// Live settings (Apply). cfg stays the configuration the edge was
	// built from: what cannot change at run time is compared against it.
	applyMu sync.Mutex
	tlsBase *tls.Config                   // server TLS without versions' updates; nil: no TLS
	tlsLive atomic.Pointer[tls.Config]    // what the next handshake uses
	live    atomic.Pointer[pbxconfig.SIP] // the last applied configuration

	profiles atomic.Pointer[profilesBox] // unicast SIP PnP (profile.go); nil: off
}

// New builds the edge and binds its sockets (errors surface here, before
// Serve). cfg must pass Validate.
func New(cfg pbxconfig.SIP, d Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Store == nil || d.Security == nil {
		return nil, errors.New("sip: Store and Security (the security log) are required")
	}
	if (cfg.TLS != "" || cfg.WSS != "") && d.TLS == nil {
		return nil, errors.New("sip: TLS and WSS need a tls.Config")
	}
	s := &Server{cfg: cfg, deps: d, logger: d.Logger, now: time.Now}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	if s.logger == nil {
		s.logger = slog.Default()
	}
	s.bans = newBans()
	s.policy = newPolicy(cfg.Domains, cfg.AllowedZones, cfg.Allowlist, cfg.Trunks)
	g := cfg.Guard
	s.guard = newGuard(guardConfig(g), s.bans, s.policy.Exempt, func(b fwspec.Ban) {
		d.Security.Record(logs.Event{Kind: logs.KindBan, Source: b.Prefix.String(), Reason: b.Reason})
	})
	s.guard.inZone = s.policy.InZone
	s.guard.trunk = func(a netip.Addr) bool { _, ok := s.policy.Trunk(a); return ok }
	s.guard.shielded = func(a netip.Addr) bool { return s.policy.InZone(a) || s.guard.trunk(a) }
	s.guard.onFlood = func(k netip.Prefix) {
		d.Security.Record(logs.Event{Kind: logs.KindFlood, Source: k.String(),
			Reason: "sip-flood-limited: over the rate, excess dropped in process; a spoofable UDP address inside the zones or a trunk's is never banned"})
	}
	s.guard.onEvent = func(t Throttle) {
		d.Security.Record(logs.Event{Kind: logs.KindBan, Source: t.Source.String(), User: t.User,
			Reason: "sip-throttle: " + t.Reason + " (this extension only)"})
	}
	s.filter = newReadFilter(s.bans, s.guard, cfg.ScannerUserAgents, cfg.MaxMessageBytes, func(kind string, src netip.Addr, ua string) {
		d.Security.Record(logs.Event{Kind: logs.KindScanner, Source: src.String(), UserAgent: ua})
	})
	s.validator = newValidator()
	exts, err := LoadExtensions(d.Store, cfg.Realm)
	if err != nil {
		return nil, err
	}
	s.exts = exts
	nonces, err := NewNonces(cfg.NonceTTL, g.MaxTracked)
	if err != nil {
		return nil, err
	}
	if s.auth, err = NewAuthenticator(cfg.Realm, cfg.Algorithms, nonces, exts); err != nil {
		return nil, err
	}
	s.location = newLocation(cfg.MaxContacts)
	s.location.SetLimits(RegLimits{MinExpires: cfg.MinExpires, MaxExpires: cfg.MaxExpires, MaxContacts: cfg.MaxContacts})
	s.limiter = newConnLimiter(cfg.MaxConns, cfg.MaxConnsPerSource, cfg.IdleTimeout, s.bans, &s.conns)
	s.limiter.key = s.guard.Key

	var tlsConf *tls.Config
	if d.TLS != nil {
		tlsConf = d.TLS.Clone()
		tlsConf.MinVersion, _ = pbxconfig.TLSVersion(cfg.TLSMin)
		tlsConf.MaxVersion, _ = pbxconfig.TLSVersion(cfg.TLSMax)
		// Only AEAD suites with forward secrecy for TLS 1.2 (1.3 is fixed).
		tlsConf.CipherSuites = []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}
		// Handshakes take the versions of the newest Apply: the listener's
		// config hands each ClientHello a snapshot (connections already up
		// keep what they negotiated).
		s.tlsBase = tlsConf.Clone()
		s.tlsLive.Store(s.tlsBase.Clone())
		tlsConf.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.tlsLive.Load(), nil }
	}
	// sipgo logs every unparsable packet at Error with its bytes: under attack
	// that is a log flood, so its logger is silenced; our counters and the
	// security log say what happened.
	s.parser = NewParser(cfg.MaxMessageBytes)
	s.retrans = newRespCache(cfg.RetransmitCache, cfg.RetransmitCache*retransEntryBytes, retransTTL)
	s.fpSeed = maphash.MakeSeed()
	s.bufs.New = func() any { return new(bytes.Buffer) }
	s.filter.stateless = s.statelessUDP
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.Level(100)}))
	opts := []sipgo.UserAgentOption{
		sipgo.WithUserAgent("edgepbx"),
		sipgo.WithUserAgentParser(s.parser),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerReadFilter(s.filter.Filter),
			sip.WithTransportLayerLogger(quiet),
		),
		// Stray responses (a 180 handled after its 200, a 2xx retransmitted
		// after Timer M) are normal call traffic: dropped quietly.
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet),
			sip.WithTransactionLayerUnhandledResponseHandler(func(*sip.Response) {})),
	}
	if tlsConf != nil {
		opts = append(opts, sipgo.WithUserAgenTLSConfig(tlsConf))
	}
	if s.ua, err = sipgo.NewUA(opts...); err != nil {
		return nil, fmt.Errorf("sip: user agent: %w", err)
	}
	if s.srv, err = sipgo.NewServer(s.ua, sipgo.WithServerLogger(quiet)); err != nil {
		return nil, fmt.Errorf("sip: server: %w", err)
	}
	copts := []sipgo.ClientOption{sipgo.WithClientLogger(quiet)}
	if d.Host != "" {
		copts = append(copts, sipgo.WithClientHostname(d.Host))
	}
	if s.client, err = sipgo.NewClient(s.ua, copts...); err != nil {
		return nil, fmt.Errorf("sip: client: %w", err)
	}
	s.srv.OnNoRoute(s.handle)
	if err := s.bind(tlsConf); err != nil {
		s.Close()
		return nil, err
	}
	live := cloneSIP(cfg)
	s.live.Store(&live)
	return s, nil
}

func (s *Server) bind(tlsConf *tls.Config) error {
	var err error
	if s.cfg.UDP != "" {
		conns, err := listenUDP(context.Background(), s.cfg.UDP, udpWorkers())
		if err != nil {
			return fmt.Errorf("sip: listen udp %s: %w", s.cfg.UDP, err)
		}
		s.front = newUDPFront(conns, s.filter, s.cfg.MaxMessageBytes)
		s.udp = s.front
		s.filter.udpFront = true
		// The box's UDP requests leave from the listener (Sender binds
		// them to its address). sipgo only learns the listener once
		// ServeUDP runs; entered here, a trunk REGISTER sent before that
		// cannot make sipgo open a socket on the listener's port.
		la := s.front.LocalAddr().String()
		s.ua.TransportLayer().Pool("udp").Add(la, &sip.UDPConnection{PacketConn: s.front, PacketAddr: la, Listener: true})
	}
	listen := func(addr string, tlsc *tls.Config) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("sip: listen tcp %s: %w", addr, err)
		}
		// Caps and idle deadlines sit under TLS so handshakes count too.
		var ll net.Listener = &limitListener{Listener: l, cl: s.limiter}
		if tlsc != nil {
			ll = tls.NewListener(ll, tlsc)
		}
		return ll, nil
	}
	if s.cfg.TCP != "" {
		if s.tcp, err = listen(s.cfg.TCP, nil); err != nil {
			return err
		}
	}
	if s.cfg.TLS != "" {
		if s.tlsL, err = listen(s.cfg.TLS, tlsConf); err != nil {
			return err
		}
	}
	if s.cfg.WSS != "" {
		l, err := listen(s.cfg.WSS, tlsConf)
		if err != nil {
			return err
		}
		s.wssL = newPreparedListener(l, wsSetupTimeout)
	}
	return nil
}

// Addr returns the bound address of a transport ("udp", "tcp", "tls",
// "wss"), or nil when it is disabled.
func (s *Server) Addr(transport string) net.Addr {
	switch transport {
	case "udp":
		if s.udp != nil {
			return s.udp.LocalAddr()
		}
	case "tcp":
		if s.tcp != nil {
			return s.tcp.Addr()
		}
	case "tls":
		if s.tlsL != nil {
			return s.tlsL.Addr()
		}
	case "wss":
		if s.wssL != nil {
			return s.wssL.Addr()
		}
	}
	return nil
}

// Extensions is the credential store (for admin and provisioning).
func (s *Server) Extensions() *Extensions { return s.exts }

// Location is the registrar's location service.
func (s *Server) Location() *Location { return s.location }

// Serve runs the edge until ctx ends, Close is called or a listener
// fails. Every goroutine it starts has ended when it returns.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 8)
	n := 0
	run := func(f func() error) {
		n++
		go func() { errc <- f() }()
	}
	if s.front != nil {
		s.front.start()
		run(func() error { return s.srv.ServeUDP(s.front) })
	}
	if s.tcp != nil {
		run(func() error { return s.srv.ServeTCP(s.tcp) })
	}
	if s.tlsL != nil {
		run(func() error { return s.srv.ServeTLS(s.tlsL) })
	}
	if s.wssL != nil {
		run(func() error { return s.srv.ServeWSS(s.wssL) })
	}
	s.goBackground(func(bg context.Context) {
		s.guard.run(bg, s.deps.Banner, func(b fwspec.Ban, err error) {
			s.logger.Warn("sip: firewall ban failed; source stays dropped in process", "prefix", b.Prefix, "err", err)
		})
	})
	for _, t := range s.cfg.Trunks {
		if t.Register != nil {
			tr := t
			s.goBackground(func(bg context.Context) { s.registerTrunk(bg, tr) })
		}
	}
	s.goBackground(func(bg context.Context) {
		tk := time.NewTicker(30 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-bg.Done():
				return
			case <-tk.C:
				s.location.Sweep(s.now())
			}
		}
	})
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		n--
	}
	// Calls are hung up (BYE to both legs, CDRs written) while the
	// sockets still work.
	if c, ok := s.callHandler().(io.Closer); ok {
		_ = c.Close()
	}
	s.closeEvents()
	s.Close()
	for ; n > 0; n-- {
		<-errc
	}
	if ctx.Err() != nil || s.closed.Load() {
		return nil
	}
	return fmt.Errorf("sip: listener stopped: %w", err)
}

// goBackground runs f under the edge's background context, joined by
// Close; after Close it does not start f and reports false.
func (s *Server) goBackground(f func(context.Context)) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.bgCtx.Err() != nil {
		return false
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f(s.bgCtx)
	}()
	return true
}

// Close stops the background work (registered trunks un-register while
// the sockets still work), then every listener; it returns once the
// background goroutines have ended and is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.bgMu.Lock()
		s.bgCancel()
		s.bgMu.Unlock()
		s.bg.Wait()
		s.down.Store(true)
		for _, c := range []io.Closer{s.udp, s.tcp, s.tlsL, s.wssL} {
			if c != nil {
				c.Close()
			}
		}
		if s.ua != nil {
			s.ua.Close()
		}
	})
	return nil
}
