// Package storetest opens real sealed stores for tests, in the test's
// temporary directory and closed when the test ends. Only tests import it.
package storetest

import (
	"crypto/rand"
	"path/filepath"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Open opens a fresh store sealed with key; a nil key means a random one,
// for tests that never reopen the store.
func Open(tb testing.TB, key []byte) *store.DB {
	tb.Helper()
	if key == nil {
		key = make([]byte, 32)
		rand.Read(key) // never fails (crypto/rand)
	}
	return OpenAt(tb, filepath.Join(tb.TempDir(), "edgepbx.db"), key)
}

// OpenAt opens the store at path, for tests that close it and open it
// again, as a restart does. Closing it early is fine: the cleanup's second
// Close does nothing.
func OpenAt(tb testing.TB, path string, key []byte) *store.DB {
	tb.Helper()
	db, err := store.Open(path, key)
	if err != nil {
		tb.Fatalf("open store %s: %v", path, err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}
