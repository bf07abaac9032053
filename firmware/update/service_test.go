package update

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/store"
)

func newService(t *testing.T, p *Puller) (*Service, *audit.Log) {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(t.TempDir(), "edgepbx.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	al := audit.New(db, auth.SystemClock{})
	return &Service{DB: db, Audit: al, Puller: p}, al
}

// TestServicePolicy: the default is security-only in a night window; a
// valid policy is stored and audited; a bad one is refused naming the
// field and changes nothing.
func TestServicePolicy(t *testing.T) {
	s, al := newService(t, nil)
	if p, err := s.Policy(); err != nil || p != DefaultPolicy {
		t.Fatalf("default: %+v %v", p, err)
	}
	want := Policy{Mode: ModeAll, Window: Window{Start: "22:30", Hours: 4}}
	if err := s.SetPolicy(want, "root1", "192.0.2.7"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPolicy(Policy{Mode: "weekly", Window: want.Window}, "root1", "192.0.2.7"); !errors.Is(err, ErrPolicy) {
		t.Fatalf("bad mode: %v", err)
	}
	if p, _ := s.Policy(); p != want {
		t.Fatalf("stored %+v", p)
	}
	es, err := al.Query(audit.Filter{Action: "update.policy"})
	if err != nil || len(es) != 1 {
		t.Fatalf("audit: %d entries, %v", len(es), err)
	}
	if _, err := s.PullNow(context.Background(), "root1", "x"); err == nil {
		t.Fatal("pull without a repository")
	}
}

// TestServicePullNow installs the newest bundle at once whatever the
// policy says, and audits it.
func TestServicePullNow(t *testing.T) {
	r := newPullRig(t)
	r.now = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC) // outside every default window
	r.repo.add(Offer{Path: "pc-x86_64/edgepbx-1.2.0.bundle", Board: "pc-x86_64", Version: "1.2.0", Number: 120},
		r.box.bundle(t, "1.2.0", 120, randBytes(100<<10)))
	r.repo.publish(time.Now().Add(24 * time.Hour))
	s, al := newService(t, r.p)
	s.SetPolicy(Policy{Mode: ModeNotify, Window: Window{Start: "03:00", Hours: 1}}, "root1", "x")
	rep, err := s.PullNow(context.Background(), "root1", "192.0.2.7")
	if err != nil || rep.Action != "installed" || r.box.slots.State().TrialSlot != "b" {
		t.Fatalf("pull now: %+v %v", rep, err)
	}
	es, _ := al.Query(audit.Filter{Action: "update.pull"})
	if len(es) != 1 || es[0].Outcome != audit.OK {
		t.Fatalf("audit %+v", es)
	}
}

// TestServiceAdvisory: the check-in's advisory against the running
// firmware (the vulnerable-version check) puts up the banner, looks at
// the repository at once, and makes security-only install a bundle the
// repository did not mark as a security fix.
func TestServiceAdvisory(t *testing.T) {
	r := newPullRig(t)
	r.repo.add(Offer{Path: "pc-x86_64/edgepbx-1.2.0.bundle", Board: "pc-x86_64", Version: "1.2.0", Number: 120},
		r.box.bundle(t, "1.2.0", 120, randBytes(100<<10)))
	r.repo.publish(time.Now().Add(24 * time.Hour))
	s, al := newService(t, r.p)
	s.SetPolicy(Policy{Mode: ModeSecurity, Window: Window{Start: "00:00", Hours: 24}}, "root1", "x")
	if rep := s.CheckNow(context.Background()); rep.Action != "available" || s.Banner() != "" {
		t.Fatalf("without an advisory: %+v, banner %q", rep, s.Banner())
	}
	s.Advise([]string{"ADV-7"}, "1.2.0")
	if b := s.Banner(); !strings.Contains(b, "ADV-7") || !strings.Contains(b, "fixed in 1.2.0") {
		t.Fatalf("banner %q", b)
	}
	if _, _, kick := s.advice(); len(kick) != 1 {
		t.Fatal("a new advisory does not look at the repository at once")
	}
	if rep := s.CheckNow(context.Background()); rep.Action != "installed" || r.box.slots.State().TrialSlot != "b" {
		t.Fatalf("with an advisory: %+v", rep)
	}
	if es, _ := al.Query(audit.Filter{Action: "update.pull"}); len(es) != 1 || es[0].Actor != "system" {
		t.Fatalf("audit %+v", es)
	}
	s.Advise(nil, "")
	if s.Banner() != "" {
		t.Fatalf("banner after the advisory is lifted: %q", s.Banner())
	}
}

// TestRecordRollback: PID 1's rollback is one audit entry per boot, with
// its reason, however often edgepbxd starts in that boot.
func TestRecordRollback(t *testing.T) {
	s, al := newService(t, nil)
	for _, c := range []struct{ boot, reason string }{
		{"7c5d0e0a-1", "trial boot of slot b never reached its PID 1"},
		{"7c5d0e0a-1", "trial boot of slot b never reached its PID 1"}, // edgepbxd restarted
		{"9a1b2c3d-2", "slot b (version 3) was not healthy"},
	} {
		if err := s.RecordRollback(c.boot, c.reason); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RecordRollback("", "x"); err == nil {
		t.Fatal("empty boot id accepted")
	}
	es, err := al.Query(audit.Filter{Action: "update.rollback"})
	if err != nil || len(es) != 2 {
		t.Fatalf("audit: %d entries, %v", len(es), err)
	}
	for _, e := range es {
		if e.Outcome != audit.Failed || !strings.Contains(e.Detail, "slot b") {
			t.Fatalf("entry %+v", e)
		}
	}
}

// TestServiceRestartsIntoTrial: a scheduled install restarts the box into
// its trial only inside the window and with no call in progress; a failed
// restart is audited and tried again; an admin's "install now" leaves the
// reboot to the admin.
func TestServiceRestartsIntoTrial(t *testing.T) {
	r := newPullRig(t)
	r.repo.add(Offer{Path: "pc-x86_64/edgepbx-1.2.0.bundle", Board: "pc-x86_64", Version: "1.2.0", Number: 120, Security: true},
		r.box.bundle(t, "1.2.0", 120, randBytes(100<<10)))
	r.repo.publish(time.Now().Add(24 * time.Hour))
	s, al := newService(t, r.p)
	pol := Policy{Mode: ModeSecurity, Window: Window{Start: "03:00", Hours: 2}}
	if err := s.SetPolicy(pol, "root1", "x"); err != nil {
		t.Fatal(err)
	}
	calls, restarts := 2, 0
	var restartErr error
	s.Calls = func() int { return calls }
	s.Restart = func(context.Context) error { restarts++; return restartErr }
	ctx := context.Background()

	if rep := s.CheckNow(ctx); rep.Action != "installed" || r.box.slots.State().TrialSlot != "b" {
		t.Fatalf("scheduled check: %+v", rep)
	}
	if rep := s.CheckNow(ctx); rep.Action != "installed" {
		t.Fatalf("a check while waiting to restart: %+v", rep)
	}
	if es, _ := al.Query(audit.Filter{Action: "update.pull"}); len(es) != 1 {
		t.Fatalf("a check while waiting to restart wrote the slot again: %d installs audited", len(es))
	}
	steps := []struct {
		name        string
		now         time.Time
		calls       int
		err         error
		waiting     bool
		restarts    int
		lastOutcome string
	}{
		{"calls in progress", time.Date(2026, 12, 7, 3, 40, 0, 0, time.UTC), 2, nil, true, 0, ""},
		{"window closed", time.Date(2026, 12, 7, 5, 1, 0, 0, time.UTC), 0, nil, true, 0, ""},
		{"reboot refused", time.Date(2026, 12, 8, 3, 5, 0, 0, time.UTC), 0, errors.New("PID 1 unreachable"), true, 1, audit.Failed},
		{"idle in the window", time.Date(2026, 12, 8, 3, 6, 0, 0, time.UTC), 0, nil, false, 2, audit.OK},
		{"done", time.Date(2026, 12, 8, 3, 7, 0, 0, time.UTC), 0, nil, false, 2, audit.OK},
	}
	for _, st := range steps {
		r.now, calls, restartErr = st.now, st.calls, st.err
		if w := s.restartIfIdle(ctx, pol); w != st.waiting || restarts != st.restarts {
			t.Fatalf("%s: waiting %v, %d restarts; want %v, %d", st.name, w, restarts, st.waiting, st.restarts)
		}
		es, _ := al.Query(audit.Filter{Action: "update.restart"})
		if st.lastOutcome == "" {
			if len(es) != 0 {
				t.Fatalf("%s: audit %+v", st.name, es)
			}
			continue
		}
		if len(es) == 0 || es[len(es)-1].Outcome != st.lastOutcome || !strings.Contains(es[len(es)-1].Detail, "version 1.2.0") {
			t.Fatalf("%s: audit %+v; want the newest entry %s naming the version", st.name, es, st.lastOutcome)
		}
	}

	// An admin's install now: the admin reboots when it suits them.
	r2 := newPullRig(t)
	r2.repo.add(Offer{Path: "pc-x86_64/edgepbx-1.2.0.bundle", Board: "pc-x86_64", Version: "1.2.0", Number: 120},
		r2.box.bundle(t, "1.2.0", 120, randBytes(100<<10)))
	r2.repo.publish(time.Now().Add(24 * time.Hour))
	s2, _ := newService(t, r2.p)
	s2.Restart = func(context.Context) error { t.Fatal("restarted after an admin's install now"); return nil }
	if rep, err := s2.PullNow(ctx, "root1", "x"); err != nil || rep.Action != "installed" {
		t.Fatalf("pull now: %+v %v", rep, err)
	}
	if s2.restartIfIdle(ctx, DefaultPolicy) {
		t.Fatal("an admin's install is waiting for an unattended restart")
	}
}

// TestNextRetry: a failed look (a box whose network is not up yet when
// edgepbxd starts) is retried after a minute, then less often, never less
// often than daily; a good one goes back to the daily check.
func TestNextRetry(t *testing.T) {
	d := time.Duration(0)
	for i, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute} {
		if d = nextRetry(d, true); d != want {
			t.Fatalf("failure %d: retry after %v, want %v", i+1, d, want)
		}
	}
	if got := nextRetry(20*time.Hour, true); got != checkEvery {
		t.Fatalf("capped at %v, want %v", got, checkEvery)
	}
	if got := nextRetry(4*time.Minute, false); got != 0 {
		t.Fatalf("after a good look: %v", got)
	}
}
