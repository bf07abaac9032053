package keys

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/argon2"
)

// kdf are argon2id's parameters, stored with the wrapped key.
type kdf struct {
	Time    uint32
	MemKiB  uint32
	Threads uint8
}

// defaultKDF costs about a second on a small appliance CPU and 64 MiB,
// which a box that has just booted can spare.
var defaultKDF = kdf{Time: 3, MemKiB: 64 << 10, Threads: 1}

// Bounds on what a passphrase file may ask for: it is on /data, which an
// attacker may have written; a huge memory cost would stop the boot.
const (
	maxKDFTime   = 16
	maxKDFMemKiB = 256 << 10
	minPassLen   = 12
	maxPassLen   = 256
	passMagic    = "EPXPW1"
	saltLen      = 16
)

// ErrWeakPassphrase: a new passphrase is too short or too long.
var ErrWeakPassphrase = fmt.Errorf("keys: passphrase must be %d to %d characters", minPassLen, maxPassLen)

func passKey(pw string, salt []byte, k kdf) []byte {
	return argon2.IDKey([]byte(pw), salt, k.Time, k.MemKiB, k.Threads, keyLen)
}

// wrapPassphrase writes PassFile: magic | time u32 | mem u32 | threads u8 |
// salt | wrap(argon2id(pw), dev).
func wrapPassphrase(dir, pw string, dev []byte, k kdf) error {
	if len(pw) < minPassLen || len(pw) > maxPassLen {
		return ErrWeakPassphrase
	}
	salt := make([]byte, saltLen)
	rand.Read(salt)
	b := []byte(passMagic)
	b = binary.BigEndian.AppendUint32(b, k.Time)
	b = binary.BigEndian.AppendUint32(b, k.MemKiB)
	b = append(b, k.Threads)
	b = append(b, salt...)
	b = append(b, wrap(passKey(pw, salt, k), dev, []byte(passMagic))...)
	return writeAtomic(dir, PassFile, b)
}

func unwrapPassphrase(dir, pw string) ([]byte, error) {
	p := filepath.Join(dir, PassFile)
	b, err := readBounded(p, 512)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("keys: %s vanished: %w", p, err)
		}
		return nil, err
	}
	hdr := len(passMagic) + 9 + saltLen
	if len(b) < hdr || string(b[:len(passMagic)]) != passMagic {
		return nil, fmt.Errorf("%w: %s", ErrCorrupt, p)
	}
	k := kdf{
		Time:    binary.BigEndian.Uint32(b[len(passMagic):]),
		MemKiB:  binary.BigEndian.Uint32(b[len(passMagic)+4:]),
		Threads: b[len(passMagic)+8],
	}
	if k.Time == 0 || k.Time > maxKDFTime || k.MemKiB < 8 || k.MemKiB > maxKDFMemKiB || k.Threads == 0 {
		return nil, fmt.Errorf("%w: %s asks for argon2id time %d, memory %d KiB, threads %d", ErrCorrupt, p, k.Time, k.MemKiB, k.Threads)
	}
	salt := b[len(passMagic)+9 : hdr]
	dev, err := unwrap(passKey(pw, salt, k), b[hdr:], []byte(passMagic))
	if errors.Is(err, ErrCorrupt) {
		return nil, err
	}
	if err != nil {
		return nil, ErrPassphrase
	}
	return dev, nil
}
