package sipedge

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/store"
)

const extBucket = "sip.extensions"

// MinPasswordLen is the shortest SIP password Extensions accepts.
const MinPasswordLen = 10

// extRecord is the stored form: only HA1s, each sealed with the device key.
type extRecord struct {
	User   string `json:"user"`
	Realm  string `json:"realm"`
	MD5    []byte `json:"ha1_md5"`
	SHA256 []byte `json:"ha1_sha256"`
}

// Extensions owns the SIP credentials in bucket sip.extensions. The
// password is never stored: only HA1 (MD5 and SHA-256) for the realm.
type Extensions struct {
	db    *store.DB
	realm string

	mu  sync.RWMutex
	ha1 map[string][2]string // user -> {MD5, SHA-256}
}

func ha1AD(alg, user string) string { return "sip/ha1/" + alg + "/" + user }

// LoadExtensions reads and unseals all extensions of realm.
func LoadExtensions(db *store.DB, realm string) (*Extensions, error) {
	e := &Extensions{db: db, realm: realm, ha1: map[string][2]string{}}
	err := db.View(func(tx *store.Tx) error {
		return tx.ForEach(extBucket, func(_ string, raw []byte) error {
			var r extRecord
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("decode extension: %w", err)
			}
			if r.Realm != realm {
				return nil // HA1 of another realm cannot verify anything here
			}
			md, err := db.Unseal(r.MD5, ha1AD(AlgMD5, r.User))
			if err != nil {
				return err
			}
			sh, err := db.Unseal(r.SHA256, ha1AD(AlgSHA256, r.User))
			if err != nil {
				return err
			}
			e.ha1[r.User] = [2]string{string(md), string(sh)}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("sip: load extensions: %w", err)
	}
	return e, nil
}

// Set creates or changes an extension's password.
func (e *Extensions) Set(user, password string) error { return e.SetWith(user, password, nil) }

// SetWith is Set with also run in the same write transaction (the caller's
// audit entry): the new password and its record commit together or not at
// all.
func (e *Extensions) SetWith(user, password string, also func(*store.Tx) error) error {
	if !pbxconfig.ValidSIPUser(user) {
		return fmt.Errorf("sip: extension %q: 1-64 of A-Z a-z 0-9 . _ + -", user)
	}
	if len(password) < MinPasswordLen || len(password) > 128 {
		return fmt.Errorf("sip: extension %s: password must be %d-128 characters", user, MinPasswordLen)
	}
	md := HA1(AlgMD5, user, e.realm, password)
	sh := HA1(AlgSHA256, user, e.realm, password)
	smd, err := e.db.Seal([]byte(md), ha1AD(AlgMD5, user))
	if err != nil {
		return err
	}
	ssh, err := e.db.Seal([]byte(sh), ha1AD(AlgSHA256, user))
	if err != nil {
		return err
	}
	rec := extRecord{User: user, Realm: e.realm, MD5: smd, SHA256: ssh}
	err = e.db.Update(func(tx *store.Tx) error {
		if err := tx.Put(extBucket, user, rec); err != nil {
			return err
		}
		if also == nil {
			return nil
		}
		return also(tx)
	})
	if err != nil {
		return fmt.Errorf("sip: store extension %s: %w", user, err)
	}
	e.mu.Lock()
	e.ha1[user] = [2]string{md, sh}
	e.mu.Unlock()
	return nil
}

// Delete removes an extension.
func (e *Extensions) Delete(user string) error { return e.DeleteWith(user, nil) }

// DeleteWith is Delete with also run in the same write transaction.
func (e *Extensions) DeleteWith(user string, also func(*store.Tx) error) error {
	err := e.db.Update(func(tx *store.Tx) error {
		if err := tx.Delete(extBucket, user); err != nil {
			return err
		}
		if also == nil {
			return nil
		}
		return also(tx)
	})
	if err != nil {
		return fmt.Errorf("sip: delete extension %s: %w", user, err)
	}
	e.mu.Lock()
	delete(e.ha1, user)
	e.mu.Unlock()
	return nil
}

// List returns the extension names in order.
func (e *Extensions) List() []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]string, 0, len(e.ha1))
	for u := range e.ha1 {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

// HA1 implements HA1Source.
func (e *Extensions) HA1(user, alg string) (string, bool) {
	e.mu.RLock()
	h, ok := e.ha1[user]
	e.mu.RUnlock()
	if !ok {
		return "", false
	}
	if alg == AlgSHA256 {
		return h[1], true
	}
	return h[0], true
}

var errNoTrunkSecret = errors.New("sip: no trunk password stored")

const trunkBucket = "sip.trunks"

// SetTrunkPassword stores the password for an outbound trunk registration,
// sealed (an ITSP needs the password itself, not an HA1).
func SetTrunkPassword(db *store.DB, trunk, password string) error {
	sealed, err := db.Seal([]byte(password), "sip/trunk/"+trunk)
	if err != nil {
		return err
	}
	return db.Update(func(tx *store.Tx) error { return tx.Put(trunkBucket, trunk, sealed) })
}

func trunkPassword(db *store.DB, trunk string) (string, error) {
	var sealed []byte
	var found bool
	err := db.View(func(tx *store.Tx) error {
		var err error
		found, err = tx.Get(trunkBucket, trunk, &sealed)
		return err
	})
	if err != nil {
		return "", err
	}
	if !found {
		return "", fmt.Errorf("%w for %s", errNoTrunkSecret, trunk)
	}
	pw, err := db.Unseal(sealed, "sip/trunk/"+trunk)
	if err != nil {
		return "", err
	}
	return string(pw), nil
}
