package netfw

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/init/atomicfile"
	"github.com/edgepbx/edgepbx/init/pending"
	"github.com/edgepbx/edgepbx/init/strictjson"
)

// Commit only when healthy (the Talos revert pattern): a policy change an
// admin makes is applied at once but stays *pending* until the admin
// confirms it over a connection opened under the new ruleset. Without that
// proof it is reverted to the last confirmed policy when the deadline
// passes. Only confirmed policies are written to disk, so a reboot can
// never bring back a policy nobody could confirm.

// Errors of the committer; returned errors wrap one of these.
var (
	ErrNoPending    = errors.New("no policy change is pending")
	ErrPendingID    = errors.New("pending policy id does not match")
	ErrPolicyFile   = errors.New("persisted policy file invalid")
	ErrCommitClosed = errors.New("policy committer closed")
)

// DefaultRevertAfter is how long a pending policy waits for its confirmation.
const DefaultRevertAfter = 120 * time.Second

// Applier installs a policy; *Firewall is one. Apply must leave the
// running ruleset as it was on error.
type Applier interface {
	Apply(Policy) error
}

// Timer is what the committer needs of time; tests inject a manual clock.
type Timer = pending.Timer

// Committer owns the admin-editable part of the policy in PID 1: it
// validates and applies changes as pending, confirms or reverts them, and
// persists confirmed ones. It is safe for concurrent use.
type Committer struct {
	mu       sync.Mutex
	fw       Applier
	base     Policy
	log      *slog.Logger
	timer    Timer
	gate     *pending.Gate // the pending change's id, deadline and revert timer
	after    time.Duration
	path     string // persisted policy; "" until Restore names it
	confirm  Access
	pending  *Pending
	onRevert func(Pending, error)
}

// CommitOption configures NewCommitter.
type CommitOption func(*Committer)

// WithRevertAfter sets how long a pending change waits (default 120 s).
func WithRevertAfter(d time.Duration) CommitOption { return func(c *Committer) { c.after = d } }

// WithTimer injects the clock (tests).
func WithTimer(t Timer) CommitOption { return func(c *Committer) { c.timer = t } }

// WithCommitLogger sets the logger.
func WithCommitLogger(l *slog.Logger) CommitOption { return func(c *Committer) { c.log = l } }

// WithRevertHook is called (outside the lock) after a pending change was
// reverted, with the revert's error if any: PID 1 prints it on the console.
func WithRevertHook(f func(Pending, error)) CommitOption {
	return func(c *Committer) { c.onRevert = f }
}

// NewCommitter manages fw, which must already run base (PID 1 applied
// DefaultPolicy at boot). base supplies everything but the Access.
func NewCommitter(fw Applier, base Policy, opts ...CommitOption) *Committer {
	c := &Committer{fw: fw, base: base.WithAccess(Access{}), confirm: base.Access(), log: slog.Default(),
		timer: pending.Wall{}, after: DefaultRevertAfter}
	c.base.AdminSources = nil
	for _, o := range opts {
		o(c)
	}
	c.gate = pending.New(c.timer)
	return c
}

// Policy returns the full policy for an Access.
func (c *Committer) Policy(a Access) Policy { return c.base.WithAccess(a) }

// State reports the confirmed policy and the pending change.
func (c *Committer) State() PolicyState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := PolicyState{Confirmed: normalized(c.base.WithAccess(c.confirm).Access()), Services: c.base.Services, RevertAfter: c.after}
	if c.pending != nil {
		p := *c.pending
		p.Access = normalized(c.base.WithAccess(p.Access).Access())
		_, _, p.Remaining, _ = c.gate.Pending()
		st.Pending = &p
	}
	return st
}

// Set validates a (with the admin sources that must keep reaching an admin
// service) and applies it as pending. A change made while another is
// pending replaces it; the revert target stays the last confirmed policy.
// On any error the running ruleset is what it was.
func (c *Committer) Set(a Access, adminSources []netip.Addr) (Pending, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate.Closed() {
		return Pending{}, ErrCommitClosed
	}
	p := c.base.WithAccess(a)
	p.AdminSources = adminSources
	if err := p.Validate(); err != nil {
		return Pending{}, err
	}
	if err := c.fw.Apply(p); err != nil {
		c.restoreRunning()
		return Pending{}, err
	}
	id, deadline, err := c.gate.Arm(c.after, c.expire)
	if err != nil {
		c.restoreRunning()
		return Pending{}, ErrCommitClosed
	}
	pend := &Pending{ID: id, Access: p.Access(), Deadline: deadline, Remaining: c.after}
	c.pending = pend
	c.log.Warn("netfw: policy change pending confirmation", "id", id, "deadline", pend.Deadline, "zones", len(a.Zones), "rules", len(a.Rules))
	return *pend, nil
}

// restoreRunning re-applies what should be running after a failed Apply
// (Apply is atomic, but its read-back check can fail after the batch).
func (c *Committer) restoreRunning() {
	want := c.confirm
	if c.pending != nil {
		want = c.pending.Access
	}
	if err := c.fw.Apply(c.base.WithAccess(want)); err != nil {
		c.log.Error("netfw: re-apply after failed change", "err", err)
	}
}

// Confirm makes the pending change with this id permanent: it is written
// to the policy file first, and only then stops the revert. If the write
// fails the change stays pending (and reverts unless a retry succeeds).
func (c *Committer) Confirm(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.gate.Confirm(id, func() error {
		if c.path == "" {
			return nil
		}
		if err := writePolicyFile(c.path, c.pending.Access); err != nil {
			return fmt.Errorf("netfw: confirm: %w", err)
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
	c.confirm, c.pending = c.pending.Access, nil
	c.log.Info("netfw: policy change confirmed", "id", id, "persisted", c.path != "")
	return nil
}

// expire reverts the pending change with this id, if it is still pending.
func (c *Committer) expire(id string) {
	c.mu.Lock()
	if !c.gate.Expire(id) {
		c.mu.Unlock()
		return
	}
	p := *c.pending
	c.pending = nil
	err := c.fw.Apply(c.base.WithAccess(c.confirm))
	if err != nil {
		// The confirmed policy applied before; if it cannot now, fall back
		// to the boot default rather than keep an unconfirmed one.
		c.log.Error("netfw: revert to confirmed policy failed, applying default", "err", err)
		if derr := c.fw.Apply(DefaultPolicy()); derr != nil {
			err = errors.Join(err, derr)
		} else {
			c.confirm = DefaultPolicy().Access()
		}
	}
	hook := c.onRevert
	c.mu.Unlock()
	c.log.Warn("netfw: policy change not confirmed in time: reverted", "id", id, "err", err)
	if hook != nil {
		hook(p, err)
	}
}

// Close stops a pending revert timer without reverting (shutdown).
func (c *Committer) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gate.Close()
}

// Restore adopts the policy file at path once /data is mounted: a missing
// file keeps the running (default) policy; a valid one is applied as
// confirmed. A corrupt or invalid file is an error and changes nothing;
// later confirmations still write to path.
func (c *Committer) Restore(path string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.path = path
	a, err := readPolicyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netfw: restore policy: %w", err)
	}
	p := c.base.WithAccess(a)
	if err := p.Validate(); err != nil {
		return fmt.Errorf("netfw: restore policy %s: %w: %w", path, ErrPolicyFile, err)
	}
	if err := c.fw.Apply(p); err != nil {
		c.restoreRunning()
		return fmt.Errorf("netfw: restore policy: %w", err)
	}
	c.confirm = p.Access()
	c.log.Info("netfw: persisted policy restored", "file", path, "zones", len(a.Zones), "rules", len(a.Rules))
	return nil
}

// The policy file: {"version":1,"access":{...}}, written atomically.
const (
	policyFileVersion = 1
	maxPolicyFile     = 8 << 20
)

type policyFile struct {
	Version int    `json:"version"`
	Access  Access `json:"access"`
}

func writePolicyFile(path string, a Access) error {
	data, err := json.Marshal(policyFile{Version: policyFileVersion, Access: a})
	if err != nil {
		return fmt.Errorf("encode policy: %w", err)
	}
	return atomicfile.Write(path, data, 0o600)
}

func readPolicyFile(path string) (Access, error) {
	fh, err := os.Open(path)
	if err != nil {
		return Access{}, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxPolicyFile+1))
	if err != nil {
		return Access{}, err
	}
	return ParsePolicyFile(data)
}

// ParsePolicyFile decodes a persisted policy file strictly (no unknown
// fields, one value, bounded size). It does not validate the policy.
func ParsePolicyFile(data []byte) (Access, error) {
	if len(data) > maxPolicyFile {
		return Access{}, fmt.Errorf("%w: larger than %d bytes", ErrPolicyFile, maxPolicyFile)
	}
	var pf policyFile
	if err := decodeStrict(data, &pf); err != nil {
		return Access{}, fmt.Errorf("%w: %w", ErrPolicyFile, err)
	}
	if pf.Version != policyFileVersion {
		return Access{}, fmt.Errorf("%w: version %d, want %d", ErrPolicyFile, pf.Version, policyFileVersion)
	}
	return pf.Access, nil
}

// decodeStrict decodes exactly one JSON value strictly (init/strictjson):
// the policy file is on /data, which an owner with the disk can edit.
func decodeStrict(data []byte, v any) error { return strictjson.Unmarshal(data, v) }
