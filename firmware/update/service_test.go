package update

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
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
