package store

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Migration moves the layout from one schema version to the next. Step i of
// migrations takes a file from version i to i+1. Steps run inside the same
// transaction as the version bump, so a power cut leaves the old layout or the
// new one, never a mix. Steps are append-only: never edit a released step.
type Migration struct {
	Name  string
	Apply func(*Tx) error
}

// migrations is the fixed list of steps this firmware knows. It is never
// modified at run time.
var migrations = []Migration{
	{Name: "initial layout", Apply: func(*Tx) error { return nil }},
}

// migrate brings the file to len(steps). A newer file is refused after a
// read-only look, so it is left byte-for-byte untouched.
func (db *DB) migrate(steps []Migration) error {
	want := len(steps)
	var have int
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		have, err = schemaOf(tx)
		return err
	})
	if err != nil {
		return err
	}
	if have > want {
		return fmt.Errorf("%w: file has %d, firmware knows %d", ErrNewerSchema, have, want)
	}
	if have == want && have > 0 {
		return nil
	}
	return db.bolt.Update(func(btx *bolt.Tx) error {
		// Re-read inside the write transaction: the value above may be stale.
		have, err := schemaOf(btx)
		if err != nil {
			return err
		}
		if have > want {
			return fmt.Errorf("%w: file has %d, firmware knows %d", ErrNewerSchema, have, want)
		}
		meta, err := btx.CreateBucketIfNotExists([]byte(metaBucket))
		if err != nil {
			return fmt.Errorf("store: meta bucket: %w", err)
		}
		tx := &Tx{tx: btx, db: db}
		for v := have; v < want; v++ {
			if err := steps[v].Apply(tx); err != nil {
				return fmt.Errorf("store: migration %d→%d (%s): %w", v, v+1, steps[v].Name, err)
			}
		}
		raw, err := json.Marshal(want)
		if err != nil {
			return fmt.Errorf("store: encode schema version: %w", err)
		}
		return meta.Put([]byte("schema"), raw)
	})
}

func schemaOf(tx *bolt.Tx) (int, error) {
	meta := tx.Bucket([]byte(metaBucket))
	if meta == nil {
		return 0, nil
	}
	raw := meta.Get([]byte("schema"))
	if raw == nil {
		return 0, nil
	}
	var v int
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, fmt.Errorf("store: read schema version: %w", err)
	}
	if v < 0 {
		return 0, fmt.Errorf("store: schema version %d is invalid", v)
	}
	return v, nil
}

// Schema reports the schema version recorded in the file.
func (db *DB) Schema() (int, error) {
	var v int
	defer db.readers.enter()()
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		v, err = schemaOf(tx)
		return err
	})
	return v, err
}
