package update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/strictjson"
)

// The repository is plain files (any HTTPS server or CDN):
//
//	REPO/1.root.json, 2.root.json, …   root versions (key rotation)
//	REPO/timestamp.json, snapshot.json, targets.json
//	REPO/targets/BOARD/edgepbx-VERSION.bundle
//
// Each bundle target carries custom metadata naming what it is, so the
// box picks the newest without downloading anything else:
//
//	"custom": {"edgepbx": {"board": "pc-x86_64", "version": "1.2.0",
//	           "version_number": 120, "security": true}}
//
// PID 1 checks the bundle's own signature and floor regardless; TUF adds
// that the repository is current (a frozen mirror's timestamp expires), not
// replayed (versions only go up, remembered in CacheDir), and that the
// vendor can rotate repository keys.

// Bounds of what the repository may send.
const (
	maxTargets   = 4096
	maxCustom    = 1 << 10
	checkTimeout = 2 * time.Minute
)

// Installer is PID 1's installer (the control client).
type Installer interface {
	InstallUpdate(ctx context.Context, r io.Reader, size int64) (control.UpdateResult, error)
}

// Config configures a Puller.
type Config struct {
	// RepoURL is the repository's metadata base, https://…/; targets are
	// under RepoURL/targets/.
	RepoURL string
	// Root is the trusted root.json the image carries. Every check starts
	// from it and walks the repository's newer roots, so a root.json
	// planted in CacheDir is never trusted.
	Root []byte
	// CacheDir keeps the last verified timestamp, snapshot and targets:
	// a repository that serves older ones (a replay) is refused.
	CacheDir string
	// Board and Running (version_number) of this box.
	Board   string
	Running uint64
	// Transport carries the box's proxy settings and CAs (those of the
	// check-in). Nil: a plain transport without a proxy.
	Transport http.RoundTripper
	Installer Installer
	Now       func() time.Time
	Log       *slog.Logger
}

// Offer is a bundle in the repository newer than the running version.
type Offer struct {
	Path     string `json:"path"`
	Board    string `json:"board"`
	Version  string `json:"version"`
	Number   uint64 `json:"version_number"`
	Security bool   `json:"security"`
	Length   int64  `json:"length"`
	SHA256   string `json:"sha256"`
}

// Report is the last check as the dashboard shows it.
type Report struct {
	Checked time.Time `json:"checked,omitzero"`
	// Newest is the newest bundle above the running version (nil: up to date).
	Newest *Offer `json:"newest,omitempty"`
	// Action: "up-to-date", "available" (notify, or not wanted by the
	// policy), "waiting-for-window", "installed", "failed", "off".
	Action string                `json:"action"`
	Detail string                `json:"detail,omitempty"`
	Result *control.UpdateResult `json:"result,omitempty"`
}

// Puller checks the repository and installs by policy; one check at a time.
type Puller struct {
	cfg  Config
	mu   sync.Mutex // one check or install at a time
	rmu  sync.Mutex
	last Report
}

// New returns a puller.
func New(cfg Config) (*Puller, error) {
	if !strings.HasPrefix(cfg.RepoURL, "https://") {
		return nil, fmt.Errorf("update: repository URL %q: want https://", cfg.RepoURL)
	}
	if len(cfg.Root) == 0 || cfg.CacheDir == "" || cfg.Board == "" || cfg.Installer == nil {
		return nil, errors.New("update: Root, CacheDir, Board and Installer are required")
	}
	if cfg.Transport == nil {
		cfg.Transport = &http.Transport{TLSHandshakeTimeout: 15 * time.Second, ResponseHeaderTimeout: 30 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Puller{cfg: cfg, last: Report{Action: "not-checked"}}, nil
}

func (p *Puller) client() *http.Client {
	return &http.Client{Transport: p.cfg.Transport, Timeout: checkTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// ErrRepository wraps every refusal of the repository's metadata
// (expired: frozen; older version: replayed; bad signature).
var ErrRepository = errors.New("update repository refused")

// Check refreshes the TUF metadata and returns the newest bundle for this
// board above the running version (nil: none).
func (p *Puller) Check() (*Offer, error) {
	if err := os.MkdirAll(p.cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("update: cache: %w", err)
	}
	cfg, err := config.New(p.cfg.RepoURL, p.cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	cfg.LocalMetadataDir = p.cfg.CacheDir
	cfg.LocalTargetsDir = p.cfg.CacheDir // never written: targets are streamed, not cached
	cfg.TimestampMaxLength, cfg.SnapshotMaxLength, cfg.TargetsMaxLength = 16<<10, 1<<20, 2<<20
	if err := cfg.SetDefaultFetcherHTTPClient(p.client()); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	up, err := updater.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("update: trusted root: %w", err)
	}
	up.UnsafeSetRefTime(p.cfg.Now())
	if err := up.Refresh(); err != nil {
		return nil, repoErr(err)
	}
	targets := up.GetTopLevelTargets()
	if len(targets) > maxTargets {
		return nil, fmt.Errorf("%w: %d targets, at most %d", ErrRepository, len(targets), maxTargets)
	}
	var best *Offer
	for name, tf := range targets {
		o, ok := offerOf(name, tf)
		if !ok || o.Board != p.cfg.Board || o.Number <= p.cfg.Running {
			continue
		}
		if best == nil || o.Number > best.Number || (o.Number == best.Number && o.Path < best.Path) {
			best = &o
		}
	}
	return best, nil
}

func repoErr(err error) error {
	switch {
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		return fmt.Errorf("%w: metadata expired: the repository (or a mirror or proxy in between) is frozen: %w", ErrRepository, err)
	case errors.Is(err, &metadata.ErrBadVersionNumber{}):
		return fmt.Errorf("%w: metadata older than what this box already saw: a replayed repository: %w", ErrRepository, err)
	case errors.Is(err, &metadata.ErrRepository{}):
		return fmt.Errorf("%w: %w", ErrRepository, err)
	}
	return fmt.Errorf("update: repository: %w", err)
}

var targetPathRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*/[A-Za-z0-9][A-Za-z0-9.+_-]*\.bundle$`)

// offerOf reads one target's custom metadata strictly; targets that are
// not edgepbx bundles are skipped.
func offerOf(name string, tf *metadata.TargetFiles) (Offer, bool) {
	if tf == nil || tf.Custom == nil || len(*tf.Custom) > maxCustom || !targetPathRe.MatchString(name) || path.Clean(name) != name {
		return Offer{}, false
	}
	var c struct {
		Edgepbx struct {
			Board         string `json:"board"`
			Version       string `json:"version"`
			VersionNumber uint64 `json:"version_number"`
			Security      bool   `json:"security"`
		} `json:"edgepbx"`
	}
	if err := strictjson.Unmarshal(*tf.Custom, &c); err != nil {
		return Offer{}, false
	}
	h, ok := tf.Hashes["sha256"]
	e := c.Edgepbx
	if !ok || len(h) != sha256.Size || e.VersionNumber == 0 || e.Version == "" || tf.Length <= 0 ||
		tf.Length > control.MaxUpdateSize || !strings.HasPrefix(name, e.Board+"/") {
		return Offer{}, false
	}
	return Offer{Path: name, Board: e.Board, Version: e.Version, Number: e.VersionNumber, Security: e.Security,
		Length: tf.Length, SHA256: hex.EncodeToString(h)}, true
}

// Install streams an offer from the repository to PID 1. The bytes are
// checked against the TUF target's length and hash as they pass; the
// last chunk is held back until the whole file matched, so a substituted
// file (even one validly signed, like an older bundle) reaches PID 1 as a
// cut stream, which leaves the slot invalid and never bootable.
func (p *Puller) Install(ctx context.Context, o Offer) (control.UpdateResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.install(ctx, o)
}

func (p *Puller) install(ctx context.Context, o Offer) (control.UpdateResult, error) {
	var res control.UpdateResult
	u := strings.TrimSuffix(p.cfg.RepoURL, "/") + "/targets/" + o.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return res, err
	}
	c := p.client()
	c.Timeout = 0 // a slow link may take long; the control socket's read deadline bounds a stall
	resp, err := c.Do(req)
	if err != nil {
		return res, fmt.Errorf("update: download %s: %w", o.Path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("update: download %s: %s", o.Path, resp.Status)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != o.Length {
		return res, fmt.Errorf("%w: %s is %d bytes, the metadata says %d", ErrRepository, o.Path, resp.ContentLength, o.Length)
	}
	want, _ := hex.DecodeString(o.SHA256)
	hr := &heldReader{r: io.LimitReader(resp.Body, o.Length+1), n: o.Length, want: want, h: sha256.New()}
	res, err = p.cfg.Installer.InstallUpdate(ctx, hr, o.Length)
	if hr.err != nil {
		return res, hr.err
	}
	return res, err
}

// heldReader passes r on but keeps its last byte until all n bytes were
// read and hashed to want; on a mismatch the stream ends one byte short
// and err says why.
type heldReader struct {
	r    io.Reader
	n    int64 // expected length
	read int64
	want []byte
	h    hash.Hash
	buf  []byte // read, not yet passed on
	done bool   // all n bytes read and matched
	err  error
}

func (hr *heldReader) Read(p []byte) (int, error) {
	for {
		if hr.err != nil {
			return 0, hr.err
		}
		avail := len(hr.buf)
		if !hr.done {
			avail-- // the held byte
		}
		if avail > 0 {
			n := copy(p, hr.buf[:avail])
			hr.buf = hr.buf[n:]
			return n, nil
		}
		if hr.done {
			return 0, io.EOF
		}
		chunk := make([]byte, max(len(p), 32<<10))
		m, err := hr.r.Read(chunk)
		hr.h.Write(chunk[:m])
		hr.read += int64(m)
		hr.buf = append(hr.buf, chunk[:m]...)
		switch {
		case hr.read > hr.n:
			hr.err = fmt.Errorf("%w: the download is longer than the metadata's %d bytes", ErrRepository, hr.n)
		case hr.read == hr.n || errors.Is(err, io.EOF):
			if hr.read != hr.n || !bytes.Equal(hr.h.Sum(nil), hr.want) {
				hr.err = fmt.Errorf("%w: the download does not match the metadata's length and sha256", ErrRepository)
			}
			hr.done = true
		case err != nil:
			hr.err = fmt.Errorf("update: download: %w", err)
		}
	}
}

// Run checks the repository and, by policy and window, installs the
// newest bundle. It records and returns the report.
func (p *Puller) Run(ctx context.Context, pol Policy) Report { return p.run(ctx, pol, false) }

// run is Run; advised: the running firmware has a security advisory in
// force, so any newer bundle is a security fix for the policy.
func (p *Puller) run(ctx context.Context, pol Policy, advised bool) Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := Report{Checked: p.cfg.Now()}
	defer func() {
		p.setLast(r)
		newest := ""
		if r.Newest != nil {
			newest = r.Newest.Version
		}
		p.cfg.Log.Info("update: checked", "action", r.Action, "newest", newest, "policy", string(pol.Mode))
	}()
	if pol.Mode == ModeOff {
		r.Action, r.Detail = "off", "the update policy is off"
		return r
	}
	o, err := p.Check()
	if err != nil {
		r.Action, r.Detail = "failed", err.Error()
		p.cfg.Log.Warn("update: check failed", "err", err)
		return r
	}
	r.Newest = o
	switch {
	case o == nil:
		r.Action = "up-to-date"
		return r
	case !pol.Wants(*o) && (!advised || pol.Mode != ModeSecurity):
		r.Action, r.Detail = "available", fmt.Sprintf("version %s is available; the policy (%s) leaves installing it to an admin", o.Version, pol.Mode)
		return r
	case !pol.Window.Contains(p.cfg.Now()):
		r.Action, r.Detail = "waiting-for-window", fmt.Sprintf("version %s installs in the maintenance window (%s, %d h)", o.Version, pol.Window.Start, pol.Window.Hours)
		return r
	}
	res, err := p.install(ctx, *o)
	if err != nil {
		r.Action, r.Detail = "failed", err.Error()
		p.cfg.Log.Warn("update: install failed", "version", o.Version, "err", err)
		return r
	}
	r.Action, r.Result = "installed", &res
	r.Detail = fmt.Sprintf("version %s written to slot %s; the next boot is a trial", res.Version, res.Slot)
	p.cfg.Log.Info("update: installed", "version", res.Version, "slot", res.Slot)
	return r
}

func (p *Puller) setLast(r Report) {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	p.last = r
}

// Last is the last check's report.
func (p *Puller) Last() Report {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	return p.last
}

// Banner is the dashboard's warning when the box runs a version with a
// security fix available (empty: none): the seeds' vulnerable-version
// check, fed by the repository.
func (p *Puller) Banner() string {
	r := p.Last()
	if r.Newest == nil || !r.Newest.Security || r.Action == "installed" {
		return ""
	}
	return fmt.Sprintf("This box runs a version with known security problems: version %s fixes them (%s).", r.Newest.Version, r.Action)
}

// MarshalOffer is the custom metadata of a target (for the vendor's
// repository tooling and tests).
func MarshalOffer(o Offer) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"edgepbx": map[string]any{"board": o.Board, "version": o.Version,
		"version_number": o.Number, "security": o.Security}})
	return b
}
