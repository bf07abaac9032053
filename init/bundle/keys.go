package bundle

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/edgepbx/edgepbx/init/strictjson"
)

// Key roles. A release key signs ordinary updates; an emergency key may
// also sign a downgrade below the box's floor (audited on the box).
const (
	RoleRelease   = "release"
	RoleEmergency = "emergency"
)

// KeyringPath is where the image carries the trusted public keys.
const KeyringPath = "/etc/edgepbx/update-keys.json"

// Bounds of a keyring file.
const (
	MaxKeyringFile = 16 << 10
	maxKeys        = 16
)

// Key is a trusted public key.
type Key struct {
	ID     string
	Role   string
	Public ed25519.PublicKey
}

// KeyID is the first 8 bytes of SHA-256(public key), in hex.
func KeyID(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:8])
}

// Keyring is the set of public keys a box trusts.
type Keyring struct {
	keys map[string]Key
}

// Lookup returns the key with this id.
func (k *Keyring) Lookup(id string) (Key, bool) {
	if k == nil {
		return Key{}, false
	}
	key, ok := k.keys[id]
	return key, ok
}

// Len is the number of keys.
func (k *Keyring) Len() int { return len(k.keys) }

// KeyringFile is the JSON form of a keyring.
type KeyringFile struct {
	Format int          `json:"format"`
	Keys   []KeyringKey `json:"keys"`
}

// KeyringKey is one public key in a KeyringFile.
type KeyringKey struct {
	ID     string `json:"id"`
	Role   string `json:"role"`
	Public []byte `json:"public"`
}

// ParseKeyring decodes a keyring file strictly. Every key's id must be
// its hash: an id cannot be made to point at another key.
func ParseKeyring(b []byte) (*Keyring, error) {
	if len(b) > MaxKeyringFile {
		return nil, fmt.Errorf("keyring: %d bytes over %d", len(b), MaxKeyringFile)
	}
	var f KeyringFile
	if err := strictjson.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	if f.Format != Format {
		return nil, fmt.Errorf("keyring: format %d, want %d", f.Format, Format)
	}
	if len(f.Keys) == 0 || len(f.Keys) > maxKeys {
		return nil, fmt.Errorf("keyring: %d keys (1..%d)", len(f.Keys), maxKeys)
	}
	kr := &Keyring{keys: make(map[string]Key, len(f.Keys))}
	for i, k := range f.Keys {
		if len(k.Public) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("keyring: keys[%d].public: %d bytes, want %d", i, len(k.Public), ed25519.PublicKeySize)
		}
		if k.Role != RoleRelease && k.Role != RoleEmergency {
			return nil, fmt.Errorf("keyring: keys[%d].role: %q (release or emergency)", i, k.Role)
		}
		if id := KeyID(k.Public); k.ID != id {
			return nil, fmt.Errorf("keyring: keys[%d].id: %q is not the key's id %s", i, k.ID, id)
		}
		if _, dup := kr.keys[k.ID]; dup {
			return nil, fmt.Errorf("keyring: keys[%d]: key %s twice", i, k.ID)
		}
		kr.keys[k.ID] = Key{ID: k.ID, Role: k.Role, Public: ed25519.PublicKey(k.Public)}
	}
	return kr, nil
}

// LoadKeyring reads a keyring file.
func LoadKeyring(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxKeyringFile+1))
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	return ParseKeyring(b)
}

// PrivateKey is a vendor signing key. It lives only on the vendor's
// machine, in a file of mode 0600.
type PrivateKey struct {
	ID      string
	Role    string
	Private ed25519.PrivateKey
}

// Public returns the key's public half.
func (p PrivateKey) Public() KeyringKey {
	return KeyringKey{ID: p.ID, Role: p.Role, Public: p.Private.Public().(ed25519.PublicKey)}
}

type privateKeyFile struct {
	Format int    `json:"format"`
	ID     string `json:"id"`
	Role   string `json:"role"`
	Seed   []byte `json:"seed"`
}

// GenerateKey makes a new signing key of a role.
func GenerateKey(role string) (PrivateKey, error) {
	if role != RoleRelease && role != RoleEmergency {
		return PrivateKey{}, fmt.Errorf("key role %q: release or emergency", role)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return PrivateKey{}, err
	}
	return PrivateKey{ID: KeyID(pub), Role: role, Private: priv}, nil
}

// ErrKeyMode refuses a private key file others can read.
var ErrKeyMode = errors.New("private key file readable by others (want mode 0600)")

// WritePrivateKey writes dir/<id>.key with mode 0600; it never replaces
// an existing file.
func WritePrivateKey(dir string, k PrivateKey) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	b, err := json.Marshal(privateKeyFile{Format: Format, ID: k.ID, Role: k.Role, Seed: k.Private.Seed()})
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, k.ID+".key")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("write key: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return "", fmt.Errorf("write key %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("write key %s: %w", p, err)
	}
	return p, f.Close()
}

// ReadPrivateKey reads a key file, refusing one whose mode lets group or
// others read it.
func ReadPrivateKey(path string) (PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("read key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return PrivateKey{}, fmt.Errorf("read key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return PrivateKey{}, fmt.Errorf("read key %s: %w (mode %v)", path, ErrKeyMode, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 4<<10))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("read key %s: %w", path, err)
	}
	var kf privateKeyFile
	if err := strictjson.Unmarshal(b, &kf); err != nil {
		return PrivateKey{}, fmt.Errorf("read key %s: %w", path, err)
	}
	if kf.Format != Format || len(kf.Seed) != ed25519.SeedSize {
		return PrivateKey{}, fmt.Errorf("read key %s: not a format-%d Ed25519 seed", path, Format)
	}
	priv := ed25519.NewKeyFromSeed(kf.Seed)
	k := PrivateKey{ID: KeyID(priv.Public().(ed25519.PublicKey)), Role: kf.Role, Private: priv}
	if k.ID != kf.ID {
		return PrivateKey{}, fmt.Errorf("read key %s: id %s is not the key's id %s", path, kf.ID, k.ID)
	}
	if k.Role != RoleRelease && k.Role != RoleEmergency {
		return PrivateKey{}, fmt.Errorf("read key %s: role %q", path, k.Role)
	}
	return k, nil
}

// MarshalKeyring encodes public keys as a keyring file.
func MarshalKeyring(keys []KeyringKey) ([]byte, error) {
	b, err := json.MarshalIndent(KeyringFile{Format: Format, Keys: keys}, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := ParseKeyring(b); err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
