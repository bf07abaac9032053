package store

import (
	"bytes"
	"path/filepath"
	"testing"
)

// FuzzUnseal feeds untrusted bytes (a tampered or corrupted file) to Unseal:
// it must return an error or the exact sealed plaintext, and never panic.
func FuzzUnseal(f *testing.F) {
	db, err := Open(filepath.Join(f.TempDir(), "fuzz.db"), testKey(7))
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	good, err := db.Seal([]byte("secret"), "fuzz/ad")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, "fuzz/ad")
	f.Add(good[:12], "fuzz/ad")
	f.Add([]byte{}, "")
	f.Add(bytes.Repeat([]byte{0xff}, 64), "x")
	f.Fuzz(func(t *testing.T, sealed []byte, ad string) {
		pt, err := db.Unseal(sealed, ad)
		if err != nil {
			if pt != nil {
				t.Fatal("plaintext returned with an error")
			}
			return
		}
		// Forging a GCM tag is infeasible: only a value this key sealed
		// (the seed; each fuzz worker seals its own) may open.
		if ad != "fuzz/ad" || string(pt) != "secret" {
			t.Fatalf("forged value opened: %x ad %q -> %q", sealed, ad, pt)
		}
	})
}
