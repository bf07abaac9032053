package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/edgepbx/edgepbx/drivers/button"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/identity"
	"github.com/edgepbx/edgepbx/init/keys"
	"github.com/edgepbx/edgepbx/init/reset"
	"github.com/edgepbx/edgepbx/init/shutdown"
)

// Factory reset triggers and timings (docs/architecture.md, "Factory reset").
const (
	buttonHold     = 10 * time.Second // power button held at boot
	consoleConfirm = 60 * time.Second // kernel command line: time to type the word
	confirmWord    = "ERASE"
)

// eraseKeys destroys the key material before anything else is wiped: the
// TPM's sealed device key (evicted), the passphrase-wrapped or plain device
// key and every wrapped data key (keys.Erase), plus a legacy device key
// file. A reset at boot runs before the key hierarchy is opened, so the
// TPM is looked up here when it was not yet. The NV floors are kept.
func (b *box) eraseKeys() error {
	tpm := b.tpm
	if tpm == nil {
		tpm = b.tpmOpener()
	}
	err := errors.Join(keys.Erase(identityDir, tpm),
		reset.EraseKeyFile(filepath.Join(identityDir, identity.DeviceKeyFile)))
	clear(b.id.DeviceKey)
	if b.keys != nil {
		for _, p := range keys.Purposes {
			clear(b.keys.DataKey(p))
		}
	}
	return err
}

// runReset erases the keys and wipes /data (init/reset). The caller has
// stopped edgepbxd, or it never started.
func (b *box) runReset(why string) error {
	b.say("FACTORY RESET (%s): erasing keys, then wiping %s", why, dataDir)
	p := reset.Plan{DataDir: dataDir, EraseKeys: b.eraseKeys, Progress: func(s string) { b.step("factory reset", "step", s) }}
	if err := p.Run(); err != nil {
		return err
	}
	// The mount point's mode and the directories PID 1 expects come back.
	if err := b.prepareData(); err != nil {
		return err
	}
	b.say("factory reset done t=%dms", b.ms())
	return nil
}

// bootReset runs before the identity is loaded: a reset that a power cut
// interrupted is finished; the kernel command line (confirmed on the
// console) or the power button held 10 s starts one. None of these can
// do anything but erase: the box then comes up unclaimed, with a setup
// code shown only on the console.
func (b *box) bootReset() error {
	var why string
	cl, _ := os.ReadFile("/proc/cmdline")
	switch {
	case reset.Pending(dataDir):
		why = "resuming an interrupted reset"
	case reset.Requested(string(cl)):
		if !b.confirmOnConsole() {
			b.say("factory reset cancelled: booting normally (remove %s from the kernel command line)", reset.CmdlineFlag)
			return nil
		}
		why = "kernel command line, confirmed on the console"
	case button.HeldAtBoot(b.ctx, "/dev", buttonHold, func() {
		b.say("power button held: keep holding %s to FACTORY RESET (erase all data); release to cancel", buttonHold)
	}, b.log):
		why = "power button held at boot"
	default:
		return nil
	}
	if err := b.runReset(why); err != nil {
		return haltf("factory reset: %w (it resumes at the next boot)", err)
	}
	return nil
}

// confirmOnConsole asks the person at the console to type the word. No
// answer in time, or any other answer, cancels: a flag left on the kernel
// command line must not wipe the box at every boot.
func (b *box) confirmOnConsole() bool {
	b.say("FACTORY RESET requested on the kernel command line: type %s and Enter within %s to erase all data; anything else cancels", confirmWord, consoleConfirm)
	ctx, cancel := context.WithTimeout(b.ctx, consoleConfirm)
	defer cancel()
	for {
		line, err := b.consoleLine(ctx)
		if err != nil {
			return false
		}
		if line == "" {
			continue // a bare Enter (or the console's echo noise)
		}
		return line == confirmWord
	}
}

// consoleLine returns the next line typed on the console. The test hook,
// when built in, owns the console reader and forwards what is not its own.
func (b *box) consoleLine(ctx context.Context) (string, error) {
	if b.consoleIn == nil {
		f, err := os.OpenFile("/dev/console", os.O_RDONLY|syscall.O_NOCTTY, 0)
		if err != nil {
			return "", err
		}
		ch := make(chan string, 8)
		go func() {
			defer f.Close()
			r := bufio.NewReaderSize(f, 256)
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				ch <- strings.TrimSpace(l)
			}
		}()
		b.consoleIn = ch
	}
	select {
	case l := <-b.consoleIn:
		return l, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// BeginReset is the control socket's first step: announced on the console,
// rate-limited by the gate.
func (s *system) BeginReset(r control.FactoryResetRequest) (control.FactoryResetTicket, error) {
	b := (*box)(s)
	tok, exp, err := b.resetGate.Begin()
	if err != nil {
		b.say("WARNING: factory reset request by %q from %q refused: %v", r.Actor, r.Source, err)
		return control.FactoryResetTicket{}, err
	}
	b.say("FACTORY RESET requested by %q from %q through the admin API; waiting for its confirmation", r.Actor, r.Source)
	return control.FactoryResetTicket{Token: tok, Expires: exp, Remaining: time.Until(exp)}, nil
}

// ConfirmReset checks the token and hands the reset to the main loop: the
// reply goes out before edgepbxd is stopped.
func (s *system) ConfirmReset(token string) error {
	b := (*box)(s)
	if err := b.resetGate.Confirm(token); err != nil {
		b.say("WARNING: factory reset confirmation refused: %v", err)
		return err
	}
	b.say("FACTORY RESET confirmed: stopping services")
	select {
	case b.resetReq <- "admin API":
	default: // one is already under way
	}
	return nil
}

// factoryReset runs in the main loop: stop edgepbxd (it holds the store
// open), erase and wipe, then reboot into a fresh, unclaimed box.
func (b *box) factoryReset(why string) {
	if b.ctl != nil {
		b.ctl.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	err := b.sup.Stop(ctx)
	cancel()
	if err != nil {
		b.log.Warn("factory reset: stop services", "err", err)
	}
	if err := b.runReset(why); err != nil {
		b.halt(fmt.Errorf("factory reset: %w (it resumes at the next boot)", err))
	}
	b.shutdown(shutdown.Reboot)
}
