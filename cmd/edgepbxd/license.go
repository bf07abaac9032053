package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/drivers/dmi"
	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/init/control"
)

// kindAuditAnchor is the security-log event for an audit chain that no
// longer matches the heads anchored with the licence server.
const kindAuditAnchor logs.Kind = "audit.anchor_mismatch"

// kindLicenceTamper is the security-log event for a licence state that was
// deleted, unreadable or rolled back.
const kindLicenceTamper logs.Kind = "license.state_tampered"

// maxCAFile bounds the --license-ca PEM file.
const maxCAFile = 256 << 10

// licenseView is the licence summary /healthz shows. /healthz needs no
// login, so it says only whether the box is in full service and since when
// it has been offline: reason texts and advisories (which would tell a
// stranger that this firmware has a known hole) stay behind the admin login.
type licenseView struct {
	Configured  bool      `json:"configured"`
	Mode        string    `json:"mode"`
	DaysOffline int       `json:"days_offline"`
	LastGood    time.Time `json:"last_good,omitzero"`
	Error       string    `json:"error,omitempty"` // the manager could not be built
}

// licenseState remembers the last mode and reasons reported, so only
// changes are audited (OnChange also fires after every check-in), and
// measures the CPU use between check-ins, so each reports the average
// since the one before (about a day).
type licenseState struct {
	mu   sync.Mutex
	last string
	// audit is the anchor mismatch last reported ("" none), so the event is
	// raised once, not after every check-in that repeats it.
	audit string
	cpu   *dmi.CPUMeter
}

// newLicense builds the licence manager when a server URL is configured.
// Without one there is nothing to check in with: the box runs in full mode
// and says "not configured". A manager that cannot be built (an image
// without a vendor key, a bad CA file) is logged and shown, and the box
// keeps serving: the PBX must not go down over its licence.
func (d *daemon) newLicense() {
	if d.cfg.licenseURL == "" {
		d.log.Info("license: no licence server configured (--license-url); phone-home off")
		return
	}
	d.licState.cpu = dmi.NewCPUMeter("/")
	if err := d.buildLicense(); err != nil {
		d.licErr = err.Error()
		d.log.Error("license: phone-home disabled", "err", err)
	}
}

func (d *daemon) buildLicense() error {
	id := d.cfg.licenseID
	if id == "" {
		id = d.id.Serial
	}
	cfg := license.Config{
		ServerURL: strings.TrimSuffix(d.cfg.licenseURL, "/"),
		Identity: license.Identity{
			Serial:      d.id.Serial,
			InstallID:   d.id.InstallID,
			Fingerprint: hardwareFingerprint("/", d.id.Serial),
			Firmware:    version,
			LicenceID:   id,
		},
		DB:           d.db,
		Claimed:      func() (bool, error) { return auth.IsClaimed(d.db) },
		Health:       d.loadAndCounts,
		CertNotAfter: func() time.Time { return d.certs.Current().NotAfter },
		AuditHead:    d.auditAnchor,
		RestoredFrom: d.restoredFrom,
		AuditAt:      d.auditAt,
		OnChange:     d.licenseChanged,
		Logger:       d.log,
	}
	if d.ctrl != nil {
		cfg.Floors = controlFloors{d.ctrl}
	}
	if d.cfg.licenseCA != "" {
		pool, err := loadCAFile(d.cfg.licenseCA)
		if err != nil {
			return err
		}
		cfg.RootCAs = pool
	}
	if d.cfg.licenseProxy != "" {
		u, err := url.Parse(d.cfg.licenseProxy)
		if err != nil {
			return fmt.Errorf("--license-proxy: %w", err)
		}
		cfg.Proxy = u
	}
	m, err := license.New(cfg)
	if err != nil {
		return err
	}
	d.lic = m
	st := m.State()
	d.log.Info("license: phone-home configured", "server", cfg.ServerURL, "licence", id, "mode", st.Mode, "next_check", st.NextCheck)
	return nil
}

// auditAnchor is the audit chain head the daily check-in anchors with the
// vendor.
func (d *daemon) auditAnchor() (license.Anchor, error) {
	h, err := d.audit.Head()
	if err != nil {
		return license.Anchor{}, err
	}
	return license.AnchorFromHead(h.Seq, h.Hash)
}

// auditAt is entry seq of the audit log as an anchor (the entry the last
// good check-in anchored, re-sent as the log holds it now).
func (d *daemon) auditAt(seq uint64) (license.Anchor, bool, error) {
	h, found, err := d.audit.HashAt(seq)
	if err != nil || !found {
		return license.Anchor{}, found, err
	}
	a, err := license.AnchorFromHead(seq, h)
	return a, true, err
}

func loadCAFile(path string) (*x509.CertPool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--license-ca: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxCAFile+1))
	if err != nil {
		return nil, fmt.Errorf("--license-ca: %w", err)
	}
	if len(raw) > maxCAFile {
		return nil, fmt.Errorf("--license-ca %s: larger than %d bytes", path, maxCAFile)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("--license-ca %s: no PEM certificate", path)
	}
	return pool, nil
}

// licenseChanged audits changes of mode or reasons (the licence package
// logs them itself); admins see them in the audit log until the admin UI
// shows the licence state.
func (d *daemon) licenseChanged(st license.State) {
	d.auditAnchorEvent(st)
	d.adviseUpdates(st.Advisories)
	codes := make([]string, 0, len(st.Reasons))
	for _, r := range st.Reasons {
		codes = append(codes, r.Code)
	}
	key := string(st.Mode) + " " + strings.Join(codes, ",")
	d.licState.mu.Lock()
	changed := key != d.licState.last
	d.licState.last = key
	d.licState.mu.Unlock()
	if !changed {
		return
	}
	for _, r := range st.Reasons {
		if r.Code == license.ReasonTampered || r.Code == license.ReasonRollback {
			d.secLog.Record(logs.Event{Kind: kindLicenceTamper, User: "system", Reason: r.Message})
		}
	}
	if err := d.audit.Record(audit.Event{Actor: "system", Action: "license.state", Target: string(st.Mode),
		Detail: strings.Join(codes, ","), After: st}); err != nil {
		d.log.Error("license: audit", "err", err)
	}
}

// auditAnchorEvent raises the security event when the licence server says
// the audit log no longer matches its anchors: security log, audit entry,
// and (through the state's reason) the admins' licence banner. Service is
// not limited: the evidence is what matters, and it stays with the vendor.
func (d *daemon) auditAnchorEvent(st license.State) {
	key := ""
	if r := st.AuditRollback; r != nil {
		key = fmt.Sprintf("%d %s", r.Seq, r.Reason)
	}
	d.licState.mu.Lock()
	changed := key != d.licState.audit
	d.licState.audit = key
	d.licState.mu.Unlock()
	if !changed || key == "" {
		return
	}
	r := st.AuditRollback
	msg := fmt.Sprintf("audit chain anchor mismatch at seq %d", r.Seq)
	d.log.Error("license: "+msg, "reason", r.Reason)
	d.secLog.Record(logs.Event{Kind: kindAuditAnchor, User: "system", Reason: fmt.Sprintf("%s: %s", msg, r.Reason)})
	if err := d.audit.Record(audit.Event{Actor: "system", Action: "audit.anchor_mismatch", Target: strconv.FormatUint(r.Seq, 10),
		Detail: msg, After: r}); err != nil {
		d.log.Error("license: audit", "err", err)
	}
}

func (d *daemon) licenseView() licenseView {
	if d.cfg.licenseURL == "" {
		return licenseView{Mode: "not configured"}
	}
	if d.lic == nil {
		return licenseView{Configured: true, Mode: "unavailable", Error: "phone-home could not start; see the log"}
	}
	st := d.lic.State()
	return licenseView{Configured: true, Mode: string(st.Mode), DaysOffline: st.DaysOffline, LastGood: st.LastGood}
}

// loadAndCounts is the coarse health summary sent with each check-in: sizes
// only, no numbers or names.
func (d *daemon) loadAndCounts() (license.Load, license.Counts) {
	l := license.Load{CPUs: runtime.NumCPU()}
	// The first check-in has no baseline: the average since boot would be
	// the boot itself (99 % under emulation) and read as "hardware too
	// small". No figure until there is an interval to measure.
	if pct, ok := d.licState.cpu.Percent(); ok {
		l.CPUPercent = pct
	}
	total, avail := dmi.MemInfo("/")
	if total > 0 {
		l.MemMB = int(total / 1024)
		l.MemPercent = min(100, max(0, int((total-avail)*100/total)))
	}
	c := license.Counts{Extensions: len(d.sip.Extensions().List()), Trunks: len(d.sipConfig().Trunks)}
	return l, c
}

// hardwareFingerprint hashes what identifies the hardware under root
// (dmi.HardwareIDs); without any of it (a container) it falls back to the
// serial.
func hardwareFingerprint(root, serial string) string {
	parts := dmi.HardwareIDs(root)
	if len(parts) == 0 {
		parts = []string{"serial=" + serial}
	}
	return license.Fingerprint(parts...)
}

func (d *daemon) runLicense(ctx context.Context) error { return d.lic.Run(ctx) }

// controlFloors reaches PID 1's monotonic floors (TPM NV where the board
// has one) over the control socket; PID 1 refuses a lower value itself.
type controlFloors struct{ c *control.Client }

func (f controlFloors) Get(ctx context.Context) (map[string]uint64, error) {
	st, err := f.c.GetFloors(ctx)
	return st.Floors, err
}

func (f controlFloors) Raise(ctx context.Context, name string, v uint64) error {
	return f.c.RaiseFloor(ctx, name, v)
}
