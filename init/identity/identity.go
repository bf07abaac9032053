// Package identity owns /data/identity's serial number and install id,
// created on first boot and reused afterwards, and the per-boot one-time
// setup code. The keys in the same directory belong to init/keys.
package identity

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgepbx/edgepbx/drivers/dmi"
	"github.com/edgepbx/edgepbx/init/atomicfile"
)

// Identity is the box's persistent identity.
type Identity struct {
	Serial    string
	InstallID string // 32 hex digits
	// DeviceKey is the store's data key (init/keys, purpose "store"),
	// filled in by PID 1 after keys.Open; LoadOrCreate leaves it nil.
	DeviceKey []byte
}

// File names inside the identity directory.
const (
	SerialFile    = "serial"
	InstallIDFile = "install_id"
	// DeviceKeyFile is the plaintext key of earlier firmware; init/keys
	// migrates and removes it (keys.LegacyFile).
	DeviceKeyFile = "device.key"
)

// ErrCorrupt means an identity file exists but is unusable. Nothing is
// overwritten: a new serial or install id would clone or orphan the box.
var ErrCorrupt = errors.New("identity: corrupt identity file")

// Alphabet is unambiguous when read off a console: no 0/O, 1/I/L.
const Alphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"

// LoadOrCreate loads the identity from dir, creating whatever is missing.
// boardSerial is the hardware serial (already checked for sanity, "" if
// none); it is used only when no serial has been stored yet. created reports
// whether anything was written. A read-only or full /data gives an error and
// leaves existing files untouched.
func LoadOrCreate(dir, boardSerial string) (id Identity, created bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Identity{}, false, fmt.Errorf("identity: create %s: %w", dir, err)
	}
	serial, err := readFile(dir, SerialFile, func(b []byte) bool { return dmi.Sane(strings.TrimSpace(string(b))) })
	if err != nil {
		return Identity{}, false, err
	}
	installID, err := readFile(dir, InstallIDFile, func(b []byte) bool {
		s := strings.TrimSpace(string(b))
		_, herr := hex.DecodeString(s)
		return len(s) == 32 && herr == nil
	})
	if err != nil {
		return Identity{}, false, err
	}
	// The device key is init/keys' (sealed to the TPM where there is one):
	// it is never created here, so no plaintext key touches the disk.
	if installID == nil {
		b := make([]byte, 16)
		rand.Read(b)
		installID = []byte(hex.EncodeToString(b) + "\n")
		if err := writeAtomic(dir, InstallIDFile, installID); err != nil {
			return Identity{}, created, err
		}
		created = true
	}
	if serial == nil {
		s := boardSerial
		if !dmi.Sane(s) {
			s = "EPX" + randomString(9)
		}
		serial = []byte(s + "\n")
		if err := writeAtomic(dir, SerialFile, serial); err != nil {
			return Identity{}, created, err
		}
		created = true
	}
	return Identity{
		Serial:    strings.TrimSpace(string(serial)),
		InstallID: strings.TrimSpace(string(installID)),
	}, created, nil
}

// readFile returns nil (no error) when the file does not exist.
func readFile(dir, name string, valid func([]byte) bool) ([]byte, error) {
	p := filepath.Join(dir, name)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity: read %s: %w", p, err)
	}
	if !valid(b) {
		return nil, fmt.Errorf("%w: %s", ErrCorrupt, p)
	}
	return b, nil
}

// writeAtomic writes a 0600 file so that a power cut leaves either the old
// or the whole new one (atomicfile: fsync'd temp file, rename, directory
// fsync).
func writeAtomic(dir, name string, data []byte) error {
	if err := atomicfile.Write(filepath.Join(dir, name), data, 0o600); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}

func randomString(n int) string {
	var b strings.Builder
	max := big.NewInt(int64(len(Alphabet)))
	for range n {
		i, _ := rand.Int(rand.Reader, max) // crypto/rand never fails on Linux ≥ 3.17
		b.WriteByte(Alphabet[i.Int64()])
	}
	return b.String()
}

// SetupCode returns a fresh one-time setup code, XXXX-XXXX-XXXX (about 59
// bits from crypto/rand). It is made per boot and never stored by PID 1.
func SetupCode() string {
	s := randomString(12)
	return s[:4] + "-" + s[4:8] + "-" + s[8:]
}

// Hostname is the box's host name: edgepbx-<serial>, lower case.
func (id Identity) Hostname() string {
	return "edgepbx-" + strings.ToLower(id.Serial)
}
