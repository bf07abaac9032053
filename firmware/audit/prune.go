package audit

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// anchorKey holds the anchor: the sequence number and hash of the newest
// entry retention removed. The oldest kept entry links to it, so the chain
// still verifies from there. It is sealed with the device key: someone with
// the disk but not the key cannot cut the log's beginning and write a new
// anchor, and deleting the anchor makes the chain start at a missing entry.
const anchorKey = "anchor"

// Anchor is where the kept chain starts: entry Seq (removed) had Hash.
type Anchor struct {
	Seq  uint64    `json:"seq"`
	Hash string    `json:"hash"`
	Time time.Time `json:"time"` // of the removed entry
}

func getAnchor(tx *store.Tx) (Anchor, error) {
	raw, ok, err := tx.GetSecret(metaBucket, anchorKey)
	if err != nil {
		return Anchor{}, fmt.Errorf("%w: anchor does not open: %v", ErrTampered, err)
	}
	var a Anchor
	if ok {
		if err := json.Unmarshal(raw, &a); err != nil {
			return Anchor{}, fmt.Errorf("%w: anchor unreadable", ErrTampered)
		}
	}
	return a, nil
}

// Anchor returns the current anchor (zero: nothing was removed yet).
func (l *Log) Anchor() (Anchor, error) {
	var a Anchor
	err := l.db.View(func(tx *store.Tx) error {
		var err error
		a, err = getAnchor(tx)
		return err
	})
	return a, err
}

// pruneBatch bounds the deletions per write transaction.
const pruneBatch = 5000

// Prune removes the entries older than before, oldest first, and moves
// the anchor past them. It never removes the head (the chain must end
// somewhere verifiable) nor an entry at or after floor (0: no floor): the
// licence check-in re-sends the entry it last anchored with the vendor,
// and that entry must still be there. It returns how many went.
func (l *Log) Prune(before time.Time, floor uint64) (int, error) {
	total := 0
	for {
		n := 0
		err := l.db.Update(func(tx *store.Tx) error {
			var h head
			if _, err := tx.Get(metaBucket, headKey, &h); err != nil {
				return fmt.Errorf("audit: read head: %w", err)
			}
			an, err := getAnchor(tx)
			if err != nil {
				return err
			}
			for seq := an.Seq + 1; seq < h.Seq && n < pruneBatch; seq++ {
				if floor > 0 && seq >= floor {
					break
				}
				e, err := getEntry(tx, seq)
				if err != nil {
					return err
				}
				if !e.Time.Before(before) {
					break
				}
				if e.PrevHash != an.Hash {
					// Never prune across a break: it would hide the evidence.
					return fmt.Errorf("%w: entry %d does not link to %d", ErrTampered, seq, an.Seq)
				}
				if err := tx.Delete(logBucket, seqKey(seq)); err != nil {
					return err
				}
				an = Anchor{Seq: e.Seq, Hash: e.Hash, Time: e.Time}
				n++
			}
			if n == 0 {
				return nil
			}
			raw, err := json.Marshal(an)
			if err != nil {
				return err
			}
			return tx.PutSecret(metaBucket, anchorKey, raw)
		})
		if err != nil {
			return total, fmt.Errorf("audit: prune: %w", err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}

// MetaBucket holds the sealed prune anchor, for backups (see ResealMeta).
const MetaBucket = metaBucket

// ResealMeta is the store.Resealer of MetaBucket: the prune anchor was
// written by PutSecret and moves with the chain it anchors.
var ResealMeta = store.SecretResealer(metaBucket, func(k string) bool { return k == anchorKey })
