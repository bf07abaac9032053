package privacy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Mode is how a category stores IP addresses.
type Mode string

// Modes.
const (
	// Full stores the address as it is.
	Full Mode = "none"
	// Truncate keeps the network only: IPv4 /24, IPv6 /48.
	Truncate Mode = "truncate"
	// Hash stores HMAC-SHA256(key, address) cut to 64 bits: the same
	// source links up while the key lives, but the address cannot be read
	// back. The key changes every retention period and is deleted once no
	// entry hashed with it can be left, so old hashes become unlinkable.
	Hash Mode = "hash"
)

func (m Mode) valid() bool { return m == Full || m == Truncate || m == Hash }

// keysBucket holds the hash keys, sealed with the device key, one per
// category and period: "<category>/<period>".
const keysBucket = "privacy.keys"

// TruncateAddr returns a's network: IPv4 /24, IPv6 /48.
func TruncateAddr(a netip.Addr) string {
	a = a.Unmap()
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return "invalid"
	}
	return p.String()
}

// hasher keeps one category's keys of the current and next period in
// memory: the write paths call the anonymiser inside their own store
// transactions, so it must never open the store itself. prepare (at
// registration, on a setting change and at every sweep) loads or creates
// them ahead of time.
type hasher struct {
	mu   sync.Mutex
	keys map[int64][]byte
}

// periodOf numbers the key period t falls in; days is the category's
// retention (0, keep forever: a 30-day key period still rotates the key).
func periodOf(t time.Time, days int) int64 {
	if days <= 0 {
		days = 30
	}
	return t.Unix() / (int64(days) * 86400)
}

func keyName(category string, period int64) string {
	return category + "/" + strconv.FormatInt(period, 10)
}

// prepare makes sure the keys of now's period and the next one are in
// memory, creating and sealing them in the store on first use.
func (h *hasher) prepare(db *store.DB, category string, now time.Time, days int) error {
	cur := periodOf(now, days)
	keys := map[int64][]byte{}
	err := db.Update(func(tx *store.Tx) error {
		for _, p := range []int64{cur, cur + 1} {
			name := keyName(category, p)
			k, ok, err := tx.GetSecret(keysBucket, name)
			if err != nil {
				return err
			}
			if !ok {
				k = make([]byte, 32)
				if _, err := rand.Read(k); err != nil {
					return err
				}
				if err := tx.PutSecret(keysBucket, name, k); err != nil {
					return err
				}
			}
			keys[p] = k
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("privacy: hash keys of %s: %w", category, err)
	}
	h.mu.Lock()
	h.keys = keys
	h.mu.Unlock()
	return nil
}

func (h *hasher) key(period int64) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.keys[period]
}

// hashAddr is "h<period>:<16 hex digits>".
func hashAddr(key []byte, period int64, a netip.Addr) string {
	m := hmac.New(sha256.New, key)
	b, _ := a.Unmap().MarshalBinary()
	m.Write(b)
	return "h" + strconv.FormatInt(period, 10) + ":" + hex.EncodeToString(m.Sum(nil)[:8])
}

// KeysBucket holds the sealed keys of the keyed address hashes, for
// backups (see ResealKeys).
const KeysBucket = keysBucket

// ResealKeys is the store.Resealer of KeysBucket: the keys move with the
// logs whose hashes they made, so a subject search still finds them.
var ResealKeys = store.SecretResealer(keysBucket, func(string) bool { return true })
