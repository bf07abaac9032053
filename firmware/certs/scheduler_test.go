package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/certs/pebbletest"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

func TestACMERetryAfter(t *testing.T) {
	for _, c := range []struct {
		failures int
		want     time.Duration
	}{
		{0, 15 * time.Minute}, {1, 15 * time.Minute}, {2, 30 * time.Minute}, {3, time.Hour},
		{5, 4 * time.Hour}, {6, 8 * time.Hour}, {7, 12 * time.Hour}, {50, 12 * time.Hour},
	} {
		if got := acmeRetryAfter(c.failures); got != c.want {
			t.Errorf("acmeRetryAfter(%d) = %v, want %v", c.failures, got, c.want)
		}
	}
}

// TestACMESchedulerAttempts drives the scheduler against pebble, one
// attempt at a time: off until enabled; a CA it cannot trust is a failure
// in its status, the security log and the audit chain (with a backoff);
// trusting it, a certificate is issued over HTTP-01 on a listener open only
// during the order; then nothing is due until an admin forces a renewal.
// A new scheduler on the same store reads the status back.
func TestACMESchedulerAttempts(t *testing.T) {
	httpPort := netnstest.FreePort(t, "tcp")
	ca := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort})
	db := storetest.Open(t, nil)
	quiet := slog.New(slog.DiscardHandler)
	mgr, err := Load(db, Identity{Serial: "EPX0001"}, WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	sec, err := logs.New(db, 100)
	if err != nil {
		t.Fatal(err)
	}
	al := audit.New(db, systemClock{})
	s, err := NewACMEScheduler(ACMESchedulerConfig{DB: db, Certs: mgr, Security: sec, Audit: al, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if wait := s.attempt(ctx, false); wait != acmeCheckEvery || s.Status().State != ACMEOff {
		t.Fatalf("disabled: wait %v, status %+v", wait, s.Status())
	}

	set := ACMESettings{Enabled: true, DirectoryURL: ca.DirURL, Names: []string{"pbx.edgepbx.test"},
		Challenge: ChallengeHTTP01, HTTPAddr: fmt.Sprintf("127.0.0.1:%d", httpPort)}
	if _, _, err := SaveACMESettings(db, set); err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 2; n++ {
		if wait := s.attempt(ctx, false); wait != acmeRetryAfter(n) {
			t.Fatalf("failure %d: wait %v", n, wait)
		}
		if st := s.Status(); st.State != ACMEFailed || st.Failures != n || !strings.Contains(st.LastError, "certificate") {
			t.Fatalf("failure %d: status %+v", n, st)
		}
	}
	if mgr.Current().Source == SourceACME {
		t.Fatal("a failed order changed the certificate")
	}
	if ev := lastEvent(sec); ev.Kind != KindACMEFailed || ev.User != "pbx.edgepbx.test" {
		t.Fatalf("security event %+v", ev)
	}
	if e := lastAudit(t, al); e.Action != "certs.acme" || e.Outcome != audit.Failed || e.Actor != "system" {
		t.Fatalf("audit %+v", e)
	}

	set.CAPEM = string(ca.ListenerPEM)
	if _, _, err := SaveACMESettings(db, set); err != nil {
		t.Fatal(err)
	}
	if wait := s.attempt(ctx, false); wait != acmeCheckEvery {
		t.Fatalf("issuance: wait %v, status %+v", wait, s.Status())
	}
	first := mgr.Current()
	if first.Source != SourceACME || s.Status().State != ACMEIdle || s.Status().Failures != 0 || s.Status().LastSuccess.IsZero() {
		t.Fatalf("after issuance: %+v, status %+v", first, s.Status())
	}
	if ev := lastEvent(sec); ev.Kind != KindACMEIssued || !strings.Contains(ev.Reason, first.Fingerprint) {
		t.Fatalf("security event %+v", ev)
	}
	if e := lastAudit(t, al); e.Action != "certs.acme" || e.Outcome == audit.Failed {
		t.Fatalf("audit %+v", e)
	}
	if c, err := net.Dial("tcp", set.HTTPAddr); err == nil {
		c.Close()
		t.Fatalf("http-01 listener %s open after the order", set.HTTPAddr)
	}

	s.attempt(ctx, false)
	if mgr.Current().Fingerprint != first.Fingerprint {
		t.Fatal("a current certificate was renewed")
	}
	s.attempt(ctx, true)
	if mgr.Current().Fingerprint == first.Fingerprint {
		t.Fatal("a forced renewal kept the certificate")
	}
	// The new certificate and its audit entry are one transaction: an
	// entry that cannot be written leaves the certificate as it was.
	second := mgr.Current()
	s.audit = txFailingAudit{al}
	s.attempt(ctx, true)
	if mgr.Current().Fingerprint != second.Fingerprint || s.Status().State != ACMEFailed {
		t.Fatalf("renewal whose audit entry failed: serving %s (was %s), status %+v", mgr.Current().Fingerprint, second.Fingerprint, s.Status())
	}
	if e := lastAudit(t, al); e.Action != "certs.acme" || e.Outcome != audit.Failed {
		t.Fatalf("audit %+v", e)
	}
	s.audit = al
	if s.attempt(ctx, true); mgr.Current().Fingerprint == second.Fingerprint || s.Status().State != ACMEIdle {
		t.Fatalf("renewal after the audit failure: status %+v", s.Status())
	}

	again, err := NewACMEScheduler(ACMESchedulerConfig{DB: db, Certs: mgr, Security: sec, Audit: al, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if st := again.Status(); st.State != ACMEIdle || st.LastSuccess.IsZero() {
		t.Fatalf("status read back %+v", st)
	}
}

// TestACMESchedulerNeedsItsServices: the scheduler is built with its
// services, not patched up later.
func TestACMESchedulerNeedsItsServices(t *testing.T) {
	if _, err := NewACMEScheduler(ACMESchedulerConfig{}); err == nil {
		t.Fatal("built without store, certificates, security log and audit")
	}
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func lastEvent(l *logs.Log) logs.Event {
	ev := l.Recent(1)
	if len(ev) == 0 {
		return logs.Event{}
	}
	return ev[0]
}

func lastAudit(t *testing.T, l *audit.Log) audit.Entry {
	t.Helper()
	h, err := l.Head()
	if err != nil {
		t.Fatal(err)
	}
	es, err := l.After(h.Seq-1, 1)
	if err != nil || len(es) != 1 {
		t.Fatalf("audit entry %d: %v %v", h.Seq, es, err)
	}
	return es[0]
}

// txFailingAudit records alone but fails inside a transaction, like a
// chain that cannot take the entry committed with a change.
type txFailingAudit struct{ *audit.Log }

func (txFailingAudit) RecordTx(*store.Tx, audit.Event) error {
	return errors.New("audit entry refused")
}
