package store

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// filledFile makes a store with enough data for many pages and returns
// the clean file's bytes and its page size.
func filledFile(t testing.TB, keys int) (string, []byte) {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	p := filepath.Join(t.TempDir(), "edgepbx.db")
	db, err := Open(p, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error {
		for i := range keys {
			if err := tx.Put("cdr.records", fmt.Sprintf("%08d", i), strings.Repeat("x", 300)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, raw
}

// TestOpenRefusesDamagedFile: a page overwritten, a torn file, both meta
// pages gone, or garbage are refused as ErrCorrupt, and the file is left
// byte for byte as it was (nothing migrates or grows a damaged file).
func TestOpenRefusesDamagedFile(t *testing.T) {
	_, clean := filledFile(t, 2000)
	const page = 4096
	if len(clean) < 40*page {
		t.Fatalf("file of %d bytes is too small for the test", len(clean))
	}
	key := make([]byte, 32)
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"branch or leaf page overwritten", func(b []byte) []byte {
			// Page ids are in each page header: zero a run of pages in the
			// middle so the tree points at pages that are not what it expects.
			for p := 10; p < 30; p++ {
				copy(b[p*page:(p+1)*page], make([]byte, page))
			}
			return b
		}},
		{"both meta pages damaged", func(b []byte) []byte {
			b[30] ^= 0xff
			b[page+30] ^= 0xff
			return b
		}},
		{"garbage", func(b []byte) []byte { return bytes.Repeat([]byte{0x5a}, len(b)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "edgepbx.db")
			bad := tc.damage(bytes.Clone(clean))
			if err := os.WriteFile(p, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := Open(p, key)
			if err == nil {
				db.Close()
				t.Fatal("damaged file opened")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v, want ErrCorrupt", err)
			}
			after, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, bad) {
				t.Fatal("refused file was modified")
			}
		})
	}
	// The clean file still opens: the check has no false alarm.
	p := filepath.Join(t.TempDir(), "edgepbx.db")
	if err := os.WriteFile(p, clean, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := Open(p, key)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
}

// BenchmarkOpenCheck is the cost the consistency check adds to each start,
// for a store of about 100 MB (200,000 values of 300 bytes); it scales with
// the number of pages.
func BenchmarkOpenCheck(b *testing.B) {
	p, _ := filledFile(b, 200_000)
	fi, _ := os.Stat(p)
	key := make([]byte, 32)
	rand.Read(key)
	for b.Loop() {
		bl, err := openChecked(p)
		if err != nil {
			b.Fatal(err)
		}
		bl.Close()
	}
	b.ReportMetric(float64(fi.Size())/(1<<20), "db-MiB")
}
