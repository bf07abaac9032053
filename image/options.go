package image

import (
	"bufio"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/edgepbx/edgepbx/board"
)

// Option changes how Build works.
type Option func(*options) error

type options struct {
	cacheDir string
	outDir   string
	tempDir  string
	repoDir  string
	version  string
	tags     []string
	log      *slog.Logger
	license  *licenseConfig // nil: the image does not phone home
	roots    string         // CA bundle; "" means HostRoots
	update   *UpdateTrust   // nil: the image takes no updates
	disk     bool           // also write slot.img and disk.img
	console  string         // overrides the board's console ("" keeps it)
	params   []string       // extra kernel parameters (WithKernelParams)
}

// ModulePath is the Go module whose cmd/init and cmd/edgepbxd are built.
const ModulePath = "github.com/edgepbx/edgepbx"

var (
	versionStrRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._+~-]{0,63}$`)
	tagRE        = regexp.MustCompile(`^[A-Za-z0-9_.]{1,64}$`)
)

// WithCacheDir sets where kernel packages are cached
// (default $XDG_CACHE_HOME/edgepbx, i.e. ~/.cache/edgepbx).
func WithCacheDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("image: empty cache dir")
		}
		o.cacheDir = dir
		return nil
	}
}

// WithOutDir sets where the kernel, initramfs and manifest.json are written
// (default <repo>/out/<board>).
func WithOutDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("image: empty out dir")
		}
		o.outDir = dir
		return nil
	}
}

// WithTempDir sets the parent of the build's scratch directory (default
// the system temp dir); the scratch directory is removed afterwards.
func WithTempDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("image: empty temp dir")
		}
		o.tempDir = dir
		return nil
	}
}

// WithRepoDir sets the Go module root cmd/init and cmd/edgepbxd are built
// from (default: found from the working directory upwards).
func WithRepoDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("image: empty repo dir")
		}
		o.repoDir = dir
		return nil
	}
}

// WithVersion sets the version written to /etc/edgepbx/version.
func WithVersion(v string) Option {
	return func(o *options) error {
		if !versionStrRE.MatchString(v) {
			return fmt.Errorf("image: invalid version %q", v)
		}
		o.version = v
		return nil
	}
}

// WithBuildTags adds Go build tags (tests build with "testhook").
func WithBuildTags(tags ...string) Option {
	return func(o *options) error {
		for _, t := range tags {
			if !tagRE.MatchString(t) {
				return fmt.Errorf("image: invalid build tag %q", t)
			}
		}
		o.tags = append(o.tags, tags...)
		return nil
	}
}

// WithLogger sets the logger for build progress.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l != nil {
			o.log = l
		}
		return nil
	}
}

// WithLicense makes the image phone home: serverURL (https://host[:port])
// and the CA certificates that vouch for it go into the initramfs as
// /etc/edgepbx/license.json and /etc/edgepbx/license-ca.pem, where PID 1
// finds them and passes them to edgepbxd, and vendorKey, the Ed25519 key
// whose signature on the server's answers the box accepts, is compiled into
// edgepbxd (-X .../firmware/license.buildVendorKey). All three are the
// vendor's choice at build time; nothing on /data can change them. The image
// carries no system root store, so caPEM is required.
func WithLicense(serverURL string, caPEM []byte, vendorKey ed25519.PublicKey) Option {
	return func(o *options) error {
		lc, err := newLicenseConfig(serverURL, caPEM, vendorKey)
		if err != nil {
			return err
		}
		o.license = lc
		return nil
	}
}

func newOptions(opts []Option) (*options, error) {
	o := &options{version: "0.0.0-dev", log: discard}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	if o.cacheDir == "" {
		dir, err := DefaultCacheDir()
		if err != nil {
			return nil, err
		}
		o.cacheDir = dir
	}
	return o, nil
}

// DefaultCacheDir is $XDG_CACHE_HOME/edgepbx or ~/.cache/edgepbx.
func DefaultCacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("image: no cache dir (set XDG_CACHE_HOME or HOME): %w", err)
	}
	return filepath.Join(dir, "edgepbx"), nil
}

// findRepo walks up from the working directory to the go.mod of ModulePath.
func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isModuleRoot(dir) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("image: no go.mod for %s above the working directory; use WithRepoDir", ModulePath)
		}
		dir = parent
	}
}

func isModuleRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if mod, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(mod), `"`) == ModulePath
		}
	}
	return false
}

// WithDisk also writes the UEFI disk image (disk.img: GPT with slots A/B
// and the data partition) and the slot image (slot.img) into the out dir.
func WithDisk() Option {
	return func(o *options) error { o.disk = true; return nil }
}

// WithConsole sets the kernel console instead of the board's (a board
// whose boxes have a serial console, or QEMU's serial port in tests).
func WithConsole(dev string) Option {
	return func(o *options) error {
		if !board.ValidConsole(dev) {
			return fmt.Errorf("image: console %q: want ttyS0, ttyAMA0, tty0, hvc0, …", dev)
		}
		o.console = dev
		return nil
	}
}

// paramRE is one kernel parameter: name or name=value, no spaces or quotes.
var paramRE = regexp.MustCompile(`^[a-z0-9_.-]{1,64}(=[A-Za-z0-9_.,:/=-]{1,128})?$`)

// WithKernelParams appends parameters to the kernel command line (in a
// disk image, the UKI's). Tests use it for no_timer_check: under a
// loaded TCG host the kernel's IO-APIC timer check can fail and panic.
func WithKernelParams(params ...string) Option {
	return func(o *options) error {
		for _, p := range params {
			if !paramRE.MatchString(p) {
				return fmt.Errorf("image: kernel parameter %q refused", p)
			}
		}
		o.params = append(o.params, params...)
		return nil
	}
}
