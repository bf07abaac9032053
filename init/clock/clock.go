package clock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/init/atomicfile"
	"github.com/edgepbx/edgepbx/init/netconf/netspec"
	"github.com/edgepbx/edgepbx/init/strictjson"
)

// Sanity bounds of a clock step.
const (
	// MaxStep is the largest correction taken once the clock is plausible:
	// an attacker who answers for every server still cannot move the
	// clock further (certificates, licence grace, TOTP depend on it).
	MaxStep = 15 * time.Minute
	// MaxSpread is how far apart servers may be and still count as agreeing.
	MaxSpread = time.Second
	// MaxStepPerDay bounds the sum of the corrections of the last 24 h:
	// servers that all lie cannot walk the clock MaxStep at a time.
	MaxStepPerDay = time.Hour
	// maxFuture bounds a step from an implausible clock (before the
	// firmware's build): it may not land more than this after the floor.
	maxFuture = 20 * 365 * 24 * time.Hour
)

// ErrDisagree and ErrStep refuse a synchronisation.
var (
	ErrDisagree = errors.New("ntp servers disagree or too few answered")
	ErrStep     = errors.New("ntp correction exceeds the sanity bound")
)

// Decide picks the correction from the samples of this round: the median
// offset of the samples that agree with it within MaxSpread. With two or
// more servers configured, at least two must agree; one configured server
// is taken alone (the admin chose it). A clock earlier than floor (no RTC,
// first boot) may be stepped forward to within maxFuture of floor; a
// plausible one by at most MaxStep.
func Decide(samples []Sample, configured int, now, floor time.Time) (time.Duration, error) {
	if len(samples) == 0 {
		return 0, fmt.Errorf("%w: no answer", ErrDisagree)
	}
	offs := make([]time.Duration, len(samples))
	for i, s := range samples {
		offs[i] = s.Offset
	}
	slices.Sort(offs)
	med := offs[len(offs)/2]
	var agree []time.Duration
	for _, o := range offs {
		if d := o - med; d <= MaxSpread && d >= -MaxSpread {
			agree = append(agree, o)
		}
	}
	need := min(2, configured)
	if len(agree) < need {
		return 0, fmt.Errorf("%w: %d of %d answers agree", ErrDisagree, len(agree), len(samples))
	}
	off := agree[len(agree)/2]
	if now.Before(floor) {
		to := now.Add(off)
		if to.Before(floor) || to.After(floor.Add(maxFuture)) {
			return 0, fmt.Errorf("%w: would set the clock to %s", ErrStep, to.UTC().Format(time.RFC3339))
		}
		return off, nil
	}
	if off > MaxStep || off < -MaxStep {
		return 0, fmt.Errorf("%w: %v (bound %v)", ErrStep, off.Round(time.Millisecond), MaxStep)
	}
	return off, nil
}

// Config configures a Clock.
type Config struct {
	Log *slog.Logger
	// Floor is the earliest plausible time (the firmware's build time).
	Floor time.Time
	// Interval between synchronisations (default 15 min).
	Interval time.Duration
	// Port is the NTP port servers are asked on (default 123; tests).
	Port uint16
	// Step moves the wall clock by d (default: clock_settime, needs CAP_SYS_TIME).
	Step func(d time.Duration) error
	// Resolve looks up a server name (default: the Go resolver).
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
}

// Clock holds the time configuration and keeps the clock in step.
type Clock struct {
	cfg  Config
	wake chan struct{}

	mu    sync.Mutex
	path  string
	conf  netspec.Time
	state netspec.TimeState
	steps []step // corrections of the last 24 h (monotonic times)
}

type step struct {
	at time.Time
	d  time.Duration
}

// budget reports whether a correction of d fits MaxStepPerDay; callers hold mu.
func (c *Clock) budget(d time.Duration, now time.Time) error {
	kept := c.steps[:0]
	var sum time.Duration
	for _, s := range c.steps {
		if now.Sub(s.at) < 24*time.Hour {
			kept = append(kept, s)
			sum += s.d
		}
	}
	c.steps = kept
	if sum+d.Abs() > MaxStepPerDay {
		return fmt.Errorf("%w: %v more would exceed %v of corrections in 24 h (already %v)", ErrStep, d.Abs().Round(time.Millisecond), MaxStepPerDay, sum.Round(time.Millisecond))
	}
	return nil
}

// New returns a clock with the default configuration (UTC, no servers).
func New(cfg Config) *Clock {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 15 * time.Minute
	}
	if cfg.Port == 0 {
		cfg.Port = 123
	}
	if cfg.Step == nil {
		cfg.Step = stepWall
	}
	if cfg.Resolve == nil {
		cfg.Resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	c := &Clock{cfg: cfg, wake: make(chan struct{}, 1), conf: netspec.DefaultTime()}
	c.state.Config = c.conf
	return c
}

func stepWall(d time.Duration) error {
	ts := unix.NsecToTimespec(time.Now().Add(d).UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}

// State reports the configuration and the last synchronisation.
func (c *Clock) State() netspec.TimeState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state
	st.Config.NTP = slices.Clone(st.Config.NTP)
	return st
}

// Set validates t, persists it (once Restore named the file) and wakes
// the synchronisation loop. Nothing changes on error.
func (c *Clock) Set(t netspec.Time) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if t.NTP == nil {
		t.NTP = []string{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.path != "" {
		if err := writeTimeFile(c.path, t); err != nil {
			return fmt.Errorf("clock: %w", err)
		}
	}
	c.conf, c.state.Config = t, t
	c.cfg.Log.Info("clock: configuration set", "ntp", t.NTP, "tz", t.TimeZone)
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

// ErrTimeFile marks a persisted time file that could not be used.
var ErrTimeFile = errors.New("persisted time file invalid")

// Restore adopts the time file at path: missing keeps the default; a bad
// one keeps it too and is an error; later Sets write to path.
func (c *Clock) Restore(path string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.path = path
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clock: restore: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxTimeFile+1))
	if err != nil {
		return fmt.Errorf("clock: restore: %w", err)
	}
	t, err := ParseTimeFile(data)
	if err != nil {
		return fmt.Errorf("clock: restore %s: %w", path, err)
	}
	c.conf, c.state.Config = t, t
	return nil
}

const (
	timeFileVersion = 1
	maxTimeFile     = 16 << 10
)

type timeFile struct {
	Version int          `json:"version"`
	Time    netspec.Time `json:"time"`
}

func writeTimeFile(path string, t netspec.Time) error {
	data, err := json.Marshal(timeFile{Version: timeFileVersion, Time: t})
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// ParseTimeFile decodes and validates a persisted time file strictly.
func ParseTimeFile(data []byte) (netspec.Time, error) {
	if len(data) > maxTimeFile {
		return netspec.Time{}, fmt.Errorf("%w: larger than %d bytes", ErrTimeFile, maxTimeFile)
	}
	var f timeFile
	if err := strictjson.Unmarshal(data, &f); err != nil {
		return netspec.Time{}, fmt.Errorf("%w: %w", ErrTimeFile, err)
	}
	if f.Version != timeFileVersion {
		return netspec.Time{}, fmt.Errorf("%w: version %d", ErrTimeFile, f.Version)
	}
	if err := f.Time.Validate(); err != nil {
		return netspec.Time{}, fmt.Errorf("%w: %w", ErrTimeFile, err)
	}
	if f.Time.NTP == nil {
		f.Time.NTP = []string{}
	}
	return f.Time, nil
}

// Run synchronises at once, then every Interval and after each Set, until
// ctx is done.
func (c *Clock) Run(ctx context.Context) {
	for {
		c.SyncOnce(ctx)
		t := time.NewTimer(c.cfg.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-c.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// SyncOnce asks every configured server once and steps the clock if the
// answers pass Decide. It records the outcome in the state.
func (c *Clock) SyncOnce(ctx context.Context) {
	c.mu.Lock()
	servers := slices.Clone(c.conf.NTP)
	c.mu.Unlock()
	if len(servers) == 0 {
		return
	}
	var samples []Sample
	var errs []error
	for _, s := range servers {
		smp, err := c.query(ctx, s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		samples = append(samples, smp)
	}
	now := time.Now()
	off, err := Decide(samples, len(servers), now, c.cfg.Floor)
	c.mu.Lock()
	defer c.mu.Unlock()
	// The budget does not apply to the first setting of an implausible
	// clock (no RTC): that step is bounded by Decide instead.
	if err == nil && !now.Before(c.cfg.Floor) {
		err = c.budget(off, now)
	}
	if err == nil {
		if err = c.cfg.Step(off); err == nil {
			c.steps = append(c.steps, step{at: now, d: off.Abs()})
		}
	}
	if err != nil {
		c.state.Error = errors.Join(append([]error{err}, errs...)...).Error()
		c.cfg.Log.Warn("clock: not synchronised", "err", c.state.Error)
		return
	}
	c.state.Synced, c.state.Offset, c.state.Error = time.Now(), off, ""
	c.state.Server = samples[0].Server
	c.cfg.Log.Info("clock: synchronised", "offset", off, "answers", len(samples))
}

// query resolves a server (first address only: one vote per configured
// name, so a pool name cannot outvote the others) and asks it.
func (c *Clock) query(ctx context.Context, server string) (Sample, error) {
	a, err := netip.ParseAddr(server)
	if err != nil {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		as, rerr := c.cfg.Resolve(rctx, server)
		cancel()
		if rerr == nil && len(as) == 0 {
			rerr = errors.New("no address")
		}
		if rerr != nil {
			return Sample{}, fmt.Errorf("ntp %s: resolve: %w", server, rerr)
		}
		a = as[0]
	}
	s, err := Query(ctx, netip.AddrPortFrom(a.Unmap(), c.cfg.Port).String())
	s.Server = server
	return s, err
}
