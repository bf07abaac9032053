package phonehome

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// BoltStore keeps licensed's state in one bbolt file: the embedded
// default for one process. bbolt's file lock keeps a second process out,
// so its TLS sessions stay in memory.
type BoltStore struct {
	db       *bolt.DB
	owned    bool // Close closes db (opened by OpenStore)
	sessions memSessions
}

// NewBoltStore prepares the buckets in db. Records keep the layout
// licensed always had: licences and advisories at the top of their
// bucket, the rest in one sub-bucket per licence.
func NewBoltStore(db *bolt.DB) (*BoltStore, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range []Table{tLicences, tAdvisories, tCheckins, tAnchors, tSeqs, tBoxes} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("licensed: buckets: %w", err)
	}
	return &BoltStore{db: db}, nil
}

// Update runs fn in a bbolt write transaction: bbolt has one writer at a
// time, so lock needs no more.
func (s *BoltStore) Update(_ context.Context, _ string, fn func(Tx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

func (s *BoltStore) View(_ context.Context, fn func(Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

func (s *BoltStore) Sessions() SessionStore { return &s.sessions }

func (s *BoltStore) Close() error {
	if s.owned {
		return s.db.Close()
	}
	return nil
}

type boltTx struct{ tx *bolt.Tx }

// bucket is the bucket of group k1 of t, nil when absent (and not create).
func (b boltTx) bucket(t Table, k1 string, create bool) (*bolt.Bucket, error) {
	top := b.tx.Bucket([]byte(t))
	if top == nil {
		return nil, fmt.Errorf("licensed: no bucket %s", t)
	}
	if k1 == "" {
		return top, nil
	}
	if create {
		return top.CreateBucketIfNotExists([]byte(k1))
	}
	return top.Bucket([]byte(k1)), nil
}

func (b boltTx) Get(t Table, k1, k2 string) ([]byte, error) {
	bk, err := b.bucket(t, k1, false)
	if err != nil || bk == nil {
		return nil, err
	}
	// bbolt's slices live as long as the transaction: copy.
	if v := bk.Get([]byte(k2)); v != nil {
		return append([]byte(nil), v...), nil
	}
	return nil, nil
}

func (b boltTx) Put(t Table, k1, k2 string, v []byte) error {
	if k2 == "" {
		return errors.New("licensed: empty key")
	}
	bk, err := b.bucket(t, k1, true)
	if err != nil {
		return err
	}
	return bk.Put([]byte(k2), v)
}

func (b boltTx) Delete(t Table, k1, k2 string) error {
	bk, err := b.bucket(t, k1, false)
	if err != nil || bk == nil {
		return err
	}
	return bk.Delete([]byte(k2))
}

func (b boltTx) List(t Table, k1 string, fn func(string, []byte) error) error {
	bk, err := b.bucket(t, k1, false)
	if err != nil || bk == nil {
		return err
	}
	return bk.ForEach(func(k, v []byte) error {
		if v == nil {
			return nil // a sub-bucket, not a record
		}
		return fn(string(k), v)
	})
}

func (b boltTx) Scan(t Table, fn func(k1, k2 string, v []byte) error) error {
	top := b.tx.Bucket([]byte(t))
	if top == nil {
		return fmt.Errorf("licensed: no bucket %s", t)
	}
	return top.ForEach(func(k1, v []byte) error {
		if v != nil {
			return fn("", string(k1), v)
		}
		return top.Bucket(k1).ForEach(func(k2, v []byte) error {
			if v == nil {
				return nil
			}
			return fn(string(k1), string(k2), v)
		})
	})
}

func (b boltTx) Count(t Table, k1 string) (int, error) {
	bk, err := b.bucket(t, k1, false)
	if err != nil || bk == nil {
		return 0, err
	}
	return bk.Stats().KeyN, nil
}

func (b boltTx) Append(t Table, k1 string, v []byte) error {
	bk, err := b.bucket(t, k1, true)
	if err != nil {
		return err
	}
	seq, err := bk.NextSequence()
	if err != nil {
		return err
	}
	return bk.Put(fmt.Appendf(nil, "%020d", seq), v)
}
