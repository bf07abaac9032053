// Package audit owns the appliance's audit log: every change and security
// event, hash-chained so that editing, inserting or deleting an entry in the
// store is detected by Verify. Buckets: audit.log (entries by sequence number)
// and audit.meta (the chain head, and the sealed anchor retention leaves
// when it removes old entries: prune.go).
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

const (
	logBucket  = "audit.log"
	metaBucket = "audit.meta"
	headKey    = "head"
	// maxField bounds every free-text field so a hostile request cannot bloat the log.
	maxField = 512
	// maxChange bounds the encoded before/after values of one entry.
	maxChange = 16 << 10
)

// Outcome of an audited action.
const (
	OK      = "ok"
	Denied  = "denied"
	Failed  = "failed"
	Warning = "warning"
)

// Entry is one audit record. Hash covers every other field, including
// PrevHash, so each entry commits to the whole chain before it.
type Entry struct {
	Seq      uint64          `json:"seq"`
	Time     time.Time       `json:"time"`
	Actor    string          `json:"actor"`            // account name, "token:<id>", or "-" for anonymous
	Source   string          `json:"source,omitempty"` // client address
	Action   string          `json:"action"`           // e.g. "auth.login", "account.create"
	Target   string          `json:"target,omitempty"`
	Outcome  string          `json:"outcome"`
	Detail   string          `json:"detail,omitempty"`
	Before   json.RawMessage `json:"before,omitempty"`
	After    json.RawMessage `json:"after,omitempty"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
}

// Event is what callers record; Log fills in sequence, time and hashes.
type Event struct {
	Actor, Source, Action, Target, Outcome, Detail string
	// Before and After are any JSON-encodable values; keys that name secrets
	// are redacted before anything is stored.
	Before, After any
}

// Clock gives the current time; tests inject a fake one.
type Clock interface{ Now() time.Time }

// Log appends to and reads the audit chain.
type Log struct {
	db    *store.DB
	clock Clock

	// mu guards the verified checkpoint: entries up to cp.Seq were checked
	// by this process, so Verify only walks the ones after it. broken is
	// sticky: once tampering is seen, only a full verify that passes clears it.
	mu     sync.Mutex
	cp     head
	broken error
}

// New returns the audit log kept in db.
func New(db *store.DB, clock Clock) *Log { return &Log{db: db, clock: clock} }

type head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// Head is the chain head: the last entry's sequence number and hash. It
// commits to every entry before it, so a copy kept off the box (in an
// export, a licence check-in) later proves the log was not rewritten up to
// that point.
type Head struct {
	Seq  uint64    `json:"seq"`
	Hash string    `json:"hash"`
	Time time.Time `json:"time"` // when the head was read
}

// Head returns the stored chain head, as is; Verify says whether the chain
// behind it holds.
func (l *Log) Head() (Head, error) {
	var h head
	err := l.db.View(func(tx *store.Tx) error {
		_, err := tx.Get(metaBucket, headKey, &h)
		return err
	})
	if err != nil {
		return Head{}, fmt.Errorf("audit: read head: %w", err)
	}
	return Head{Seq: h.Seq, Hash: h.Hash, Time: l.clock.Now().UTC()}, nil
}

// HashAt returns the stored hash of entry seq (for re-checking an anchor
// sent before: a log rewritten and then grown past it no longer matches).
// found is false when there is no such entry.
func (l *Log) HashAt(seq uint64) (hash string, found bool, err error) {
	var e Entry
	err = l.db.View(func(tx *store.Tx) error {
		var err error
		found, err = tx.Get(logBucket, seqKey(seq), &e)
		return err
	})
	if err == nil && !found {
		// The entry just before the oldest kept one lives on as the anchor,
		// so an anchor the vendor holds for it still checks out.
		err = l.db.View(func(tx *store.Tx) error {
			an, err := getAnchor(tx)
			if err == nil && an.Seq == seq && seq > 0 {
				e.Hash, found = an.Hash, true
			}
			return err
		})
	}
	if err != nil {
		return "", false, fmt.Errorf("audit: read entry %d: %w", seq, err)
	}
	return e.Hash, found, nil
}

// After returns up to limit entries following seq, oldest first: a
// follower reads only what is new, not the whole log.
func (l *Log) After(seq uint64, limit int) ([]Entry, error) {
	var out []Entry
	err := l.db.View(func(tx *store.Tx) error {
		an, err := getAnchor(tx)
		if err != nil {
			return err
		}
		// Entries up to the anchor were removed by retention.
		for n := max(seq, an.Seq) + 1; len(out) < limit; n++ {
			var e Entry
			ok, err := tx.Get(logBucket, seqKey(n), &e)
			if err != nil {
				return fmt.Errorf("audit: read entry %d: %w", n, err)
			}
			if !ok {
				return nil
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Record appends ev in its own transaction.
func (l *Log) Record(ev Event) error {
	return l.db.Update(func(tx *store.Tx) error { return l.RecordTx(tx, ev) })
}

// RecordTx appends ev inside tx, so a change and its audit entry commit or
// roll back together.
func (l *Log) RecordTx(tx *store.Tx, ev Event) error {
	var h head
	if _, err := tx.Get(metaBucket, headKey, &h); err != nil {
		return fmt.Errorf("audit: read head: %w", err)
	}
	e := Entry{
		Seq:      h.Seq + 1,
		Time:     l.clock.Now().UTC(),
		Actor:    clip(ev.Actor),
		Source:   clip(ev.Source),
		Action:   clip(ev.Action),
		Target:   clip(ev.Target),
		Outcome:  clip(ev.Outcome),
		Detail:   clip(ev.Detail),
		PrevHash: h.Hash,
	}
	if e.Actor == "" {
		e.Actor = "-"
	}
	if e.Outcome == "" {
		e.Outcome = OK
	}
	var err error
	if e.Before, err = redacted(ev.Before); err != nil {
		return err
	}
	if e.After, err = redacted(ev.After); err != nil {
		return err
	}
	if e.Hash, err = e.digest(); err != nil {
		return err
	}
	if err := tx.Put(logBucket, seqKey(e.Seq), e); err != nil {
		return fmt.Errorf("audit: append: %w", err)
	}
	return tx.Put(metaBucket, headKey, head{Seq: e.Seq, Hash: e.Hash})
}

func seqKey(n uint64) string { return fmt.Sprintf("%020d", n) }

func clip(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > maxField {
		s = s[:maxField] + "…"
	}
	return s
}

// digest hashes the canonical JSON of e without its own Hash. encoding/json
// writes struct fields in order and re-encoding stored RawMessage is
// idempotent, so the same bytes come back after a round trip through the store.
func (e Entry) digest() (string, error) {
	e.Hash = ""
	raw, err := json.Marshal(e)
	if err != nil {
		return "", fmt.Errorf("audit: encode entry: %w", err)
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:]), nil
}

// secretWords mark keys whose values never reach the log.
var secretWords = []string{"password", "secret", "token", "seed", "key", "code", "hash", "recovery", "cookie", "ha1", "csrf"}

func isSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

func redacted(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("audit: encode change: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, fmt.Errorf("audit: decode change: %w", err)
	}
	out, err := json.Marshal(redact(generic))
	if err != nil {
		return nil, fmt.Errorf("audit: encode change: %w", err)
	}
	if len(out) > maxChange {
		out, _ = json.Marshal(map[string]string{"truncated": fmt.Sprintf("%d bytes", len(out))})
	}
	return out, nil
}

func redact(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if isSecretKey(k) {
				t[k] = "[redacted]"
			} else {
				t[k] = redact(x)
			}
		}
		return t
	case []any:
		for i := range t {
			t[i] = redact(t[i])
		}
		return t
	}
	return v
}

// ErrTampered means the chain does not verify.
var ErrTampered = errors.New("audit: chain broken")

// VerifyResult says how much of the chain was checked.
type VerifyResult struct {
	Entries uint64 `json:"entries"`
	Head    string `json:"head"`
}

// Verify checks the entries appended since the last verified checkpoint
// (the whole chain the first time), so its cost follows the log's growth,
// not its size. It re-checks the checkpoint entry itself and that nothing
// follows the head. Entries before the checkpoint are covered by VerifyFull,
// which edgepbxd runs at start and the API runs on demand. Once the chain
// was found broken, Verify keeps failing until a VerifyFull passes.
func (l *Log) Verify() (VerifyResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken != nil {
		return VerifyResult{Entries: l.cp.Seq, Head: l.cp.Hash}, l.broken
	}
	var res VerifyResult
	err := l.db.View(func(tx *store.Tx) error {
		var h head
		if _, err := tx.Get(metaBucket, headKey, &h); err != nil {
			return fmt.Errorf("%w: head unreadable: %v", ErrTampered, err)
		}
		if h.Seq < l.cp.Seq {
			return fmt.Errorf("%w: head says %d but entry %d was verified before", ErrTampered, h.Seq, l.cp.Seq)
		}
		an, err := getAnchor(tx)
		if err != nil {
			return err
		}
		from, prev := l.cp.Seq, ""
		switch {
		case l.cp.Seq < an.Seq || (l.cp.Seq == an.Seq && l.cp.Seq > 0):
			// Retention removed the entries up to the anchor (and maybe
			// the checkpoint): the sealed anchor stands in for them.
			if l.cp.Seq == an.Seq && l.cp.Hash != an.Hash {
				return fmt.Errorf("%w: anchor %d differs from the entry verified before", ErrTampered, an.Seq)
			}
			from, prev = an.Seq, an.Hash
		case l.cp.Seq > 0:
			e, err := getEntry(tx, l.cp.Seq)
			if err != nil {
				return err
			}
			if d, err := e.digest(); err != nil || e.Hash != l.cp.Hash || d != e.Hash {
				return fmt.Errorf("%w: entry %d was modified after it was verified", ErrTampered, l.cp.Seq)
			}
			prev = e.Hash
		}
		for n := from + 1; n <= h.Seq; n++ {
			e, err := getEntry(tx, n)
			if err != nil {
				return err
			}
			if err := e.check(n, prev); err != nil {
				return err
			}
			prev = e.Hash
		}
		if prev != h.Hash {
			return fmt.Errorf("%w: chain ends at %d but the head's hash differs", ErrTampered, h.Seq)
		}
		var extra json.RawMessage
		if ok, _ := tx.Get(logBucket, seqKey(h.Seq+1), &extra); ok {
			return fmt.Errorf("%w: entry %d beyond the head %d", ErrTampered, h.Seq+1, h.Seq)
		}
		res = VerifyResult{Entries: h.Seq, Head: h.Hash}
		return nil
	})
	if err != nil {
		l.broken = err
		return VerifyResult{Entries: l.cp.Seq, Head: l.cp.Hash}, err
	}
	l.cp = head{Seq: res.Entries, Hash: res.Head}
	return res, nil
}

func getEntry(tx *store.Tx, n uint64) (Entry, error) {
	var e Entry
	ok, err := tx.Get(logBucket, seqKey(n), &e)
	if err != nil {
		return e, fmt.Errorf("%w: entry %d unreadable", ErrTampered, n)
	}
	if !ok {
		return e, fmt.Errorf("%w: entry %d missing", ErrTampered, n)
	}
	return e, nil
}

// check verifies that e is entry n, links to prev and hashes to its Hash.
func (e Entry) check(n uint64, prev string) error {
	if e.Seq != n {
		return fmt.Errorf("%w: entry %s: expected sequence %d", ErrTampered, seqKey(e.Seq), n)
	}
	if e.PrevHash != prev {
		return fmt.Errorf("%w: entry %d does not link to entry %d", ErrTampered, e.Seq, e.Seq-1)
	}
	d, err := e.digest()
	if err != nil {
		return err
	}
	if d != e.Hash {
		return fmt.Errorf("%w: entry %d was modified", ErrTampered, e.Seq)
	}
	return nil
}

// VerifyFull walks the whole chain and reports the first entry that does not
// match: an edited entry changes its hash, a removed or inserted one breaks
// the sequence or the link, a truncated tail disagrees with the stored head.
// It also holds the chain to this process's checkpoint, so a tail cut
// together with a rewritten head is caught. A pass moves the checkpoint to
// the head; a failure makes Verify fail too.
func (l *Log) VerifyFull() (VerifyResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var res VerifyResult
	err := l.db.View(func(tx *store.Tx) error {
		var h head
		if _, err := tx.Get(metaBucket, headKey, &h); err != nil {
			return fmt.Errorf("%w: head unreadable: %v", ErrTampered, err)
		}
		an, err := getAnchor(tx)
		if err != nil {
			return err
		}
		if an.Seq > 0 && l.cp.Seq == an.Seq && l.cp.Hash != an.Hash {
			return fmt.Errorf("%w: anchor %d differs from the entry verified before", ErrTampered, an.Seq)
		}
		prev, n := an.Hash, an.Seq
		err = tx.ForEach(logBucket, func(key string, raw []byte) error {
			var e Entry
			if err := json.Unmarshal(raw, &e); err != nil {
				return fmt.Errorf("%w: entry %s unreadable", ErrTampered, key)
			}
			n++
			if key != seqKey(e.Seq) {
				return fmt.Errorf("%w: entry %s: expected sequence %d", ErrTampered, key, n)
			}
			if err := e.check(n, prev); err != nil {
				return err
			}
			if n == l.cp.Seq && e.Hash != l.cp.Hash {
				return fmt.Errorf("%w: entry %d differs from when it was verified", ErrTampered, n)
			}
			prev = e.Hash
			return nil
		})
		if err != nil {
			return err
		}
		if n != h.Seq || prev != h.Hash {
			return fmt.Errorf("%w: chain ends at %d but head says %d", ErrTampered, n, h.Seq)
		}
		if n < l.cp.Seq {
			// A consistent but shorter chain: the tail was cut and the head rewritten.
			return fmt.Errorf("%w: chain ends at %d but entry %d was verified before", ErrTampered, n, l.cp.Seq)
		}
		res = VerifyResult{Entries: n, Head: prev}
		return nil
	})
	if err != nil {
		l.broken = err
		return res, err
	}
	l.cp, l.broken = head{Seq: res.Entries, Hash: res.Head}, nil
	return res, nil
}

// HeadTx returns the chain head inside tx (a restore records the head it
// replaces).
func (l *Log) HeadTx(tx *store.Tx) (Head, error) {
	var h head
	if _, err := tx.Get(metaBucket, headKey, &h); err != nil {
		return Head{}, fmt.Errorf("audit: read head: %w", err)
	}
	return Head{Seq: h.Seq, Hash: h.Hash, Time: l.clock.Now().UTC()}, nil
}

// Rebase forgets this process's checkpoint and verifies the whole chain
// again: after a restore replaced the chain (the restore entry records the
// head it replaced), the old checkpoint no longer applies.
func (l *Log) Rebase() (VerifyResult, error) {
	l.mu.Lock()
	l.cp, l.broken = head{}, nil
	l.mu.Unlock()
	return l.VerifyFull()
}

// LogBucket holds the entries (a restore archives them before replacing).
const LogBucket = logBucket
