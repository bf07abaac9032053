package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/init/keys"
)

const (
	tpmDevice = "/dev/tpmrm0"
	// tpmWait bounds the wait for the TPM's device node after its module
	// loaded (the driver probes asynchronously on some boards).
	tpmWait = 2 * time.Second
	// keysCmdline opts a box without a TPM in to a passphrase-protected
	// device key: PID 1 asks for a new passphrase on the console once;
	// from then on the wrapped key file makes it ask at every boot.
	keysCmdline = "edgepbx.keys=passphrase"
)

// tpmOpener returns the TPM when the board has one: its resource-manager
// node present (drivers built into the kernel, like x86's tpm_tis, have
// probed before /init runs), or, when the profile loads a tpm_* module,
// once that driver's probe made it appear.
func (b *box) tpmOpener() keys.Opener {
	if _, err := os.Stat(tpmDevice); err == nil {
		return keys.DeviceTPM(tpmDevice)
	}
	if !slices.ContainsFunc(b.prof.Modules, func(m string) bool { return strings.HasPrefix(m, "tpm") }) {
		return nil
	}
	for deadline := time.Now().Add(tpmWait); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(tpmDevice); err == nil {
			return keys.DeviceTPM(tpmDevice)
		}
		if time.Now().After(deadline) {
			b.say("WARNING: the board profile has a TPM driver but %s did not appear: keys are not sealed", tpmDevice)
			return nil
		}
	}
}

// openKeys opens the key hierarchy before anything else reads /data's
// secrets. A key that does not open stops the boot in a safe state (no
// services, default-deny firewall) with what happened and the choices on
// the console: nothing is replaced, so the right disk in the right box
// still opens.
func (b *box) openKeys() (*keys.Ring, error) {
	start := time.Now()
	b.tpm = b.tpmOpener()
	opts := keys.Options{TPM: b.tpm, Passphrase: b.askPassphrase}
	if cl, err := os.ReadFile("/proc/cmdline"); err == nil && slices.Contains(strings.Fields(string(cl)), keysCmdline) {
		opts.NewPassphrase = b.tpm == nil
	}
	ring, err := keys.Open(identityDir, opts)
	switch {
	case errors.Is(err, keys.ErrWrongTPM):
		b.say("KEYS: this disk's device key is sealed to another TPM (disk moved to another box, or this box's TPM was cleared).")
		b.say("KEYS: no secret on this disk can be read here. Put the disk back in its box, or factory-reset this box and restore a backup.")
	case errors.Is(err, keys.ErrNoTPM):
		b.say("KEYS: this disk's device key is sealed to a TPM, and none was found (TPM disabled in the firmware setup?).")
	case errors.Is(err, keys.ErrTPMInUse):
		b.say("KEYS: this disk carries an unprotected device key, and this box's TPM already holds a different one.")
		b.say("KEYS: the disk's key is not trusted to replace it (it could have been planted). Put the box's own disk back, or factory-reset this box.")
	case errors.Is(err, keys.ErrPassphrase):
		b.say("KEYS: the device key did not open: wrong passphrase. Reboot to try again.")
	}
	if err != nil {
		return nil, haltf("keys: %w", err)
	}
	took := time.Since(start)
	b.step("keys", "protection", ring.Protection, "created", ring.Created, "migrated", ring.Migrated, "took_ms", took.Milliseconds())
	if ring.Migrated {
		b.say("keys: the old plaintext device key was protected (%s) and erased from the disk", ring.Protection)
	}
	if ring.Protection == keys.ProtNone {
		b.say("WARNING: no TPM and no passphrase: the device key is a plain file on /data; whoever has the disk can read every secret (see docs/architecture.md, Keys)")
	}
	return ring, nil
}

// askPassphrase reads a passphrase on the console with echo off. It is the
// only input PID 1 takes before the services run: no network is involved,
// the box simply waits at the console like a LUKS appliance.
func (b *box) askPassphrase() (string, error) {
	f, err := os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return "", fmt.Errorf("console: %w", err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		old := *t
		t.Lflag &^= unix.ECHO
		unix.IoctlSetTermios(fd, unix.TCSETS, t)
		defer unix.IoctlSetTermios(fd, unix.TCSETS, &old)
	}
	fmt.Fprint(f, "edgepbx: device key passphrase: ")
	line, err := bufio.NewReaderSize(f, 512).ReadString('\n')
	fmt.Fprintln(f)
	if err != nil {
		return "", fmt.Errorf("console: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
