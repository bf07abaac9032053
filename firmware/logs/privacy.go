package logs

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Bucket is where stored events live (the privacy settings report its size).
const Bucket = bucket

// Anonymise makes Flush store f(Source, event time) instead of the source
// (nil: as it is). The in-memory ring and the syslog forward keep the full
// address: they are not the store, and bans need it.
func (l *Log) Anonymise(f func(source string, t time.Time) string) {
	if f == nil {
		l.anon.Store(nil)
		return
	}
	l.anon.Store(&f)
}

// drop removes the events for which gone is true from the disk and from
// the ring, and returns how many were removed from the disk (the ring's
// are also counted when they were not flushed yet).
func (l *Log) drop(gone func(Event) bool) (int, error) {
	f, err := l.beginDrop(gone)
	if err != nil {
		return 0, err
	}
	n := 0
	if l.db != nil {
		err = l.db.Update(func(tx *store.Tx) error {
			n, err = f.Tx(tx)
			return err
		})
	}
	if err != nil {
		f.End(false)
		return 0, fmt.Errorf("logs: delete: %w", err)
	}
	return n + f.End(true), nil
}

// Forgetting is a deletion of one user's events that joins the caller's
// transaction (a privacy Forget across every store): BeginForget writes
// the ring's pending events out and holds flushes until End, so none is
// written back behind the transaction.
type Forgetting struct {
	l    *Log
	gone func(Event) bool
}

// BeginForget flushes and holds flushes until End.
func (l *Log) BeginForget(user string) (*Forgetting, error) {
	return l.beginDrop(func(e Event) bool { return e.User == user })
}

func (l *Log) beginDrop(gone func(Event) bool) (*Forgetting, error) {
	if l.db != nil {
		l.flushMu.Lock()
		if err := l.flush(); err != nil {
			l.flushMu.Unlock()
			return nil, err
		}
	}
	return &Forgetting{l: l, gone: gone}, nil
}

// Tx deletes the stored events inside tx (none for a memory-only log).
func (f *Forgetting) Tx(tx *store.Tx) (int, error) {
	if f.l.db == nil {
		return 0, nil
	}
	var keys []string
	err := tx.ForEach(bucket, func(k string, raw []byte) error {
		var e Event
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("logs: decode %s: %w", k, err)
		}
		if f.gone(e) {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range keys {
		if err := tx.Delete(bucket, k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

// End releases the flushes, once. After a commit it drops the events
// from the ring too and returns how many of those were not on disk yet.
func (f *Forgetting) End(committed bool) int {
	l := f.l
	if l.db != nil {
		defer l.flushMu.Unlock()
	}
	if !committed {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var all []Event
	if l.full {
		all = append(append(all, l.ring[l.next:]...), l.ring[:l.next]...)
	} else {
		all = append(all, l.ring[:l.next]...)
	}
	firstUnflushed := len(all) - l.unflushed
	kept, keptUnflushed, droppedPending := all[:0], 0, 0
	for i, e := range all {
		if f.gone(e) {
			if i >= firstUnflushed {
				droppedPending++
			}
			continue
		}
		if i >= firstUnflushed {
			keptUnflushed++
		}
		kept = append(kept, e)
	}
	clear(l.ring)
	n := copy(l.ring, kept)
	l.next, l.full, l.unflushed = n%l.max, n == l.max, keptUnflushed
	return droppedPending
}

var errStop = errors.New("stop")

// Purge deletes the events older than t, stored and in memory.
func (l *Log) Purge(t time.Time) (int, error) {
	return l.drop(func(e Event) bool { return e.Time.Before(t) })
}

// Subject returns the stored and not yet stored events whose user is
// user (an extension, a number or an account name), oldest first.
func (l *Log) Subject(user string) ([]Event, error) {
	if err := l.Flush(); err != nil {
		return nil, err
	}
	all, err := l.Stored()
	if err != nil {
		return nil, err
	}
	if l.db == nil {
		all = l.Recent(l.max)
	}
	out := []Event{}
	for _, e := range all {
		if e.User == user {
			out = append(out, e)
		}
	}
	return out, nil
}

// Forget deletes every event whose user is user.
func (l *Log) Forget(user string) (int, error) {
	return l.drop(func(e Event) bool { return e.User == user })
}
