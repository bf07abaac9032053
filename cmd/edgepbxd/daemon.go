package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/certs"
	sipconfig "github.com/edgepbx/edgepbx/firmware/config"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/sip"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/init/control"
)

// daemon holds what every service shares. It is built once in start and
// passed explicitly; there is no package-level state.
type daemon struct {
	cfg     config
	log     *slog.Logger
	id      bootstrap
	db      *store.DB
	certs   *certs.Manager
	keylog  *certs.KeyLog // opt-in TLS key log of the admin HTTPS (admin UI turns it on)
	started time.Time
	httpsLn net.Listener
	// names are the host names and addresses the box answers to (its
	// certificate's, plus loopback in dev mode): the admin Origin check and
	// the SIP domains.
	names []string
	// ctrl is PID 1's control socket (nil in dev mode without --control):
	// health reports and firewall bans.
	ctrl     *control.Client
	admin    *admin.Server
	sip      *sip.Server
	sipSet   *sipconfig.SIPStore // stored SIP settings; nil: the stored ones were refused, defaults run
	calls    *call.B2BUA         // nil: calls disabled
	trunks   *trunkManager       // trunk registrations from the stored telephony configuration; nil: not built
	secLog   *logs.Log
	syslog   *syslogRunner    // remote syslog of the security log and the audit chain
	lic      *license.Manager // nil: no licence server configured, or it failed to build (licErr)
	licErr   string
	licState licenseState
	acme     *acmeRunner // ACME issuance and renewal (certs.ACMESettings)
	// claimed mirrors the admin/auth service's claim state for the health
	// reports; PID 1 stops showing the setup code once it is set.
	claimed atomic.Bool
}

// service is one long-running part of edgepbxd. run blocks until ctx is
// done (then returns nil after a graceful stop) or the service fails (the
// error stops every other service and edgepbxd exits 1, so PID 1 restarts it).
type service struct {
	name string
	run  func(ctx context.Context) error
}

// services is the one place services are started from. Each is constructed
// in newDaemon from d.db, d.certs and d.log (its listeners bound there too,
// so bind errors come before "ready"), and added here. The admin UI/API has
// no loop of its own: it is a handler in routes.
func (d *daemon) services(health healthReporter) []service {
	s := []service{{"https", d.serveHTTPS}, {"sip", d.serveSIP}, {"seclog", d.runSecLog}, {"acme", d.acme.run}}
	if d.syslog != nil {
		s = append(s, service{"syslog", d.syslog.run})
	}
	s = append(s, service{"telephony", d.runTelephony}) // trunk registrations, CDR retention
	if d.lic != nil {
		s = append(s, service{"license", d.runLicense})
	}
	if health != nil {
		s = append(s, service{"health", func(ctx context.Context) error { return d.reportHealth(ctx, health) }})
	}
	return s
}

// start brings edgepbxd up and runs it until ctx is cancelled.
func start(ctx context.Context, cfg config, log *slog.Logger, stdout io.Writer) error {
	d, err := newDaemon(cfg, log)
	if err != nil {
		return err
	}
	defer d.close()
	var health healthReporter
	if d.ctrl != nil {
		health = d.ctrl
	}
	if cfg.devDir != "" {
		d.printDevBanner(stdout)
	}
	return d.runServices(ctx, d.services(health))
}

// newDaemon takes the identity, opens the store, loads the certificate,
// constructs every service and binds the listeners. Errors a restart cannot
// fix wrap errStayDown.
func newDaemon(cfg config, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, log: log, started: time.Now()}
	defer func() {
		if err != nil {
			d.close() // d, not the (nil) result: release what was opened
		}
	}()
	if cfg.devDir != "" {
		if os.Geteuid() == 0 {
			log.Warn("edgepbxd: --dev running as root; it does not need to")
		}
		if d.id, err = devIdentity(cfg.devDir); err != nil {
			return nil, fmt.Errorf("%w: %w", errStayDown, err)
		}
	} else {
		if os.Geteuid() == 0 {
			return nil, fmt.Errorf("%w: refusing to run as root: PID 1 starts edgepbxd as its unprivileged uid (on a development host use --dev DIR)", errStayDown)
		}
		if d.id, err = readBootstrapFD(cfg.bootstrapFD); err != nil {
			return nil, fmt.Errorf("%w: %w", errStayDown, err)
		}
	}

	dbPath := filepath.Join(cfg.dataDir, "edgepbx.db")
	if d.db, err = store.Open(dbPath, d.id.DeviceKey); err != nil {
		if errors.Is(err, store.ErrNewerSchema) {
			err = fmt.Errorf("%w: %w", errStayDown, err)
		}
		return nil, err
	}

	hostname, _ := os.Hostname()
	ident := certs.Identity{Serial: d.id.Serial, Hostname: hostname}
	if cfg.devDir == "" {
		ident.IPs = interfaceIPs()
	}
	if d.certs, err = certs.Load(d.db, ident, certs.WithLogger(log)); err != nil {
		// The sealed key does not open or the store is damaged: a restart
		// with the same device key cannot help.
		return nil, fmt.Errorf("%w: %w", errStayDown, err)
	}

	d.names = boxNames(d.certs, cfg.devDir != "")
	d.acme = d.newACME()
	d.keylog = certs.NewKeyLog(nil, log)

	var banner controlBanner
	if cfg.controlPath != "" {
		if d.ctrl, err = dialControl(cfg.controlPath); err != nil {
			return nil, err
		}
		banner = controlBanner{d.ctrl}
	}

	// Bind before anything reports ready, so a taken port fails loudly now.
	var sipBanner sip.Banner
	if d.ctrl != nil {
		sipBanner = banner
	}
	if err := d.newSIP(sipBanner); err != nil {
		return nil, err
	}
	// The licence gates what the admin side may create, so it comes first.
	d.newLicense()
	adeps := admin.Deps{
		Store:           d.db,
		Clock:           auth.SystemClock{},
		SetupCode:       auth.SetupCode(d.id.SetupCode),
		Logger:          log,
		Names:           d.names,
		AllowHTTPOrigin: false,
		Certs:           d.certs,
		KeyLog:          d.keylog,
		Extensions:      d.sip.Extensions(),
		Status:          d.statusWithTrunks,
		SIPSettings:     d.sipSettings(),
		ACME:            d.acme,
		SIPBlocks:       sipBlocks{d.sip},
	}
	if d.ctrl != nil {
		// nil interfaces in dev mode: a nil *control.Client would not be nil.
		adeps.Banner = banner
		adeps.Firewall = d.ctrl
		adeps.System = d.ctrl
	}
	if d.lic != nil {
		adeps.Licence = d.lic
	}
	if d.admin, err = admin.NewServer(adeps); err != nil {
		return nil, fmt.Errorf("%w: %w", errStayDown, err)
	}
	claimed, err := d.admin.Auth().Claimed()
	if err != nil {
		return nil, fmt.Errorf("admin: claim state: %w", err)
	}
	d.claimed.Store(claimed)
	d.syslog = d.newSyslog()
	if err := d.newCalls(); err != nil {
		// The admin UI must stay reachable to fix what is wrong.
		log.Error("calls: disabled", "err", err)
	}
	if d.httpsLn, err = net.Listen("tcp", cfg.httpsAddr); err != nil {
		return nil, fmt.Errorf("https: listen %s: %w", cfg.httpsAddr, err)
	}
	log.Info("https: listening", "addr", d.httpsLn.Addr().String(), "fingerprint", d.certs.Fingerprint())
	return d, nil
}

// close releases listeners and the store, last thing before exit.
func (d *daemon) close() {
	if d.httpsLn != nil {
		d.httpsLn.Close()
	}
	if d.sip != nil {
		d.sip.Close()
	}
	if d.ctrl != nil {
		d.ctrl.Close()
	}
	if d.db != nil {
		if err := d.db.Close(); err != nil {
			d.log.Error("store: close", "err", err)
		}
	}
}

// runServices runs every service with a shared context: the first failure or
// ctx's end stops them all, and it returns the first failure.
func (d *daemon) runServices(ctx context.Context, services []service) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, s := range services {
		g.Go(func() error {
			d.log.Info("service: started", "service", s.name)
			if err := s.run(ctx); err != nil {
				d.log.Error("service: failed", "service", s.name, "err", err)
				return fmt.Errorf("%s: %w", s.name, err)
			}
			d.log.Info("service: stopped", "service", s.name)
			return nil
		})
	}
	return g.Wait()
}

func (d *daemon) printDevBanner(w io.Writer) {
	fmt.Fprintf(w, "edgepbxd %s (dev mode, data in %s)\n", version, d.cfg.devDir)
	fmt.Fprintf(w, "  admin:       https://%s/\n", d.httpsLn.Addr())
	fmt.Fprintf(w, "  sip:         %s\n", d.sipAddrs())
	fmt.Fprintf(w, "  fingerprint: SHA-256 %s\n", d.certs.Fingerprint())
	if d.claimed.Load() {
		fmt.Fprintf(w, "  setup code:  (claimed)\n")
	} else {
		fmt.Fprintf(w, "  setup code:  %s\n", d.id.SetupCode)
	}
	fmt.Fprintf(w, "  serial:      %s\n", d.id.Serial)
}

// boxNames are the names and addresses in the box's certificates (the one
// served and the self-signed fallback) and its current addresses (DHCP may
// have moved it since the certificate was made); in dev mode, where it is
// only reached on loopback, 127.0.0.1 and ::1 instead.
func boxNames(m *certs.Manager, dev bool) []string {
	var names []string
	for _, info := range []certs.Info{m.Current(), m.SelfSigned()} {
		names = append(names, info.DNSNames...)
		names = append(names, info.IPs...)
	}
	if dev {
		names = append(names, "localhost", "127.0.0.1", "::1")
	} else {
		for _, ip := range interfaceIPs() {
			names = append(names, ip.String())
		}
	}
	for i, n := range names {
		names[i] = strings.ToLower(n)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// interfaceIPs are the box's global addresses, named in the first
// self-signed certificate.
func interfaceIPs() []net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
			ips = append(ips, n.IP)
		}
	}
	return ips
}
