package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
)

// Security log sizing: events kept in the store, and how often the batch
// is written (one fsync per interval, whatever the attack rate).
const (
	secLogMax   = 10000
	secLogFlush = 5 * time.Second
)

// sipConfig is the SIP edge's configuration: the stored SIP settings (the
// security page; defaults when none are saved) with the listen addresses
// from the command line and the box's own names as its domains.
func (d *daemon) sipConfig() pbxconfig.SIP {
	if d.sipSet != nil {
		return d.sipConfigFor(d.sipSet.Current())
	}
	return d.sipConfigFor(pbxconfig.DefaultSIPSettings())
}

// sipConfigFor is sipConfig for the settings set.
func (d *daemon) sipConfigFor(set pbxconfig.SIPSettings) pbxconfig.SIP {
	c := set.Apply(pbxconfig.DefaultSIP())
	c.UDP, c.TCP, c.TLS, c.WSS = d.cfg.sipAddr, d.cfg.sipAddr, d.cfg.sipTLSAddr, ""
	// config.SIP refuses ':' in a domain, so IPv6 literals are left out;
	// IPv4 literals and names are listed.
	for _, n := range d.names {
		if !strings.Contains(n, ":") {
			c.Domains = append(c.Domains, n)
		}
	}
	return c
}

// loadSIPSettings reads the stored SIP settings. Stored settings that no
// longer validate leave the edge on the defaults and the page unavailable,
// rather than the box without SIP.
func (d *daemon) loadSIPSettings() {
	s, err := pbxconfig.LoadSIP(d.db)
	if err != nil {
		d.log.Error("sip: stored settings refused, running the defaults", "err", err)
		return
	}
	d.sipSet = s
	d.log.Info("sip: settings", "version", s.Running())
}

// liveSIPSettings makes every saved SIP settings version go to the running
// edge at once (sipedge.Server.Apply) before it is stored; a version the edge
// refuses is not stored and the admin gets the error.
func (d *daemon) liveSIPSettings() {
	if d.sipSet == nil {
		return
	}
	d.sipSet.SetApplier(func(set pbxconfig.SIPSettings) ([]string, error) {
		restart, err := d.sip.Apply(d.sipConfigFor(set))
		if err != nil {
			d.log.Error("sip: settings refused by the edge", "version", set.Version, "err", err)
			return nil, err
		}
		d.log.Info("sip: settings applied", "version", set.Version, "restart_pending", restart)
		return restart, nil
	})
}

// newSIP builds the SIP edge and binds its sockets, so a taken port fails
// before edgepbxd reports ready. banner is nil without PID 1.
func (d *daemon) newSIP(banner sipedge.Banner) error {
	d.loadSIPSettings()
	tlsCfg, err := d.certs.TLSConfig(0, 0)
	if err != nil {
		return fmt.Errorf("sip: %w", err)
	}
	d.sip, err = sipedge.New(d.sipConfig(), sipedge.Deps{Store: d.db, Banner: banner, Security: d.secLog, Connections: d.conns, TLS: tlsCfg, Logger: d.log})
	if err != nil {
		return err
	}
	d.liveSIPSettings()
	args := []any{}
	for _, t := range []string{"udp", "tcp", "tls"} {
		if a := d.sip.Addr(t); a != nil {
			args = append(args, t, a.String())
		}
	}
	d.log.Info("sip: listening", args...)
	return nil
}

// sipAddrs describes the bound SIP sockets for the dev banner and health.
func (d *daemon) sipAddrs() string {
	s := ""
	for _, t := range []string{"udp", "tcp", "tls"} {
		if a := d.sip.Addr(t); a != nil {
			if s != "" {
				s += " "
			}
			s += t + " " + a.String()
		}
	}
	return s
}

func (d *daemon) serveSIP(ctx context.Context) error { return d.sip.Serve(ctx) }

func (d *daemon) runSecLog(ctx context.Context) error { return d.secLog.Run(ctx, secLogFlush) }
