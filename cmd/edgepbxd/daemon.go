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
	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/backup"
	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/conference"
	"github.com/edgepbx/edgepbx/firmware/connlog"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/intrusion"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/mailer"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/moh"
	"github.com/edgepbx/edgepbx/firmware/metrics"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/presence"
	"github.com/edgepbx/edgepbx/firmware/privacy"
	"github.com/edgepbx/edgepbx/firmware/provision"
	"github.com/edgepbx/edgepbx/firmware/queue"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/firmware/telephony"
	"github.com/edgepbx/edgepbx/firmware/update"
	"github.com/edgepbx/edgepbx/firmware/voicemail"
	"github.com/edgepbx/edgepbx/init/control"
)

// daemon holds what every service shares. It is built once, in
// dependency order, by newDaemon and passed explicitly; there is no
// package-level state.
type daemon struct {
	cfg     config
	updates *update.Service // pulled updates: policy, repository check
	log     *slog.Logger
	id      bootstrap
	started time.Time

	activity *admin.Activity // the dashboard's 24-hour series (activity.go)

	// Shared services, built first and handed to the others.
	db     *store.DB
	audit  *audit.Log
	secLog *logs.Log
	auth   *auth.Service
	// privacy owns retention, anonymisation and subject requests over the
	// stores that hold personal data; conns is the connection log.
	privacy *privacy.Registry
	conns   *connlog.Log
	// ctrl is PID 1's control socket (nil in dev mode without --control):
	// health reports, firewall bans and pinholes.
	ctrl *control.Client

	certs  *certs.Manager
	keylog *certs.KeyLog // opt-in TLS key log of the admin HTTPS (admin UI turns it on)
	acme   *certs.ACMEScheduler
	// names are the host names and addresses the box answers to (its
	// certificate's, the stored ACME names, plus loopback in dev mode): the
	// admin Origin check and the SIP domains.
	names []string

	sip        *sipedge.Server
	sipSet     *pbxconfig.SIPStore       // stored SIP settings; nil: the stored ones were refused, defaults run
	tel        *pbxconfig.TelephonyStore // stored telephony configuration; nil: unreadable, calls disabled
	trunks     *telephony.Trunks         // trunk registrations; nil with tel
	calls      *call.B2BUA               // nil: calls disabled
	features   *features.Engine          // call features in front of the dial plan; nil with calls
	queues     *queue.Manager            // call queues' live state (set with features)
	events     *presence.Server          // SUBSCRIBE/NOTIFY (events.go); nil: SUBSCRIBE gets 501
	relay      *media.Relay              // the calls' RTP relay; nil with calls
	voicemail  *voicemail.Service        // nil: disabled (logged)
	conference *conference.Service       // conference rooms (conference.go); nil: disabled (logged)
	moh        *moh.Library              // music on hold; nil with conference
	mail       *mailer.Service           // outgoing e-mail (mail.go); nil: disabled (logged)
	recs       *recordings               // call recording (recordings.go); nil: disabled (logged)
	metrics    *metrics.Handler          // /metrics on the HTTPS port
	syslog     *logs.Sender              // remote syslog of the security log and the audit chain
	syslogFrom uint64                    // audit head when the sender was wired: older entries are not sent
	intrusion  *intrusion.Aggregator     // intrusion report; nil: its store could not be read
	backup     *backup.Service           // encrypted backups; nil: disabled (logged)
	lic        *license.Manager          // nil: no licence server configured, or it failed to build (licErr)
	licErr     string
	licState   licenseState
	admin      *admin.Server
	httpsLn    net.Listener
	prov       *provision.Service // nil: provisioning disabled (--prov-https "")
	provLn     net.Listener
	provHTTPLn net.Listener
	pnp        *provision.PnP // SIP PnP responder; nil: off (--pnp) or not bound
	media      *mediaEngine   // recordings and prompts of the media applications (mediaengine.go); nil: disabled (logged)

	// claimed mirrors the auth service's claim state for the health
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
// in newDaemon (its listeners bound there too, so bind errors come before
// "ready"), and added here. The admin UI/API has no loop of its own: it is
// a handler in routes.
func (d *daemon) services() []service {
	s := []service{{"https", d.serveHTTPS}, {"sip", d.serveSIP}, {"seclog", d.runSecLog}, {"acme", d.acme.Run},
		{"syslog", d.runSyslog}, {"intrusion", d.runIntrusion}, {"backup", d.runBackup}, {"privacy", d.runPrivacy},
		{"mail", d.runMail}}
	s = append(s, service{"telephony", d.runTelephony}) // trunk registrations, CDR retention
	s = append(s, service{"activity", d.runActivity})   // dashboard charts
	if d.lic != nil {
		s = append(s, service{"license", d.runLicense})
	}
	if d.prov != nil {
		s = append(s, service{"provisioning", d.serveProvisioning})
		s = append(s, service{"zerotouch", d.runZeroTouch}) // phones' DHCP server, SIP PnP
	}
	if d.updates != nil && d.updates.Puller != nil {
		s = append(s, service{"update", func(ctx context.Context) error { d.updates.Run(ctx); return nil }})
	}
	if d.ctrl != nil {
		s = append(s, service{"health", func(ctx context.Context) error { return d.reportHealth(ctx, d.ctrl) }})
	}
	if d.media != nil { // retention of recordings and voicemail
		s = append(s, service{"recordings", d.runRecordings})
	}
	if d.voicemail != nil { // messages whose audio retention deleted
		s = append(s, service{"voicemail-retention", d.runVoicemailPrune})
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
	if cfg.devDir != "" {
		d.printDevBanner(stdout)
	}
	return d.runServices(ctx, d.services())
}

// newDaemon builds edgepbxd in dependency order: identity, store, the
// shared services (audit chain, security log, PID 1's control socket,
// auth), certificates, SIP edge, licence, telephony, remote syslog, calls,
// metrics (they read the services above), admin, and last the HTTPS listener. Listeners are bound here, so a taken
// port fails before "ready". Errors a restart cannot fix wrap errStayDown.
func newDaemon(cfg config, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, log: log, started: time.Now()}
	defer func() {
		if err != nil {
			d.close() // d, not the (nil) result: release what was opened
		}
		// A sealed value that does not open (a wrong device key, a damaged
		// or mis-restored record) stays so across restarts: stay down in
		// PID 1's safe state rather than restart until the watchdog fires.
		if errors.Is(err, store.ErrUnseal) && !errors.Is(err, errStayDown) {
			err = fmt.Errorf("%w: %w", errStayDown, err)
		}
	}()
	if d.id, err = takeIdentity(cfg, log); err != nil {
		return nil, err
	}
	if d.db, err = store.Open(filepath.Join(cfg.dataDir, "edgepbx.db"), d.id.DeviceKey); err != nil {
		switch {
		case errors.Is(err, store.ErrNewerSchema):
			err = fmt.Errorf("%w: %w", errStayDown, err)
		case errors.Is(err, store.ErrCorrupt):
			// Never start empty over a damaged store (that would lose every
			// secret and account for good): stay down, say what to do.
			err = fmt.Errorf("%w: %w; the file is left as it is: restore a backup onto a fresh store "+
				"(edgepbx backup restore after claiming the box again) or factory-reset the box", errStayDown, err)
		}
		return nil, err
	}
	clock := auth.SystemClock{}
	d.audit = audit.New(d.db, clock)
	// One full walk at start; requests then verify only new entries.
	if res, err := d.audit.VerifyFull(); err != nil {
		log.Error("audit chain broken", "err", err, "verified_entries", res.Entries)
	}
	if d.secLog, err = logs.New(d.db, secLogMax); err != nil {
		return nil, fmt.Errorf("security log: %w", err)
	}
	var p pid1 // PID 1's services; all nil in dev mode without --control
	if cfg.controlPath != "" {
		if d.ctrl, err = dialControl(cfg.controlPath); err != nil {
			return nil, err
		}
		p = pid1{banner: controlBanner{d.ctrl}, firewall: d.ctrl, system: d.ctrl, network: d.ctrl, pinholes: d.ctrl, updates: d.ctrl}
		p.reset = d.ctrl
	}
	// The privacy settings come before the writers that anonymise with them.
	if d.privacy, err = privacy.New(d.db, d.audit, clock); err != nil {
		// Its hash keys are sealed: a wrong device key or a damaged store
		// stays wrong across restarts.
		return nil, fmt.Errorf("%w: privacy settings: %w", errStayDown, err)
	}
	d.conns = connlog.New(d.db, clock, d.privacy.Anonymiser("connections"))
	d.secLog.Anonymise(d.privacy.SourceAnonymiser("security_log"))
	if d.auth, err = auth.New(auth.Config{DB: d.db, Clock: clock, Audit: d.audit, Banner: p.banner,
		SetupCode: auth.SetupCode(d.id.SetupCode), Logger: log,
		Attacks:     func(a auth.AdminAttack) { d.secLog.Record(adminAttackEvent(a)) },
		Connections: d.conns, AnonymiseSource: d.privacy.Anonymiser("login_history")}); err != nil {
		return nil, fmt.Errorf("%w: auth: %w", errStayDown, err)
	}
	claimed, err := d.auth.Claimed()
	if err != nil {
		return nil, fmt.Errorf("auth: claim state: %w", err)
	}
	d.claimed.Store(claimed)

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
	d.keylog = certs.NewKeyLog(nil, log)
	if d.acme, err = certs.NewACMEScheduler(certs.ACMESchedulerConfig{DB: d.db, Certs: d.certs,
		Security: d.secLog, Audit: d.audit, Logger: log}); err != nil {
		return nil, err
	}
	d.names = boxNames(d.db, d.certs, cfg.devDir != "")

	if err := d.newSIP(p.banner); err != nil {
		return nil, err
	}
	// The licence gates what the admin side may create and the dial plan.
	d.newLicense()
	d.newTelephony()
	d.newSyslog()
	d.newIntrusion()
	if err := d.newEvents(); err != nil {
		log.Error("events: disabled", "err", err)
	}
	if err := d.newMediaEngine(); err != nil {
		// The admin UI must stay reachable to fix what is wrong.
		log.Error("media engine: recordings and prompts disabled", "err", err)
	}
	d.newMail() // before the calls: voicemail mails through it
	if err := d.newCalls(p.pinholes); err != nil {
		// The admin UI must stay reachable to fix what is wrong.
		log.Error("calls: disabled", "err", err)
	}
	if err := d.newMetrics(); err != nil {
		return nil, err
	}
	d.newBackup()
	if err := d.newUpdates(); err != nil {
		return nil, err
	}
	if err := d.newProvision(p.banner); err != nil {
		return nil, err
	}
	if err := d.registerPrivacy(); err != nil {
		return nil, err
	}
	d.activity = admin.NewActivity()
	if d.admin, err = admin.NewServer(admin.Deps{
		Store:       d.db,
		Audit:       d.audit,
		Auth:        d.auth,
		Clock:       clock,
		Logger:      log,
		Names:       d.names,
		Certs:       d.certs,
		KeyLog:      d.keylog,
		Extensions:  d.sip.Extensions(),
		Status:      d.dashboard,
		SIPSettings: ifSet[admin.SIPSettings](d.sipSet),
		ACME:        d.acme,
		Telephony:   d.telephonyStore(),
		Features:    ifSet[admin.Features](d.features),
		Queues:      ifSet[admin.Queues](d.features),
		TrunkStatus: d.trunkStatus(),
		Syslog:      d.syslog,
		Licence:     ifSet[admin.Licence](d.lic),
		Firewall:    p.firewall,
		System:      p.system,
		Reset:       p.reset,
		Network:     p.network,
		SIPBlocks:   sipBlocks{d.sip},
		Voicemail:   ifSet[admin.Voicemail](d.voicemail),
		Conference:  ifSet[admin.Conference](d.conference),
		Music:       ifSet[admin.MusicOnHold](d.moh),
		Mail:        ifSet[admin.Mail](d.mail),
		Prompts:     d.promptLibrary(),
		Recordings:  ifSet[admin.Recordings](d.recs),
		Intrusion:   ifSet[admin.Intrusion](d.intrusion),
		Metrics:     d.metrics,
		Backups:     ifSet[admin.Backups](d.backup),
		Phones:      ifSet[admin.Phones](d.prov),
		Privacy:     d.privacy,
		Connections: d.conns,
		Live:        liveView{sip: d.sip, calls: d.calls},
		Activity:    d.activity,
		Updates:     p.updates,
		Pull:        d.updates,
	}); err != nil {
		return nil, fmt.Errorf("%w: %w", errStayDown, err)
	}
	if d.httpsLn, err = net.Listen("tcp", cfg.httpsAddr); err != nil {
		return nil, fmt.Errorf("https: listen %s: %w", cfg.httpsAddr, err)
	}
	log.Info("https: listening", "addr", d.httpsLn.Addr().String(), "fingerprint", d.certs.Fingerprint())
	return d, nil
}

// takeIdentity is the box's identity: from PID 1 on fd 3, or made in the
// --dev directory.
func takeIdentity(cfg config, log *slog.Logger) (bootstrap, error) {
	if cfg.devDir != "" {
		if os.Geteuid() == 0 {
			log.Warn("edgepbxd: --dev running as root; it does not need to")
		}
		id, err := devIdentity(cfg.devDir)
		if err != nil {
			return bootstrap{}, fmt.Errorf("%w: %w", errStayDown, err)
		}
		return id, nil
	}
	if os.Geteuid() == 0 {
		return bootstrap{}, fmt.Errorf("%w: refusing to run as root: PID 1 starts edgepbxd as its unprivileged uid (on a development host use --dev DIR)", errStayDown)
	}
	id, err := readBootstrapFD(cfg.bootstrapFD)
	if err != nil {
		return bootstrap{}, fmt.Errorf("%w: %w", errStayDown, err)
	}
	return id, nil
}

// pid1 is what edgepbxd asks of PID 1 over the control socket, as the
// interfaces the services take; every field is nil in dev mode without one.
type pid1 struct {
	banner   sipedge.Banner // also the auth service's auth.Banner (the same method)
	firewall admin.Firewall
	system   admin.System
	reset    admin.Resetter
	network  admin.Network
	pinholes media.Pinholes
	updates  admin.Updates
}

// ifSet is p as the interface I, or a nil I when p is nil: a nil pointer
// stored in an interface would not compare equal to nil, and the services
// take a nil interface to mean "not available".
func ifSet[I any, P interface{ *E }, E any](p P) I {
	var none I
	if p == nil {
		return none
	}
	return any(p).(I)
}

// close releases listeners and the store, last thing before exit.
func (d *daemon) close() {
	if d.httpsLn != nil {
		d.httpsLn.Close()
	}
	for _, l := range []net.Listener{d.provLn, d.provHTTPLn} {
		if l != nil {
			l.Close()
		}
	}
	if d.pnp != nil {
		d.pnp.Close()
	}
	if d.events != nil {
		d.events.Close() // normally closed by the edge's Serve already
	}
	if d.sip != nil {
		d.sip.Close()
	}
	if d.ctrl != nil {
		d.ctrl.Close()
	}
	if d.syslog != nil {
		// Services have stopped: write what is queued and the position.
		if err := d.syslog.Close(); err != nil {
			d.log.Error("syslog: close queue", "err", err)
		}
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
// served and the self-signed fallback), the public names ACME is set up for
// (they reach this box), and its current addresses (DHCP may have moved it
// since the certificate was made); in dev mode, where it is only reached on
// loopback, 127.0.0.1 and ::1 instead.
func boxNames(db *store.DB, m *certs.Manager, dev bool) []string {
	var names []string
	if set, err := certs.LoadACMESettings(db); err == nil && set.Enabled {
		names = append(names, set.Names...)
	}
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
