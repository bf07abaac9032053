// Package update is PID 1's side of firmware updates: it takes a bundle
// as a stream (from edgepbxd over the control socket), verifies the
// manifest's signature before writing a byte, writes the image to the
// inactive slot while hashing exactly the bytes it writes, reads them back,
// and only then marks the slot for a trial boot. After the trial boot it
// commits the slot when the box stays healthy (Trial), or returns to the
// old one.
//
// Nothing edgepbxd says is trusted: it can only feed bytes; the verdict
// is PID 1's. An upload that stops halfway leaves the slot marked invalid.
package update

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/init/atomicfile"
	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/strictjson"
)

// Slot is a system slot. Path is the partition's block device (a plain
// file in tests); Size bounds the image.
type Slot struct {
	Name string
	Path string
	Size int64
}

// BootState is what the boot layer knows after boot.
type BootState struct {
	Booted string // slot running now
	// Trial: the boot layer booted a slot marked for a trial and not yet committed.
	Trial     bool
	TrialSlot string
	// RolledBack: the boot layer itself found, at this boot, that a trial
	// ended without a commit (init/slots clears it while taking over);
	// LastRollback says why.
	RolledBack   bool
	LastRollback string
	FailedSlot   string // with RolledBack: the slot whose trial failed
}

// Slots is the A/B boot layer (init/slots on a real box: UEFI BootNext,
// BootOrder and a trial variable). Every method is durable when it returns.
type Slots interface {
	State() BootState
	Inactive() (Slot, error)
	// MarkInvalid makes a slot unbootable before it is written.
	MarkInvalid(name string) error
	// MarkTrial makes the next boot (only) boot this slot.
	MarkTrial(name string) error
	// Commit makes the running trial slot the default.
	Commit() error
	// Rollback ends the trial, recording why; the next boot boots the old slot.
	Rollback(reason string) error
}

// Release is what an image says about itself (/etc/edgepbx/release.json,
// written by the image builder): its board, version and the anti-rollback
// floor it carries. It is inside the signed image, so editing /data
// cannot lower it.
type Release struct {
	Board         string `json:"board"`
	Version       string `json:"version"`
	VersionNumber uint64 `json:"version_number"`
	Floor         uint64 `json:"floor"`
	// Repo is the vendor's update repository (https://…/, TUF metadata;
	// its root at /etc/edgepbx/update-root.json); "" none.
	Repo string `json:"repo,omitempty"`
	// RepoCA says the image carries the repository's own CA
	// (/etc/edgepbx/update-ca.pem) for a vendor whose repository is not
	// under a public CA; false: the system roots.
	RepoCA bool `json:"repo_ca,omitempty"`
}

// RepoCAPath is where an image carries its update repository's CA.
const RepoCAPath = "/etc/edgepbx/update-ca.pem"

// ReleasePath is where the image builder puts the release file.
const ReleasePath = "/etc/edgepbx/release.json"

// ParseRelease decodes a release file strictly.
func ParseRelease(b []byte) (Release, error) {
	var r Release
	if len(b) > 4<<10 {
		return r, errors.New("release file larger than 4 KiB")
	}
	if err := strictjson.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("release file: %w", err)
	}
	if r.Board == "" || r.VersionNumber == 0 || r.Floor > r.VersionNumber {
		return r, errors.New("release file: board, version_number and floor <= version_number required")
	}
	if r.Repo != "" && (!strings.HasPrefix(r.Repo, "https://") || len(r.Repo) > 512) {
		return r, errors.New("release file: repo must be an https:// URL")
	}
	if r.RepoCA && r.Repo == "" {
		return r, errors.New("release file: repo_ca without a repo")
	}
	return r, nil
}

// Floor is the box's persisted anti-rollback floor. It only rises.
type Floor interface {
	Get() (uint64, error)
	Raise(to uint64) error
}

// FileFloor keeps the floor in a file written atomically. The effective
// floor is never below the running image's own floor, so deleting or
// editing this file does not open older versions than the image allows.
type FileFloor struct{ Path string }

// Get returns the persisted floor; a missing file is 0.
func (f FileFloor) Get() (uint64, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("version floor: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("version floor %s: %w", f.Path, err)
	}
	return n, nil
}

// Raise sets the floor to to if that is higher.
func (f FileFloor) Raise(to uint64) error {
	cur, err := f.Get()
	if err != nil {
		cur = 0 // a damaged file is replaced; the running image's floor still holds
	}
	if to <= cur {
		return nil
	}
	return atomicfile.Write(f.Path, []byte(strconv.FormatUint(to, 10)+"\n"), 0o600)
}

// Event is an audit entry of PID 1's update path: every refusal, every
// install, downgrade, commit and rollback. PID 1 logs it (console and
// syslog) and edgepbxd copies the reply into its audit log.
type Event struct {
	Action  string // "refused", "installed", "downgrade", "committed", "rolled-back"
	Reason  bundle.Reason
	Field   string
	Slot    string
	Version string
	Number  uint64
	KeyID   string
	Detail  string
}

// Config configures an Installer.
type Config struct {
	Slots   Slots
	Keys    *bundle.Keyring
	Running Release
	Floor   Floor
	// Audit receives every event; nil logs only.
	Audit func(Event)
	Log   *slog.Logger
}

// Installer installs bundles into the inactive slot, one at a time.
type Installer struct {
	cfg  Config
	busy sync.Mutex

	written atomic.Int64
	total   atomic.Int64
}

// NewInstaller returns an installer.
func NewInstaller(cfg Config) *Installer {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Installer{cfg: cfg}
}

// Result is what an install did.
type Result struct {
	Slot      string          `json:"slot"`
	Manifest  bundle.Manifest `json:"manifest"`
	Downgrade bool            `json:"downgrade,omitempty"`
	// BytesWritten and BytesRead (the read-back) for the figures.
	BytesWritten int64 `json:"bytes_written"`
	BytesRead    int64 `json:"bytes_read"`
}

// Progress reports image bytes written of the total (0, 0 when idle).
func (in *Installer) Progress() (written, total int64) {
	return in.written.Load(), in.total.Load()
}

// EffectiveFloor is the higher of the persisted floor and the running
// image's own floor.
func (in *Installer) EffectiveFloor() uint64 {
	f := in.cfg.Running.Floor
	if in.cfg.Floor != nil {
		if p, err := in.cfg.Floor.Get(); err == nil {
			f = max(f, p)
		} else {
			in.cfg.Log.Warn("update: persisted version floor unreadable; using the image's", "err", err)
		}
	}
	return f
}

const chunk = 1 << 20

// Install reads one bundle from r. Refusals are *bundle.Error naming what
// is wrong; those found before the first image byte (format, key,
// signature, board, floor, space) change nothing at all, and later ones
// (hash, size, a stream that stops) leave the inactive slot marked
// invalid. Every refusal is audited.
func (in *Installer) Install(ctx context.Context, r io.Reader) (res Result, err error) {
	if !in.busy.TryLock() {
		err := bundle.Refuse(bundle.ReasonBusy, "", "another update is being installed")
		in.audit(Event{Action: "refused", Reason: bundle.ReasonBusy, Detail: err.Error()})
		return res, err
	}
	defer in.busy.Unlock()
	defer in.written.Store(0)
	defer in.total.Store(0)

	var m bundle.Manifest
	defer func() {
		if err != nil {
			e := Event{Action: "refused", Reason: bundle.ReasonOf(err), Slot: res.Slot, Version: m.Version,
				Number: m.VersionNumber, KeyID: m.KeyID, Detail: err.Error()}
			var be *bundle.Error
			if errors.As(err, &be) {
				e.Field = be.Field
			} else {
				e.Reason = bundle.ReasonIO
			}
			in.audit(e)
		}
	}()

	h, err := bundle.ReadHeader(r)
	if err != nil {
		return res, err
	}
	m = h.Manifest
	key, err := h.Verify(in.cfg.Keys)
	if err != nil {
		return res, err
	}
	slot, err := in.cfg.Slots.Inactive()
	if err != nil {
		return res, &bundle.Error{Reason: bundle.ReasonIO, Msg: "no inactive slot", Err: err}
	}
	down, err := h.Check(key, bundle.Box{Board: in.cfg.Running.Board, Floor: in.EffectiveFloor(), SlotSize: slot.Size})
	if err != nil {
		return res, err
	}
	res.Slot, res.Manifest, res.Downgrade = slot.Name, m, down

	// From here the slot's old content is going: it is unbootable first.
	if err := in.cfg.Slots.MarkInvalid(slot.Name); err != nil {
		return res, &bundle.Error{Reason: bundle.ReasonIO, Msg: "mark slot " + slot.Name + " invalid", Err: err}
	}
	in.total.Store(m.ImageSize)
	w, err := os.OpenFile(slot.Path, os.O_RDWR, 0)
	if err != nil {
		return res, &bundle.Error{Reason: bundle.ReasonIO, Msg: "open slot " + slot.Name, Err: err}
	}
	defer w.Close()
	res.BytesWritten, err = in.write(ctx, w, bundle.NewImageReader(r, m))
	if err != nil {
		return res, err
	}
	if err := w.Sync(); err != nil {
		return res, &bundle.Error{Reason: bundle.ReasonIO, Msg: "sync slot " + slot.Name, Err: err}
	}
	// Read back what the device holds: a device that dropped writes, or
	// another writer, shows here, before the slot can boot. The pages the
	// write left in the cache are dropped first (clean after the sync), or
	// the read-back would hash the cache and not the device.
	if err := unix.Fadvise(int(w.Fd()), 0, m.ImageSize, unix.FADV_DONTNEED); err != nil {
		return res, &bundle.Error{Reason: bundle.ReasonIO, Msg: "drop the cached slot " + slot.Name, Err: err}
	}
	s256, s512, n, err := bundle.HashImage(io.NewSectionReader(w, 0, m.ImageSize))
	res.BytesRead = n
	if err != nil {
		return res, &bundle.Error{Reason: bundle.ReasonIO, Msg: "read back slot " + slot.Name, Err: err}
	}
	if n != m.ImageSize || s256 != m.ImageSHA256 || s512 != m.ImageSHA512 {
		return res, bundle.Refuse(bundle.ReasonHash, "image_sha256", "slot %s does not read back what was written", slot.Name)
	}
	if down {
		in.audit(Event{Action: "downgrade", Slot: slot.Name, Version: m.Version, Number: m.VersionNumber, KeyID: m.KeyID,
			Detail: fmt.Sprintf("emergency key %s installs %s (%d) below the floor %d", m.KeyID, m.Version, m.VersionNumber, in.EffectiveFloor())})
	}
	if err := in.cfg.Slots.MarkTrial(slot.Name); err != nil {
		return res, &bundle.Error{Reason: bundle.ReasonIO, Msg: "mark slot " + slot.Name + " for trial", Err: err}
	}
	in.audit(Event{Action: "installed", Slot: slot.Name, Version: m.Version, Number: m.VersionNumber, KeyID: m.KeyID,
		Detail: fmt.Sprintf("%d bytes; the next boot is a trial of slot %s", m.ImageSize, slot.Name)})
	return res, nil
}

// write copies the verified stream to the slot from offset 0, in chunks.
func (in *Installer) write(ctx context.Context, w io.WriterAt, ir *bundle.ImageReader) (int64, error) {
	buf := make([]byte, chunk)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return off, &bundle.Error{Reason: bundle.ReasonIO, Msg: "install cancelled", Err: err}
		}
		n, rerr := io.ReadFull(ir, buf)
		if n > 0 {
			if _, err := w.WriteAt(buf[:n], off); err != nil {
				return off, &bundle.Error{Reason: bundle.ReasonIO, Msg: "write slot", Err: err}
			}
			off += int64(n)
			in.written.Store(off)
		}
		switch {
		case rerr == nil:
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF: //nolint:errorlint // exact: a wrapped EOF is a refusal
			// ImageReader returns a bare io.EOF only after size and hashes
			// are checked; a short or bad image is a *bundle.Error (which
			// may wrap io.ErrUnexpectedEOF: not this case).
			return off, nil
		default:
			return off, rerr
		}
	}
}

func (in *Installer) audit(e Event) {
	lvl := slog.LevelInfo
	if e.Action == "refused" || e.Action == "downgrade" || e.Action == "rolled-back" {
		lvl = slog.LevelWarn
	}
	in.cfg.Log.Log(context.Background(), lvl, "update: "+e.Action, "reason", string(e.Reason), "field", e.Field,
		"slot", e.Slot, "version", e.Version, "version_number", e.Number, "key_id", e.KeyID, "detail", e.Detail)
	if in.cfg.Audit != nil {
		in.cfg.Audit(e)
	}
}
