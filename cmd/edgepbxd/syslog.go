package main

import (
	"context"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgepbx/edgepbx/firmware/logs"
)

// auditPoll is how often the syslog sender looks for new audit entries
// (one read of the chain head when nothing changed).
const auditPoll = 2 * time.Second

// syslogRunner forwards the security log and the audit chain to the
// remote collector of the stored settings (bucket logs.syslog); the admin
// API applies later changes to the same sender, live.
type syslogRunner struct {
	d      *daemon
	sender *logs.Sender
	after  uint64 // audit head when wired: older entries are not sent
}

// newSyslog builds the sender, applies the stored settings and hooks the
// security log and the admin API to it. It never stops edgepbxd: bad
// stored settings leave remote syslog off with an error in the log.
func (d *daemon) newSyslog() *syslogRunner {
	host := d.id.Serial
	if host == "" {
		host, _ = os.Hostname()
	}
	s := logs.NewSender(logs.SenderConfig{Hostname: host, Logger: d.log})
	set, err := logs.LoadSyslogSettings(d.db)
	if err == nil {
		err = s.Apply(set)
	}
	if err != nil {
		d.log.Error("syslog: stored settings refused; remote syslog stays off until saved again", "err", err)
	} else if set.Enabled && set.Unencrypted() {
		d.log.Warn("syslog: sending security events UNENCRYPTED", "transport", set.Transport, "address", set.Address)
	}
	r := &syslogRunner{d: d, sender: s}
	if h, err := d.admin.Audit().Head(); err == nil {
		r.after = h.Seq
	} else {
		d.log.Error("syslog: audit head", "err", err)
	}
	if d.secLog != nil {
		d.secLog.Forward(s.Event)
	}
	d.admin.SetSyslog(s)
	return r
}

// run delivers until ctx ends; neither part fails edgepbxd.
func (r *syslogRunner) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.sender.Run(ctx) })
	g.Go(func() error { return r.sender.FollowAudit(ctx, r.d.admin.Audit(), r.after, auditPoll) })
	return g.Wait()
}
