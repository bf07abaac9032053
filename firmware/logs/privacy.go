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
	if err := l.Flush(); err != nil {
		return 0, err
	}
	l.mu.Lock()
	var all []Event
	if l.full {
		all = append(append(all, l.ring[l.next:]...), l.ring[:l.next]...)
	} else {
		all = append(all, l.ring[:l.next]...)
	}
	firstUnflushed := len(all) - l.unflushed
	kept, keptUnflushed, droppedPending := all[:0], 0, 0
	for i, e := range all {
		if gone(e) {
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
	l.mu.Unlock()
	if l.db == nil {
		return droppedPending, nil
	}
	deleted := 0
	err := l.db.Update(func(tx *store.Tx) error {
		var keys []string
		err := tx.ForEach(bucket, func(k string, raw []byte) error {
			var e Event
			if err := json.Unmarshal(raw, &e); err != nil {
				return fmt.Errorf("logs: decode %s: %w", k, err)
			}
			if gone(e) {
				keys = append(keys, k)
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return err
		}
		for _, k := range keys {
			if err := tx.Delete(bucket, k); err != nil {
				return err
			}
		}
		deleted = len(keys)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("logs: delete: %w", err)
	}
	return deleted + droppedPending, nil
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
