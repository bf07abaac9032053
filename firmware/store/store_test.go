package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgepbx.db")
	db, err := Open(path, testKey(1))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

type record struct {
	Name  string
	Count int
	Tags  []string
}

func TestRoundTrip(t *testing.T) {
	db, _ := openTemp(t)
	tests := []struct {
		name   string
		bucket string
		key    string
		in     any
		out    func() any
	}{
		{"string", "test.a", "k1", "hello", func() any { return new(string) }},
		{"int", "test.a", "k2", 42, func() any { return new(int) }},
		{"struct", "test.b", "101", record{"alice", 3, []string{"x", "y"}}, func() any { return new(record) }},
		{"bytes", "test.b", "raw", []byte{0, 1, 2, 255}, func() any { return new([]byte) }},
		{"map", "test.c", "m", map[string]int{"a": 1}, func() any { return new(map[string]int) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := db.Update(func(tx *Tx) error { return tx.Put(tc.bucket, tc.key, tc.in) }); err != nil {
				t.Fatalf("Put: %v", err)
			}
			out := tc.out()
			err := db.View(func(tx *Tx) error {
				ok, err := tx.Get(tc.bucket, tc.key, out)
				if !ok && err == nil {
					return errors.New("key absent after Put")
				}
				return err
			})
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			got := fmt.Sprint(deref(out))
			if want := fmt.Sprint(tc.in); got != want {
				t.Fatalf("round trip: got %s, want %s", got, want)
			}
		})
	}

	t.Run("absent", func(t *testing.T) {
		var s string
		err := db.View(func(tx *Tx) error {
			for _, bk := range [][2]string{{"test.a", "nope"}, {"no.bucket", "k"}} {
				ok, err := tx.Get(bk[0], bk[1], &s)
				if ok || err != nil {
					return fmt.Errorf("Get(%s/%s) = %v, %v; want false, nil", bk[0], bk[1], ok, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("delete and foreach order", func(t *testing.T) {
		err := db.Update(func(tx *Tx) error {
			for _, k := range []string{"c", "a", "b", "d"} {
				if err := tx.Put("test.order", k, k); err != nil {
					return err
				}
			}
			if err := tx.Delete("test.order", "d"); err != nil {
				return err
			}
			return tx.Delete("no.bucket", "x")
		})
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		err = db.View(func(tx *Tx) error {
			return tx.ForEach("test.order", func(k string, _ []byte) error { keys = append(keys, k); return nil })
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(keys, ","); got != "a,b,c" {
			t.Fatalf("ForEach keys = %s, want a,b,c", got)
		}
	})
	t.Run("error rolls back", func(t *testing.T) {
		boom := errors.New("boom")
		err := db.Update(func(tx *Tx) error {
			if err := tx.Put("test.rollback", "k", 1); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update error = %v, want boom", err)
		}
		var v int
		db.View(func(tx *Tx) error {
			ok, _ := tx.Get("test.rollback", "k", &v)
			if ok {
				t.Error("value of a failed transaction is visible")
			}
			return nil
		})
	})
	t.Run("bad json", func(t *testing.T) {
		db.Update(func(tx *Tx) error { return tx.Put("test.json", "s", "text") })
		var n int
		err := db.View(func(tx *Tx) error { _, err := tx.Get("test.json", "s", &n); return err })
		if err == nil {
			t.Fatal("decoding a string into an int succeeded")
		}
	})
}

func deref(v any) any {
	switch p := v.(type) {
	case *string:
		return *p
	case *int:
		return *p
	case *record:
		return *p
	case *[]byte:
		return *p
	case *map[string]int:
		return *p
	}
	return v
}

func TestSealing(t *testing.T) {
	db, path := openTemp(t)
	other, err := Open(filepath.Join(filepath.Dir(path), "other.db"), testKey(2))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	secret := []byte("HA1 of extension 101")
	sealed, err := db.Seal(secret, "sip/ha1/101")
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)/2] ^= 1
	tests := []struct {
		name    string
		db      *DB
		sealed  []byte
		ad      string
		wantErr error
	}{
		{"right key and ad", db, sealed, "sip/ha1/101", nil},
		{"wrong ad", db, sealed, "sip/ha1/102", ErrUnseal},
		{"wrong key", other, sealed, "sip/ha1/101", ErrUnseal},
		{"tampered", db, flipped, "sip/ha1/101", ErrUnseal},
		{"truncated", db, sealed[:len(sealed)-1], "sip/ha1/101", ErrUnseal},
		{"too short", db, sealed[:10], "sip/ha1/101", ErrUnseal},
		{"empty", db, nil, "sip/ha1/101", ErrUnseal},
		{"too long", db, make([]byte, maxSealed+100), "x", ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := tc.db.Unseal(tc.sealed, tc.ad)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Unseal error = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && !bytes.Equal(pt, secret) {
				t.Fatalf("Unseal = %q, want %q", pt, secret)
			}
			if tc.wantErr != nil && pt != nil {
				t.Fatalf("failed Unseal returned plaintext %q", pt)
			}
		})
	}
	if again, _ := db.Seal(secret, "sip/ha1/101"); bytes.Equal(again, sealed) {
		t.Fatal("two seals of the same secret are identical: nonce reused")
	}
	if _, err := db.Seal(make([]byte, maxSealed+1), "x"); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Seal of oversize secret: %v, want ErrTooLarge", err)
	}
}

func TestSecrets(t *testing.T) {
	db, _ := openTemp(t)
	err := db.Update(func(tx *Tx) error { return tx.PutSecret("test.secrets", "a", []byte("seed-a")) })
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error {
		got, ok, err := tx.GetSecret("test.secrets", "a")
		if err != nil || !ok || string(got) != "seed-a" {
			return fmt.Errorf("GetSecret = %q, %v, %v", got, ok, err)
		}
		if _, ok, err := tx.GetSecret("test.secrets", "missing"); ok || err != nil {
			return fmt.Errorf("GetSecret(missing) = %v, %v", ok, err)
		}
		// The stored bytes must not contain the plaintext.
		return tx.ForEach("test.secrets", func(_ string, raw []byte) error {
			if bytes.Contains(raw, []byte("seed-a")) {
				return errors.New("plaintext visible in the file")
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	// A sealed value copied to another key must not open there.
	err = db.Update(func(tx *Tx) error {
		var raw []byte
		if _, err := tx.Get("test.secrets", "a", &raw); err != nil {
			return err
		}
		return tx.Put("test.secrets", "b", raw)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error { _, _, err := tx.GetSecret("test.secrets", "b"); return err })
	if !errors.Is(err, ErrUnseal) {
		t.Fatalf("moved secret: %v, want ErrUnseal", err)
	}
}

func TestOpenBadKey(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		path := filepath.Join(t.TempDir(), "x.db")
		if _, err := Open(path, make([]byte, n)); err == nil {
			t.Fatalf("Open with %d-byte key succeeded", n)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("Open with a bad key created the file")
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edgepbx.db")
	db, err := Open(path, testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.PutSecret("test.r", "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *Tx) error {
		v, ok, err := tx.GetSecret("test.r", "k")
		if err != nil || !ok || string(v) != "v" {
			return fmt.Errorf("after reopen: %q %v %v", v, ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := db.Schema(); err != nil || v != SchemaVersion {
		t.Fatalf("Schema = %d, %v; want %d", v, err, SchemaVersion)
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func setSchema(t *testing.T, path string, v string) {
	t.Helper()
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Update(func(tx *bolt.Tx) error {
		m, err := tx.CreateBucketIfNotExists([]byte(metaBucket))
		if err != nil {
			return err
		}
		return m.Put([]byte("schema"), []byte(v))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSchemaRefusedFileUntouched(t *testing.T) {
	tests := []struct {
		name    string
		schema  string
		wantErr error
	}{
		{"newer", strconv.Itoa(SchemaVersion + 1), ErrNewerSchema},
		{"much newer", "1000", ErrNewerSchema},
		{"garbage", `"two"`, nil},
		{"negative", "-1", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "edgepbx.db")
			db, err := Open(path, testKey(1))
			if err != nil {
				t.Fatal(err)
			}
			db.Update(func(tx *Tx) error { return tx.Put("test.k", "k", "v") })
			db.Close()
			setSchema(t, path, tc.schema)
			before := fileHash(t, path)
			_, err = Open(path, testKey(1))
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("Open error = %v, want %v", err, tc.wantErr)
			}
			if fileHash(t, path) != before {
				t.Fatal("refused Open modified the file")
			}
		})
	}
}

func TestMigrationsMatchSchemaVersion(t *testing.T) {
	if len(migrations) != SchemaVersion {
		t.Fatalf("len(migrations) = %d, SchemaVersion = %d", len(migrations), SchemaVersion)
	}
}

func TestMigrations(t *testing.T) {
	v1 := migrations
	// v2 renames every key of test.old into test.new with an upper-case value.
	v2 := append(append([]Migration{}, v1...), Migration{Name: "move old to new", Apply: func(tx *Tx) error {
		var keys []string
		if err := tx.ForEach("test.old", func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
			return err
		}
		for _, k := range keys {
			var s string
			if _, err := tx.Get("test.old", k, &s); err != nil {
				return err
			}
			if err := tx.Put("test.new", k, strings.ToUpper(s)); err != nil {
				return err
			}
			if err := tx.Delete("test.old", k); err != nil {
				return err
			}
		}
		return nil
	}})
	failing := append(append([]Migration{}, v1...), Migration{Name: "fails halfway", Apply: func(tx *Tx) error {
		if err := tx.Put("test.new", "partial", "x"); err != nil {
			return err
		}
		return errors.New("disk says no")
	}})

	path := filepath.Join(t.TempDir(), "edgepbx.db")
	db, err := open(path, testKey(1), v1)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *Tx) error { return tx.Put("test.old", "a", "alpha") })
	db.Close()

	// A failing step leaves the file at the old version with the old data.
	before := fileHash(t, path)
	if _, err := open(path, testKey(1), failing); err == nil || !strings.Contains(err.Error(), "fails halfway") {
		t.Fatalf("failing migration: err = %v", err)
	}
	if fileHash(t, path) != before {
		t.Fatal("failed migration modified the file")
	}
	db, err = open(path, testKey(1), v1)
	if err != nil {
		t.Fatalf("reopen after failed migration: %v", err)
	}
	if v, _ := db.Schema(); v != 1 {
		t.Fatalf("schema after failed migration = %d, want 1", v)
	}
	db.View(func(tx *Tx) error {
		var s string
		if ok, _ := tx.Get("test.new", "partial", &s); ok {
			t.Error("partial migration is visible")
		}
		return nil
	})
	db.Close()

	db, err = open(path, testKey(1), v2)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, _ := db.Schema(); v != 2 {
		t.Fatalf("schema after migration = %d, want 2", v)
	}
	err = db.View(func(tx *Tx) error {
		var s string
		if ok, err := tx.Get("test.new", "a", &s); !ok || err != nil || s != "ALPHA" {
			return fmt.Errorf("migrated value = %q %v %v", s, ok, err)
		}
		if ok, _ := tx.Get("test.old", "a", &s); ok {
			return errors.New("old key still present")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	// The v1 firmware now refuses this file.
	if _, err := open(path, testKey(1), v1); !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("old firmware on migrated file: %v, want ErrNewerSchema", err)
	}
}

func TestBackup(t *testing.T) {
	db, path := openTemp(t)
	err := db.Update(func(tx *Tx) error {
		for i := range 100 {
			if err := tx.Put("test.bk", fmt.Sprintf("k%03d", i), i); err != nil {
				return err
			}
		}
		return tx.PutSecret("test.bk", "secret", []byte("s"))
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := db.Backup(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || n == 0 {
		t.Fatalf("Backup reported %d bytes, wrote %d", n, buf.Len())
	}
	copyPath := filepath.Join(filepath.Dir(path), "copy.db")
	if err := os.WriteFile(copyPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cp, err := Open(copyPath, testKey(1))
	if err != nil {
		t.Fatalf("open backup: %v", err)
	}
	defer cp.Close()
	err = cp.View(func(tx *Tx) error {
		var v int
		if ok, err := tx.Get("test.bk", "k099", &v); !ok || err != nil || v != 99 {
			return fmt.Errorf("k099 = %d %v %v", v, ok, err)
		}
		s, ok, err := tx.GetSecret("test.bk", "secret")
		if !ok || err != nil || string(s) != "s" {
			return fmt.Errorf("secret = %q %v %v", s, ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A failing writer gives an error, not a silent short backup.
	if _, err := db.Backup(failWriter{}); err == nil {
		t.Fatal("Backup to a failing writer succeeded")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// crashChildEnv makes the test binary act as a writer that the parent kills.
const crashChildEnv = "EDGEPBX_STORE_CRASH_CHILD"

// TestCrashChild is the child half of TestCrashSafety; it does nothing in a
// normal run.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashChildEnv)
	if path == "" {
		t.Skip("only runs as TestCrashSafety's child process")
	}
	db, err := Open(path, testKey(1))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	// Each transaction sets every key of the batch to the same generation,
	// so any mix of generations after a crash means a torn transaction.
	for gen := 1; ; gen++ {
		err := db.Update(func(tx *Tx) error {
			for k := range 20 {
				if err := tx.Put("test.crash", fmt.Sprintf("k%02d", k), gen); err != nil {
					return err
				}
			}
			// Some bulk so transactions span several pages.
			if err := tx.Put("test.bulk", strconv.Itoa(gen%50), strings.Repeat("x", 3000)); err != nil {
				return err
			}
			return tx.PutSecret("test.crash", "secret", []byte(strconv.Itoa(gen)))
		})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Println("committed", gen)
	}
}

func TestCrashSafety(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edgepbx.db")
	// 50 kills, as the issue asks; each reopen also runs the consistency
	// check, so "opens" means "passes bbolt's Check".
	for round := range 50 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill after a round-dependent number of commits, mid-stream.
		killAfter := 3 + (37*round)%60
		sc := bufio.NewScanner(out)
		last := 0
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "error") {
				t.Fatalf("child: %s", line)
			}
			if g, ok := strings.CutPrefix(line, "committed "); ok {
				last, _ = strconv.Atoi(g)
				if last >= killAfter {
					break
				}
			}
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		if last < killAfter {
			t.Fatalf("round %d: child stopped after %d commits", round, last)
		}

		db, err := Open(path, testKey(1))
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		err = db.View(func(tx *Tx) error {
			gens := map[int]int{}
			if err := tx.ForEach("test.crash", func(k string, raw []byte) error {
				if k == "secret" {
					return nil
				}
				g, err := strconv.Atoi(string(raw))
				if err != nil {
					return fmt.Errorf("key %s: %q", k, raw)
				}
				gens[g]++
				return nil
			}); err != nil {
				return err
			}
			if len(gens) != 1 {
				return fmt.Errorf("torn transaction: generations %v", gens)
			}
			var g int
			for g = range gens {
			}
			if g < last {
				return fmt.Errorf("committed generation %d lost (file has %d)", last, g)
			}
			s, ok, err := tx.GetSecret("test.crash", "secret")
			if err != nil || !ok || string(s) != strconv.Itoa(g) {
				return fmt.Errorf("secret = %q %v %v, want generation %d", s, ok, err, g)
			}
			return nil
		})
		db.Close()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}
