package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestScrubWithReaders: readers run the whole time records are deleted and
// freed pages zeroed; every read sees whole, valid records, the deleted
// bytes leave the file, and the file still opens and verifies.
func TestScrubWithReaders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	db, err := open(path, make([]byte, 32), migrations)
	if err != nil {
		t.Fatal(err)
	}
	val := func(i int) string { return fmt.Sprintf("secret-%06d-%s", i, bytes.Repeat([]byte("x"), 200)) }
	if err := db.Update(func(tx *Tx) error {
		for i := range 4000 {
			if err := tx.Put("b", fmt.Sprintf("%06d", i), val(i)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				err := db.View(func(tx *Tx) error {
					return tx.ForEach("b", func(k string, raw []byte) error {
						var v string
						if err := json.Unmarshal(raw, &v); err != nil || len(v) != len(val(0)) || v[7:13] != k {
							return fmt.Errorf("record %s read as %q (%v)", k, raw, err)
						}
						return nil
					})
				})
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	zeroed := 0
	for round := range 4 {
		if err := db.Update(func(tx *Tx) error {
			for i := round * 1000; i < (round+1)*1000; i++ {
				if i%4 != 0 { // keep every fourth record
					if err := tx.Delete("b", fmt.Sprintf("%06d", i)); err != nil {
						return err
					}
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for {
			sc, err := db.Scrub()
			if errors.Is(err, ErrBusy) {
				continue // readers kept it busy: try again
			}
			if err != nil {
				t.Fatal(err)
			}
			zeroed += sc.Zeroed
			break
		}
	}
	cancel()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if zeroed == 0 {
		t.Fatal("nothing zeroed")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, []byte("secret-000001-")) || !bytes.Contains(raw, []byte("secret-000004-")) {
		t.Fatal("deleted record still in the file, or a kept one gone")
	}
	db, err = open(path, make([]byte, 32), migrations)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	if err := db.View(func(tx *Tx) error {
		return tx.ForEach("b", func(string, []byte) error { n++; return nil })
	}); err != nil || n != 1000 {
		t.Fatalf("after reopening: %d records, %v", n, err)
	}
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Fatalf("bbolt check: %v", err)
	}
}
