// Package keys owns the box's key hierarchy in /data/identity: the device
// key (sealed to the TPM 2.0 where the board has one, else wrapped with an
// opt-in passphrase, else a plain file) and one data key per purpose
// (store secrets, media at rest, backups), each wrapped by the device key so
// that one can be erased or replaced alone. Only PID 1 uses this package:
// edgepbxd receives the unwrapped data keys on its bootstrap pipe and never
// sees the device key.
//
// What an attacker with the disk (or a copy of /data) gets:
//   - ProtTPM: nothing. The device key lives only inside the TPM, in a
//     persistent sealed object; /data holds a record naming it and the
//     wrapped data keys, which open only with it.
//   - ProtPassphrase: an offline guessing target (argon2id, 64 MiB, 3 passes
//     per guess); a strong passphrase holds.
//   - ProtNone: everything: the device key is a plain file next to the data.
package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Protection says what guards the device key.
type Protection string

const (
	ProtTPM        Protection = "tpm"
	ProtPassphrase Protection = "passphrase"
	ProtNone       Protection = "none"
)

// Purpose names a data key.
type Purpose string

const (
	Store  Purpose = "store"  // secrets sealed in the bbolt store
	Media  Purpose = "media"  // recordings and voicemail at rest
	Backup Purpose = "backup" // box-local backup material
)

// Purposes lists every data key, in the order they are created.
var Purposes = []Purpose{Store, Media, Backup}

// File names inside the identity directory.
const (
	// LegacyFile is the plaintext device key of firmware before the key
	// hierarchy. Its bytes become the store data key (so every sealed
	// secret still opens), and the file is overwritten and removed.
	LegacyFile = "device.key"
	// TPMFile names the TPM's persistent handle and the sealed object's
	// name; the key itself is only in the TPM.
	TPMFile = "device.key.tpm"
	// PassFile is the device key wrapped with an argon2id passphrase key.
	PassFile = "device.key.pass"
	// PlainFile is the device key in clear (no TPM, no passphrase).
	PlainFile = "device.kek"
	// DataKeyDir holds <purpose>.key, each wrapped by the device key.
	DataKeyDir = "keys"

	keyLen = 32
)

var (
	// ErrCorrupt: a key file exists but is unusable. Nothing is replaced.
	ErrCorrupt = errors.New("keys: corrupt key file")
	// ErrWrongTPM: the device key was sealed to a TPM other than this
	// one (disk moved to another box, or the TPM was cleared).
	ErrWrongTPM = errors.New("keys: the device key is sealed to another TPM")
	// ErrNoTPM: the device key is sealed to a TPM, and none was found.
	ErrNoTPM = errors.New("keys: the device key is sealed to a TPM and this box has none")
	// ErrPassphrase: the passphrase does not open the device key.
	ErrPassphrase = errors.New("keys: wrong passphrase")
	// ErrWrongKey: a data key does not open with this device key.
	ErrWrongKey = errors.New("keys: a data key does not open with this device key")
	// ErrTPMInUse: the disk carries an unprotected device key (plain or
	// legacy file) and this box's TPM already holds a different one. The
	// file is not trusted to replace it (it may have been planted); a
	// factory reset (Erase) frees the TPM.
	ErrTPMInUse = errors.New("keys: this box's TPM already holds another device key; the disk's unprotected key is not sealed over it")
)

// Options says which protection is available.
type Options struct {
	// TPM opens the TPM; nil means the board has none.
	TPM Opener
	// Passphrase is asked when the device key is passphrase-wrapped, or
	// when NewPassphrase is set and the key is not yet protected. nil:
	// passphrase-wrapped keys give ErrPassphrase.
	Passphrase func() (string, error)
	// NewPassphrase asks to protect an unprotected device key (ProtNone)
	// with a passphrase (the opt-in for boxes without a TPM).
	NewPassphrase bool
}

// Ring is the opened hierarchy.
type Ring struct {
	Protection Protection
	Created    bool // a new device key was made this boot
	Migrated   bool // a legacy plaintext device key was folded in and erased
	data       map[Purpose][]byte
}

// DataKey returns the 32-byte key for p.
func (r *Ring) DataKey(p Purpose) []byte { return r.data[p] }

// Open opens (creating on first boot, migrating a legacy plaintext key)
// the hierarchy in dir. It never replaces an existing key it cannot open.
func Open(dir string, o Options) (*Ring, error) {
	if err := os.MkdirAll(filepath.Join(dir, DataKeyDir), 0o700); err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	legacy, err := readKeyFile(dir, LegacyFile)
	if err != nil {
		return nil, err
	}
	r := &Ring{data: make(map[Purpose][]byte)}
	dev, err := r.openDevice(dir, o, legacy != nil)
	if err != nil {
		return nil, err
	}
	for _, p := range Purposes {
		k, err := openDataKey(dir, p, dev, legacy)
		if err != nil {
			return nil, err
		}
		r.data[p] = k
	}
	if legacy != nil {
		// The store key now holds the legacy bytes, wrapped: forget the clear copy.
		if err := wipeFile(dir, LegacyFile); err != nil {
			return nil, err
		}
		r.Migrated = true
	}
	return r, nil
}

func (r *Ring) openDevice(dir string, o Options, legacy bool) ([]byte, error) {
	plain, err := readKeyFile(dir, PlainFile)
	if err != nil {
		return nil, err
	}
	var dev []byte
	switch {
	case exists(dir, TPMFile):
		if o.TPM == nil {
			return nil, ErrNoTPM
		}
		if dev, err = tpmUnseal(dir, o.TPM); err != nil {
			return nil, err
		}
		r.Protection = ProtTPM
	case exists(dir, PassFile):
		if o.Passphrase == nil {
			return nil, fmt.Errorf("%w: no way to ask for it", ErrPassphrase)
		}
		pw, err := o.Passphrase()
		if err != nil {
			return nil, fmt.Errorf("keys: passphrase: %w", err)
		}
		if dev, err = unwrapPassphrase(dir, pw); err != nil {
			return nil, err
		}
		r.Protection = ProtPassphrase
	case plain != nil:
		dev, r.Protection = plain, ProtNone
	default:
		// First boot of this hierarchy. Wrapped data keys without any
		// device key mean a deleted key file: refuse rather than orphan them.
		for _, p := range Purposes {
			if exists(filepath.Join(dir, DataKeyDir), string(p)+".key") {
				return nil, fmt.Errorf("%w: wrapped data keys but no device key", ErrCorrupt)
			}
		}
		dev = make([]byte, keyLen)
		rand.Read(dev)
		r.Created = true
		r.Protection = ProtNone
	}
	// Upgrade an unprotected key: seal it when a TPM is present, or wrap
	// it with a passphrase when the admin opted in.
	if r.Protection == ProtNone {
		switch {
		case o.TPM != nil:
			// Only a key nobody has seen may evict one already in the TPM.
			if err := tpmSeal(dir, o.TPM, dev, r.Created && !legacy); err != nil {
				return nil, err
			}
			r.Protection = ProtTPM
		case o.NewPassphrase && o.Passphrase != nil:
			pw, err := o.Passphrase()
			if err != nil {
				return nil, fmt.Errorf("keys: passphrase: %w", err)
			}
			if err := wrapPassphrase(dir, pw, dev, defaultKDF); err != nil {
				return nil, err
			}
			r.Protection = ProtPassphrase
		case r.Created:
			// No protection available: the key is a plain file (what an
			// attacker with the disk gets is said on the dashboard).
			if err := writeAtomic(dir, PlainFile, dev); err != nil {
				return nil, err
			}
		}
	}
	if r.Protection != ProtNone && plain != nil {
		// Sealed or wrapped now (possibly on the boot a power cut
		// interrupted): the clear copy goes, but only if it is this key.
		if subtle.ConstantTimeCompare(plain, dev) != 1 {
			return nil, fmt.Errorf("%w: %s differs from the protected device key", ErrCorrupt, PlainFile)
		}
		if err := wipeFile(dir, PlainFile); err != nil {
			return nil, err
		}
	}
	return dev, nil
}

// openDataKey unwraps dir/keys/<p>.key, creating it when missing. The
// store key of a migrated box is the legacy device key.
func openDataKey(dir string, p Purpose, dev, legacy []byte) ([]byte, error) {
	kdir := filepath.Join(dir, DataKeyDir)
	name := string(p) + ".key"
	b, err := os.ReadFile(filepath.Join(kdir, name))
	switch {
	case err == nil:
		k, err := unwrap(dev, b, dataKeyAD(p))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrWrongKey, p, err)
		}
		if p == Store && legacy != nil && subtle.ConstantTimeCompare(k, legacy) != 1 {
			return nil, fmt.Errorf("%w: %s and the store key differ", ErrCorrupt, LegacyFile)
		}
		return k, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("keys: read %s: %w", name, err)
	}
	k := make([]byte, keyLen)
	if p == Store && legacy != nil {
		copy(k, legacy)
	} else {
		rand.Read(k)
	}
	if err := writeAtomic(kdir, name, wrap(dev, k, dataKeyAD(p))); err != nil {
		return nil, err
	}
	return k, nil
}

// EraseDataKey crypto-erases one purpose: its wrapped key is overwritten,
// fsync'd and removed, so whatever it sealed is unreadable; the next Open
// makes a new one.
func EraseDataKey(dir string, p Purpose) error {
	return wipeFile(filepath.Join(dir, DataKeyDir), string(p)+".key")
}

// Erase is the factory reset's crypto-erase: it destroys the device key
// (the TPM's persistent sealed object is evicted when tpm is not nil; the
// passphrase-wrapped and plain key files are overwritten) and every wrapped
// data key, so neither this /data nor any earlier copy of it can be opened
// again, even on this box. Files are overwritten with zeros, fsync'd and
// removed. The monotonic floors (NV) are kept on purpose: a reset must not
// rewind the licence grace or the version floor. Erase keeps going after a
// failure and returns every error; it succeeds on an already-erased dir.
func Erase(dir string, tpm Opener) error {
	var errs []error
	if tpm != nil {
		errs = append(errs, tpmEvict(dir, tpm))
	}
	for _, f := range []string{TPMFile, PassFile, PlainFile, LegacyFile} {
		errs = append(errs, wipeFile(dir, f))
	}
	for _, p := range Purposes {
		errs = append(errs, EraseDataKey(dir, p))
	}
	return errors.Join(errs...)
}

// dataKeyAD binds a wrapped key to its purpose: a store key file copied
// over the media one does not open as the media key.
func dataKeyAD(p Purpose) []byte { return []byte("edgepbx data key v1/" + string(p)) }

const wrapMagic = "EPXDK1"

// wrap seals k with AES-256-GCM under kek: magic | nonce | ciphertext.
func wrap(kek, k, ad []byte) []byte {
	g := gcm(kek)
	out := make([]byte, len(wrapMagic)+g.NonceSize(), len(wrapMagic)+g.NonceSize()+len(k)+g.Overhead())
	copy(out, wrapMagic)
	rand.Read(out[len(wrapMagic):])
	return g.Seal(out, out[len(wrapMagic):], k, ad)
}

func unwrap(kek, b, ad []byte) ([]byte, error) {
	g := gcm(kek)
	n := len(wrapMagic) + g.NonceSize()
	if len(b) != n+keyLen+g.Overhead() || string(b[:len(wrapMagic)]) != wrapMagic {
		return nil, fmt.Errorf("%w: wrapped key of %d bytes", ErrCorrupt, len(b))
	}
	return g.Open(nil, b[len(wrapMagic):n], b[n:], ad)
}

func gcm(k []byte) cipher.AEAD {
	b, err := aes.NewCipher(k)
	if err != nil {
		panic(err) // keys are always 32 bytes here
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return g
}
