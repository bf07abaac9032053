// Command init is edgepbx's PID 1: it mounts the early file systems, loads
// the board's kernel modules, mounts /data, creates the device identity,
// installs the default-deny firewall before any interface is up, brings up
// the network, supervises edgepbxd, pets the watchdog while edgepbxd is
// healthy and performs orderly reboots and power-offs. It never exits: a
// failure that would leave the box unsafe stops the boot in a visible
// HALTED state.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/drivers/button"
	"github.com/edgepbx/edgepbx/drivers/dmi"
	"github.com/edgepbx/edgepbx/drivers/watchdog"
	"github.com/edgepbx/edgepbx/init/banner"
	"github.com/edgepbx/edgepbx/init/clock"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/identity"
	"github.com/edgepbx/edgepbx/init/keys"
	"github.com/edgepbx/edgepbx/init/modules"
	"github.com/edgepbx/edgepbx/init/mount"
	"github.com/edgepbx/edgepbx/init/netconf"
	"github.com/edgepbx/edgepbx/init/netconf/netspec"
	"github.com/edgepbx/edgepbx/init/reset"
	"github.com/edgepbx/edgepbx/init/shutdown"
	"github.com/edgepbx/edgepbx/init/slots"
	"github.com/edgepbx/edgepbx/init/supervise"
	"github.com/edgepbx/edgepbx/init/update"
	"github.com/edgepbx/edgepbx/netfw"
)

// Paths and identities PID 1 relies on (the image builder provides them).
// networkApplyDelay: a network change is applied this long after PID 1
// answered it, so edgepbxd's HTTP answer can leave on the old address
// (edgepbxd answers within milliseconds; TCG guests are slow).
const networkApplyDelay = 2 * time.Second

const (
	boardPath    = "/etc/edgepbx/board.json"
	versionPath  = "/etc/edgepbx/version"
	modulesRoot  = "/lib/modules"
	dataDir      = "/data"
	identityDir  = "/data/identity"
	banFile      = "/data/netfw/bans.json"
	policyFile   = "/data/netfw/policy.json"
	networkFile  = "/data/netconf/network.json"
	timeFile     = "/data/netconf/time.json"
	resolvConf   = "/etc/resolv.conf"
	controlDir   = "/run/edgepbx"
	controlPath  = "/run/edgepbx/init.sock"
	daemonPath   = "/bin/edgepbxd"
	daemonName   = "edgepbxd"
	daemonUID    = 1000
	daemonGID    = 1000
	dataWait     = 10 * time.Second
	stopTimeout  = 10 * time.Second
	healthMaxAge = 15 * time.Second // edgepbxd reports every 5 s
	bootGrace    = 2 * time.Minute  // watchdog is petted until the first report
)

// box is PID 1's state, owned by main's goroutine unless noted.
type box struct {
	start   time.Time
	console io.Writer
	log     *slog.Logger
	ctx     context.Context

	sup     *supervise.Supervisor
	power   chan shutdown.Action // signals, button, control socket, test hook
	version string
	prof    board.Profile
	id      identity.Identity
	keys    *keys.Ring
	tpm     keys.Opener  // nil: no TPM
	floors  *keys.Floors // monotonic floors (TPM NV, or a file on /data)
	setup   string
	live    bool
	fw      *netfw.Firewall
	policy  *netfw.Committer // admin-editable zones and rules (pending/confirm/revert)
	net     *netconf.Manager
	netc    *netconf.Committer // admin-editable network (pending/confirm/revert)
	clock   *clock.Clock       // NTP servers, time zone, SNTP
	wd      io.Closer          // stops petting, then disarms the watchdog
	ctl     *control.Server
	health  healthState
	buttons []string // power-button devices being watched (nil: not started)
	// updates installs bundles (nil: no A/B slots); trialCfg starts this
	// boot's trial once edgepbxd runs.
	updates       *update.Service
	trialCfg      *update.TrialConfig
	licenceBefore string                         // edgepbxd's licence mode when the update on trial was installed
	adminProbe    func(fingerprint string) error // does the admin side answer? (trial health)
	slots         *slots.Manager                 // A/B boot slots (nil: no UEFI disk image)

	resetGate *reset.Gate   // factory reset asked for over the control socket
	resetReq  chan string   // confirmed factory reset (where from), for the main loop
	consoleIn <-chan string // console lines (confirmations); nil until first read
}

// healthState is written by the control socket's goroutines.
type healthState struct {
	mu       sync.Mutex
	last     control.Health
	at       time.Time
	ready    bool // last report said ready
	everSeen bool
	down     bool          // edgepbxd exited 125: safe state (safestate.go)
	onChange chan struct{} // poked on every report
}

func (h *healthState) set(r control.Health) (becameReady, claimChanged bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	becameReady = r.Ready && !h.ready
	// A lockout coming or going changes the banner too (recovery code).
	claimChanged = h.everSeen && (r.Claimed != h.last.Claimed || r.Lockout != h.last.Lockout)
	h.last, h.at, h.ready, h.everSeen = r, time.Now(), r.Ready, true
	return becameReady, claimChanged
}

// markDown records that edgepbxd is gone, keeping what it last said.
func (h *healthState) markDown(detail string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ready, h.last.Ready, h.last.Detail = false, false, detail
}

// stayDown records that edgepbxd exited 125 and will not be restarted.
func (h *healthState) stayDown(detail string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ready, h.last.Ready, h.last.Detail, h.down = false, false, detail, true
}

func (h *healthState) isDown() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.down
}

func (h *healthState) snapshot() (control.Health, time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last, h.at, h.everSeen
}

func main() {
	b := &box{
		start:   time.Now(),
		console: os.Stdout,
		ctx:     context.Background(),
		power:   make(chan shutdown.Action, 4),
		health:  healthState{onChange: make(chan struct{}, 1)},

		resetGate: reset.NewGate(reset.GateConfig{}),
		resetReq:  make(chan string, 1),
	}
	b.log = slog.New(slog.NewTextHandler(b.console, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// The supervisor reaps every child of PID 1 from the very start.
	b.sup = supervise.New(b.log, supervise.WithConsole(b.console), supervise.WithEvents(b.serviceEvents()))
	b.handleSignals()
	if err := b.boot(); err != nil {
		b.halt(err)
	}
	b.loop()
}

// say prints a contract line ("edgepbx: ..."), see docs/architecture.md.
func (b *box) say(format string, a ...any) {
	fmt.Fprintf(b.console, "edgepbx: "+format+"\n", a...)
}

func (b *box) ms() int64 { return time.Since(b.start).Milliseconds() }

// step logs a boot step with its time since /init started.
func (b *box) step(name string, args ...any) {
	b.log.Info(name, append([]any{"t_ms", b.ms()}, args...)...)
}

// fatal marks an error that leaves the box unsafe: boot halts.
type fatal struct{ err error }

func (f fatal) Error() string { return f.err.Error() }

func haltf(format string, a ...any) error { return fatal{fmt.Errorf(format, a...)} }

func (b *box) boot() error {
	if err := mount.Apply(b.log, mount.Early("/")); err != nil {
		return haltf("early mounts: %w", err)
	}
	// Re-open the console now that devtmpfs is mounted: the initramfs node
	// is hidden under it, and fd 0-2 may be missing if it was absent.
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		b.console = f
		b.log = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	b.step("early mounts")
	// Ctrl-Alt-Del sends SIGINT to PID 1 instead of an immediate reboot.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		b.log.Warn("ctrl-alt-del off", "err", err)
	}
	startTestHook(b)
	b.version = "unknown"
	if v, err := os.ReadFile(versionPath); err == nil {
		b.version = strings.TrimSpace(string(v))
	}

	data, err := os.ReadFile(boardPath)
	if err != nil {
		return haltf("board profile: %w", err)
	}
	if b.prof, err = board.Parse(data); err != nil {
		return haltf("board profile %s: %w", boardPath, err)
	}
	b.step("board profile", "board", b.prof.Name, "version", b.version)

	// Only the firewall's modules come before the ruleset: the box is
	// locked down before anything else (NIC drivers, disks) is even loaded.
	mods, err := b.moduleIndex()
	if err != nil {
		return err
	}
	if err := b.loadFirewallModules(mods); err != nil {
		return err
	}
	if err := b.installFirewall(); err != nil {
		return err
	}
	b.say("firewall installed t=%dms", b.ms())
	b.loadOtherModules(mods)
	b.checkEntropy()

	if err := b.mountData(); err != nil {
		return err
	}
	b.openSlots()
	if err := b.bootReset(); err != nil {
		return err
	}
	if err := b.loadIdentity(); err != nil {
		return err
	}
	b.restoreBans()
	b.restorePolicy(policyFile)

	b.startDrivers()
	if err := b.startNetwork(); err != nil {
		return err
	}
	b.updates = b.startUpdates()
	if err := b.startControl(); err != nil {
		return err
	}
	if err := b.startDaemon(); err != nil {
		return err
	}
	b.startTrial()
	return nil
}

// moduleSet is the board's module index with the load order split in two.
type moduleSet struct {
	dir      string
	idx      *modules.Index
	firewall []string // required: a failure halts the boot
}

func (b *box) moduleIndex() (*moduleSet, error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return nil, haltf("uname: %w", err)
	}
	dir := filepath.Join(modulesRoot, unix.ByteSliceToString(uts.Release[:]))
	idx, err := modules.ReadIndex(dir)
	if err != nil {
		return nil, haltf("kernel modules: %w", err)
	}
	var fwNames []string
	for _, m := range b.prof.Modules {
		if isFirewallModule(m) {
			fwNames = append(fwNames, m)
		}
	}
	required, err := idx.Order(fwNames)
	if err != nil {
		return nil, haltf("firewall modules: %w", err)
	}
	return &moduleSet{dir: dir, idx: idx, firewall: required}, nil
}

func (b *box) loadFirewallModules(m *moduleSet) error {
	for _, p := range m.firewall {
		if err := modules.Load(b.ctx, m.dir, []string{p}, b.log); err != nil {
			return haltf("firewall module: %w", err)
		}
	}
	b.step("firewall modules loaded", "count", len(m.firewall))
	return nil
}

// loadOtherModules loads the rest of the board's modules. Any that fails is
// logged and skipped: a NIC driver for hardware this box does not have must
// not stop the boot.
func (b *box) loadOtherModules(m *moduleSet) {
	paths, err := m.idx.Order(b.prof.Modules)
	if err != nil {
		b.log.Error("module order", "err", err)
		return
	}
	done := map[string]bool{}
	for _, p := range m.firewall {
		done[p] = true
	}
	var loaded, failed int
	for _, p := range paths {
		if done[p] {
			continue
		}
		if err := modules.Load(b.ctx, m.dir, []string{p}, b.log); err != nil {
			failed++
			b.log.Warn("module not loaded", "err", err)
			continue
		}
		loaded++
	}
	b.step("modules loaded", "count", loaded, "failed", failed)
}

// isFirewallModule names the modules the nftables ruleset needs.
func isFirewallModule(name string) bool {
	n := strings.ReplaceAll(name, "-", "_")
	return strings.HasPrefix(n, "nf_") || strings.HasPrefix(n, "nft_") || n == "crc32c_generic" || n == "libcrc32c"
}

// checkEntropy reports whether the kernel's pool is ready. virtio-rng (or a
// hardware RNG) feeds it through the kernel's hwrng thread; nothing else to do.
func (b *box) checkEntropy() {
	buf := make([]byte, 1)
	if _, err := unix.Getrandom(buf, unix.GRND_NONBLOCK); err != nil {
		b.log.Warn("entropy pool not initialised yet", "err", err)
		return
	}
	b.step("entropy ready")
}

func (b *box) mountData() error {
	d := mount.DataMount{Device: b.prof.Data.Device, FSType: b.prof.Data.FSType, Target: dataDir, Wait: dataWait}
	b.live = d.Live()
	if err := d.Create(); err != nil {
		return haltf("/data: %w", err)
	}
	if b.live {
		b.say("WARNING: live mode: /data is a RAM disk, nothing persists")
	} else {
		b.growData(d)
	}
	if err := b.prepareData(); err != nil {
		return err
	}
	b.step("data mounted", "device", b.prof.Data.Device)
	return nil
}

// prepareData sets the data directory's owner and mode and creates PID 1's
// directories in it (after the mount, and again after a factory reset).
func (b *box) prepareData() error {
	// edgepbxd writes its store in /data; the sticky bit keeps it from
	// renaming or removing PID 1's entries (identity, netfw).
	if err := os.Chown(dataDir, 0, daemonGID); err != nil {
		return haltf("/data: %w", err)
	}
	if err := os.Chmod(dataDir, 0o770|os.ModeSticky); err != nil {
		return haltf("/data: %w", err)
	}
	for _, f := range []string{banFile, networkFile} {
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			return haltf("/data: %w", err)
		}
	}
	return nil
}

func (b *box) loadIdentity() error {
	ring, err := b.openKeys()
	if err != nil {
		return err
	}
	id, created, err := identity.LoadOrCreate(identityDir, dmi.Serial("/"))
	if err != nil {
		return haltf("identity: %w", err)
	}
	id.DeviceKey = ring.DataKey(keys.Store)
	b.id, b.keys, b.setup = id, ring, identity.SetupCode()
	if b.floors, err = keys.OpenFloors(identityDir, b.tpm); err != nil {
		// Floors that do not read are damage or tampering: refusing every
		// raise is safe (nothing moves backwards), so the boot goes on.
		b.say("WARNING: monotonic floors unreadable: %v", err)
	}
	if err := unix.Sethostname([]byte(id.Hostname())); err != nil {
		b.log.Warn("hostname", "err", err)
	}
	b.step("identity", "serial", id.Serial, "created", created, "hostname", id.Hostname())
	return nil
}

// restoreBans hands the persisted bans to the live firewall once /data is
// mounted. An unreadable ban file is reported loudly but does not stop the
// boot: the ruleset is already default-deny, and the file is only written
// atomically, so this means tampering or disk damage worth an admin's look.
func (b *box) restoreBans() {
	if err := b.fw.RestoreBans(banFile); err != nil {
		b.say("WARNING: persisted bans not restored: %v", err)
		return
	}
	b.step("bans restored")
}

// restorePolicy applies the admin's last confirmed zones and rules once
// /data is mounted. A corrupt or invalid file keeps the default policy
// (already running) and is reported loudly: it is only written atomically,
// after an admin confirmed the policy, so this means damage or tampering.
func (b *box) restorePolicy(path string) {
	if err := b.policy.Restore(path); err != nil {
		b.say("WARNING: persisted firewall policy not restored, default policy kept: %v", err)
		return
	}
	b.step("firewall policy restored")
}

func (b *box) installFirewall() error {
	fw, err := applyFirstPolicy(b.log)
	if err != nil {
		return haltf("firewall: %w", err)
	}
	b.fw = fw
	// UDP 67 for the phones' DHCP server follows the interfaces' addresses
	// (network commit and revert, leases), whatever edgepbxd asks.
	go fw.WatchDHCPServer(b.ctx)
	b.policy = netfw.NewCommitter(fw, netfw.DefaultPolicy(), netfw.WithCommitLogger(b.log), netfw.WithRevertHook(b.policyReverted))
	return nil
}

// applyFirstPolicy applies the default policy. A netlink answer that comes
// late (a box under heavy load; a VM under TCG answers a large batch in
// seconds) is tried again with a longer bound before the box halts: the
// batch is all-or-nothing and Apply replaces the whole table, so a retry
// is safe, and nothing listens until one succeeds. Other errors halt at once.
func applyFirstPolicy(log *slog.Logger) (*netfw.Firewall, error) {
	var err error
	for _, bound := range []time.Duration{2 * time.Second, 10 * time.Second, 30 * time.Second} {
		var fw *netfw.Firewall
		if fw, err = netfw.New(netfw.WithLogger(log), netfw.WithNetlinkTimeout(bound)); err != nil {
			return nil, err
		}
		if err = fw.Apply(netfw.DefaultPolicy()); err == nil {
			return fw, nil
		}
		fw.Close()
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, err
		}
		log.Warn("firewall: netlink answered late; applying again with a longer bound", "bound", bound, "err", err)
	}
	return nil, err
}

// policyReverted reports on the console that an admin's firewall change
// was not confirmed in time and the previous policy is back.
func (b *box) policyReverted(p netfw.Pending, err error) {
	if err != nil {
		b.say("WARNING: firewall policy change %s not confirmed; revert failed: %v", p.ID, err)
		return
	}
	b.say("firewall policy change %s not confirmed: reverted", p.ID)
}

func (b *box) startDrivers() {
	if w := b.prof.Watchdog; w.Device != "" {
		wd, err := watchdog.Open(w.Device)
		if err != nil {
			b.log.Warn("watchdog", "err", err)
		} else {
			if w.TimeoutSec > 0 {
				if got, err := wd.SetTimeout(time.Duration(w.TimeoutSec) * time.Second); err != nil {
					b.log.Warn("watchdog timeout", "err", err)
				} else {
					b.log.Info("watchdog armed", "device", w.Device, "identity", wd.Identity, "timeout", got)
				}
			}
			interval := max(time.Duration(w.TimeoutSec)*time.Second/4, time.Second)
			ctx, cancel := context.WithCancel(b.ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				watchdog.Keep(ctx, wd, interval, b.healthy, b.log)
			}()
			b.wd = closerFunc(func() error {
				cancel()
				<-done
				return wd.Close()
			})
		}
	}
	b.step("drivers", "watchdog", b.wd != nil, "power_buttons", b.watchButton())
}

// watchButton starts watching the power button once; halt calls it too, so
// a box halted early still powers off on a button press.
func (b *box) watchButton() int {
	if b.buttons != nil {
		return len(b.buttons)
	}
	devs, err := button.Watch(b.ctx, "/dev", func() { b.request(shutdown.Poweroff) }, b.log)
	if err != nil {
		b.log.Warn("power button", "err", err)
	}
	b.buttons = append([]string{}, devs...)
	return len(devs)
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// healthy gates the watchdog: a grace period until edgepbxd's first report,
// then only while its last report said ready and is recent.
func (b *box) healthy() bool {
	if b.health.isDown() {
		// The safe state is deliberate and PID 1 is in charge: a
		// watchdog reset would only repeat the failure, in a loop.
		return true
	}
	h, at, seen := b.health.snapshot()
	if !seen {
		return time.Since(b.start) < bootGrace
	}
	return h.Ready && time.Since(at) < healthMaxAge
}

func (b *box) startNetwork() error {
	m, err := netconf.New(b.log)
	if err != nil {
		return haltf("network: %w", err)
	}
	b.net = m
	if err := m.LoopbackUp(); err != nil {
		return haltf("network: %w", err)
	}
	nics := make([]netconf.NIC, 0, len(b.prof.NICs))
	for _, n := range b.prof.NICs {
		nics = append(nics, netconf.NIC{Name: n.Name, Mode: n.Mode, Address: n.Address, Gateway: n.Gateway})
	}
	if cl, err := os.ReadFile("/proc/cmdline"); err == nil {
		c, err := netconf.ParseCmdline(string(cl))
		if err != nil {
			b.log.Error("kernel command line ignored", "err", err)
		} else {
			nics = c.Apply(nics)
		}
	}
	m.ResolvConf = resolvConf
	m.Hostname = func(h string) error { return unix.Sethostname([]byte(h)) }
	if err := m.Up(b.ctx, nics); err != nil {
		b.log.Error("network", "err", err) // one missing NIC is not unsafe
	}
	names := make([]string, 0, len(nics))
	for _, n := range nics {
		names = append(names, n.Name)
	}
	b.netc = netconf.NewCommitter(b.ctx, netconf.CommitterConfig{
		Apply: m, Live: m.Addresses, NICs: names, Default: netconf.DefaultNetwork(b.id.Hostname(), nics),
		RevertAfter: netRevertAfter(b), Log: b.log, OnRevert: b.networkReverted,
		// The admin's answer leaves on the old address before it goes.
		ApplyDelay: networkApplyDelay,
	})
	// A bad file keeps the board's network (already up) and says so: it
	// is only written atomically after a confirmation, so this is damage
	// or tampering worth an admin's look.
	if err := b.netc.Restore(networkFile); err != nil {
		b.say("WARNING: persisted network not restored, board default kept: %v", err)
	}
	b.step("network up", "nics", len(nics))
	b.startClock()
	return nil
}

// networkReverted reports on the console that a network change was not
// confirmed in time and the previous network is back.
func (b *box) networkReverted(p netspec.Pending, err error) {
	if errors.Is(err, netconf.ErrApplyFailed) {
		b.say("WARNING: network change %s could not be applied, previous network kept: %v", p.ID, err)
		return
	}
	if err != nil {
		b.say("WARNING: network change %s not confirmed; revert failed: %v", p.ID, err)
		return
	}
	b.say("network change %s not confirmed: reverted", p.ID)
	// Reprint the banner: the addresses an installer reads there changed back.
	select {
	case b.health.onChange <- struct{}{}:
	default:
	}
}

// clockFloor is the earliest plausible wall time: NTP may step a clock
// that is earlier (no RTC) forward, a plausible one only a little.
var clockFloor = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (b *box) startClock() {
	b.clock = clock.New(clock.Config{Log: b.log, Floor: clockFloor})
	if err := b.clock.Restore(timeFile); err != nil {
		b.say("WARNING: persisted time settings not restored, UTC and no NTP kept: %v", err)
	}
	go b.clock.Run(b.ctx)
}

func (b *box) startControl() error {
	if err := os.MkdirAll(controlDir, 0o750); err != nil {
		return haltf("control socket: %w", err)
	}
	if err := os.Chown(controlDir, 0, daemonGID); err != nil {
		return haltf("control socket: %w", err)
	}
	cfg := control.Config{
		Path: controlPath, UID: daemonUID, GID: daemonGID,
		Firewall: b.fw, Policy: b.policy, Network: b.netc, Clock: b.clock, System: (*system)(b), Log: b.log,
		Updater: b.updater(), Reset: (*system)(b),
	}
	if b.floors != nil { // a nil *keys.Floors must not become a non-nil interface
		cfg.Floors = b.floors
	}
	if b.fw != nil {
		cfg.DHCP = b.fw
	}
	srv, err := control.Listen(cfg)
	if err != nil {
		return haltf("control socket: %w", err)
	}
	b.ctl = srv
	go srv.Serve(b.ctx)
	return nil
}

// bootstrapJSON is the secrets object edgepbxd reads from fd 3.
type bootstrapJSON struct {
	// DeviceKey is the store's data key (the name predates the key
	// hierarchy); edgepbxd never sees the device key itself.
	DeviceKey     []byte `json:"device_key"`
	MediaKey      []byte `json:"media_key"`
	BackupKey     []byte `json:"backup_key"`
	KeyProtection string `json:"key_protection"`
	FloorsInTPM   bool   `json:"floors_in_tpm"`
	SetupCode     string `json:"setup_code"`
	Serial        string `json:"serial"`
	InstallID     string `json:"install_id"`
}

func (b *box) startDaemon() error {
	boot, err := json.Marshal(bootstrapJSON{DeviceKey: b.id.DeviceKey, MediaKey: b.keys.DataKey(keys.Media), BackupKey: b.keys.DataKey(keys.Backup),
		KeyProtection: string(b.keys.Protection), FloorsInTPM: b.floors != nil && b.floors.Hardware(), SetupCode: b.setup, Serial: b.id.Serial, InstallID: b.id.InstallID})
	if err != nil {
		return haltf("bootstrap: %w", err)
	}
	args := []string{"--data", dataDir, "--control", controlPath, "--bootstrap-fd", "3", "--https", ":443", "--sip", ":5060",
		// Phone provisioning: the firewall catalogue's provisioning and
		// prov-http services (netfw.StandardServices).
		"--prov-https", ":8443", "--prov-http", ":8080",
		// SIP PnP beside the SIP edge on 5060 (sip-udp's zones admit it).
		"--pnp"}
	// A broken licence file is a vendor build error; the PBX still starts
	// (edgepbxd's own rule: never down over its licence), and says so loudly.
	lic, err := licenseArgs("/")
	if err != nil {
		b.say("WARNING: licence phone-home off: %v", err)
	} else if lic != nil {
		b.step("licence server", "url", lic[1])
	}
	args = append(args, lic...)
	args = append(args, b.updateArgs()...)
	args = append(args, testDaemonArgs(b)...)
	err = b.sup.Start(supervise.Service{
		Name: daemonName,
		Path: daemonPath,
		Args: args,
		Env:  []string{"HOME=" + dataDir},
		Dir:  dataDir,
		// Only CAP_NET_BIND_SERVICE survives exec; no_new_privs keeps it so.
		Credential:  &syscall.Credential{Uid: daemonUID, Gid: daemonGID},
		AmbientCaps: []uintptr{unix.CAP_NET_BIND_SERVICE},
		NoNewPrivs:  true,
		Files: func() ([]*os.File, error) {
			// A fresh pipe per start; the secrets fit the pipe buffer, so
			// the write end is closed before the child even starts.
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			defer w.Close()
			if _, err := w.Write(boot); err != nil {
				r.Close()
				return nil, err
			}
			return []*os.File{r}, nil
		},
	})
	if err != nil {
		return haltf("start %s: %w", daemonName, err)
	}
	b.step("services started")
	return nil
}

// serviceEvents logs supervisor events; the channel must never block long.
func (b *box) serviceEvents() chan<- supervise.Event {
	ch := make(chan supervise.Event, 16)
	go func() {
		for e := range ch {
			if e.Kind == supervise.Exited || e.Kind == supervise.StayDown {
				// A restarted edgepbxd must report ready again.
				b.health.markDown("restarting")
			}
			if e.Kind == supervise.StayDown && e.Service == daemonName {
				b.enterSafeState()
			}
		}
	}()
	return ch
}

// system is the control socket's view of PID 1.
type system box

func (s *system) Health(h control.Health) {
	b := (*box)(s)
	becameReady, claimChanged := b.health.set(h)
	if becameReady {
		b.say("edgepbxd ready t=%dms", b.ms())
	}
	if becameReady || claimChanged {
		select {
		case b.health.onChange <- struct{}{}:
		default:
		}
	}
}

func (s *system) Reboot() error   { (*box)(s).request(shutdown.Reboot); return nil }
func (s *system) Poweroff() error { (*box)(s).request(shutdown.Poweroff); return nil }

// request asks the main loop for an orderly shutdown.
func (b *box) request(a shutdown.Action) {
	select {
	case b.power <- a:
	default: // one is already pending
	}
}

func (b *box) handleSignals() {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2, syscall.SIGPWR)
	go func() {
		for sig := range ch {
			switch sig {
			case syscall.SIGTERM, syscall.SIGINT:
				b.request(shutdown.Reboot)
			default:
				b.request(shutdown.Poweroff)
			}
		}
	}()
}

// loop runs after a successful boot: banner updates and power requests.
func (b *box) loop() {
	printedReady := false
	for {
		select {
		case a := <-b.power:
			b.shutdown(a)
		case why := <-b.resetReq:
			b.factoryReset(why)
		case <-b.health.onChange:
			if !printedReady && !b.health.isDown() {
				// Give DHCP a moment so the banner can show an admin URL.
				ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
				b.net.WaitAddress(ctx)
				cancel()
				b.say("ready")
				printedReady = true
			}
			b.printBanner()
		}
	}
}

func (b *box) printBanner() {
	h, _, _ := b.health.snapshot()
	status := "ready"
	if !h.Ready {
		status = "not ready"
	}
	if h.Detail != "" {
		status += " (" + h.Detail + ")"
	}
	hostname := b.id.Hostname()
	if b.netc != nil {
		if h := b.netc.State().Confirmed.Hostname; h != "" {
			hostname = h // the admin's, once confirmed
		}
	}
	banner.Render(b.console, banner.Info{
		Version: b.version, Board: b.prof.Name, Hostname: hostname, Serial: b.id.Serial,
		Addresses: b.net.Addresses(), SetupCode: b.setup, Claimed: h.Claimed, Recovery: h.Claimed && h.Lockout,
		TLSFingerprint: h.TLSFingerprint, Health: status, Live: b.live,
	})
}

func (b *box) shutdown(a shutdown.Action) {
	b.log.Info("shutdown", "action", a.String())
	var final []io.Closer
	if b.wd != nil {
		final = append(final, b.wd)
	}
	p := shutdown.Plan{
		Stop:        b.sup.Stop,
		StopTimeout: stopTimeout,
		Unmount:     []string{dataDir},
		Final:       final,
		Console:     b.console,
		Log:         b.log,
	}
	if b.ctl != nil {
		b.ctl.Close()
	}
	err := p.Run(a)
	b.halt(fmt.Errorf("%v failed: %w", a, err))
}

// halt stops in a safe state and never returns: no services, no
// interfaces brought up, the watchdog disarmed (a reset loop would hide the
// reason), and power requests still honoured.
func (b *box) halt(err error) {
	var f fatal
	if !errors.As(err, &f) {
		b.log.Error("halting", "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	b.sup.Stop(ctx)
	cancel()
	if b.wd != nil {
		b.wd.Close()
		b.wd = nil
	}
	b.say("HALTED: %v", err)
	unix.Sync()
	b.watchButton()
	for a := range b.power {
		p := shutdown.Plan{Unmount: []string{dataDir}, Console: b.console, Log: b.log}
		if err := p.Run(a); err != nil {
			b.log.Error("halted: power request failed", "err", err)
		}
	}
}
