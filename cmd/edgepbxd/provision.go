package main

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/net/netutil"

	"github.com/edgepbx/edgepbx/firmware/provision"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
)

// Provisioning listens on its own ports (the firewall catalogue's
// "provisioning" 8443/tcp and "prov-http" 8080/tcp), apart from the
// admin HTTPS: phones need a stable URL, the phones' zone need not reach the
// admin UI, and the client-certificate request does not touch browsers.
const provMaxConns = 256

// newProvision builds the provisioning service and binds its listeners.
func (d *daemon) newProvision(banner sipedge.Banner) error {
	if d.cfg.provHTTPSAddr == "" {
		return nil
	}
	var err error
	if d.provLn, err = net.Listen("tcp", d.cfg.provHTTPSAddr); err != nil {
		return fmt.Errorf("provisioning: listen %s: %w", d.cfg.provHTTPSAddr, err)
	}
	if d.cfg.provHTTPAddr != "" {
		if d.provHTTPLn, err = net.Listen("tcp", d.cfg.provHTTPAddr); err != nil {
			return fmt.Errorf("provisioning: listen %s: %w", d.cfg.provHTTPAddr, err)
		}
	}
	// Phones are told the address the listener is bound to, or on a
	// wildcard bind the box's first name that is not loopback (in its
	// certificate).
	host := "127.0.0.1"
	if d.cfg.provHost != "" {
		host = d.cfg.provHost
	} else if a, ok := d.provLn.Addr().(*net.TCPAddr); ok && !a.IP.IsUnspecified() {
		host = a.IP.String()
	} else {
		for _, n := range d.names {
			if ip := net.ParseIP(n); ip == nil || !ip.IsLoopback() {
				host = n
				break
			}
		}
	}
	_, sport, _ := net.SplitHostPort(d.provLn.Addr().String())
	httpsPort, _ := strconv.Atoi(sport)
	httpPort := 0
	if d.provHTTPLn != nil {
		_, hp, _ := net.SplitHostPort(d.provHTTPLn.Addr().String())
		httpPort, _ = strconv.Atoi(hp)
	}
	// The SIP-over-TLS port phones are told: the bound one (5061 unless
	// the flags say otherwise).
	sipTLS := 5061
	if d.sip != nil {
		if a, ok := d.sip.Addr("tls").(*net.TCPAddr); ok && a != nil {
			sipTLS = a.Port
		}
	}
	deps := provision.Deps{Store: d.db, Audit: d.audit, Security: d.secLog, Logger: d.log, Host: host,
		HTTPSPort: httpsPort, HTTPPort: httpPort, SIPPort: sipTLS, DataDir: d.cfg.dataDir, CAPEM: d.boxCAPEM}
	if d.sip != nil {
		deps.Extensions = d.sip.Extensions()
	}
	if banner != nil {
		deps.Banner = banner
	}
	if d.lic != nil {
		deps.Licence = d.lic
	}
	if d.prov, err = provision.New(deps); err != nil {
		return fmt.Errorf("provisioning: %w", err)
	}
	d.pnp = d.listenPnP()
	if d.cfg.pnp && d.sip != nil {
		// The same rules for the SUBSCRIBEs phones send to the SIP port itself.
		d.sip.SetProfiles(d.prov.UnicastPnP(d.phonesZone))
	}
	d.log.Info("provisioning: listening", "https", d.provLn.Addr().String(), "bootstrap", d.cfg.provHTTPAddr)
	return nil
}

// boxCAPEM is the certificate phones are told to trust: the last one of
// the active chain (the self-signed certificate itself on a fresh box).
func (d *daemon) boxCAPEM() []byte {
	c, err := d.certs.GetCertificate(nil)
	if err != nil || c == nil || len(c.Certificate) == 0 {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[len(c.Certificate)-1]})
}

// serveProvisioning runs the HTTPS and plain-HTTP provisioning listeners.
func (d *daemon) serveProvisioning(ctx context.Context) error {
	base, err := d.certs.TLSConfig(0, 0)
	if err != nil {
		return err
	}
	base.GetCertificate = d.certs.GetCertificate
	mk := func(h http.Handler) *http.Server {
		return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 10 * time.Minute, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10,
			ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelDebug)}
	}
	tlsSrv := mk(d.prov.HTTPSHandler())
	tlsSrv.TLSConfig = provision.TLSConfig(base)
	srvs := []*http.Server{tlsSrv}
	done := make(chan error, 2)
	go func() { done <- tlsSrv.ServeTLS(netutil.LimitListener(d.provLn, provMaxConns), "", "") }()
	if d.provHTTPLn != nil {
		plain := mk(d.prov.HTTPHandler())
		srvs = append(srvs, plain)
		go func() { done <- plain.Serve(netutil.LimitListener(d.provHTTPLn, provMaxConns)) }()
	}
	var first error
	select {
	case err := <-done:
		first = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range srvs {
		if err := s.Shutdown(sctx); err != nil {
			s.Close()
		}
	}
	for range len(srvs) - boolInt(first != nil) {
		if err := <-done; !errors.Is(err, http.ErrServerClosed) && first == nil {
			first = fmt.Errorf("serve: %w", err)
		}
	}
	d.prov.Close()
	return first
}

// runZeroTouch runs the phones' DHCP server as the phones settings say
// (restarted when they change; PID 1 opens UDP 67 on its interface while
// it runs) and, with --pnp, the SIP PnP responder beside the SIP edge's
// UDP sockets (which ignore the group). Neither failing stops edgepbxd:
// both report their state on the Phones page.
func (d *daemon) runZeroTouch(ctx context.Context) error {
	cfg := provision.DHCPConfig{}
	if d.ctrl != nil {
		cfg.Firewall = d.ctrl.SetDHCPServer
	}
	var pnpDone chan error
	if d.pnp != nil {
		pnpDone = make(chan error, 1)
		go func() { pnpDone <- d.pnp.Serve(ctx) }()
	}
	d.prov.RunDHCP(ctx, cfg)
	if pnpDone != nil {
		if err := <-pnpDone; err != nil {
			d.log.Warn("pnp: stopped", "err", err)
		}
	}
	return nil
}

// listenPnP binds the PnP responder on the SIP UDP port, joining the group
// on every up multicast interface and answering only sources inside the
// SIP edge's zones (read at each packet, so settings changes apply); nil
// when off or it cannot bind (logged: the PBX runs on without PnP).
func (d *daemon) listenPnP() *provision.PnP {
	if !d.cfg.pnp || d.sip == nil {
		return nil
	}
	a, ok := d.sip.Addr("udp").(*net.UDPAddr)
	if !ok || a == nil {
		return nil
	}
	p, err := d.prov.ListenPnP(provision.PnPConfig{Port: a.Port, Zone: d.phonesZone})
	if err != nil {
		d.log.Warn("pnp: not answering", "err", err)
		return nil
	}
	return p
}

// phonesZone is where SIP PnP is answered: the SIP edge's zones, read at
// each request so settings changes apply.
func (d *daemon) phonesZone() []netip.Prefix { return d.sip.Settings().AllowedZones }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
