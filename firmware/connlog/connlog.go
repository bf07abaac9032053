// Package connlog keeps the connection log: every admin and API login,
// logout and failure and every SIP registration, unregistration and
// registration failure, with source, port, user, method and result, in one
// queryable bbolt bucket (connlog.entries) kept for the retention the
// privacy settings give it (firmware/privacy sweeps it).
//
// Record is on the SIP registrar's path: it only appends to a bounded
// in-memory batch; Flush (every second from Run) parses and, where the
// privacy mode says so, anonymises the source before anything is stored,
// so the file never holds an address the mode forbids.
package connlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Bucket holds entries keyed by time (fixed-width hex nanoseconds) and a
// per-process sequence number, so key order is time order.
const Bucket = "connlog.entries"

// maxField bounds the strings that come from the wire.
const maxField = 128

// MaxPending bounds the batch between two flushes; past it entries are
// counted as dropped rather than growing memory under a flood.
const MaxPending = 16384

// Kinds of entry; the values are stable (API filters, exports).
const (
	AdminLogin       = "admin.login"
	AdminLoginFailed = "admin.login_failed"
	AdminLogout      = "admin.logout"
	APITokenFailed   = "api.token_failed"
	SIPRegister      = "sip.register"
	SIPUnregister    = "sip.unregister"
	SIPRegisterFail  = "sip.register_failed"
)

// Results.
const (
	OK     = "ok"
	Failed = "failed"
)

// Entry is one connection event.
type Entry struct {
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Source    string    `json:"source,omitempty"` // address, or its anonymised form
	Port      uint16    `json:"port,omitempty"`
	User      string    `json:"user,omitempty"`
	Method    string    `json:"method,omitempty"` // password, totp, token, REGISTER
	Transport string    `json:"transport,omitempty"`
	Result    string    `json:"result"`
	Detail    string    `json:"detail,omitempty"`
	// Key is the entry's place in the log (a query cursor); not stored.
	Key string `json:"key,omitempty"`
}

// Anonymiser turns an address into what may be stored (truncated, a keyed
// hash, or itself), as the privacy settings say at time now.
type Anonymiser func(a netip.Addr, now time.Time) string

// Clock gives the current time; tests inject a fake one.
type Clock interface{ Now() time.Time }

// Log is the connection log.
type Log struct {
	db    *store.DB
	clock Clock
	anon  Anonymiser

	// flushMu makes Flush the one writer of queued entries at a time, and
	// lets a Forget hold flushes across its transaction (privacy.go).
	flushMu sync.Mutex
	mu      sync.Mutex
	pending []Entry
	seq     uint64
	dropped uint64
}

// New returns the log kept in db. anon nil stores addresses as they are.
func New(db *store.DB, clock Clock, anon Anonymiser) *Log {
	return &Log{db: db, clock: clock, anon: anon, pending: make([]Entry, 0, 256)}
}

// Record queues e; Source may be "ip:port", "[ip]:port" or "ip". It never
// blocks on disk. A zero Time is now.
func (l *Log) Record(e Entry) {
	if e.Time.IsZero() {
		e.Time = l.clock.Now()
	}
	l.mu.Lock()
	if len(l.pending) >= MaxPending {
		l.dropped++
	} else {
		l.pending = append(l.pending, e)
	}
	l.mu.Unlock()
}

// Dropped is how many entries a full batch refused.
func (l *Log) Dropped() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

func clip(s string) string {
	if len(s) > maxField {
		s = s[:maxField]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return strings.ToValidUTF8(s, "?")
}

// prepare bounds the strings, splits the port off and anonymises the
// address before the entry reaches the store.
func (l *Log) prepare(e Entry) Entry {
	e.Time = e.Time.UTC()
	e.Kind, e.User, e.Method, e.Transport, e.Result, e.Detail =
		clip(e.Kind), clip(e.User), clip(e.Method), clip(e.Transport), clip(e.Result), clip(e.Detail)
	e.Key = ""
	var addr netip.Addr
	if ap, err := netip.ParseAddrPort(e.Source); err == nil {
		addr, e.Port = ap.Addr(), ap.Port()
	} else if a, err := netip.ParseAddr(e.Source); err == nil {
		addr = a
	} else if e.Source != "" {
		// Not an address: keep nothing that could be one.
		e.Source = "invalid"
		return e
	}
	if !addr.IsValid() {
		return e
	}
	addr = addr.Unmap()
	if l.anon != nil {
		e.Source = l.anon(addr, e.Time)
	} else {
		e.Source = addr.String()
	}
	return e
}

func key(t time.Time, seq uint64) string {
	return fmt.Sprintf("%016x-%08x", uint64(max(t.UnixNano(), 0)), uint32(seq))
}

// Flush writes the queued entries in one transaction.
func (l *Log) Flush() error {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	return l.flush()
}

func (l *Log) flush() error {
	l.mu.Lock()
	batch := l.pending
	l.pending = make([]Entry, 0, max(256, len(batch)/2))
	seq := l.seq
	l.seq += uint64(len(batch))
	l.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := l.db.Update(func(tx *store.Tx) error {
		for i, e := range batch {
			e = l.prepare(e)
			if err := tx.Put(Bucket, key(e.Time, seq+uint64(i)+1), e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("connlog: flush %d entries: %w", len(batch), err)
	}
	return nil
}

// Run flushes every interval until ctx ends, then once more.
func (l *Log) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return l.Flush()
		case <-t.C:
			if err := l.Flush(); err != nil {
				return err
			}
		}
	}
}

// MaxLimit bounds one page of Query.
const MaxLimit = 500

// Filter selects entries; zero fields match everything.
type Filter struct {
	Kind   string    `json:"kind,omitempty"` // prefix: "sip." selects all SIP entries
	User   string    `json:"user,omitempty"`
	Source string    `json:"source,omitempty"` // as stored (anonymised form when the mode says so)
	Result string    `json:"result,omitempty"`
	Since  time.Time `json:"since,omitzero"`
	Until  time.Time `json:"until,omitzero"`
	Before string    `json:"before,omitempty"` // cursor: entries older than this key
	Limit  int       `json:"limit,omitempty"`  // 1..MaxLimit; 0: 100
}

// ErrFilter is a refused filter; the message names the field.
var ErrFilter = errors.New("connlog: bad filter")

// Validate bounds a filter that came from a request.
func (f Filter) Validate() error {
	for name, v := range map[string]string{"kind": f.Kind, "user": f.User, "source": f.Source, "result": f.Result, "before": f.Before} {
		if len(v) > maxField {
			return fmt.Errorf("%w: %s longer than %d bytes", ErrFilter, name, maxField)
		}
	}
	if f.Limit < 0 || f.Limit > MaxLimit {
		return fmt.Errorf("%w: limit must be 0..%d", ErrFilter, MaxLimit)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return fmt.Errorf("%w: until before since", ErrFilter)
	}
	return nil
}

func (f Filter) match(e Entry) bool {
	switch {
	case f.Kind != "" && !strings.HasPrefix(e.Kind, f.Kind),
		f.User != "" && e.User != f.User,
		f.Source != "" && e.Source != f.Source,
		f.Result != "" && e.Result != f.Result,
		!f.Since.IsZero() && e.Time.Before(f.Since),
		!f.Until.IsZero() && !e.Time.Before(f.Until):
		return false
	}
	return true
}

// Page is one query answer, newest first; Next is the cursor for the
// following (older) page, empty at the end.
type Page struct {
	Entries []Entry `json:"entries"`
	Next    string  `json:"next,omitempty"`
}

var errStop = errors.New("stop")

// Query returns matching entries newest first, at most Limit, after
// flushing what is queued so a reader sees its own login.
func (l *Log) Query(f Filter) (Page, error) {
	if err := f.Validate(); err != nil {
		return Page{}, err
	}
	if err := l.Flush(); err != nil {
		return Page{}, err
	}
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	// The store's cursor walks forward only: collect the matches in key
	// order and keep the newest limit+1 in a ring-like slice.
	var all []Entry
	err := l.db.View(func(tx *store.Tx) error {
		return tx.ForEach(Bucket, func(k string, raw []byte) error {
			if f.Before != "" && k >= f.Before {
				return errStop
			}
			var e Entry
			if err := json.Unmarshal(raw, &e); err != nil {
				return fmt.Errorf("connlog: decode %s: %w", k, err)
			}
			if !f.match(e) {
				return nil
			}
			e.Key = k
			all = append(all, e)
			if len(all) > 2*(limit+1) {
				all = append(all[:0], all[len(all)-(limit+1):]...)
			}
			return nil
		})
	})
	if err != nil && !errors.Is(err, errStop) {
		return Page{}, err
	}
	p := Page{Entries: []Entry{}}
	if len(all) > limit {
		all = all[len(all)-limit:]
		p.Next = all[0].Key
	}
	for i := len(all) - 1; i >= 0; i-- {
		p.Entries = append(p.Entries, all[i])
	}
	return p, nil
}

// Purge deletes the entries older than t and returns how many.
func (l *Log) Purge(t time.Time) (int, error) {
	if err := l.Flush(); err != nil {
		return 0, err
	}
	hi := fmt.Sprintf("%016x-", uint64(max(t.UnixNano(), 0)))
	return l.deleteWhere(func(k string, _ []byte) (bool, bool) { return k < hi, k >= hi })
}

// deleteWhere deletes, in batches, the keys pick selects; pick's second
// result ends the walk.
func (l *Log) deleteWhere(pick func(k string, raw []byte) (del, stop bool)) (int, error) {
	const batch = 5000
	total := 0
	after := ""
	for {
		var keys []string
		done := true
		err := l.db.Update(func(tx *store.Tx) error {
			err := tx.ForEach(Bucket, func(k string, raw []byte) error {
				if k <= after && after != "" {
					return nil
				}
				del, stop := pick(k, raw)
				if stop {
					return errStop
				}
				if del {
					keys = append(keys, k)
				}
				after = k
				if len(keys) >= batch {
					done = false
					return errStop
				}
				return nil
			})
			if err != nil && !errors.Is(err, errStop) {
				return err
			}
			for _, k := range keys {
				if err := tx.Delete(Bucket, k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("connlog: delete: %w", err)
		}
		total += len(keys)
		if done {
			return total, nil
		}
	}
}

// Subject returns every entry about user (an admin account or a SIP
// extension), oldest first.
func (l *Log) Subject(user string) ([]Entry, error) {
	if err := l.Flush(); err != nil {
		return nil, err
	}
	var out []Entry
	err := l.db.View(func(tx *store.Tx) error {
		return tx.ForEach(Bucket, func(k string, raw []byte) error {
			var e Entry
			if err := json.Unmarshal(raw, &e); err != nil {
				return fmt.Errorf("connlog: decode %s: %w", k, err)
			}
			if e.User == user {
				e.Key = k
				out = append(out, e)
			}
			return nil
		})
	})
	return out, err
}

// Forget deletes every entry about user and returns how many.
func (l *Log) Forget(user string) (int, error) {
	f, err := l.BeginForget(user)
	if err != nil {
		return 0, err
	}
	n := 0
	err = l.db.Update(func(tx *store.Tx) error {
		n, err = f.Tx(tx)
		return err
	})
	return n + f.End(err == nil), err
}

// Forgetting is a Forget of one user's entries that joins the caller's
// transaction (a privacy Forget across every store): BeginForget writes
// the queue out and holds flushes until End, so no entry queued before
// the transaction is written back behind it.
type Forgetting struct {
	l    *Log
	user string
}

// BeginForget flushes the queue and holds flushes until End.
func (l *Log) BeginForget(user string) (*Forgetting, error) {
	l.flushMu.Lock()
	if err := l.flush(); err != nil {
		l.flushMu.Unlock()
		return nil, err
	}
	return &Forgetting{l: l, user: user}, nil
}

// Tx deletes the stored entries about the user inside tx.
func (f *Forgetting) Tx(tx *store.Tx) (int, error) {
	var keys []string
	err := tx.ForEach(Bucket, func(k string, raw []byte) error {
		var e struct {
			User string `json:"user"`
		}
		if json.Unmarshal(raw, &e) == nil && e.User == f.user {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("connlog: forget: %w", err)
	}
	for _, k := range keys {
		if err := tx.Delete(Bucket, k); err != nil {
			return 0, fmt.Errorf("connlog: forget: %w", err)
		}
	}
	return len(keys), nil
}

// End releases the flushes, once. After a commit it also drops the
// user's entries queued during the transaction and returns how many.
func (f *Forgetting) End(committed bool) int {
	defer f.l.flushMu.Unlock()
	if !committed {
		return 0
	}
	f.l.mu.Lock()
	defer f.l.mu.Unlock()
	kept := f.l.pending[:0]
	for _, e := range f.l.pending {
		if e.User != f.user {
			kept = append(kept, e)
		}
	}
	n := len(f.l.pending) - len(kept)
	clear(f.l.pending[len(kept):])
	f.l.pending = kept
	return n
}

// ParseFilter reads a filter from a query string (the API's): kind, user,
// source, result, since and until (RFC 3339), before (a cursor) and limit.
// Unknown parameters are refused so a typo does not silently widen a query.
func ParseFilter(v url.Values) (Filter, error) {
	var f Filter
	for k, vals := range v {
		if len(vals) != 1 {
			return Filter{}, fmt.Errorf("%w: %s given %d times", ErrFilter, k, len(vals))
		}
		val := vals[0]
		var err error
		switch k {
		case "kind":
			f.Kind = val
		case "user":
			f.User = val
		case "source":
			f.Source = val
		case "result":
			f.Result = val
		case "before":
			f.Before = val
		case "since":
			f.Since, err = time.Parse(time.RFC3339, val)
		case "until":
			f.Until, err = time.Parse(time.RFC3339, val)
		case "limit":
			f.Limit, err = strconv.Atoi(val)
		default:
			return Filter{}, fmt.Errorf("%w: unknown parameter %q", ErrFilter, clip(k))
		}
		if err != nil {
			return Filter{}, fmt.Errorf("%w: %s: not valid", ErrFilter, k)
		}
	}
	return f, f.Validate()
}
