package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/privacy"
)

// privacySweepEvery is how often retention is applied to every category.
const privacySweepEvery = time.Hour

// connlogFlushEvery bounds how long a connection log entry waits in memory.
const connlogFlushEvery = time.Second

// registerPrivacy adds every category that holds personal data. Later
// ones (voicemail, recordings, provisioning fetch log, backups) are
// registered here by their owners' constructors' callers when they land.
func (d *daemon) registerPrivacy() error {
	for _, c := range []privacy.Category{
		privacy.CDRs{DB: d.db, Store: cdr.New(d.db)},
		privacy.SecurityLog{DB: d.db, Log: d.secLog},
		privacy.Audit{DB: d.db, Log: d.audit, Floor: d.auditFloor},
		privacy.LoginHistory{DB: d.db, Auth: d.auth},
		privacy.Connections{DB: d.db, Log: d.conns},
	} {
		if err := d.privacy.Register(c); err != nil {
			return fmt.Errorf("privacy: %w", err)
		}
	}
	if d.intrusion != nil { // nil: its store could not be read, the report is off
		if err := d.privacy.Register(privacy.Intrusion{DB: d.db, Agg: d.intrusion}); err != nil {
			return fmt.Errorf("privacy: %w", err)
		}
	}
	return nil
}

// auditFloor is the audit entry the licence check-in last anchored: audit
// retention keeps it and everything after it.
func (d *daemon) auditFloor() uint64 {
	if d.lic == nil {
		return 0
	}
	return d.lic.Anchored()
}

// runPrivacy sweeps retention hourly and flushes the connection log.
func (d *daemon) runPrivacy(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // a failed flush stops the sweep too (before the Wait)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.privacy.Run(ctx, privacySweepEvery, d.log); err != nil {
			d.log.Error("privacy: sweep stopped", "err", err)
		}
	}()
	if err := d.conns.Run(ctx, connlogFlushEvery); err != nil {
		return fmt.Errorf("connection log: %w", err)
	}
	return nil
}
