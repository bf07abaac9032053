// Package privacy owns the data-category model: which stores hold personal
// data, how long each keeps it (retention), how each stores IP addresses
// (anonymisation), and the right to be forgotten (find, export and delete
// everything held about an extension, a user or an external number).
// Bucket privacy.settings holds one Policy per category; privacy.keys the
// sealed keys of the hash mode.
//
// The data stay with their owners (cdr, logs, audit, auth, connlog); each
// category here is a thin adapter over the owner's API (categories.go).
//
// Categories that arrive later (voicemail and recordings from the media
// applications, the provisioning fetch log, backups) join by implementing
// Category in their owner package and being registered by edgepbxd with
// Register; nothing else changes. File-backed ones report Size as the sum
// of their files, delete files (and fsync the directory) in Sweep and
// Forget, and list them (metadata, not the audio) in Export. Their
// defaults are in Planned so the page can say what will come.
//
// A Forget erases every category kept in the store in one transaction
// (TxForgetter) with its audit entry: a crash leaves all or nothing.
// Categories outside the store (files) are erased after that commit under
// a durable pending record, which Resume (at start, then hourly) finishes
// together with zeroing the freed pages.
package privacy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
)

const settingsBucket = "privacy.settings"

// Policy is one category's setting.
type Policy struct {
	// Days is the retention; 0 keeps forever where the category allows it.
	Days int `json:"days"`
	// Anonymise is how IP addresses are stored (categories that hold them).
	Anonymise Mode `json:"anonymise,omitempty"`
	// MaskNumbersAfterDays masks external phone numbers once a record is
	// this old (call records only); 0: never.
	MaskNumbersAfterDays int `json:"mask_numbers_after_days,omitempty"`
}

// Info describes a category for the page and the API.
type Info struct {
	Name         string `json:"name"`
	Title        string `json:"title"`
	PersonalData bool   `json:"personal_data"`
	Holds        string `json:"holds"` // which personal data, in a few words
	// Why the default retention is what it is.
	Why         string        `json:"why"`
	Default     Policy        `json:"default"`
	MinDays     int           `json:"min_days"`
	MaxDays     int           `json:"max_days"`
	KeepForever bool          `json:"keep_forever_allowed"`
	Modes       []Mode        `json:"modes,omitempty"` // anonymisation modes offered; none: it holds no addresses
	Masking     bool          `json:"masking,omitempty"`
	Subjects    []SubjectKind `json:"subjects"`
	Forgettable bool          `json:"forgettable"` // false: kept under a legal obligation (exported, not deleted)
}

// Size is what a category holds now.
type Size struct {
	Items int   `json:"items"`
	Bytes int64 `json:"bytes"`
}

// Swept is what one sweep did.
type Swept struct {
	Deleted int `json:"deleted"`
	Masked  int `json:"masked,omitempty"`
}

// SubjectKind is what identifies a data subject.
type SubjectKind string

// Subject kinds.
const (
	Extension SubjectKind = "extension"
	User      SubjectKind = "user"   // an admin account
	Number    SubjectKind = "number" // an external phone number
)

// Subject is whom a request is about.
type Subject struct {
	Kind  SubjectKind `json:"kind"`
	Value string      `json:"value"`
}

var subjectRE = regexp.MustCompile(`^[A-Za-z0-9+*#._@-]{1,64}$`)

// ErrSubject is a refused subject; the message names the field.
var ErrSubject = errors.New("privacy: bad subject")

// Validate checks a subject that came from a request.
func (s Subject) Validate() error {
	switch s.Kind {
	case Extension, User, Number:
	default:
		return fmt.Errorf("%w: kind must be extension, user or number", ErrSubject)
	}
	if !subjectRE.MatchString(s.Value) {
		return fmt.Errorf("%w: value must be 1-64 characters of A-Z a-z 0-9 + * # . _ @ -", ErrSubject)
	}
	return nil
}

// Category is one kind of stored data.
type Category interface {
	Info() Info
	Size() (Size, error)
	// Sweep deletes what p no longer keeps at now (and masks what it says
	// to mask).
	Sweep(now time.Time, p Policy) (Swept, error)
	// Find counts what is held about s; Export returns it (JSON-encodable);
	// Forget deletes it and returns how many items went. A category whose
	// Info says it is not forgettable returns ErrKept from Forget.
	Find(s Subject) (int, error)
	Export(s Subject) (any, error)
	Forget(s Subject) (int, error)
}

// RetentionOwner is a category whose retention days are stored by its
// owner too (the login history's days are in the auth policy, which each
// login's own pruning reads).
type RetentionOwner interface {
	RetentionDays() (int, error)
	SetRetentionDays(days int) error
}

// ErrKept is Forget's answer for data kept under a legal obligation.
var ErrKept = errors.New("privacy: kept under a legal obligation, not deleted")

// ErrPolicy is a refused setting; the message names the field.
var ErrPolicy = errors.New("privacy: bad setting")

// ErrUnknown names no category.
var ErrUnknown = errors.New("privacy: unknown category")

// Clock gives the current time; tests inject a fake one.
type Clock interface{ Now() time.Time }

// Registry holds the categories and their settings.
type Registry struct {
	db    *store.DB
	audit *audit.Log
	clock Clock

	mu   sync.Mutex
	cats []Category
	// cache holds each category's setting for the write paths, which call
	// the anonymiser inside their own transactions and so must not read
	// the store.
	cache  map[string]Policy
	hashes map[string]*hasher
	last   map[string]SweepResult
	// Set by tests only: afterErase runs inside Forget's transaction after
	// each category's deletions (a crash or a failed write injected
	// there), afterCommit between the commit and the completion.
	afterErase  func(category string) error
	afterCommit func()
}

// New returns the registry; categories join with Register.
func New(db *store.DB, a *audit.Log, clock Clock) (*Registry, error) {
	r := &Registry{db: db, audit: a, clock: clock, cache: map[string]Policy{}, hashes: map[string]*hasher{}, last: map[string]SweepResult{}}
	for name, d := range Builtin {
		p, err := r.stored(name, d.Default)
		if err != nil {
			return nil, err
		}
		r.cache[name] = p
		r.hashes[name] = &hasher{}
		if err := r.hashes[name].prepare(db, name, clock.Now(), p.Days); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds c. Names are unique.
func (r *Registry) Register(c Category) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	name := c.Info().Name
	for _, o := range r.cats {
		if o.Info().Name == name {
			return fmt.Errorf("privacy: category %s registered twice", name)
		}
	}
	r.cats = append(r.cats, c)
	p, err := r.policy(c)
	if err != nil {
		return err
	}
	r.cache[name] = p
	if r.hashes[name] == nil {
		r.hashes[name] = &hasher{}
	}
	return r.hashes[name].prepare(r.db, name, r.clock.Now(), p.Days)
}

func (r *Registry) stored(name string, def Policy) (Policy, error) {
	p := def
	err := r.db.View(func(tx *store.Tx) error {
		_, err := tx.Get(settingsBucket, name, &p)
		return err
	})
	if err != nil {
		return Policy{}, fmt.Errorf("privacy: read setting %s: %w", name, err)
	}
	if p.Anonymise == "" {
		p.Anonymise = Full
	}
	return p, nil
}

func (r *Registry) category(name string) (Category, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.cats {
		if c.Info().Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknown, name)
}

func (r *Registry) categories() []Category {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Category(nil), r.cats...)
}

// Policy returns a category's setting.
func (r *Registry) Policy(name string) (Policy, error) {
	c, err := r.category(name)
	if err != nil {
		return Policy{}, err
	}
	return r.policy(c)
}

func (r *Registry) policy(c Category) (Policy, error) {
	p, err := r.stored(c.Info().Name, c.Info().Default)
	if err != nil {
		return p, err
	}
	if o, ok := c.(RetentionOwner); ok {
		if p.Days, err = o.RetentionDays(); err != nil {
			return p, fmt.Errorf("privacy: %s retention: %w", c.Info().Name, err)
		}
	}
	return p, nil
}

func (i Info) check(p Policy) error {
	switch {
	case !p.Anonymise.valid():
		return fmt.Errorf("%w: anonymise must be none, truncate or hash", ErrPolicy)
	case p.Days == 0 && !i.KeepForever:
		return fmt.Errorf("%w: days: %s cannot be kept forever (%d..%d)", ErrPolicy, i.Name, i.MinDays, i.MaxDays)
	case p.Days != 0 && (p.Days < i.MinDays || p.Days > i.MaxDays):
		return fmt.Errorf("%w: days: %s keeps %d..%d days", ErrPolicy, i.Name, i.MinDays, i.MaxDays)
	case p.Anonymise != Full && !contains(i.Modes, p.Anonymise):
		return fmt.Errorf("%w: anonymise: %s offers %v", ErrPolicy, i.Name, append([]Mode{Full}, i.Modes...))
	case p.MaskNumbersAfterDays != 0 && !i.Masking:
		return fmt.Errorf("%w: mask_numbers_after_days: %s holds no phone numbers to mask", ErrPolicy, i.Name)
	case p.MaskNumbersAfterDays < 0 || p.MaskNumbersAfterDays > i.MaxDays:
		return fmt.Errorf("%w: mask_numbers_after_days must be 0..%d", ErrPolicy, i.MaxDays)
	}
	return nil
}

func contains(ms []Mode, m Mode) bool {
	for _, x := range ms {
		if x == m {
			return true
		}
	}
	return false
}

// Deletes says whether changing from old to new deletes data now (a
// shorter or newly finite retention, earlier masking): such a change needs
// the caller to re-authenticate.
func Deletes(old, new Policy) bool {
	shorter := new.Days != 0 && (old.Days == 0 || new.Days < old.Days)
	earlierMask := new.MaskNumbersAfterDays != 0 && (old.MaskNumbersAfterDays == 0 || new.MaskNumbersAfterDays < old.MaskNumbersAfterDays)
	return shorter || earlierMask
}

// Set stores a category's setting, audited with the actor and source, in
// the same transaction. The caller checks permission and re-authentication.
func (r *Registry) Set(actor, source, name string, p Policy) error {
	c, err := r.category(name)
	if err != nil {
		return err
	}
	if p.Anonymise == "" {
		p.Anonymise = Full
	}
	info := c.Info()
	old, err := r.policy(c)
	if err != nil {
		return err
	}
	ev := audit.Event{Actor: actor, Source: source, Action: "privacy.settings", Target: name, Before: old, After: p}
	if err := info.check(p); err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = r.audit.Record(ev)
		return err
	}
	if o, ok := c.(RetentionOwner); ok {
		if err := o.SetRetentionDays(p.Days); err != nil {
			return fmt.Errorf("%w: days: %v", ErrPolicy, err)
		}
	}
	err = r.db.Update(func(tx *store.Tx) error {
		if err := tx.Put(settingsBucket, name, p); err != nil {
			return err
		}
		return r.audit.RecordTx(tx, ev)
	})
	if err != nil {
		return fmt.Errorf("privacy: store setting %s: %w", name, err)
	}
	r.mu.Lock()
	r.cache[name] = p
	h := r.hashes[name]
	r.mu.Unlock()
	return h.prepare(r.db, name, r.clock.Now(), p.Days)
}

// Status is one category as the page shows it.
type Status struct {
	Info
	Policy    Policy       `json:"policy"`
	Size      Size         `json:"size"`
	LastSweep *SweepResult `json:"last_sweep,omitempty"`
}

// Overview is the page's and the API's answer.
type Overview struct {
	Categories []Status    `json:"categories"`
	Planned    []Planned   `json:"planned"`
	Pages      store.Pages `json:"store_pages"`
}

// Overview lists every category with its setting and current size.
func (r *Registry) Overview() (Overview, error) {
	var o Overview
	for _, c := range r.categories() {
		p, err := r.policy(c)
		if err != nil {
			return o, err
		}
		sz, err := c.Size()
		if err != nil {
			return o, fmt.Errorf("privacy: size of %s: %w", c.Info().Name, err)
		}
		st := Status{Info: c.Info(), Policy: p, Size: sz}
		r.mu.Lock()
		if l, ok := r.last[st.Name]; ok {
			st.LastSweep = &l
		}
		r.mu.Unlock()
		o.Categories = append(o.Categories, st)
	}
	o.Planned = PlannedCategories
	var err error
	o.Pages, err = r.db.Pages()
	return o, err
}

// SweepResult is one category's last sweep.
type SweepResult struct {
	Category string    `json:"category"`
	Time     time.Time `json:"time"`
	Swept
	Error string `json:"error,omitempty"`
}

// Sweep applies every category's retention at now, deletes hash keys no
// entry can still need, and audits what went (counts only).
func (r *Registry) Sweep(now time.Time) []SweepResult {
	var out []SweepResult
	var parts []string
	for _, c := range r.categories() {
		name := c.Info().Name
		res := SweepResult{Category: name, Time: now.UTC()}
		p, err := r.policy(c)
		if err == nil {
			res.Swept, err = c.Sweep(now, p)
		}
		if err == nil {
			err = r.dropKeys(name, now, p.Days)
		}
		if err == nil {
			r.mu.Lock()
			r.cache[name] = p
			h := r.hashes[name]
			r.mu.Unlock()
			err = h.prepare(r.db, name, now, p.Days)
		}
		if err != nil {
			res.Error = err.Error()
		}
		if res.Deleted > 0 || res.Masked > 0 {
			parts = append(parts, fmt.Sprintf("%s: %d deleted, %d masked", name, res.Deleted, res.Masked))
		}
		r.mu.Lock()
		r.last[name] = res
		r.mu.Unlock()
		out = append(out, res)
	}
	if len(parts) > 0 {
		// Deleted records stay in freed pages until reused: zero them.
		if sc, err := r.db.Scrub(); err != nil {
			parts = append(parts, "freed pages not yet zeroed: "+err.Error())
		} else {
			parts = append(parts, fmt.Sprintf("%d freed pages zeroed", sc.Zeroed))
		}
		_ = r.audit.Record(audit.Event{Actor: "system", Action: "privacy.retention", Detail: strings.Join(parts, "; ")})
	}
	return out
}

// dropKeys deletes the category's hash keys older than the previous
// period: everything hashed with them is past the retention.
func (r *Registry) dropKeys(name string, now time.Time, days int) error {
	cur := periodOf(now, days)
	prefix := name + "/"
	return r.db.Update(func(tx *store.Tx) error {
		var old []string
		err := tx.ForEach(keysBucket, func(k string, _ []byte) error {
			if !strings.HasPrefix(k, prefix) {
				return nil
			}
			var p int64
			if _, err := fmt.Sscan(k[len(prefix):], &p); err != nil || p < cur-1 {
				old = append(old, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := tx.Delete(keysBucket, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Run sweeps at start and every interval until ctx ends.
func (r *Registry) Run(ctx context.Context, interval time.Duration, log *slog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := r.Resume(); err != nil {
			log.Error("privacy: pending forget", "err", err)
		}
		for _, res := range r.Sweep(r.clock.Now()) {
			switch {
			case res.Error != "":
				log.Error("privacy: retention sweep", "category", res.Category, "err", res.Error)
			case res.Deleted > 0 || res.Masked > 0:
				log.Info("privacy: retention sweep", "category", res.Category, "deleted", res.Deleted, "masked", res.Masked)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Anonymiser returns the function the category's writer calls on each
// address before storing it, following the current setting. It reads only
// memory (writers call it inside their transactions). Without a key for
// t's period (a clock far off the last sweep) it stores "unavailable",
// never the address.
func (r *Registry) Anonymiser(name string) func(a netip.Addr, t time.Time) string {
	return func(a netip.Addr, t time.Time) string {
		r.mu.Lock()
		p, h := r.cache[name], r.hashes[name]
		r.mu.Unlock()
		switch p.Anonymise {
		case Truncate:
			return TruncateAddr(a)
		case Hash:
			period := periodOf(t, p.Days)
			var key []byte
			if h != nil {
				key = h.key(period)
			}
			if key == nil {
				return "unavailable"
			}
			return hashAddr(key, period, a)
		}
		return a.Unmap().String()
	}
}

// SourceAnonymiser is Anonymiser for sources written as "ip:port", "ip"
// or a prefix (the security log's).
func (r *Registry) SourceAnonymiser(name string) func(source string, t time.Time) string {
	anon := r.Anonymiser(name)
	return func(source string, t time.Time) string {
		if ap, err := netip.ParseAddrPort(source); err == nil {
			out := anon(ap.Addr(), t)
			if ap.Port() == 0 {
				return out
			}
			return fmt.Sprintf("%s port %d", out, ap.Port())
		}
		if a, err := netip.ParseAddr(source); err == nil {
			return anon(a, t)
		}
		if p, err := netip.ParsePrefix(source); err == nil {
			return anon(p.Addr(), t)
		}
		return "invalid"
	}
}

// Found is what a subject search found in one category.
type Found struct {
	Category string `json:"category"`
	Items    int    `json:"items"`
	Kept     bool   `json:"kept,omitempty"` // not deleted by Forget (legal obligation)
	Error    string `json:"error,omitempty"`
}

// Find counts what every category holds about s.
func (r *Registry) Find(s Subject) ([]Found, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	var out []Found
	for _, c := range r.categories() {
		info := c.Info()
		if !contains2(info.Subjects, s.Kind) {
			continue
		}
		n, err := c.Find(s)
		f := Found{Category: info.Name, Items: n, Kept: !info.Forgettable}
		if err != nil {
			f.Error = err.Error()
		}
		out = append(out, f)
	}
	return out, nil
}

func contains2(ks []SubjectKind, k SubjectKind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

// Export is a subject-access export: everything held about a subject.
type Export struct {
	Subject    Subject        `json:"subject"`
	Generated  time.Time      `json:"generated"`
	Categories map[string]any `json:"categories"`
	// Kept lists the categories whose items a Forget keeps, and why.
	Kept map[string]string `json:"kept,omitempty"`
}

// Export gathers everything held about s and audits that it was exported
// (who, which categories, how many; not the data).
func (r *Registry) Export(actor, source string, s Subject) (Export, error) {
	if err := s.Validate(); err != nil {
		return Export{}, err
	}
	ex := Export{Subject: s, Generated: r.clock.Now().UTC(), Categories: map[string]any{}, Kept: map[string]string{}}
	var parts []string
	for _, c := range r.categories() {
		info := c.Info()
		if !contains2(info.Subjects, s.Kind) {
			continue
		}
		v, err := c.Export(s)
		if err != nil {
			return Export{}, fmt.Errorf("privacy: export %s: %w", info.Name, err)
		}
		ex.Categories[info.Name] = v
		if n, err := c.Find(s); err == nil {
			parts = append(parts, fmt.Sprintf("%s=%d", info.Name, n))
		}
		if !info.Forgettable {
			ex.Kept[info.Name] = ErrKept.Error()
		}
	}
	sort.Strings(parts)
	_ = r.audit.Record(audit.Event{Actor: actor, Source: source, Action: "privacy.export", Target: string(s.Kind),
		Detail: "subject access export: " + strings.Join(parts, ", ")})
	return ex, nil
}

// Forgotten is what a Forget deleted.
type Forgotten struct {
	Reference string  `json:"reference"` // also in the audit entry, for the request's paperwork
	Deleted   []Found `json:"deleted"`
}

// TxForgetter is a category whose Forget joins the one transaction of
// Registry.Forget: the deletions of every such category and the audit
// entry that reports them commit together or not at all, so a crash, a
// power cut or a failed write never leaves a subject half erased.
// Categories kept outside the store (files) implement only Forget; they
// are erased after the commit under a durable record that Resume finishes.
type TxForgetter interface {
	BeginForget(s Subject) (Erasure, error)
}

// Erasure is one category's part of a Forget.
type Erasure struct {
	// Tx deletes what the store holds about the subject inside the shared
	// transaction and returns how many items.
	Tx func(tx *store.Tx) (int, error)
	// End runs once after the transaction: it releases what BeginForget
	// held (writers of buffered entries) and, after a commit, drops the
	// subject's entries still queued in memory, returning how many. nil:
	// nothing held.
	End func(committed bool) int
}

// pendingBucket holds one record per Forget whose transaction committed
// and whose follow-up (categories outside the store, zeroing the freed
// pages) has not finished; Resume finishes it after a crash.
const pendingBucket = "privacy.forget_pending"

type pendingForget struct {
	Reference string    `json:"reference"`
	Subject   Subject   `json:"subject"`
	Actor     string    `json:"actor"`
	Source    string    `json:"source"`
	Started   time.Time `json:"started"`
	// Later are the categories outside the transaction still to erase.
	Later []string `json:"later,omitempty"`
}

// Forget deletes everything held about s in the categories that may
// delete it, in one store transaction together with an audit entry that
// says what went (categories and counts) and a reference, but not the
// subject's identifier nor the data. The freed pages are zeroed after the
// commit, recorded by a second entry (privacy.erased); a crash before
// that leaves a record Resume finishes at the next start.
func (r *Registry) Forget(actor, source string, s Subject) (Forgotten, error) {
	if err := s.Validate(); err != nil {
		return Forgotten{}, err
	}
	var ref [8]byte
	_, _ = rand.Read(ref[:])
	out := Forgotten{Reference: hex.EncodeToString(ref[:]), Deleted: []Found{}}
	ev := audit.Event{Actor: actor, Source: source, Action: "privacy.forget", Target: string(s.Kind)}

	type part struct {
		name string
		at   int // index in out.Deleted
		e    Erasure
	}
	var held []part
	var later []Category
	end := func(committed bool) {
		for _, p := range held {
			if p.e.End != nil {
				out.Deleted[p.at].Items += p.e.End(committed)
			}
		}
	}
	for _, c := range r.categories() {
		info := c.Info()
		if !contains2(info.Subjects, s.Kind) {
			continue
		}
		f := Found{Category: info.Name}
		switch tf, ok := c.(TxForgetter); {
		case !info.Forgettable:
			// Counted before any writer is held (a Find may flush).
			f.Kept = true
			n, err := c.Find(s)
			if err != nil {
				f.Error = err.Error()
			}
			f.Items = n
		case ok:
			e, err := tf.BeginForget(s)
			if err != nil {
				end(false)
				return r.forgetFailed(ev, out, fmt.Errorf("%s: %w", info.Name, err))
			}
			held = append(held, part{name: info.Name, at: len(out.Deleted), e: e})
		default:
			later = append(later, c)
		}
		out.Deleted = append(out.Deleted, f)
	}
	pend := pendingForget{Reference: out.Reference, Subject: s, Actor: actor, Source: source, Started: r.clock.Now().UTC()}
	for _, c := range later {
		pend.Later = append(pend.Later, c.Info().Name)
	}
	err := r.db.Update(func(tx *store.Tx) error {
		for _, p := range held {
			n, err := p.e.Tx(tx)
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			out.Deleted[p.at].Items = n
			if r.afterErase != nil {
				if err := r.afterErase(p.name); err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
			}
		}
		if err := tx.Put(pendingBucket, out.Reference, pend); err != nil {
			return err
		}
		ok := ev
		ok.Detail = "reference " + out.Reference + "; " + strings.Join(forgetParts(out.Deleted, pend.Later), "; ")
		return r.audit.RecordTx(tx, ok)
	})
	end(err == nil)
	if err != nil {
		for i := range out.Deleted {
			if !out.Deleted[i].Kept {
				out.Deleted[i].Items = 0
			}
		}
		return r.forgetFailed(ev, out, err)
	}
	if r.afterCommit != nil {
		r.afterCommit()
	}
	found, err := r.finish(pend, "")
	out.Deleted = append(out.Deleted, found...)
	return out, err
}

// forgetParts says per category what the transaction did.
func forgetParts(fs []Found, later []string) []string {
	var parts []string
	for _, f := range fs {
		if f.Kept {
			parts = append(parts, fmt.Sprintf("%s: %d kept (legal obligation)", f.Category, f.Items))
			continue
		}
		if !slices.Contains(later, f.Category) {
			parts = append(parts, fmt.Sprintf("%s: %d deleted", f.Category, f.Items))
		}
	}
	if len(later) > 0 {
		parts = append(parts, "then "+strings.Join(later, ", "))
	}
	return append(parts, "freed pages zeroed next")
}

// forgetFailed audits a Forget whose transaction did not commit: nothing
// was deleted.
func (r *Registry) forgetFailed(ev audit.Event, out Forgotten, err error) (Forgotten, error) {
	ev.Outcome = audit.Failed
	ev.Detail = "reference " + out.Reference + "; nothing deleted: " + err.Error()
	if aerr := r.audit.Record(ev); aerr != nil {
		err = errors.Join(err, aerr)
	}
	return out, fmt.Errorf("privacy: forget: %w", err)
}

// finish erases the subject from the categories outside the store, zeroes
// the freed pages and, in one transaction, drops the pending record and
// audits the completion (privacy.erased). On failure the record stays
// and the next Resume tries again.
func (r *Registry) finish(p pendingForget, note string) ([]Found, error) {
	var parts []string
	var found []Found
	var errs []error
	for _, name := range p.Later {
		c, err := r.category(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := c.Forget(p.Subject)
		f := Found{Category: name, Items: n}
		if err != nil {
			f.Error = err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		found = append(found, f)
		parts = append(parts, fmt.Sprintf("%s: %d deleted", name, n))
	}
	sc, err := r.db.Scrub()
	if err != nil {
		errs = append(errs, err)
	} else {
		parts = append(parts, fmt.Sprintf("%d freed pages zeroed", sc.Zeroed))
	}
	if len(errs) > 0 {
		return found, fmt.Errorf("privacy: forget %s committed, completion postponed: %w", p.Reference, errors.Join(errs...))
	}
	if note != "" {
		parts = append(parts, note)
	}
	err = r.db.Update(func(tx *store.Tx) error {
		if err := tx.Delete(pendingBucket, p.Reference); err != nil {
			return err
		}
		return r.audit.RecordTx(tx, audit.Event{Actor: p.Actor, Source: p.Source, Action: "privacy.erased", Target: string(p.Subject.Kind),
			Detail: "reference " + p.Reference + "; " + strings.Join(parts, "; ")})
	})
	if err != nil {
		return found, fmt.Errorf("privacy: forget %s: %w", p.Reference, err)
	}
	// The pending record named the subject: its page is zeroed too.
	if _, err := r.db.Scrub(); err != nil {
		return found, fmt.Errorf("privacy: forget %s: %w", p.Reference, err)
	}
	return found, nil
}

// Resume finishes the Forgets whose transaction committed before a crash
// or a failed completion (categories outside the store, zeroing freed
// pages). Run calls it at start and before every sweep.
func (r *Registry) Resume() error {
	var pend []pendingForget
	err := r.db.View(func(tx *store.Tx) error {
		return tx.ForEach(pendingBucket, func(k string, raw []byte) error {
			var p pendingForget
			if err := json.Unmarshal(raw, &p); err != nil || p.Reference != k || p.Subject.Validate() != nil {
				return fmt.Errorf("privacy: pending forget %q does not decode", k)
			}
			pend = append(pend, p)
			return nil
		})
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range pend {
		if _, err := r.finish(p, "completed after a restart or a failed attempt"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
