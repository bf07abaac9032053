// Package store owns /data/edgepbx.db, the appliance's one bbolt file. Other
// packages keep their state in buckets they name, through this API only.
// Secrets are sealed with the device key (AES-256-GCM) before they are stored.
package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout version this build writes. Open migrates older
// files forward and refuses newer ones, so a downgrade never corrupts state.
// It always equals len(migrations) (a test checks it).
const SchemaVersion = 1

// MaxBackupBytes bounds Backup: a database larger than this is refused
// rather than streamed, so a runaway file cannot fill the receiver or hold a
// read transaction (which blocks bbolt from growing its mmap) for long.
const MaxBackupBytes = 256 << 20

// maxSealed bounds what Unseal accepts; secrets are keys and hashes, not blobs.
const maxSealed = 1 << 20

const metaBucket = "meta"

var (
	// ErrNewerSchema means the file was written by a newer firmware.
	ErrNewerSchema = errors.New("store: database schema is newer than this firmware")
	// ErrTooLarge means a value or the database exceeds a fixed bound.
	ErrTooLarge = errors.New("store: too large")
	// ErrCorrupt means the file failed bbolt's consistency check or did
	// not open as a database at all. Nothing was written to it; the owner
	// restores a backup or resets the box (the daemon never starts empty).
	ErrCorrupt = errors.New("store: database file is damaged")
	// ErrUnseal means a sealed value did not open: wrong key, wrong place
	// (associated data) or tampered bytes. Which one is deliberately not said.
	ErrUnseal = errors.New("store: sealed value does not open")
)

// DB is an open store.
type DB struct {
	bolt *bolt.DB
	aead cipher.AEAD
	// readers counts the read transactions open through this API by the
	// generation they started in, so Scrub can wait for the ones old
	// enough to still see a freed page (scrub.go).
	readers readerGens
}

// Open opens (creating if needed) the store at path. sealKey is the 32-byte
// device key used to seal secrets.
func Open(path string, sealKey []byte) (*DB, error) {
	return open(path, sealKey, migrations)
}

func open(path string, sealKey []byte, steps []Migration) (*DB, error) {
	if len(sealKey) != 32 {
		return nil, fmt.Errorf("store: device key must be 32 bytes, got %d", len(sealKey))
	}
	block, err := aes.NewCipher(sealKey)
	if err != nil {
		return nil, fmt.Errorf("store: seal cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("store: seal cipher: %w", err)
	}
	b, err := openChecked(path)
	if err != nil {
		return nil, err
	}
	db := &DB{bolt: b, aead: aead}
	if err := db.migrate(steps); err != nil {
		b.Close()
		return nil, err
	}
	return db, nil
}

// Close closes the file.
func (db *DB) Close() error { return db.bolt.Close() }

// Path is the file the store lives in.
func (db *DB) Path() string { return db.bolt.Path() }

// Tx is a read or read-write transaction.
type Tx struct {
	tx *bolt.Tx
	db *DB
}

// Update runs fn in one read-write transaction; an error rolls everything back.
func (db *DB) Update(fn func(*Tx) error) error {
	return db.bolt.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx, db: db}) })
}

// Commits returns the id of the last committed write transaction: it grows
// by one per Update, so tests can check that writes which must stand or
// fall together (a change and its audit entry) commit in one.
func (db *DB) Commits() (uint64, error) {
	var id int
	err := db.bolt.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
	return uint64(id), err
}

// View runs fn in a read-only transaction.
func (db *DB) View(fn func(*Tx) error) error {
	defer db.readers.enter()()
	return db.bolt.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx, db: db}) })
}

// Get reads bucket/key as JSON into v. It reports false when the key is absent.
func (t *Tx) Get(bucket, key string, v any) (bool, error) {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return false, nil
	}
	raw := b.Get([]byte(key))
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("store: decode %s/%s: %w", bucket, key, err)
	}
	return true, nil
}

// Put writes v as JSON to bucket/key, creating the bucket if needed.
func (t *Tx) Put(bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: encode %s/%s: %w", bucket, key, err)
	}
	if bucket == "" || key == "" {
		return fmt.Errorf("store: empty bucket or key name (%q/%q)", bucket, key)
	}
	b, err := t.tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("store: bucket %s: %w", bucket, err)
	}
	if err := b.Put([]byte(key), raw); err != nil {
		return fmt.Errorf("store: put %s/%s: %w", bucket, key, err)
	}
	return nil
}

// Delete removes bucket/key; a missing key is not an error.
func (t *Tx) Delete(bucket, key string) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.Delete([]byte(key))
}

// ForEach calls fn for every key in bucket, in key order. raw is only valid
// during the call (it points into the mmap); copy it to keep it.
func (t *Tx) ForEach(bucket string, fn func(key string, raw []byte) error) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error { return fn(string(k), v) })
}

// PutSecret seals secret with the device key, bound to bucket/key, and stores
// it there. Use it for HA1s, TOTP seeds and private keys.
func (t *Tx) PutSecret(bucket, key string, secret []byte) error {
	sealed, err := t.db.Seal(secret, secretAD(bucket, key))
	if err != nil {
		return err
	}
	return t.Put(bucket, key, sealed)
}

// GetSecret reads and unseals a value stored by PutSecret. It reports false
// when the key is absent; a value that does not open is an error.
func (t *Tx) GetSecret(bucket, key string) ([]byte, bool, error) {
	var sealed []byte
	ok, err := t.Get(bucket, key, &sealed)
	if err != nil || !ok {
		return nil, ok, err
	}
	pt, err := t.db.Unseal(sealed, secretAD(bucket, key))
	if err != nil {
		return nil, false, err
	}
	return pt, true, nil
}

func secretAD(bucket, key string) string { return "store/" + bucket + "/" + key }

// Seal encrypts a secret for storage; ad binds it to its place (e.g. "sip/ha1/101")
// so a sealed value copied to another key does not open.
func (db *DB) Seal(plaintext []byte, ad string) ([]byte, error) {
	if len(plaintext) > maxSealed {
		return nil, fmt.Errorf("%w: secret of %d bytes (max %d)", ErrTooLarge, len(plaintext), maxSealed)
	}
	nonce := make([]byte, db.aead.NonceSize(), db.aead.NonceSize()+len(plaintext)+db.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("store: seal nonce: %w", err)
	}
	return db.aead.Seal(nonce, nonce, plaintext, []byte(ad)), nil
}

// Unseal opens a value made by Seal with the same ad. The input is treated as
// untrusted: any length or content gives a plaintext or an error, nothing else.
func (db *DB) Unseal(sealed []byte, ad string) ([]byte, error) {
	n := db.aead.NonceSize()
	if len(sealed) < n+db.aead.Overhead() {
		return nil, fmt.Errorf("%w: %s: %d bytes is shorter than nonce and tag", ErrUnseal, ad, len(sealed))
	}
	if len(sealed) > maxSealed+n+db.aead.Overhead() {
		return nil, fmt.Errorf("%w: %s: sealed value of %d bytes", ErrTooLarge, ad, len(sealed))
	}
	pt, err := db.aead.Open(nil, sealed[:n], sealed[n:], []byte(ad))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrUnseal, ad)
	}
	return pt, nil
}

// Backup writes a consistent copy of the whole database to w (a plain bbolt
// file) from one read transaction, and returns the bytes written. Databases
// over MaxBackupBytes are refused before anything is written.
func (db *DB) Backup(w io.Writer) (int64, error) {
	var n int64
	defer db.readers.enter()()
	err := db.bolt.View(func(tx *bolt.Tx) error {
		if size := tx.Size(); size > MaxBackupBytes {
			return fmt.Errorf("%w: database is %d bytes, backup limit %d", ErrTooLarge, size, MaxBackupBytes)
		}
		var err error
		n, err = tx.WriteTo(w)
		if err != nil {
			return fmt.Errorf("store: backup: %w", err)
		}
		return nil
	})
	return n, err
}

// Buckets lists the top-level bucket names in key order.
func (t *Tx) Buckets() ([]string, error) {
	var out []string
	err := t.tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		out = append(out, string(name))
		return nil
	})
	return out, err
}

// DeleteBucket removes bucket and everything in it; a missing bucket is not
// an error.
func (t *Tx) DeleteBucket(bucket string) error {
	err := t.tx.DeleteBucket([]byte(bucket))
	if err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
		return fmt.Errorf("store: delete bucket %s: %w", bucket, err)
	}
	return nil
}

// PutRaw stores an already encoded value as is (a restore writes back what
// Get's encoding produced). It copies raw: bbolt keeps the slice until the
// transaction ends. Bulk loads in key order fill pages fully.
func (t *Tx) PutRaw(bucket, key string, raw []byte) error {
	if bucket == "" || key == "" {
		return fmt.Errorf("store: empty bucket or key name (%q/%q)", bucket, key)
	}
	b, err := t.tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("store: bucket %s: %w", bucket, err)
	}
	b.FillPercent = 0.9
	if err := b.Put([]byte(key), bytes.Clone(raw)); err != nil {
		return fmt.Errorf("store: put %s/%s: %w", bucket, key, err)
	}
	return nil
}

// SchemaTx reports the schema version recorded in the file, inside tx.
func (t *Tx) SchemaTx() (int, error) { return schemaOf(t.tx) }

// SealFunc transforms one sealed field: a backup passes an unseal with the
// source box's key, a restore a seal with the target's.
type SealFunc func(b []byte, ad string) ([]byte, error)

// Resealer rewrites the sealed fields of one stored value of a bucket its
// package owns: it calls f for each sealed field with the associated data
// the field is sealed under and returns the value re-encoded with f's
// results. It is how backups move secrets between device keys without
// knowing any package's layout.
type Resealer func(key string, raw []byte, f SealFunc) ([]byte, error)

// SecretResealer handles values written by PutSecret in bucket whose keys
// match isSecret.
func SecretResealer(bucket string, isSecret func(key string) bool) Resealer {
	return func(key string, raw []byte, f SealFunc) ([]byte, error) {
		if !isSecret(key) {
			return raw, nil
		}
		return ResealJSONBytes(raw, secretAD(bucket, key), f)
	}
}

// ResealJSONBytes reseals a value stored as one JSON-encoded byte string.
func ResealJSONBytes(raw []byte, ad string, f SealFunc) ([]byte, error) {
	var b []byte
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("store: decode sealed value: %w", err)
	}
	out, err := f(b, ad)
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

// maxCheckErrors bounds how many problems a damaged file's error lists.
const maxCheckErrors = 5

// openChecked opens the file and runs bbolt's consistency check (every
// page reachable once, free list consistent, keys ordered) in a read
// transaction before anything writes: a file damaged by a bad disk or a
// torn write is refused as ErrCorrupt instead of being used, migrated or
// grown. bbolt panics on some damaged pages; that is ErrCorrupt too.
func openChecked(path string) (b *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			if b != nil {
				b.Close()
			}
			b, err = nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, r)
		}
	}()
	// The timeout turns "another edgepbxd still holds the lock" into an
	// error instead of a hang.
	b, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) {
			return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	var problems []string
	err = b.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			if len(problems) < maxCheckErrors {
				problems = append(problems, e.Error())
			}
		}
		return nil
	})
	if err == nil && len(problems) > 0 {
		err = fmt.Errorf("%w: %s: %s", ErrCorrupt, path, strings.Join(problems, "; "))
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// BucketSize is what one bucket holds.
type BucketSize struct {
	Keys  int   `json:"keys"`
	Bytes int64 `json:"bytes"` // bytes of its pages in use (keys, values, headers)
}

// BucketSize reports how much bucket holds; an absent bucket is empty.
func (db *DB) BucketSize(bucket string) (BucketSize, error) {
	var s BucketSize
	defer db.readers.enter()()
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		st := b.Stats()
		s = BucketSize{Keys: st.KeyN, Bytes: int64(st.BranchInuse + st.LeafInuse + st.InlineBucketInuse)}
		return nil
	})
	return s, err
}

// Pages is the file's page accounting: pages freed by deletions are
// reused by later writes (bbolt does not shrink the file), so Free going up
// after a purge is the evidence that the data's pages were released.
type Pages struct {
	PageSize int   `json:"page_size"`
	Total    int64 `json:"total"` // pages in the file
	Free     int   `json:"free"`  // on the freelist, reusable
	Pending  int   `json:"pending"`
	InUse    int64 `json:"in_use"`
}

// Pages reports the file's page accounting now.
func (db *DB) Pages() (Pages, error) {
	var p Pages
	defer db.readers.enter()()
	err := db.bolt.View(func(tx *bolt.Tx) error {
		st := db.bolt.Stats()
		p.PageSize = db.bolt.Info().PageSize
		p.Total = tx.Size() / int64(p.PageSize)
		p.Free, p.Pending = st.FreePageN, st.PendingPageN
		p.InUse = p.Total - int64(p.Free+p.Pending)
		return nil
	})
	return p, err
}
