package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/edgepbx/edgepbx/init/strictjson"
)

// maxBootstrap bounds the secrets JSON PID 1 writes on the bootstrap fd; the
// real object is about 200 bytes.
const maxBootstrap = 4096

// bootstrapTimeout bounds the wait for PID 1 to write and close the pipe.
const bootstrapTimeout = 10 * time.Second

// bootstrap is what PID 1 hands edgepbxd on fd 3 (docs/architecture.md,
// "Boot handover"). Nothing in it may come from argv or the environment.
type bootstrap struct {
	DeviceKey []byte `json:"device_key"` // the store's data key (init/keys); base64 in JSON, 32 bytes
	SetupCode string `json:"setup_code"` // XXXX-XXXX-XXXX, this boot only
	Serial    string `json:"serial"`
	InstallID string `json:"install_id"`
	// The other data keys (init/keys), each wrapped by the device key on
	// /data so it can be erased alone; absent in --dev mode.
	MediaKey  []byte `json:"media_key,omitempty"`
	BackupKey []byte `json:"backup_key,omitempty"`
	// KeyProtection says what guards the device key: tpm, passphrase or
	// none (the dashboard says what an attacker with the disk gets).
	KeyProtection string `json:"key_protection,omitempty"`
	// FloorsInTPM: the licence grace and version floors are in TPM NV.
	FloorsInTPM bool `json:"floors_in_tpm,omitempty"`
}

var (
	setupCodeRE = regexp.MustCompile(`^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$`)
	serialRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,47}$`)
	installIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,63}$`)
)

func (b *bootstrap) validate() error {
	switch {
	case len(b.DeviceKey) != 32:
		return fmt.Errorf("device_key must be 32 bytes (base64), got %d", len(b.DeviceKey))
	case len(b.MediaKey) != 0 && len(b.MediaKey) != 32:
		return fmt.Errorf("media_key must be 32 bytes (base64), got %d", len(b.MediaKey))
	case len(b.BackupKey) != 0 && len(b.BackupKey) != 32:
		return fmt.Errorf("backup_key must be 32 bytes (base64), got %d", len(b.BackupKey))
	case !slices.Contains([]string{"", "tpm", "passphrase", "none"}, b.KeyProtection):
		return errors.New("key_protection must be tpm, passphrase or none")
	case !setupCodeRE.MatchString(b.SetupCode):
		return errors.New("setup_code missing or not XXXX-XXXX-XXXX")
	case !serialRE.MatchString(b.Serial):
		return errors.New("serial missing or not 1-48 letters, digits and dashes")
	case !installIDRE.MatchString(b.InstallID):
		return errors.New("install_id missing or not 1-64 letters, digits and dashes")
	}
	return nil
}

// parseBootstrap reads exactly one JSON object with all four fields from r.
func parseBootstrap(r io.Reader) (bootstrap, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxBootstrap+1))
	if err != nil {
		return bootstrap{}, fmt.Errorf("bootstrap: read: %w", err)
	}
	if len(raw) > maxBootstrap {
		return bootstrap{}, fmt.Errorf("bootstrap: more than %d bytes", maxBootstrap)
	}
	var b bootstrap
	if err := strictjson.Unmarshal(raw, &b); err != nil {
		return bootstrap{}, fmt.Errorf("bootstrap: malformed JSON: %w", err)
	}
	if err := b.validate(); err != nil {
		return bootstrap{}, fmt.Errorf("bootstrap: %w", err)
	}
	return b, nil
}

// readBootstrapFD reads the bootstrap object from an inherited fd and closes
// it. PID 1 closes its end after writing, so EOF marks the end; a writer that
// never closes is cut off after bootstrapTimeout.
func readBootstrapFD(fd int) (bootstrap, error) {
	if fd < 3 {
		return bootstrap{}, fmt.Errorf("bootstrap: fd %d is stdio, want an inherited pipe (3 or above)", fd)
	}
	f := os.NewFile(uintptr(fd), "bootstrap")
	if f == nil {
		return bootstrap{}, fmt.Errorf("bootstrap: fd %d is not open", fd)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return bootstrap{}, fmt.Errorf("bootstrap: fd %d: %w", fd, err)
	}
	// Without an inherited pipe the number may be any file the runtime
	// opened since; reading that would be wrong, so only a pipe or socket
	// (what PID 1 passes) is accepted.
	if st.Mode()&(os.ModeNamedPipe|os.ModeSocket) == 0 {
		return bootstrap{}, fmt.Errorf("bootstrap: fd %d is not a pipe from PID 1 (mode %v)", fd, st.Mode())
	}
	type result struct {
		b   bootstrap
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := parseBootstrap(f)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-time.After(bootstrapTimeout):
		return bootstrap{}, fmt.Errorf("bootstrap: fd %d not closed by the writer within %v", fd, bootstrapTimeout)
	}
}

// setupAlphabet leaves out 0/O and 1/I, which are misread on a console.
const setupAlphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"

// newSetupCode makes a 60-bit one-time code, XXXX-XXXX-XXXX.
func newSetupCode() (string, error) {
	var raw [12]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("setup code: %w", err)
	}
	out := make([]byte, 0, 14)
	for i, c := range raw {
		if i == 4 || i == 8 {
			out = append(out, '-')
		}
		out = append(out, setupAlphabet[int(c)%len(setupAlphabet)]) // 256 % 32 == 0: unbiased
	}
	return string(out), nil
}

// devIdentity is the --dev stand-in for PID 1's /data/identity: created in
// dir on first use and reused after, with a fresh setup code each start
// (as PID 1 makes one each boot until the box is claimed).
func devIdentity(dir string) (bootstrap, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return bootstrap{}, fmt.Errorf("dev identity: %w", err)
	}
	path := filepath.Join(dir, "identity.json")
	var b bootstrap
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(raw) > maxBootstrap {
			return bootstrap{}, fmt.Errorf("dev identity %s: more than %d bytes", path, maxBootstrap)
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			return bootstrap{}, fmt.Errorf("dev identity %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		b.DeviceKey = make([]byte, 32)
		var id [8]byte
		if _, err := rand.Read(b.DeviceKey); err != nil {
			return bootstrap{}, fmt.Errorf("dev identity: %w", err)
		}
		if _, err := rand.Read(id[:]); err != nil {
			return bootstrap{}, fmt.Errorf("dev identity: %w", err)
		}
		b.Serial = fmt.Sprintf("DEV%X", id[:4])
		b.InstallID = fmt.Sprintf("%x", id[:])
		out, err := json.Marshal(bootstrap{DeviceKey: b.DeviceKey, Serial: b.Serial, InstallID: b.InstallID})
		if err != nil {
			return bootstrap{}, err
		}
		if err := writeFileAtomic(path, out, 0o600); err != nil {
			return bootstrap{}, fmt.Errorf("dev identity: %w", err)
		}
	default:
		return bootstrap{}, fmt.Errorf("dev identity: %w", err)
	}
	if b.SetupCode, err = newSetupCode(); err != nil {
		return bootstrap{}, err
	}
	if err := b.validate(); err != nil {
		return bootstrap{}, fmt.Errorf("dev identity %s: %w", path, err)
	}
	return b, nil
}

// writeFileAtomic writes, fsyncs and renames, so a crash leaves the old file
// or the new one.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
