package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/update"
)

// DefaultUpdateRoot is where the image carries the update repository's
// trusted TUF root.
const DefaultUpdateRoot = "/etc/edgepbx/update-root.json"

// newUpdates builds the pulled-update service. The policy is kept in any
// case; the repository is checked only with --update-repo and PID 1 to
// install (it says which board and version the box runs: it is the
// authority on both). The repository is reached through the check-in's
// proxy, and its CAs unless --update-ca names others.
func (d *daemon) newUpdates() error {
	d.updates = &update.Service{DB: d.db, Audit: d.audit, Log: d.log}
	d.auditRollback()
	if d.cfg.updateRepo == "" {
		return nil
	}
	if d.ctrl == nil {
		d.log.Warn("update: --update-repo needs PID 1 to install; pulled updates are off")
		return nil
	}
	root, err := os.ReadFile(d.cfg.updateRoot)
	if err != nil {
		return fmt.Errorf("update: trusted root: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := d.ctrl.UpdateStatus(ctx)
	if err != nil {
		return fmt.Errorf("update: ask PID 1 for the running release: %w", err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 15 * time.Second, ResponseHeaderTimeout: 30 * time.Second}
	if ca := cmp.Or(d.cfg.updateCA, d.cfg.licenseCA); ca != "" {
		if tr.TLSClientConfig.RootCAs, err = loadCAFile(ca); err != nil {
			return err
		}
	}
	if d.cfg.licenseProxy != "" {
		u, err := url.Parse(d.cfg.licenseProxy)
		if err != nil {
			return fmt.Errorf("--license-proxy: %w", err)
		}
		tr.Proxy = http.ProxyURL(u)
	}
	p, err := update.New(update.Config{RepoURL: d.cfg.updateRepo, Root: root, CacheDir: filepath.Join(d.cfg.dataDir, "tuf"), // not /data/update: that is PID 1's (0700 root)
		Board: st.Board, Running: st.VersionNumber, Transport: tr, Installer: d.ctrl, Log: d.log})
	if err != nil {
		return err
	}
	d.updates.Puller = p
	// A scheduled install restarts the box into its trial once no call is
	// in progress (within the window); PID 1 reboots.
	d.updates.Restart = d.ctrl.Reboot
	d.updates.Calls = func() int {
		if d.calls == nil {
			return 0
		}
		return d.calls.Active()
	}
	d.log.Info("update: repository configured", "repo", d.cfg.updateRepo, "board", st.Board, "version", st.Version)
	return nil
}

// updateItems are the dashboard's firmware lines: a trial boot and how
// long until it commits, the last rollback and why (from PID 1), and the
// vulnerable-version banner (from the repository).
func (d *daemon) updateItems(ctx context.Context) []admin.StatusItem {
	var items []admin.StatusItem
	if d.ctrl != nil {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := d.ctrl.UpdateStatus(ctx)
		cancel()
		switch {
		case err != nil:
		case st.Trial != nil && st.Trial.RolledBack != "":
			items = append(items, admin.StatusItem{Name: "Firmware", Value: "trial failed, rolling back: " + st.Trial.RolledBack})
		case st.Trial != nil && !st.Trial.Committed:
			items = append(items, admin.StatusItem{Name: "Firmware", OK: true, Value: fmt.Sprintf(
				"trial of %s in slot %s: commits after %v healthy (decided within %v)", st.Trial.Version, st.Trial.Slot, st.Trial.HealthyFor, st.Trial.Remaining.Round(time.Second))})
		case st.LastRollback != "":
			items = append(items, admin.StatusItem{Name: "Firmware", Value: st.Version + "; the last update was rolled back: " + st.LastRollback})
		case st.Installing:
			items = append(items, admin.StatusItem{Name: "Firmware", OK: true, Value: fmt.Sprintf("installing: %d of %d bytes written", st.Written, st.Total)})
		}
	}
	if b := d.updates.Banner(); b != "" {
		items = append(items, admin.StatusItem{Name: "Firmware update", Value: b})
	}
	return items
}

// adviseUpdates hands the check-in's advisories against this firmware
// (the vendor's vulnerable-version check) to the update service: banner,
// and by policy an install of the fix.
func (d *daemon) adviseUpdates(as []license.Advisory) {
	ids, fixed := make([]string, 0, len(as)), ""
	for _, a := range as {
		ids = append(ids, a.ID)
		if a.FixedIn != "" {
			fixed = a.FixedIn
		}
	}
	d.updates.Advise(ids, fixed)
}

// auditRollback copies PID 1's finding that this boot came back from a
// failed update (and why) into the audit log, once per boot. Failing to
// is logged: the console and the dashboard still say it.
func (d *daemon) auditRollback() {
	if d.ctrl == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := d.ctrl.UpdateStatus(ctx)
	if err != nil || !st.RolledBackAtBoot {
		return
	}
	id, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err == nil {
		err = d.updates.RecordRollback(string(id), st.LastRollback)
	}
	if err != nil {
		d.log.Error("update: audit the rollback", "err", err)
	}
}
