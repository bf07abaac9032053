package phonehome

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Table names one kind of record licensed keeps. Records are addressed by
// two keys: k1 groups them (the licence id; empty for the top-level
// licences and advisories) and k2 names one inside the group.
type Table string

const (
	tLicences   Table = bLicences   // k1 "", k2 licence id
	tAdvisories Table = bAdvisories // k1 "", k2 advisory id
	tAnchors    Table = bAnchors    // k1 licence, k2 install id
	tSeqs       Table = bSeqs       // k1 licence, k2 install id + " " + fingerprint
	tCheckins   Table = bCheckins   // k1 licence, appended in order
	tBoxes      Table = "boxes"     // k1 licence, k2 install id + " " + fingerprint: the fleet view
)

// Store is where licensed keeps its state: one bbolt file for a single
// process (the default), or a PostgreSQL database shared by any number of
// replicas.
type Store interface {
	// Update runs fn in one read-write transaction. Transactions with the
	// same lock (a licence id) never overlap, on any replica, and each sees
	// everything the ones before it committed: the clone, anchor and
	// counter checks judge against the latest committed state, never a
	// stale copy. fn may run again if the database asks for a retry.
	Update(ctx context.Context, lock string, fn func(Tx) error) error
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Tx) error) error
	// Sessions is where the TLS sessions behind session tickets live.
	Sessions() SessionStore
	Close() error
}

// Tx is one transaction of a Store. Values are JSON documents.
type Tx interface {
	// Get returns nil when there is no such record.
	Get(t Table, k1, k2 string) ([]byte, error)
	Put(t Table, k1, k2 string, v []byte) error
	Delete(t Table, k1, k2 string) error
	// List calls fn for each record of group k1, in order of k2 (in order
	// of appending for tCheckins).
	List(t Table, k1 string, fn func(k2 string, v []byte) error) error
	// Scan calls fn for every record of t, by k1 then k2; fn must not use
	// the transaction.
	Scan(t Table, fn func(k1, k2 string, v []byte) error) error
	// Count is the number of records in group k1.
	Count(t Table, k1 string) (int, error)
	// Append adds a record to group k1 of an append-only table.
	Append(t Table, k1 string, v []byte) error
}

// SessionStore keeps the TLS session state a session ticket names. Take
// returns a session once (tickets are single use) and nothing for one
// created before notBefore.
type SessionStore interface {
	Put(ctx context.Context, id []byte, created time.Time, state []byte) error
	Take(ctx context.Context, id []byte, notBefore time.Time) ([]byte, bool, error)
}

// ErrUnavailable wraps store failures that say "try later": the database
// cannot be reached or is shutting down.
var ErrUnavailable = errors.New("licensed: database unavailable")

// OpenStore opens the store a -db flag names: "postgres://…" or
// "postgresql://…" (a PostgreSQL connection URL; migrations are applied),
// "bolt:PATH", or a plain PATH (a bbolt file, created if missing).
func OpenStore(ctx context.Context, db string, log *slog.Logger) (Store, error) {
	if log == nil {
		log = slog.Default()
	}
	switch {
	case strings.HasPrefix(db, "postgres://"), strings.HasPrefix(db, "postgresql://"):
		return OpenPostgres(ctx, db, log)
	case strings.Contains(db, "://"):
		return nil, fmt.Errorf("licensed: -db %q: unknown scheme (want postgres:// or bolt:PATH)", redactURL(db))
	}
	path := strings.TrimPrefix(db, "bolt:")
	if path == "" {
		return nil, errors.New("licensed: -db: empty path")
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("licensed: open %s: %w", path, err)
	}
	st, err := NewBoltStore(bdb)
	if err != nil {
		bdb.Close()
		return nil, err
	}
	st.owned = true
	return st, nil
}

// redactURL drops a password from a connection URL for error messages.
func redactURL(s string) string {
	if at := strings.LastIndex(s, "@"); at >= 0 {
		if i := strings.Index(s, "://"); i >= 0 && i < at {
			return s[:i+3] + "…" + s[at:]
		}
	}
	return s
}

func getJSON(tx Tx, t Table, k1, k2 string, v any) (bool, error) {
	raw, err := tx.Get(t, k1, k2)
	if err != nil || raw == nil {
		return false, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("decode %s %s/%s: %w", t, k1, k2, err)
	}
	return true, nil
}

func putJSON(tx Tx, t Table, k1, k2 string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(t, k1, k2, raw)
}
