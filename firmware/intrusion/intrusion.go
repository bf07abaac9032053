// Package intrusion keeps the intrusion report: per UTC day, bans by
// reason, top offending sources and their countries, attacked extensions,
// scanner User-Agents, admin-port attacks and call fraud events. It is fed
// every security event as it is recorded (Observe) and keeps bounded
// aggregates (space-saving sketches) in memory for the current days,
// written to bucket intrusion.days (one value per day) by Flush, so a
// report never scans the security log. Bucket intrusion.settings holds the
// admin's daily-summary setting and the last day summarised.
package intrusion

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Buckets.
const (
	DaysBucket     = "intrusion.days"
	SettingsBucket = "intrusion.settings"
	settingsKey    = "settings"
	sentKey        = "summary_sent" // last day whose summary went out
)

// dateLayout is the key and the API's date format (UTC days).
const dateLayout = "2006-01-02"

// Defaults.
const (
	DefaultKeepDays = 400 // days of aggregates kept (a year and some)
	MaxRangeDays    = 92  // longest report range
	TopN            = 10  // entries per list in a report
	memDays         = 2   // days kept in memory after they are written (today, yesterday)
	catchUpDays     = 7   // missed daily summaries sent after downtime, at most
)

// Geo looks up a source's country (*auth.Service); "" when unknown or
// no database is loaded.
type Geo interface {
	Country(netip.Addr) string
}

// Summarizer sends the daily summary (*logs.Sender); false: not sent
// (remote syslog off), tried again later.
type Summarizer interface {
	Summary(at time.Time, msgid, text string, params []logs.SDParam) bool
}

// Config are the aggregator's dependencies; DB is required.
type Config struct {
	DB       *store.DB
	Geo      Geo              // nil: no countries
	Summary  Summarizer       // nil: no daily summary
	Now      func() time.Time // nil: time.Now
	KeepDays int              // 0: DefaultKeepDays; the upper bound, the privacy sweep applies the admin's retention
	// Mask, when set, returns the address to keep for a source (the
	// privacy setting's truncation); the country is looked up first.
	Mask   func(netip.Addr) netip.Addr
	Logger *slog.Logger
}

// Aggregator keeps the per-day aggregates. Observe is safe for concurrent
// use and never touches the disk except to reload a day that left memory.
type Aggregator struct {
	cfg Config

	flushMu sync.Mutex // one writer of DaysBucket at a time (Flush, rewrite, Purge)
	mu      sync.Mutex
	days    map[int64]*day
	dirty   map[int64]bool
	trimAt  int64 // day of the last retention trim

	lost atomic.Uint64 // events for a day that could not be read back
}

// New returns an aggregator over cfg.DB.
func New(cfg Config) (*Aggregator, error) {
	if cfg.DB == nil {
		return nil, errors.New("intrusion: DB is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.KeepDays <= 0 {
		cfg.KeepDays = DefaultKeepDays
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Aggregator{cfg: cfg, days: map[int64]*day{}, dirty: map[int64]bool{}}
	// Today's figures so far, so the first event does not wait on disk.
	n := dayNumber(cfg.Now())
	if d, err := a.load(n); err != nil {
		return nil, err
	} else if d != nil {
		a.days[n] = d
	}
	return a, nil
}

// dayNumber is t's UTC day since 1970-01-01.
func dayNumber(t time.Time) int64 {
	s := t.Unix()
	n := s / 86400
	if s%86400 < 0 {
		n--
	}
	return n
}

func dayDate(n int64) string { return time.Unix(n*86400, 0).UTC().Format(dateLayout) }

// Observe adds one security event to its day's figures. It is on the
// security log's hot path: a map lookup or two and O(log k) sketch
// updates under one mutex (BenchmarkObserve).
func (a *Aggregator) Observe(e logs.Event) {
	t := e.Time
	if t.IsZero() {
		t = a.cfg.Now()
	}
	src := parseSource(e.Source)
	var country string
	if a.cfg.Geo != nil && src.IsValid() && offendingKind(e.Kind) {
		country = a.cfg.Geo.Country(src)
	}
	if a.cfg.Mask != nil && src.IsValid() {
		src = a.cfg.Mask(src)
	}
	n := dayNumber(t)
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.days[n]
	if d == nil {
		var err error
		if d, err = a.load(n); err != nil {
			// Writing a fresh day would overwrite the stored one.
			a.lost.Add(1)
			a.cfg.Logger.Error("intrusion: read day", "date", dayDate(n), "err", err)
			return
		}
		if d == nil {
			d = newDay(dayDate(n))
		}
		a.days[n] = d
	}
	d.observe(&e, src, country)
	a.dirty[n] = true
}

func offendingKind(k logs.Kind) bool {
	switch k {
	case logs.KindBan, logs.KindAuthFailure, logs.KindNonceReplay, logs.KindScanner, logs.KindFlood,
		logs.KindInvalid, logs.KindAdminLoginFailure, logs.KindAdminBan:
		return true
	}
	return false
}

// Lost counts events dropped because their day could not be read back.
func (a *Aggregator) Lost() uint64 { return a.lost.Load() }

// load reads day n from the store (nil, nil: none).
func (a *Aggregator) load(n int64) (*day, error) {
	var r record
	var ok bool
	err := a.cfg.DB.View(func(tx *store.Tx) error {
		var err error
		ok, err = tx.Get(DaysBucket, dayDate(n), &r)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("intrusion: read %s %s: %w", DaysBucket, dayDate(n), err)
	}
	if !ok {
		return nil, nil
	}
	return r.day(dayDate(n)), nil
}

// Flush writes the days changed since the last flush in one transaction,
// trims days older than KeepDays once a day, and lets written days other
// than the newest leave memory.
func (a *Aggregator) Flush() error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	recs := make(map[int64]record, len(a.dirty))
	for n := range a.dirty {
		recs[n] = a.days[n].record()
	}
	clear(a.dirty)
	today := dayNumber(a.cfg.Now())
	trim := a.trimAt != today
	a.mu.Unlock()
	if len(recs) == 0 && !trim {
		return nil
	}
	err := a.cfg.DB.Update(func(tx *store.Tx) error {
		for n, r := range recs {
			if err := tx.Put(DaysBucket, dayDate(n), r); err != nil {
				return err
			}
		}
		if !trim {
			return nil
		}
		oldest := dayDate(today - int64(a.cfg.KeepDays) + 1)
		var old []string
		if err := tx.ForEach(DaysBucket, func(k string, _ []byte) error {
			if k < oldest {
				old = append(old, k)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range old {
			if err := tx.Delete(DaysBucket, k); err != nil {
				return err
			}
		}
		return nil
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		for n := range recs {
			a.dirty[n] = true // the days are still in memory: next time
		}
		return fmt.Errorf("intrusion: write %d days: %w", len(recs), err)
	}
	if trim {
		a.trimAt = today
	}
	// Days changed meanwhile stay; so do the newest.
	keep := make([]int64, 0, len(a.days))
	for n := range a.days {
		keep = append(keep, n)
	}
	slices.Sort(keep)
	for i, n := range keep {
		if i < len(keep)-memDays && !a.dirty[n] {
			delete(a.days, n)
		}
	}
	return nil
}

// Run flushes and sends due daily summaries every interval until ctx
// ends, then flushes once more. A failed write is logged and retried: the
// report must not stop edgepbxd.
func (a *Aggregator) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return a.Flush()
		case <-t.C:
			if err := a.Flush(); err != nil {
				a.cfg.Logger.Error("intrusion: flush", "err", err)
			}
			if _, err := a.SendDue(); err != nil {
				a.cfg.Logger.Error("intrusion: daily summary", "err", err)
			}
		}
	}
}

// record is a day as stored: counters and the sketches' counters.
type record struct {
	Events     map[logs.Kind]uint64  `json:"events"`
	Bans       uint64                `json:"bans"`
	Throttles  uint64                `json:"throttles"`
	AuthFail   uint64                `json:"auth_failures"`
	Scanners   uint64                `json:"scanners"`
	Floods     uint64                `json:"floods"`
	Invalid    uint64                `json:"invalid"`
	AdminFail  uint64                `json:"admin_failures"`
	AdminBans  uint64                `json:"admin_bans"`
	Fraud      uint64                `json:"fraud"`
	Reasons    []Counter[string]     `json:"reasons,omitempty"`
	Sources    []Counter[netip.Addr] `json:"sources,omitempty"`
	Countries  []Counter[string]     `json:"countries,omitempty"`
	Extensions []Counter[string]     `json:"extensions,omitempty"`
	Agents     []Counter[string]     `json:"agents,omitempty"`
	Admin      []Counter[netip.Addr] `json:"admin,omitempty"`
	FraudExt   []Counter[string]     `json:"fraud_extensions,omitempty"`
}

func (d *day) record() record {
	return record{Events: maps(d.events), Bans: d.bans, Throttles: d.throttles, AuthFail: d.authFail,
		Scanners: d.scanners, Floods: d.floods, Invalid: d.invalid, AdminFail: d.adminFail, AdminBans: d.adminBans,
		Fraud: d.fraud, Reasons: d.reasons.sorted(cmp.Compare[string]), Sources: d.sources.sorted(netip.Addr.Compare),
		Countries: d.countries.sorted(cmp.Compare[string]), Extensions: d.extensions.sorted(cmp.Compare[string]),
		Agents: d.agents.sorted(cmp.Compare[string]), Admin: d.admin.sorted(netip.Addr.Compare),
		FraudExt: d.fraudExt.sorted(cmp.Compare[string])}
}

func maps(m map[logs.Kind]uint64) map[logs.Kind]uint64 {
	out := make(map[logs.Kind]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// day rebuilds the in-memory day; the bounds apply to stored values too.
func (r record) day(date string) *day {
	d := newDay(date)
	for k, v := range r.Events {
		if len(d.events) < maxKinds {
			d.events[k] = v
		}
	}
	d.bans, d.throttles, d.authFail, d.scanners, d.floods = r.Bans, r.Throttles, r.AuthFail, r.Scanners, r.Floods
	d.invalid, d.adminFail, d.adminBans, d.fraud = r.Invalid, r.AdminFail, r.AdminBans, r.Fraud
	d.reasons.load(r.Reasons, cmp.Compare[string])
	d.sources.load(r.Sources, netip.Addr.Compare)
	d.countries.load(r.Countries, cmp.Compare[string])
	d.extensions.load(r.Extensions, cmp.Compare[string])
	d.agents.load(r.Agents, cmp.Compare[string])
	d.admin.load(r.Admin, netip.Addr.Compare)
	d.fraudExt.load(r.FraudExt, cmp.Compare[string])
	return d
}
