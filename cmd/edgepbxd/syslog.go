package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgepbx/edgepbx/firmware/logs"
)

// syslogQueueDir is the remote syslog queue under the data directory.
const syslogQueueDir = "logs/syslog-queue"

// kindSyslogDropped: the remote syslog queue passed its bound and dropped
// its oldest messages.
const kindSyslogDropped logs.Kind = "syslog.queue_dropped"

// auditPoll is how often the syslog sender looks for new audit entries
// (one read of the chain head when nothing changed).
const auditPoll = 2 * time.Second

// newSyslog builds the remote syslog sender of the security log and the
// audit chain (bucket logs.syslog) and applies the stored settings; the
// admin API applies later changes to the same sender, live. It never stops
// edgepbxd: bad stored settings leave remote syslog off with an error in
// the log.
func (d *daemon) newSyslog() {
	host := d.id.Serial
	if host == "" {
		host, _ = os.Hostname()
	}
	cfg := logs.SenderConfig{Hostname: host, Logger: d.log, QueueDir: filepath.Join(d.cfg.dataDir, syslogQueueDir),
		OnDrop: func(n uint64) {
			d.secLog.Record(logs.Event{Kind: kindSyslogDropped, User: "system",
				Reason: fmt.Sprintf("%d queued remote syslog messages dropped: queue full (collector away too long)", n)})
		}}
	s, err := logs.OpenSender(cfg)
	if err != nil {
		// A damaged data partition must not stop the PBX: keep the
		// messages in memory and say so.
		d.log.Error("syslog: disk queue unusable; queueing in memory only (lost on restart)", "dir", cfg.QueueDir, "err", err)
		s = logs.NewSender(cfg)
	}
	set, err := logs.LoadSyslogSettings(d.db)
	if err == nil {
		err = s.Apply(set)
	}
	if err != nil {
		d.log.Error("syslog: stored settings refused; remote syslog stays off until saved again", "err", err)
	} else if set.Enabled && set.Unencrypted() {
		d.log.Warn("syslog: sending security events UNENCRYPTED", "transport", set.Transport, "address", set.Address)
	}
	// Audit entries after the last one the queue held are sent (all from
	// here on at first start); older ones are not.
	if h, err := d.audit.Head(); err == nil {
		d.syslogFrom = s.AuditResume(h.Seq)
	} else {
		d.log.Error("syslog: audit head", "err", err)
	}
	d.syslog = s // newIntrusion hands it the security log's events
}

// runSyslog delivers until ctx ends; neither part fails edgepbxd.
func (d *daemon) runSyslog(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.syslog.Run(ctx) })
	g.Go(func() error { return d.syslog.FollowAudit(ctx, d.audit, d.syslogFrom, auditPoll) })
	return g.Wait()
}
