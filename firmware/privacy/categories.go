package privacy

import (
	"net/netip"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/connlog"
	"github.com/edgepbx/edgepbx/firmware/intrusion"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

const day = 24 * time.Hour

var allModes = []Mode{Truncate, Hash}

// Builtin describes the categories this firmware has. The defaults and
// their reasons are the product's promises (login history 14 days,
// recordings and files 6 months) and what the data is for.
var Builtin = map[string]Info{
	"cdrs": {Name: "cdrs", Title: "Call records", PersonalData: true,
		Holds:   "calling and called numbers and extensions, call times and durations",
		Why:     "6 months: long enough to settle billing disputes and match carrier invoices, the usual ceiling for keeping traffic data after billing",
		Default: Policy{Days: cdr.DefaultRetentionDays, Anonymise: Full}, MinDays: 1, MaxDays: cdr.MaxRetentionDays, KeepForever: true,
		Masking: true, Subjects: []SubjectKind{Extension, Number}, Forgettable: true},
	"security_log": {Name: "security_log", Title: "Security log", PersonalData: true,
		Holds:   "source addresses, SIP user names and user agents of registrations, failures and attacks",
		Why:     "90 days: incidents are often found weeks late; the full source address is the evidence (legitimate interest), so it is not anonymised by default",
		Default: Policy{Days: 90, Anonymise: Full}, MinDays: 1, MaxDays: 365, Modes: allModes,
		Subjects: []SubjectKind{Extension, Number, User}, Forgettable: true},
	"audit": {Name: "audit", Title: "Audit log", PersonalData: true,
		Holds:   "account names and client addresses of every change",
		Why:     "1 year, at least 90 days: it proves who changed what; the chain's sealed anchor keeps verification working after old entries go, and entries are kept, not forgotten, on request (legal obligation)",
		Default: Policy{Days: 365, Anonymise: Full}, MinDays: 90, MaxDays: 3650, KeepForever: true,
		Subjects: []SubjectKind{Extension, User, Number}},
	"login_history": {Name: "login_history", Title: "Login history", PersonalData: true,
		Holds:   "admin account names, client addresses and countries of login attempts",
		Why:     "14 days, the product's promise: enough to spot a takeover, short enough not to profile admins",
		Default: Policy{Days: 14, Anonymise: Full}, MinDays: 1, MaxDays: 365, Modes: allModes,
		Subjects: []SubjectKind{User}, Forgettable: true},
	"connections": {Name: "connections", Title: "Connection log", PersonalData: true,
		Holds:   "source addresses and ports, users and results of admin logins and SIP registrations",
		Why:     "30 days: troubleshooting registrations and logins needs the last weeks, not more",
		Default: Policy{Days: 30, Anonymise: Full}, MinDays: 1, MaxDays: 365, Modes: allModes,
		Subjects: []SubjectKind{Extension, User}, Forgettable: true},
	"intrusion": {Name: "intrusion", Title: "Intrusion report", PersonalData: true,
		Holds: "per day, the top offending source addresses, admin-port attackers and attacked or fraud-stopped extensions",
		Why: "180 days: twice the longest report range (92 days), so a quarter compares with the one before; " +
			"older attacker addresses no longer help blocking, and the evidence itself is the security log",
		Default: Policy{Days: 180, Anonymise: Full}, MinDays: 1, MaxDays: intrusion.DefaultKeepDays,
		// Truncation keeps the lists addresses (a network's first one);
		// a keyed hash would not: the lists are keyed and shown by address.
		Modes:    []Mode{Truncate},
		Subjects: []SubjectKind{Extension, User}, Forgettable: true},
}

// Planned are categories whose data arrive with later features; they join
// by implementing Category (see the package comment).
type Planned struct {
	Name   string `json:"name"`
	Title  string `json:"title"`
	Days   int    `json:"default_days"`
	Status string `json:"status"`
}

// PlannedCategories is shown on the page so the admin sees the whole model.
var PlannedCategories = []Planned{
	{Name: "voicemail", Title: "Voicemail", Days: 180, Status: "arrives with the media applications"},
	{Name: "recordings", Title: "Call recordings", Days: 180, Status: "arrives with the media applications"},
	{Name: "provisioning_log", Title: "Provisioning fetch log", Days: 30, Status: "arrives with phone provisioning"},
	{Name: "backups", Title: "Backups", Days: 180, Status: "arrives with scheduled backups"},
}

func bucketSize(db *store.DB, bucket string) (Size, error) {
	s, err := db.BucketSize(bucket)
	return Size{Items: s.Keys, Bytes: s.Bytes}, err
}

func cutoff(now time.Time, days int) time.Time { return now.Add(-time.Duration(days) * day) }

// CDRs is the call records category.
type CDRs struct {
	DB    *store.DB
	Store *cdr.Store
}

func (CDRs) Info() Info            { return Builtin["cdrs"] }
func (c CDRs) Size() (Size, error) { return bucketSize(c.DB, cdr.Bucket) }

func (c CDRs) Sweep(now time.Time, p Policy) (Swept, error) {
	var s Swept
	var err error
	if p.Days > 0 {
		if s.Deleted, err = c.Store.Purge(cutoff(now, p.Days)); err != nil {
			return s, err
		}
	}
	if p.MaskNumbersAfterDays > 0 {
		s.Masked, err = c.Store.MaskNumbers(cutoff(now, p.MaskNumbersAfterDays))
	}
	return s, err
}

func (c CDRs) Find(s Subject) (int, error) {
	l, err := c.Store.Subject(s.Value)
	return len(l), err
}

// RetentionDays is the call records' own setting (cdr.settings), which
// the older /api/v1/cdr/retention also sets: one value, two ways in.
func (c CDRs) RetentionDays() (int, error) {
	r, err := c.Store.Retention()
	return r.Days, err
}
func (c CDRs) SetRetentionDays(days int) error {
	return c.Store.SetRetention(cdr.Retention{Days: days})
}

func (c CDRs) Export(s Subject) (any, error) { return nonNil(c.Store.Subject(s.Value)) }
func (c CDRs) Forget(s Subject) (int, error) { return c.Store.Forget(s.Value) }
func (c CDRs) BeginForget(s Subject) (Erasure, error) {
	return Erasure{Tx: func(tx *store.Tx) (int, error) { return cdr.ForgetTx(tx, s.Value) }}, nil
}

// SecurityLog is the security log category.
type SecurityLog struct {
	DB  *store.DB
	Log *logs.Log
}

func (SecurityLog) Info() Info            { return Builtin["security_log"] }
func (c SecurityLog) Size() (Size, error) { return bucketSize(c.DB, logs.Bucket) }
func (c SecurityLog) Sweep(now time.Time, p Policy) (Swept, error) {
	if p.Days == 0 {
		return Swept{}, nil
	}
	n, err := c.Log.Purge(cutoff(now, p.Days))
	return Swept{Deleted: n}, err
}
func (c SecurityLog) Find(s Subject) (int, error) {
	l, err := c.Log.Subject(s.Value)
	return len(l), err
}
func (c SecurityLog) Export(s Subject) (any, error) { return nonNil(c.Log.Subject(s.Value)) }
func (c SecurityLog) Forget(s Subject) (int, error) { return c.Log.Forget(s.Value) }
func (c SecurityLog) BeginForget(s Subject) (Erasure, error) {
	f, err := c.Log.BeginForget(s.Value)
	if err != nil {
		return Erasure{}, err
	}
	return Erasure{Tx: f.Tx, End: f.End}, nil
}

// Audit is the audit log category. Floor, when set, returns the entry the
// licence check-in last anchored with the vendor: retention never removes
// it or anything after it (the next check-in re-sends it).
type Audit struct {
	DB    *store.DB
	Log   *audit.Log
	Floor func() uint64
}

func (Audit) Info() Info            { return Builtin["audit"] }
func (c Audit) Size() (Size, error) { return bucketSize(c.DB, "audit.log") }
func (c Audit) Sweep(now time.Time, p Policy) (Swept, error) {
	if p.Days == 0 {
		return Swept{}, nil
	}
	var floor uint64
	if c.Floor != nil {
		floor = c.Floor()
	}
	n, err := c.Log.Prune(cutoff(now, p.Days), floor)
	return Swept{Deleted: n}, err
}

func (c Audit) entries(s Subject) ([]audit.Entry, error) {
	all, err := c.Log.Query(audit.Filter{})
	if err != nil {
		return nil, err
	}
	out := []audit.Entry{}
	for _, e := range all {
		if e.Actor == s.Value || e.Target == s.Value {
			out = append(out, e)
		}
	}
	return out, nil
}
func (c Audit) Find(s Subject) (int, error) {
	l, err := c.entries(s)
	return len(l), err
}
func (c Audit) Export(s Subject) (any, error) { return c.entries(s) }

// Forget keeps the entries: the audit log is the box's integrity record
// (GDPR art. 17(3)(b) and (e)); deleting one would also break the chain.
func (Audit) Forget(Subject) (int, error) { return 0, ErrKept }

// LoginHistory is the admin login history (firmware/auth). Its retention
// days live in the auth policy too, which each login's pruning reads.
type LoginHistory struct {
	DB   *store.DB
	Auth *auth.Service
}

func (LoginHistory) Info() Info            { return Builtin["login_history"] }
func (c LoginHistory) Size() (Size, error) { return bucketSize(c.DB, auth.HistoryBucket) }
func (c LoginHistory) Sweep(now time.Time, p Policy) (Swept, error) {
	n, err := c.Auth.PurgeHistory(cutoff(now, p.Days))
	return Swept{Deleted: n}, err
}
func (c LoginHistory) Find(s Subject) (int, error) {
	l, err := c.Auth.History(s.Value, 0)
	return len(l), err
}
func (c LoginHistory) Export(s Subject) (any, error) { return nonNil(c.Auth.History(s.Value, 0)) }
func (c LoginHistory) Forget(s Subject) (int, error) { return c.Auth.ForgetHistory(s.Value) }
func (c LoginHistory) BeginForget(s Subject) (Erasure, error) {
	return Erasure{Tx: func(tx *store.Tx) (int, error) { return auth.ForgetHistoryTx(tx, s.Value) }}, nil
}
func (c LoginHistory) RetentionDays() (int, error) {
	p, err := c.Auth.Policy()
	return p.HistoryDays, err
}
func (c LoginHistory) SetRetentionDays(days int) error { return c.Auth.SetHistoryDays(days) }

// Connections is the connection log category.
type Connections struct {
	DB  *store.DB
	Log *connlog.Log
}

func (Connections) Info() Info            { return Builtin["connections"] }
func (c Connections) Size() (Size, error) { return bucketSize(c.DB, connlog.Bucket) }
func (c Connections) Sweep(now time.Time, p Policy) (Swept, error) {
	if p.Days == 0 {
		return Swept{}, nil
	}
	n, err := c.Log.Purge(cutoff(now, p.Days))
	return Swept{Deleted: n}, err
}
func (c Connections) Find(s Subject) (int, error) {
	l, err := c.Log.Subject(s.Value)
	return len(l), err
}
func (c Connections) Export(s Subject) (any, error) { return nonNil(c.Log.Subject(s.Value)) }
func (c Connections) Forget(s Subject) (int, error) { return c.Log.Forget(s.Value) }
func (c Connections) BeginForget(s Subject) (Erasure, error) {
	f, err := c.Log.BeginForget(s.Value)
	if err != nil {
		return Erasure{}, err
	}
	return Erasure{Tx: f.Tx, End: f.End}, nil
}

// Intrusion is the intrusion report's per-day aggregates. Its personal
// data are the top lists' keys; Forget removes a subject's entries and
// leaves the day's totals (numbers, no one's data).
type Intrusion struct {
	DB  *store.DB
	Agg *intrusion.Aggregator
}

func (Intrusion) Info() Info            { return Builtin["intrusion"] }
func (c Intrusion) Size() (Size, error) { return bucketSize(c.DB, intrusion.DaysBucket) }

// Sweep deletes the days past the retention and, in truncate mode,
// truncates the sources already stored (new ones are by IntrusionMask);
// Masked counts the days rewritten.
func (c Intrusion) Sweep(now time.Time, p Policy) (Swept, error) {
	var s Swept
	var err error
	if p.Days > 0 {
		if s.Deleted, err = c.Agg.Purge(cutoff(now, p.Days)); err != nil {
			return s, err
		}
	}
	if p.Anonymise == Truncate {
		s.Masked, err = c.Agg.TruncateSources()
	}
	return s, err
}

// The subject kinds name extensions and users; the lists' addresses are
// forgotten through intrusion.Subject.Addr once a subject kind for
// addresses exists.
func intrusionSubject(s Subject) intrusion.Subject { return intrusion.Subject{Name: s.Value} }

func (c Intrusion) Find(s Subject) (int, error) {
	l, err := c.Agg.Find(intrusionSubject(s))
	return len(l), err
}
func (c Intrusion) Export(s Subject) (any, error) { return nonNil(c.Agg.Find(intrusionSubject(s))) }
func (c Intrusion) Forget(s Subject) (int, error) { return c.Agg.Forget(intrusionSubject(s)) }
func (c Intrusion) BeginForget(s Subject) (Erasure, error) {
	f := c.Agg.BeginForget(intrusionSubject(s))
	return Erasure{Tx: f.Tx, End: func(committed bool) int { f.End(committed); return 0 }}, nil
}

// IntrusionMask is the intrusion report's Config.Mask: new sources are
// truncated while the category's mode says so. It reads only memory
// (Observe is on the security log's hot path).
func (r *Registry) IntrusionMask() func(netip.Addr) netip.Addr {
	return func(a netip.Addr) netip.Addr {
		r.mu.Lock()
		p := r.cache["intrusion"]
		r.mu.Unlock()
		if p.Anonymise == Truncate {
			return intrusion.TruncateAddr(a)
		}
		return a
	}
}

// nonNil makes an empty result an empty JSON list, not null.
func nonNil[T any](l []T, err error) (any, error) {
	if l == nil {
		l = []T{}
	}
	return l, err
}
