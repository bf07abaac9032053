package callrec

import (
	"fmt"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Bucket and key of the stored policy.
const (
	bucket    = "callrec"
	policyKey = "policy"
)

// PolicyStore keeps the policy in the database and a copy in memory for
// the calls. Safe for concurrent use.
type PolicyStore struct {
	db *store.DB
	mu sync.Mutex
	p  Policy
}

// OpenPolicy loads the stored policy (none: nothing is recorded).
func OpenPolicy(db *store.DB) (*PolicyStore, error) {
	ps := &PolicyStore{db: db}
	err := db.View(func(tx *store.Tx) error {
		_, err := tx.Get(bucket, policyKey, &ps.p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("callrec: load policy: %w", err)
	}
	if err := ps.p.Validate(); err != nil {
		return nil, fmt.Errorf("callrec: stored policy: %w", err)
	}
	return ps, nil
}

// Get returns a copy of the policy in force.
func (ps *PolicyStore) Get() Policy {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.p.Clone()
}

// Set validates and stores p; also runs in the same transaction (the
// audit entry). A refused policy changes nothing.
func (ps *PolicyStore) Set(p Policy, also func(*store.Tx) error) error {
	if err := p.Validate(); err != nil {
		return err
	}
	p = p.Clone()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	err := ps.db.Update(func(tx *store.Tx) error {
		if err := tx.Put(bucket, policyKey, p); err != nil {
			return err
		}
		if also != nil {
			return also(tx)
		}
		return nil
	})
	if err != nil {
		return err
	}
	ps.p = p
	return nil
}

// Retention is the policy's retention per category for the store.
func (p Policy) Retention() map[string]time.Duration {
	out := make(map[string]time.Duration, len(p.RetentionDays))
	for c, d := range p.RetentionDays {
		out[c] = time.Duration(d) * 24 * time.Hour
	}
	return out
}
