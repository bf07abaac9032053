package update

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
)

const (
	bucket = "update"
	// checkEvery is the daily look at the repository; tick is how often
	// the loop wakes to see whether a waiting offer's window opened.
	checkEvery = 24 * time.Hour
	tick       = 15 * time.Minute
)

// Service keeps the admin's policy in the store and runs the puller on
// schedule. Puller may be nil (no repository configured): the policy is
// still kept, and the API says no repository is set.
type Service struct {
	DB     *store.DB
	Audit  *audit.Log
	Puller *Puller
	Log    *slog.Logger
}

// Policy returns the stored policy (DefaultPolicy when none is stored).
func (s *Service) Policy() (Policy, error) {
	p := DefaultPolicy
	err := s.DB.View(func(tx *store.Tx) error {
		_, err := tx.Get(bucket, "policy", &p)
		return err
	})
	return p, err
}

// SetPolicy validates, stores and audits a policy.
func (s *Service) SetPolicy(p Policy, actor, source string) error {
	if err := p.Validate(); err != nil {
		return err
	}
	return s.DB.Update(func(tx *store.Tx) error {
		old := DefaultPolicy
		if _, err := tx.Get(bucket, "policy", &old); err != nil {
			return err
		}
		if err := tx.Put(bucket, "policy", p); err != nil {
			return err
		}
		return s.Audit.RecordTx(tx, audit.Event{Actor: actor, Source: source, Action: "update.policy", Before: old, After: p})
	})
}

// Last is the last check (empty without a repository).
func (s *Service) Last() Report {
	if s.Puller == nil {
		return Report{Action: "no-repository", Detail: "no update repository is configured on this box"}
	}
	return s.Puller.Last()
}

// Banner is the vulnerable-version warning ("" when none; also on a nil
// Service).
func (s *Service) Banner() string {
	if s == nil || s.Puller == nil {
		return ""
	}
	return s.Puller.Banner()
}

// PullNow is an admin's "install the newest now": it checks and installs
// regardless of policy and window, and audits the outcome.
func (s *Service) PullNow(ctx context.Context, actor, source string) (Report, error) {
	if s.Puller == nil {
		return s.Last(), fmt.Errorf("update: no update repository is configured on this box")
	}
	r := s.Puller.Run(ctx, Policy{Mode: ModeAll, Window: Window{Start: "00:00", Hours: 24}})
	s.audit(r, actor, source)
	return r, nil
}

func (s *Service) audit(r Report, actor, source string) {
	ev := audit.Event{Actor: actor, Source: source, Action: "update.pull", Outcome: audit.OK, Detail: r.Action}
	if r.Detail != "" {
		ev.Detail += ": " + r.Detail
	}
	if r.Action == "failed" {
		ev.Outcome = audit.Failed
	}
	if err := s.Audit.Record(ev); err != nil && s.Log != nil {
		s.Log.Error("update: audit", "err", err)
	}
}

// Run checks daily and whenever a waiting offer's window may have opened,
// until ctx ends. Installs it starts are audited as the system's.
func (s *Service) Run(ctx context.Context) {
	if s.Puller == nil {
		return
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var last time.Time
	for {
		pol, err := s.Policy()
		if err != nil && s.Log != nil {
			s.Log.Error("update: policy; using the default", "err", err)
		}
		waiting := s.Puller.Last().Action == "waiting-for-window"
		if last.IsZero() || time.Since(last) >= checkEvery || (waiting && pol.Window.Contains(s.Puller.cfg.Now())) {
			r := s.Puller.Run(ctx, pol)
			last = time.Now()
			if r.Action == "installed" || r.Action == "failed" {
				s.audit(r, "system", "update repository")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
