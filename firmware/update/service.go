package update

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
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
	// restartTick is how often a scheduled install waiting to restart
	// into its trial looks whether the calls have ended.
	restartTick = 30 * time.Second
)

// Service keeps the admin's policy in the store and runs the puller on
// schedule. Puller may be nil (no repository configured): the policy is
// still kept, and the API says no repository is set.
type Service struct {
	DB     *store.DB
	Audit  *audit.Log
	Puller *Puller
	Log    *slog.Logger
	// Restart reboots the box (through PID 1) into the trial a scheduled
	// install prepared: an unattended box must run the fix, not only hold
	// it in a slot. Nil: the trial waits for someone to reboot.
	Restart func(ctx context.Context) error
	// Calls counts calls in progress: the restart waits, within the
	// maintenance window, until there are none (nil: never busy).
	Calls func() int

	mu      sync.Mutex
	advised []string      // advisories in force for the running firmware
	fixedIn string        // the version they name as fixed
	kick    chan struct{} // an advisory arrived: look now
	pending string        // version a scheduled install wrote, waiting to restart into
}

// Advise records the check-in's advisories against the running firmware
// (the vendor's vulnerable-version check). While any is in force a newer
// bundle counts as a security fix (security-only installs it, in the
// window) and the banner says so; a new advisory looks at the repository
// at once instead of at the next daily check.
func (s *Service) Advise(ids []string, fixedIn string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	isNew := len(ids) > 0 && !slices.Equal(ids, s.advised)
	s.advised, s.fixedIn = slices.Clone(ids), fixedIn
	if s.kick == nil {
		s.kick = make(chan struct{}, 1)
	}
	k := s.kick
	s.mu.Unlock()
	if isNew {
		select {
		case k <- struct{}{}:
		default:
		}
	}
}

func (s *Service) advice() ([]string, string, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kick == nil {
		s.kick = make(chan struct{}, 1)
	}
	return s.advised, s.fixedIn, s.kick
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

// SetPolicy validates, stores and audits a policy; the schedule looks at
// the repository again at once under it.
func (s *Service) SetPolicy(p Policy, actor, source string) error {
	if err := p.Validate(); err != nil {
		return err
	}
	defer func() {
		_, _, k := s.advice()
		select {
		case k <- struct{}{}:
		default:
		}
	}()
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
	if s == nil {
		return ""
	}
	if ids, fixed, _ := s.advice(); len(ids) > 0 {
		b := "This firmware has known security problems (" + strings.Join(ids, ", ") + ")"
		if fixed != "" {
			b += "; fixed in " + fixed
		}
		if s.Puller != nil {
			if r := s.Puller.Last(); r.Newest != nil {
				b += fmt.Sprintf("; version %s is available (%s)", r.Newest.Version, r.Action)
			}
		}
		return b + "."
	}
	if s.Puller == nil {
		return ""
	}
	return s.Puller.Banner()
}

// CheckNow looks at the repository by the stored policy (and the
// advisories in force) and installs by it; installs and failures are
// audited as the system's.
func (s *Service) CheckNow(ctx context.Context) Report {
	if s.Puller == nil {
		return s.Last()
	}
	s.mu.Lock()
	pending := s.pending
	s.mu.Unlock()
	if pending != "" {
		return s.Last() // installed; waiting to restart into it, not to write it again
	}
	pol, err := s.Policy()
	if err != nil && s.Log != nil {
		s.Log.Error("update: policy; using the default", "err", err)
	}
	ids, _, _ := s.advice()
	r := s.Puller.run(ctx, pol, len(ids) > 0)
	if r.Action == "installed" || r.Action == "failed" {
		s.audit(r, "system", "update repository")
	}
	if r.Action == "installed" && r.Result != nil && s.Restart != nil {
		s.mu.Lock()
		s.pending = r.Result.Version
		s.mu.Unlock()
	}
	return r
}

// restartIfIdle reboots into the trial of a scheduled install when the
// window is open and no call is in progress; it reports whether an
// install is still waiting. A failed reboot is audited and tried again.
func (s *Service) restartIfIdle(ctx context.Context, pol Policy) bool {
	s.mu.Lock()
	v := s.pending
	s.mu.Unlock()
	if v == "" {
		return false
	}
	if !pol.Window.Contains(s.Puller.cfg.Now()) || (s.Calls != nil && s.Calls() > 0) {
		return true
	}
	ev := audit.Event{Actor: "system", Source: "update repository", Action: "update.restart", Outcome: audit.OK,
		Detail: "restarting into the trial of version " + v + " (scheduled install, no calls in progress)"}
	err := s.Restart(ctx)
	if err != nil {
		ev.Outcome, ev.Detail = audit.Failed, ev.Detail+": "+err.Error()
	}
	if aerr := s.Audit.Record(ev); aerr != nil && s.Log != nil {
		s.Log.Error("update: audit", "err", aerr)
	}
	if err != nil {
		if s.Log != nil {
			s.Log.Error("update: restart into the trial", "version", v, "err", err)
		}
		return true
	}
	if s.Log != nil {
		s.Log.Info("update: restarting into the trial", "version", v)
	}
	s.mu.Lock()
	s.pending = ""
	s.mu.Unlock()
	return false
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
// until ctx ends. Installs it starts are audited as the system's, and
// restart the box into their trial once no call is in progress.
func (s *Service) Run(ctx context.Context) {
	if s.Puller == nil {
		return
	}
	var last time.Time
	var retry time.Duration // after a failed look (no network yet at boot): 1 min, doubling
	for {
		pol, _ := s.Policy()
		waiting := s.Puller.Last().Action == "waiting-for-window"
		if last.IsZero() || time.Since(last) >= checkEvery || (retry > 0 && time.Since(last) >= retry) ||
			(waiting && pol.Window.Contains(s.Puller.cfg.Now())) {
			r := s.CheckNow(ctx)
			last = time.Now()
			retry = nextRetry(retry, r.Action == "failed")
		}
		wait := tick
		if retry > 0 {
			wait = min(wait, retry)
		}
		if s.restartIfIdle(ctx, pol) {
			wait = restartTick
		}
		_, _, kick := s.advice()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-kick:
			t.Stop()
			last = time.Time{} // look now
		}
	}
}

// nextRetry is the wait before looking again after a check: none after a
// good one; after a failure 1 min, doubling up to the daily check.
func nextRetry(prev time.Duration, failed bool) time.Duration {
	if !failed {
		return 0
	}
	return min(max(2*prev, time.Minute), checkEvery)
}
