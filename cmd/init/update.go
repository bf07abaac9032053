package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/init/atomicfile"
	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/shutdown"
	"github.com/edgepbx/edgepbx/init/update"
)

// floorFile is the box's persisted anti-rollback floor. Deleting it (an
// owner with the disk) does not open older versions than the running
// image's own floor, which is inside the signed image.
const floorFile = "/data/update/floor"

// licenceBeforeFile keeps edgepbxd's licence mode when an update was
// installed: the trial of that update must not leave it worse.
const licenceBeforeFile = "/data/update/licence-before"

// slotLayer is the A/B boot layer: init/slots (UEFI Boot#### per slot,
// BootNext for the trial, BootOrder on commit) plugs in here. A board
// without one (nil) installs no updates: the control socket answers
// "updates not available".
func (b *box) slotLayer() (update.Slots, error) { return nil, nil }

// updateTrust reads what the image says about itself (board, version,
// floor) and the update keys it trusts, under root ("/" on the box).
func updateTrust(root string) (update.Release, *bundle.Keyring, error) {
	raw, err := os.ReadFile(filepath.Join(root, update.ReleasePath))
	if err != nil {
		return update.Release{}, nil, fmt.Errorf("release file: %w", err)
	}
	rel, err := update.ParseRelease(raw)
	if err != nil {
		return rel, nil, err
	}
	keys, err := bundle.LoadKeyring(filepath.Join(root, bundle.KeyringPath))
	if err != nil {
		return rel, nil, err
	}
	return rel, keys, nil
}

// startUpdates builds the installer behind the control socket's
// InstallUpdate; nil when this box cannot install updates (said once).
func (b *box) startUpdates() *update.Service {
	sl, err := b.slotLayer()
	if err == nil && sl == nil {
		err = errors.New("this board has no A/B slot layer")
	}
	var rel update.Release
	var keys *bundle.Keyring
	if err == nil {
		rel, keys, err = updateTrust("/")
	}
	if err != nil {
		b.log.Warn("update: firmware updates are not available", "err", err)
		return nil
	}
	floor := update.FileFloor{Path: floorFile}
	audit := func(e update.Event) {
		if e.Action == "refused" || e.Action == "downgrade" || e.Action == "rolled-back" {
			b.say("update %s: %s", e.Action, e.Detail)
		}
		if e.Action == "installed" {
			h, _, _ := b.health.snapshot()
			if err := atomicfile.Write(licenceBeforeFile, []byte(h.Licence+"\n"), 0o600); err != nil {
				b.log.Error("update: record the licence mode", "err", err)
			}
		}
	}
	if raw, err := os.ReadFile(licenceBeforeFile); err == nil {
		b.licenceBefore = strings.TrimSpace(string(raw))
	}
	b.trialCfg = &update.TrialConfig{Slots: sl, Floor: floor, Running: rel, Healthy: b.trialHealthy,
		Reboot: func() { b.request(shutdown.Reboot) }, Say: b.say, Audit: audit, Log: b.log}
	return &update.Service{In: update.NewInstaller(update.Config{Slots: sl, Keys: keys, Running: rel, Floor: floor, Audit: audit, Log: b.log}),
		LastRollback: sl.State().LastRollback}
}

// updater is the control socket's Updater: a nil interface, not a nil
// pointer in one, when updates are not available.
func (b *box) updater() control.Updater {
	if b.updates == nil {
		return nil
	}
	return b.updates
}

// startTrial runs once edgepbxd is started: a trial boot commits after
// the box stayed healthy, a failed one is rolled back and said so.
func (b *box) startTrial() {
	if b.updates == nil || b.trialCfg == nil {
		return
	}
	t, err := update.Boot(b.ctx, *b.trialCfg)
	if err != nil {
		b.say("WARNING: update trial: %v", err)
		return
	}
	b.updates.SetTrial(t)
}

// trialHealthy is a trial boot's verdict: the firewall is applied, and
// edgepbxd reports ready (its store opened, SIP and the admin side
// listening) and did so recently.
func (b *box) trialHealthy() (bool, string) {
	h, at, seen := b.health.snapshot()
	switch {
	case b.fw == nil:
		return false, "firewall not applied"
	case !seen:
		return false, "edgepbxd has not reported health"
	case !h.Ready:
		return false, "edgepbxd not ready: " + h.Detail
	case time.Since(at) >= healthMaxAge:
		return false, "edgepbxd's health reports stopped"
	case control.LicenceRank(h.Licence) < control.LicenceRank(b.licenceBefore):
		return false, fmt.Sprintf("licence %q is worse than %q before the update", h.Licence, b.licenceBefore)
	}
	return true, ""
}

// updateArgs are edgepbxd's flags for pulled updates: only when this box
// installs updates and its image names a repository.
func (b *box) updateArgs() []string {
	if b.updates == nil || b.trialCfg == nil || b.trialCfg.Running.Repo == "" {
		return nil
	}
	return []string{"--update-repo", b.trialCfg.Running.Repo, "--update-root", "/etc/edgepbx/update-root.json"}
}
