package netconf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/init/atomicfile"
	"github.com/edgepbx/edgepbx/init/netconf/netspec"
	"github.com/edgepbx/edgepbx/init/pending"
	"github.com/edgepbx/edgepbx/init/strictjson"
)

// Commit only when healthy, as for the firewall policy (netfw.Committer):
// a network change is applied at once but stays pending until the admin
// confirms it from a connection opened after the change; otherwise it is
// reverted to the last confirmed network when the deadline passes. Only
// confirmed networks are written to /data, so a reboot never brings back a
// network nobody could reach the box on.

// Errors of the committer; returned errors wrap one of these.
var (
	ErrNoPending   = errors.New("no network change is pending")
	ErrPendingID   = errors.New("pending network change id does not match")
	ErrNetworkFile = errors.New("persisted network file invalid")
	ErrClosed      = errors.New("network committer closed")
	ErrNotApplied  = errors.New("the network change is not applied yet: confirm it from its new address")
	// ErrApplyFailed is what OnRevert gets for a change (ApplyDelay) that
	// could not be applied once Set had answered.
	ErrApplyFailed = errors.New("network change could not be applied")
)

// DefaultRevertAfter is how long a pending change waits for its confirmation.
const DefaultRevertAfter = 120 * time.Second

// Applier makes the network what a configuration says; *Manager is one.
type Applier interface {
	ApplyNetwork(ctx context.Context, n netspec.Network, nics []string) error
}

// Committer owns the admin-editable network in PID 1. Safe for concurrent use.
type Committer struct {
	mu       sync.Mutex
	ctx      context.Context // DHCP loops run under it
	apply    Applier
	live     func() []netip.Prefix
	nics     []string
	log      *slog.Logger
	gate     *pending.Gate // the pending change's id, deadline and revert timer
	after    time.Duration
	path     string
	confirm  netspec.Network
	pending  *netspec.Pending
	onRevert func(netspec.Pending, error)
	timer    pending.Timer
	delay    time.Duration // ApplyDelay
	applied  bool          // the pending change is in effect (not waiting for delay)
}

// CommitterConfig configures NewCommitter.
type CommitterConfig struct {
	Apply Applier
	// Live reports the addresses configured now (Manager.Addresses).
	Live func() []netip.Prefix
	// NICs are the board's interfaces; a configuration may name only these.
	NICs []string
	// Default is the network running at boot (board profile, command line).
	Default netspec.Network
	// RevertAfter defaults to DefaultRevertAfter.
	RevertAfter time.Duration
	// Timer defaults to the wall clock (tests inject a manual one).
	Timer pending.Timer
	Log   *slog.Logger
	// OnRevert is called (outside the lock) after a change was reverted.
	OnRevert func(netspec.Pending, error)
	// ApplyDelay, when positive, applies a change this long after Set has
	// answered, so that the answer (and the admin's HTTP answer behind it)
	// leaves on the old address before that goes away. Validation still
	// answers at once; an apply that fails then is undone like an
	// unconfirmed change (OnRevert). 0: Set applies before it answers.
	ApplyDelay time.Duration
}

// NewCommitter manages a network already running cfg.Default.
func NewCommitter(ctx context.Context, cfg CommitterConfig) *Committer {
	c := &Committer{ctx: ctx, apply: cfg.Apply, live: cfg.Live, nics: slices.Clone(cfg.NICs), log: cfg.Log,
		after: cfg.RevertAfter, confirm: cfg.Default, onRevert: cfg.OnRevert, gate: pending.New(cfg.Timer),
		timer: cfg.Timer, delay: max(cfg.ApplyDelay, 0)}
	if c.timer == nil {
		c.timer = pending.Wall{}
	}
	if c.after <= 0 {
		c.after = DefaultRevertAfter
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.live == nil {
		c.live = func() []netip.Prefix { return nil }
	}
	return c
}

// State reports the confirmed network, the pending change and the live addresses.
func (c *Committer) State() netspec.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := netspec.State{Confirmed: c.confirm, NICs: slices.Clone(c.nics), Live: c.live(), RevertAfter: c.after}
	if c.pending != nil {
		p := *c.pending
		_, _, p.Remaining, _ = c.gate.Pending()
		st.Pending = &p
	}
	return st
}

// Set validates n and applies it as pending. A change made while another
// is pending replaces it; the revert target stays the last confirmed one.
// If applying fails, what was running before is applied again.
func (c *Committer) Set(n netspec.Network) (netspec.Pending, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate.Closed() {
		return netspec.Pending{}, ErrClosed
	}
	if err := n.Validate(c.nics); err != nil {
		return netspec.Pending{}, err
	}
	if c.delay > 0 {
		// The revert deadline covers the delay too; the change is applied
		// by applyPending, under the same id.
		id, deadline, err := c.gate.Arm(c.delay+c.after, c.expire)
		if err != nil {
			return netspec.Pending{}, ErrClosed
		}
		p := &netspec.Pending{ID: id, Network: n, Deadline: deadline, Remaining: c.delay + c.after}
		c.pending, c.applied = p, false
		c.timer.AfterFunc(c.delay, func() { c.applyPending(id) })
		c.log.Warn("netconf: network change accepted, applied shortly", "id", id, "in", c.delay)
		return *p, nil
	}
	if err := c.apply.ApplyNetwork(c.ctx, n, c.nics); err != nil {
		want := c.confirm
		if c.pending != nil {
			want = c.pending.Network
		}
		if rerr := c.apply.ApplyNetwork(c.ctx, want, c.nics); rerr != nil {
			c.log.Error("netconf: re-apply after failed change", "err", rerr)
		}
		return netspec.Pending{}, fmt.Errorf("netconf: apply: %w", err)
	}
	id, deadline, err := c.gate.Arm(c.after, c.expire)
	if err != nil {
		return netspec.Pending{}, ErrClosed
	}
	p := &netspec.Pending{ID: id, Network: n, Deadline: deadline, Remaining: c.after}
	c.pending, c.applied = p, true
	c.log.Warn("netconf: network change pending confirmation", "id", id, "deadline", p.Deadline)
	return *p, nil
}

// applyPending applies the change Set accepted with ApplyDelay; its revert
// deadline is already running. If applying fails, the confirmed network is
// applied again and the change is dropped.
func (c *Committer) applyPending(id string) {
	c.mu.Lock()
	if c.gate.Closed() || c.gate.Check(id) != nil || c.pending == nil || c.applied {
		c.mu.Unlock()
		return
	}
	err := c.apply.ApplyNetwork(c.ctx, c.pending.Network, c.nics)
	if err == nil {
		c.applied = true
		c.log.Warn("netconf: network change pending confirmation", "id", id, "deadline", c.pending.Deadline)
		c.mu.Unlock()
		return
	}
	c.gate.Expire(id) // ends it: its revert timer finds nothing
	p := *c.pending
	c.pending = nil
	if rerr := c.apply.ApplyNetwork(c.ctx, c.confirm, c.nics); rerr != nil {
		c.log.Error("netconf: re-apply after failed change", "err", rerr)
	}
	hook := c.onRevert
	c.mu.Unlock()
	err = fmt.Errorf("%w: %w", ErrApplyFailed, err)
	c.log.Error("netconf: network change failed: reverted", "id", id, "err", err)
	if hook != nil {
		hook(p, err)
	}
}

// Confirm makes the pending change with this id permanent: written to the
// network file first, and only then the revert is stopped. If the write
// fails the change stays pending.
func (c *Committer) Confirm(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate.Check(id) == nil && !c.applied {
		return ErrNotApplied // nothing to have reached the box over yet
	}
	err := c.gate.Confirm(id, func() error {
		if c.path == "" {
			return nil
		}
		if err := writeNetworkFile(c.path, c.pending.Network); err != nil {
			return fmt.Errorf("netconf: confirm: %w", err)
		}
		return nil
	})
	switch {
	case errors.Is(err, pending.ErrNone):
		return ErrNoPending
	case errors.Is(err, pending.ErrID):
		return ErrPendingID
	case err != nil:
		return err
	}
	c.confirm, c.pending = c.pending.Network, nil
	c.log.Info("netconf: network change confirmed", "id", id, "persisted", c.path != "")
	return nil
}

func (c *Committer) expire(id string) {
	c.mu.Lock()
	if !c.gate.Expire(id) {
		c.mu.Unlock()
		return
	}
	p := *c.pending
	c.pending = nil
	err := c.apply.ApplyNetwork(c.ctx, c.confirm, c.nics)
	hook := c.onRevert
	c.mu.Unlock()
	c.log.Warn("netconf: network change not confirmed in time: reverted", "id", id, "err", err)
	if hook != nil {
		hook(p, err)
	}
}

// Close stops a pending revert without reverting (shutdown).
func (c *Committer) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gate.Close()
}

// Restore adopts the network file at path once /data is mounted: missing
// keeps the running default; a valid one is applied as confirmed. A
// corrupt or invalid file changes nothing and is an error (the caller
// says so on the console); later confirmations still write to path.
func (c *Committer) Restore(path string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.path = path
	n, err := readNetworkFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netconf: restore: %w", err)
	}
	if err := n.Validate(c.nics); err != nil {
		return fmt.Errorf("netconf: restore %s: %w: %w", path, ErrNetworkFile, err)
	}
	if err := c.apply.ApplyNetwork(c.ctx, n, c.nics); err != nil {
		if rerr := c.apply.ApplyNetwork(c.ctx, c.confirm, c.nics); rerr != nil {
			c.log.Error("netconf: re-apply default after failed restore", "err", rerr)
		}
		return fmt.Errorf("netconf: restore: %w", err)
	}
	c.confirm = n
	c.log.Info("netconf: persisted network restored", "file", path)
	return nil
}

// The network file: {"version":1,"network":{...}}, written atomically.
const (
	networkFileVersion = 1
	maxNetworkFile     = 64 << 10
)

type networkFile struct {
	Version int             `json:"version"`
	Network netspec.Network `json:"network"`
}

func writeNetworkFile(path string, n netspec.Network) error {
	data, err := json.Marshal(networkFile{Version: networkFileVersion, Network: n})
	if err != nil {
		return fmt.Errorf("encode network: %w", err)
	}
	return atomicfile.Write(path, data, 0o600)
}

func readNetworkFile(path string) (netspec.Network, error) {
	fh, err := os.Open(path)
	if err != nil {
		return netspec.Network{}, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxNetworkFile+1))
	if err != nil {
		return netspec.Network{}, err
	}
	return ParseNetworkFile(data)
}

// ParseNetworkFile decodes a persisted network file strictly. It does not
// validate the network (that needs the board's NICs).
func ParseNetworkFile(data []byte) (netspec.Network, error) {
	if len(data) > maxNetworkFile {
		return netspec.Network{}, fmt.Errorf("%w: larger than %d bytes", ErrNetworkFile, maxNetworkFile)
	}
	var f networkFile
	if err := strictjson.Unmarshal(data, &f); err != nil {
		return netspec.Network{}, fmt.Errorf("%w: %w", ErrNetworkFile, err)
	}
	if f.Version != networkFileVersion {
		return netspec.Network{}, fmt.Errorf("%w: version %d, want %d", ErrNetworkFile, f.Version, networkFileVersion)
	}
	return f.Network, nil
}

// DefaultNetwork is the boot network as a netspec.Network: the board's
// NICs (after the command-line override) and the identity's host name.
func DefaultNetwork(hostname string, nics []NIC) netspec.Network {
	n := netspec.Network{Hostname: hostname}
	for _, nic := range nics {
		it := netspec.Interface{Name: nic.Name, Mode: nic.Mode}
		if nic.Mode == ModeStatic {
			if p, err := netip.ParsePrefix(nic.Address); err == nil {
				it.Addresses = []netip.Prefix{p}
			}
			if g, err := netip.ParseAddr(nic.Gateway); err == nil {
				if g.Is4() {
					it.Gateway4 = g
				} else {
					it.Gateway6 = g
				}
			}
		}
		n.Interfaces = append(n.Interfaces, it)
	}
	return n
}
