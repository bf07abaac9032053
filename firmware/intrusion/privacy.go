package intrusion

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// The report's personal data are the keys of its top lists: offending and
// admin-port sources (addresses) and attacked extensions (SIP user
// names). These methods serve the privacy category (firmware/privacy):
// retention, subject search, export and deletion, and truncation of the
// stored sources. Totals are not personal: a forgotten subject's entries
// leave the lists, the day's counters keep their numbers.

// Subject is whom a privacy request is about: Name matches the extension
// lists (attacked and fraud-stopped extensions), Addr (when valid) the
// source lists.
type Subject struct {
	Name string
	Addr netip.Addr
}

// Held is one list entry about a subject.
type Held struct {
	Date  string `json:"date"`
	List  string `json:"list"` // extensions, fraud_extensions, sources, admin_sources
	Count uint64 `json:"count"`
}

// subjectLists returns the entries of r about s, dropping them when drop.
func (r *record) subject(s Subject, drop bool, date string, out *[]Held) int {
	n := 0
	strs := func(list string, c *[]Counter[string]) {
		if s.Name == "" {
			return
		}
		*c = slices.DeleteFunc(*c, func(x Counter[string]) bool {
			if x.Key != s.Name {
				return false
			}
			n++
			if out != nil {
				*out = append(*out, Held{Date: date, List: list, Count: x.Count})
			}
			return drop
		})
	}
	addrs := func(list string, c *[]Counter[netip.Addr]) {
		if !s.Addr.IsValid() {
			return
		}
		*c = slices.DeleteFunc(*c, func(x Counter[netip.Addr]) bool {
			if x.Key != s.Addr {
				return false
			}
			n++
			if out != nil {
				*out = append(*out, Held{Date: date, List: list, Count: x.Count})
			}
			return drop
		})
	}
	strs("extensions", &r.Extensions)
	strs("fraud_extensions", &r.FraudExt)
	addrs("sources", &r.Sources)
	addrs("admin_sources", &r.Admin)
	return n
}

// TruncateAddr is an address's network as the report keeps it when
// sources are truncated: IPv4 /24, IPv6 /48 (firmware/privacy's widths),
// as the network's first address, so the lists stay addresses and a
// network's attacks add up in one entry.
func TruncateAddr(a netip.Addr) netip.Addr {
	a = a.Unmap()
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return a
	}
	return p.Addr()
}

// truncate rewrites r's source lists to networks, merging entries of one
// network; it says whether anything changed.
func (r *record) truncate() bool {
	changed := false
	one := func(c []Counter[netip.Addr]) []Counter[netip.Addr] {
		var out []Counter[netip.Addr]
		at := map[netip.Addr]int{}
		for _, x := range c {
			k := TruncateAddr(x.Key)
			if k != x.Key {
				changed = true
			}
			if i, ok := at[k]; ok {
				out[i].Count += x.Count
				out[i].Err += x.Err
				continue
			}
			at[k] = len(out)
			out = append(out, Counter[netip.Addr]{Key: k, Count: x.Count, Err: x.Err})
		}
		sortCounters(out, netip.Addr.Compare)
		return out
	}
	r.Sources, r.Admin = one(r.Sources), one(r.Admin)
	return changed
}

// Find lists the entries held about s, day by day (memory and store).
func (a *Aggregator) Find(s Subject) ([]Held, error) {
	out := []Held{}
	err := a.rewrite(func(date string, r *record) bool {
		r.subject(s, false, date, &out)
		return false
	})
	slices.SortStableFunc(out, func(x, y Held) int {
		if x.Date < y.Date {
			return -1
		}
		if x.Date > y.Date {
			return 1
		}
		return 0
	})
	return out, err
}

// Forget removes s's entries from every day's lists and returns how many
// went.
func (a *Aggregator) Forget(s Subject) (int, error) {
	f := a.BeginForget(s)
	n := 0
	err := a.cfg.DB.Update(func(tx *store.Tx) error {
		var err error
		n, err = f.Tx(tx)
		return err
	})
	f.End(err == nil)
	return n, err
}

// Forgetting is a Forget that joins the caller's transaction (a privacy
// Forget across every store). BeginForget holds the flush lock until End,
// so no day is written back as it was before; the aggregator's mutex is
// held only inside Tx, and End removes the subject from the days in
// memory once more (Observe may have loaded or counted one meanwhile).
type Forgetting struct {
	a *Aggregator
	s Subject
}

// BeginForget holds every writer of the stored days until End.
func (a *Aggregator) BeginForget(s Subject) *Forgetting {
	a.flushMu.Lock()
	return &Forgetting{a: a, s: s}
}

// Tx removes the subject from every stored day inside tx; the days in
// memory (the newest figures) are written without it in the same
// transaction. Memory itself changes only in End, after the commit.
func (f *Forgetting) Tx(tx *store.Tx) (int, error) {
	a := f.a
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	mem := map[string]bool{}
	for _, d := range a.days {
		mem[d.date] = true
		r := d.record()
		if k := r.subject(f.s, true, d.date, nil); k > 0 {
			n += k
			if err := tx.Put(DaysBucket, d.date, r); err != nil {
				return 0, fmt.Errorf("intrusion: forget %s: %w", d.date, err)
			}
		}
	}
	var dates []string
	if err := tx.ForEach(DaysBucket, func(k string, _ []byte) error {
		if !mem[k] {
			dates = append(dates, k)
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("intrusion: forget: %w", err)
	}
	for _, date := range dates {
		var r record
		if _, err := tx.Get(DaysBucket, date, &r); err != nil {
			return 0, fmt.Errorf("intrusion: forget %s: %w", date, err)
		}
		if k := r.subject(f.s, true, date, nil); k > 0 {
			n += k
			if err := tx.Put(DaysBucket, date, r); err != nil {
				return 0, fmt.Errorf("intrusion: forget %s: %w", date, err)
			}
		}
	}
	return n, nil
}

// End releases the writers, once; after a commit it first removes the
// subject from the days in memory (marked to be written again).
func (f *Forgetting) End(committed bool) {
	a := f.a
	defer a.flushMu.Unlock()
	if !committed {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for n, d := range a.days {
		r := d.record()
		if r.subject(f.s, true, d.date, nil) > 0 {
			a.days[n] = r.day(d.date)
			a.dirty[n] = true
		}
	}
}

// TruncateSources rewrites every day's stored sources to their networks
// (after the admin chose truncation; new events are truncated by
// Config.Mask) and returns how many days changed.
func (a *Aggregator) TruncateSources() (int, error) {
	n := 0
	err := a.rewrite(func(_ string, r *record) bool {
		if r.truncate() {
			n++
			return true
		}
		return false
	})
	return n, err
}

// rewrite applies fn to every day, in memory and stored, and writes the
// days it changed. It holds the flush lock (a Flush in flight must not
// write back a day as it was before) and the aggregator's mutex
// throughout, so no day is loaded from the store half way: Observe waits
// for the one transaction.
func (a *Aggregator) rewrite(fn func(date string, r *record) bool) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	mem := map[string]int64{}
	for n, d := range a.days {
		mem[d.date] = n
		r := d.record()
		if fn(d.date, &r) {
			a.days[n] = r.day(d.date)
			a.dirty[n] = true
		}
	}
	err := a.cfg.DB.Update(func(tx *store.Tx) error {
		var dates []string
		if err := tx.ForEach(DaysBucket, func(k string, _ []byte) error {
			dates = append(dates, k)
			return nil
		}); err != nil {
			return err
		}
		for _, date := range dates {
			if _, ok := mem[date]; ok {
				continue
			}
			var r record
			if _, err := tx.Get(DaysBucket, date, &r); err != nil {
				return fmt.Errorf("%s: %w", date, err)
			}
			if fn(date, &r) {
				if err := tx.Put(DaysBucket, date, r); err != nil {
					return err
				}
			}
		}
		// The days in memory are the newest figures: written now, so
		// the stored bytes lose the subject in this transaction too.
		for date, n := range mem {
			if a.dirty[n] {
				if err := tx.Put(DaysBucket, date, a.days[n].record()); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("intrusion: rewrite %s: %w", DaysBucket, err)
	}
	for _, n := range mem {
		delete(a.dirty, n)
	}
	return nil
}

// Purge deletes the days that ended before before (memory and store) and
// returns how many stored days went. The privacy sweep calls it with the
// admin's retention; Flush's own trim at Config.KeepDays stays as the
// upper bound.
func (a *Aggregator) Purge(before time.Time) (int, error) {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	first := dayNumber(before) // days before this one ended before before
	oldest := dayDate(first)
	for n := range a.days {
		if n < first {
			delete(a.days, n)
			delete(a.dirty, n)
		}
	}
	var old []string
	err := a.cfg.DB.Update(func(tx *store.Tx) error {
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
	if err != nil {
		return 0, fmt.Errorf("intrusion: purge %s: %w", DaysBucket, err)
	}
	return len(old), nil
}
