package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrBusy means Scrub could not get the store free of readers in time;
// nothing was changed and a later call will do the work.
var ErrBusy = errors.New("store: busy, scrub postponed")

// scrubWait bounds how long Scrub, holding the writer, waits for the read
// transactions in flight to end.
const scrubWait = 200 * time.Millisecond

// Scrubbed is what one Scrub did.
type Scrubbed struct {
	FreePages int `json:"free_pages"`
	Zeroed    int `json:"zeroed"` // pages that still held old bytes
}

// Scrub overwrites with zeros every page on the freelist that still holds
// old bytes. bbolt only reuses freed pages; until then a deleted record
// stays readable in the file to anyone with the disk. Privacy deletions
// (retention, forget) call this so deleting really deletes.
//
// It runs inside a write transaction, so no page is allocated and no
// commit frees one meanwhile. A freed page can still be read only by a
// read transaction that began before the commit that freed it; one that
// begins now sees the current tree, which no free page belongs to. So
// Scrub waits (bounded) for the readers that began before it, not for new
// ones, and never blocks readers.
func (db *DB) Scrub() (Scrubbed, error) {
	var res Scrubbed
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		// A reader waiting for this writer (an Update inside a View) would
		// never end: the bound turns that into ErrBusy.
		if !db.readers.waitOlder(time.Now().Add(scrubWait)) {
			return ErrBusy
		}
		f, err := os.OpenFile(db.bolt.Path(), os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		ps := db.bolt.Info().PageSize
		zero, buf := make([]byte, ps), make([]byte, ps)
		pages := int(tx.Size() / int64(ps))
		for id := 2; id < pages; id++ {
			info, err := tx.Page(id)
			if err != nil {
				return err
			}
			if info == nil || info.Type != "free" {
				continue
			}
			res.FreePages++
			off := int64(id) * int64(ps)
			if _, err := f.ReadAt(buf, off); err != nil {
				return fmt.Errorf("read page %d: %w", id, err)
			}
			if bytes.Equal(buf, zero) {
				continue
			}
			if _, err := f.WriteAt(zero, off); err != nil {
				return fmt.Errorf("zero page %d: %w", id, err)
			}
			res.Zeroed++
		}
		if res.Zeroed > 0 {
			return f.Sync()
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("store: scrub: %w", err)
	}
	return res, nil
}

// readerGens counts open read transactions by generation.
type readerGens struct {
	mu   sync.Mutex
	gen  uint64
	open map[uint64]int
}

// enter registers a reader; call the result when it ends.
func (r *readerGens) enter() func() {
	r.mu.Lock()
	g := r.gen
	if r.open == nil {
		r.open = map[uint64]int{}
	}
	r.open[g]++
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		if r.open[g]--; r.open[g] == 0 {
			delete(r.open, g)
		}
		r.mu.Unlock()
	}
}

// waitOlder starts a new generation and waits until every reader of the
// older ones has ended, or deadline passes (false).
func (r *readerGens) waitOlder(deadline time.Time) bool {
	r.mu.Lock()
	r.gen++
	cur := r.gen
	r.mu.Unlock()
	for {
		r.mu.Lock()
		old := false
		for g := range r.open {
			if g < cur {
				old = true
				break
			}
		}
		r.mu.Unlock()
		if !old {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}
