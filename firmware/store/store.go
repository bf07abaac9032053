// Package store owns /data/edgepbx.db, the appliance's one bbolt file. Other
// packages keep their state in buckets they name, through this API only.
// Secrets are sealed with the device key (AES-256-GCM) before they are stored.
package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout version this build writes. Open migrates older
// files forward and refuses newer ones, so a downgrade never corrupts state.
const SchemaVersion = 1

const metaBucket = "meta"

// ErrNewerSchema means the file was written by a newer firmware.
var ErrNewerSchema = errors.New("store: database schema is newer than this firmware")

// DB is an open store.
type DB struct {
	bolt *bolt.DB
	aead cipher.AEAD
}

// Open opens (creating if needed) the store at path. sealKey is the 32-byte
// device key used to seal secrets.
func Open(path string, sealKey []byte) (*DB, error) {
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
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db := &DB{bolt: b, aead: aead}
	if err := db.migrate(); err != nil {
		b.Close()
		return nil, err
	}
	return db, nil
}

func (db *DB) migrate() error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists([]byte(metaBucket))
		if err != nil {
			return fmt.Errorf("store: meta bucket: %w", err)
		}
		var have int
		if v := meta.Get([]byte("schema")); v != nil {
			if err := json.Unmarshal(v, &have); err != nil {
				return fmt.Errorf("store: read schema version: %w", err)
			}
		}
		if have > SchemaVersion {
			return fmt.Errorf("%w: file has %d, firmware knows %d", ErrNewerSchema, have, SchemaVersion)
		}
		// Migrations from have to SchemaVersion go here, one step each, inside
		// this transaction so a power cut leaves either the old or the new layout.
		v, _ := json.Marshal(SchemaVersion)
		return meta.Put([]byte("schema"), v)
	})
}

// Close closes the file.
func (db *DB) Close() error { return db.bolt.Close() }

// Tx is a read or read-write transaction.
type Tx struct{ tx *bolt.Tx }

// Update runs fn in one read-write transaction; an error rolls everything back.
func (db *DB) Update(fn func(*Tx) error) error {
	return db.bolt.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx}) })
}

// View runs fn in a read-only transaction.
func (db *DB) View(fn func(*Tx) error) error {
	return db.bolt.View(func(tx *bolt.Tx) error { return fn(&Tx{tx}) })
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
	b, err := t.tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("store: bucket %s: %w", bucket, err)
	}
	return b.Put([]byte(key), raw)
}

// Delete removes bucket/key; a missing key is not an error.
func (t *Tx) Delete(bucket, key string) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.Delete([]byte(key))
}

// ForEach calls fn for every key in bucket, in key order.
func (t *Tx) ForEach(bucket string, fn func(key string, raw []byte) error) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error { return fn(string(k), v) })
}

// Seal encrypts a secret for storage; ad binds it to its place (e.g. "sip/ha1/101")
// so a sealed value copied to another key does not open.
func (db *DB) Seal(plaintext []byte, ad string) ([]byte, error) {
	nonce := make([]byte, db.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("store: seal nonce: %w", err)
	}
	return db.aead.Seal(nonce, nonce, plaintext, []byte(ad)), nil
}

// Unseal opens a value made by Seal with the same ad.
func (db *DB) Unseal(sealed []byte, ad string) ([]byte, error) {
	n := db.aead.NonceSize()
	if len(sealed) < n+db.aead.Overhead() {
		return nil, errors.New("store: sealed value too short")
	}
	pt, err := db.aead.Open(nil, sealed[:n], sealed[n:], []byte(ad))
	if err != nil {
		return nil, fmt.Errorf("store: unseal %s: %w", ad, err)
	}
	return pt, nil
}
