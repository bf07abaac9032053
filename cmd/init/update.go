package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/init/atomicfile"
	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/keys"
	"github.com/edgepbx/edgepbx/init/shutdown"
	"github.com/edgepbx/edgepbx/init/slots"
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
// BootNext for the trial, BootOrder on commit), opened by openSlots. A box
// without one (nil: no UEFI disk image) installs no updates: the control
// socket answers "updates not available".
func (b *box) slotLayer() (update.Slots, error) {
	if b.slots == nil {
		return nil, nil
	}
	return slotAdapter{b.slots}, nil
}

// slotAdapter is init/slots seen as update.Slots.
type slotAdapter struct{ m *slots.Manager }

func (a slotAdapter) State() update.BootState {
	st := a.m.State()
	return update.BootState{Booted: st.Booted, Trial: st.Trial, TrialSlot: st.TrialSlot,
		RolledBack: st.RolledBack, LastRollback: st.LastRollback, FailedSlot: st.FailedSlot}
}

func (a slotAdapter) Inactive() (update.Slot, error) {
	s, err := a.m.Inactive()
	if err != nil {
		return update.Slot{}, err
	}
	return update.Slot{Name: s.Name, Path: s.Path, Size: s.Size}, nil
}

func (a slotAdapter) MarkInvalid(name string) error { return a.m.MarkInvalid(name) }
func (a slotAdapter) MarkTrial(name string) error   { return a.m.MarkTrial(name) }
func (a slotAdapter) Commit() error                 { return a.m.Commit() }
func (a slotAdapter) Rollback(reason string) error  { return a.m.Rollback(reason) }

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
	var floor update.Floor = update.FileFloor{Path: floorFile}
	if b.floors != nil && b.floors.Hardware() {
		floor = versionFloor{file: update.FileFloor{Path: floorFile}, hw: b.floors}
	}
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
	b.adminProbe = func(fp string) error {
		ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
		defer cancel()
		return adminAnswers(ctx, adminAddr, fp)
	}
	healthyFor, deadline := trialTimes(b)
	b.trialCfg = &update.TrialConfig{Slots: sl, Floor: floor, Running: rel, Healthy: b.trialHealthy, HealthyFor: healthyFor, Deadline: deadline,
		Reboot: func() { b.request(shutdown.Reboot) }, Say: b.say, Audit: audit, Log: b.log}
	st := sl.State()
	return &update.Service{In: update.NewInstaller(update.Config{Slots: sl, Keys: keys, Running: rel, Floor: floor, Audit: audit, Log: b.log}),
		LastRollback: st.LastRollback, RolledBackAtBoot: st.RolledBack}
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

// trialHealthy is a trial boot's verdict: the firewall is applied,
// edgepbxd reports ready (its store opened, SIP and the admin side
// listening) and did so recently, its licence is not worse than before
// the update, and the admin side answers.
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
	if b.adminProbe != nil {
		if err := b.adminProbe(h.TLSFingerprint); err != nil {
			return false, err.Error()
		}
	}
	return true, ""
}

// updateArgs are edgepbxd's flags for pulled updates: only when this box
// installs updates and its image names a repository.
func (b *box) updateArgs() []string {
	if b.updates == nil || b.trialCfg == nil || b.trialCfg.Running.Repo == "" {
		return nil
	}
	args := []string{"--update-repo", b.trialCfg.Running.Repo, "--update-root", "/etc/edgepbx/update-root.json"}
	if b.trialCfg.Running.RepoCA {
		args = append(args, "--update-ca", update.RepoCAPath)
	}
	return args
}

// adminAddr is where a trial boot asks edgepbxd's admin side whether it
// answers (it listens on :443).
const adminAddr = "127.0.0.1:443"

// adminAnswers checks that the admin side answers /healthz over TLS with
// the certificate edgepbxd reported: listening is not answering (a wedged
// handler passes a listener check).
func adminAnswers(ctx context.Context, addr, fingerprint string) error {
	if fingerprint == "" {
		return errors.New("edgepbxd reported no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Pinned to what edgepbxd reported: the box's own certificate is
		// self-signed or names a public host, never 127.0.0.1.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no certificate")
			}
			sum := sha256.Sum256(raw[0])
			var b strings.Builder
			for i, c := range sum {
				if i > 0 {
					b.WriteByte(':')
				}
				fmt.Fprintf(&b, "%02X", c)
			}
			if !strings.EqualFold(b.String(), fingerprint) {
				return errors.New("the admin side serves another certificate than edgepbxd reported")
			}
			return nil
		}}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/healthz", nil)
	if err != nil {
		return err
	}
	res, err := (&http.Client{Transport: tr, Timeout: 3 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("admin side: %w", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("admin side answers /healthz with %s", res.Status)
	}
	return nil
}

// versionFloor keeps the firmware version floor in the TPM's NV floors as
// well as in the file, so restoring an older /data (or deleting the file)
// cannot lower it; the higher of the two holds.
type versionFloor struct {
	file update.FileFloor
	hw   *keys.Floors
}

func (f versionFloor) Get() (uint64, error) {
	v, err := f.file.Get()
	if err != nil {
		v = 0 // a damaged file: the TPM's value (and the image's own floor) still hold
	}
	return max(v, f.hw.All()[control.UpdateVersionFloor]), nil
}

func (f versionFloor) Raise(to uint64) error {
	if to > f.hw.All()[control.UpdateVersionFloor] {
		if err := f.hw.Raise(control.UpdateVersionFloor, to); err != nil {
			return err
		}
	}
	return f.file.Raise(to)
}
