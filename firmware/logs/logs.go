// Package logs keeps typed security events in a bounded local log: an
// in-memory ring for fast reads and a bbolt bucket ("logs.events") that holds
// at most Max events and is written in batches so an attack cannot turn every
// packet into an fsync.
package logs

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Kind names a security event; the values are stable (syslog, audit, metrics).
type Kind string

const (
	KindRegister     Kind = "sip.register"
	KindUnregister   Kind = "sip.unregister"
	KindAuthFailure  Kind = "sip.auth_failure"
	KindNonceReplay  Kind = "sip.nonce_replay"
	KindBan          Kind = "sip.ban"
	KindScanner      Kind = "sip.scanner"
	KindFlood        Kind = "sip.flood"
	KindInvalid      Kind = "sip.invalid"
	KindTrunkRegFail Kind = "sip.trunk_register_failed"
	KindTrunkReg     Kind = "sip.trunk_registered"

	// Admin HTTPS port: a failed login, and a source banned for trying
	// many accounts (both also in the audit chain).
	KindAdminLoginFailure Kind = "admin.login_failure"
	KindAdminBan          Kind = "admin.ban"
)

// Event is one security event. Fields from the wire are truncated by Record.
type Event struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Kind      Kind      `json:"kind"`
	Source    string    `json:"source,omitempty"` // ip:port
	Transport string    `json:"transport,omitempty"`
	User      string    `json:"user,omitempty"`
	Display   string    `json:"display,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
	Reason    string    `json:"reason,omitempty"`
}

const bucket = "logs.events"

// maxField bounds every attacker-controlled string kept in the log.
const maxField = 128

// Log is a bounded security log. The zero value is not usable; use New.
type Log struct {
	db  *store.DB // nil: memory only
	max int

	// flushMu makes Flush the one writer of the ring's events at a time,
	// and lets a Forget hold flushes across its transaction (privacy.go).
	flushMu sync.Mutex
	mu      sync.Mutex
	ring    []Event // last max events, oldest first once full
	next    int
	full    bool
	seq     uint64
	// unflushed counts the newest ring events not yet on disk (at most max:
	// the ring is also the write queue, so Record never allocates).
	unflushed int
	dropped   uint64 // events that left the ring before a flush wrote them

	// forward gets every recorded event (remote syslog); it must not block.
	forward atomic.Pointer[func(Event)]
	// anon rewrites Source before an event is stored (privacy settings).
	anon atomic.Pointer[func(source string, t time.Time) string]
}

// Forward makes Record hand every event, with its sequence number, to f
// as well (nil: stop). f runs on the producer's goroutine: it must return
// at once, as Sender.Event does.
func (l *Log) Forward(f func(Event)) {
	if f == nil {
		l.forward.Store(nil)
		return
	}
	l.forward.Store(&f)
}

// New returns a log keeping at most max events; db may be nil (memory only).
func New(db *store.DB, max int) (*Log, error) {
	if max < 1 {
		return nil, fmt.Errorf("logs: max %d must be positive", max)
	}
	l := &Log{db: db, max: max, ring: make([]Event, max)}
	if db != nil {
		// Continue the sequence after the newest stored event.
		err := db.View(func(tx *store.Tx) error {
			return tx.ForEach(bucket, func(k string, _ []byte) error {
				if b, err := hex.DecodeString(k); err == nil && len(b) == 8 {
					if s := binary.BigEndian.Uint64(b); s > l.seq {
						l.seq = s
					}
				}
				return nil
			})
		})
		if err != nil {
			return nil, fmt.Errorf("logs: read %s: %w", bucket, err)
		}
	}
	return l, nil
}

func clip(s string) string {
	if len(s) > maxField {
		return s[:maxField]
	}
	return s
}

// Record adds e; it never blocks on disk.
func (l *Log) Record(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Source, e.Transport, e.User = clip(e.Source), clip(e.Transport), clip(e.User)
	e.Display, e.UserAgent, e.Reason = clip(e.Display), clip(e.UserAgent), clip(e.Reason)
	l.mu.Lock()
	l.seq++
	e.Seq = l.seq
	l.ring[l.next] = e
	l.next = (l.next + 1) % l.max
	if l.next == 0 {
		l.full = true
	}
	if l.db != nil {
		if l.unflushed == l.max {
			l.dropped++ // the disk is behind by a whole log: keep the newest
		} else {
			l.unflushed++
		}
	}
	l.mu.Unlock()
	if f := l.forward.Load(); f != nil {
		(*f)(e)
	}
}

// Dropped reports how many events were never written to disk because the
// log filled up between two flushes.
func (l *Log) Dropped() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// newest returns the n newest events, oldest first; mu is held.
func (l *Log) newest(n int) []Event {
	out := make([]Event, n)
	start := (l.next - n + l.max) % l.max
	k := copy(out, l.ring[start:min(start+n, l.max)])
	copy(out[k:], l.ring[:n-k])
	return out
}

// Recent returns up to n newest events, oldest first.
func (l *Log) Recent(n int) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var all []Event
	if l.full {
		all = append(append(all, l.ring[l.next:]...), l.ring[:l.next]...)
	} else {
		all = append(all, l.ring[:l.next]...)
	}
	if n < len(all) {
		all = all[len(all)-n:]
	}
	return all
}

func key(seq uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return hex.EncodeToString(b[:])
}

// Flush writes pending events in one transaction and trims the bucket to max.
func (l *Log) Flush() error {
	if l.db == nil {
		return nil
	}
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	return l.flush()
}

func (l *Log) flush() error {
	l.mu.Lock()
	batch := l.newest(l.unflushed)
	l.unflushed = 0
	l.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	anon := l.anon.Load()
	err := l.db.Update(func(tx *store.Tx) error {
		for _, e := range batch {
			if anon != nil && e.Source != "" {
				e.Source = (*anon)(e.Source, e.Time)
			}
			if err := tx.Put(bucket, key(e.Seq), e); err != nil {
				return err
			}
		}
		var keys []string
		if err := tx.ForEach(bucket, func(k string, _ []byte) error {
			keys = append(keys, k)
			return nil
		}); err != nil {
			return err
		}
		for i := 0; i < len(keys)-l.max; i++ {
			if err := tx.Delete(bucket, keys[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Retry them next time, as far as the ring still holds them.
		l.mu.Lock()
		l.unflushed = min(l.max, l.unflushed+len(batch))
		l.mu.Unlock()
		return fmt.Errorf("logs: flush %d events: %w", len(batch), err)
	}
	return nil
}

// Stored returns the events on disk, oldest first.
func (l *Log) Stored() ([]Event, error) {
	if l.db == nil {
		return nil, nil
	}
	var out []Event
	err := l.db.View(func(tx *store.Tx) error {
		return tx.ForEach(bucket, func(_ string, raw []byte) error {
			var e Event
			if err := json.Unmarshal(raw, &e); err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("logs: read stored events: %w", err)
	}
	return out, nil
}

// Run flushes every interval until ctx ends, then flushes once more.
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
