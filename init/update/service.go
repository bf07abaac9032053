package update

import (
	"context"
	"io"
	"sync"

	"github.com/edgepbx/edgepbx/init/control"
)

// Service is PID 1's control.Updater: installs through the Installer and
// reports its progress and this boot's trial.
type Service struct {
	In *Installer
	// LastRollback is what the boot layer recorded of the last rollback;
	// RolledBackAtBoot: this boot came back from that failed trial.
	LastRollback     string
	RolledBackAtBoot bool

	mu    sync.Mutex
	trial *Trial
}

// SetTrial records this boot's trial (Boot's result) for Status.
func (s *Service) SetTrial(t *Trial) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trial = t
}

// Install implements control.Updater.
func (s *Service) Install(ctx context.Context, r io.Reader) (control.UpdateResult, error) {
	res, err := s.In.Install(ctx, r)
	if err != nil {
		return control.UpdateResult{}, err
	}
	m := res.Manifest
	return control.UpdateResult{Slot: res.Slot, Version: m.Version, VersionNumber: m.VersionNumber, Downgrade: res.Downgrade,
		BytesWritten: res.BytesWritten, BytesRead: res.BytesRead}, nil
}

// Status implements control.Updater.
func (s *Service) Status() control.UpdateStatus {
	w, total := s.In.Progress()
	st := control.UpdateStatus{Installing: total > 0, Written: w, Total: total, Board: s.In.cfg.Running.Board,
		Version: s.In.cfg.Running.Version, VersionNumber: s.In.cfg.Running.VersionNumber, Floor: s.In.EffectiveFloor(), LastRollback: s.LastRollback,
		RolledBackAtBoot: s.RolledBackAtBoot}
	s.mu.Lock()
	t := s.trial
	s.mu.Unlock()
	if t != nil {
		ts := t.State()
		st.Trial = &control.TrialStatus{Slot: ts.Slot, Version: ts.Version, HealthyFor: ts.HealthyFor, HealthySince: ts.HealthySince,
			Remaining: ts.Remaining, Committed: ts.Committed, RolledBack: ts.RolledBack}
	}
	return st
}

var _ control.Updater = (*Service)(nil)
