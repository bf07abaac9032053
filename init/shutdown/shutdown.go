// Package shutdown performs PID 1's ordered shutdown: stop the services
// (which closes the store), sync, unmount /data (retrying, lazily as a last
// resort), disarm the watchdog, print the final console line and reboot(2).
package shutdown

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"
)

// Action is what happens at the end.
type Action int

const (
	Reboot Action = iota + 1
	Poweroff
	// Halt is only for tests and for boxes where power-off failed.
	Halt
)

func (a Action) String() string {
	switch a {
	case Reboot:
		return "reboot"
	case Poweroff:
		return "power off"
	case Halt:
		return "halt"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Line is the last console line before the system call.
func (a Action) Line() string { return "edgepbx: " + a.String() }

func (a Action) cmd() int {
	switch a {
	case Reboot:
		return unix.LINUX_REBOOT_CMD_RESTART
	case Poweroff:
		return unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	return unix.LINUX_REBOOT_CMD_HALT
}

// Plan is the shutdown sequence. Zero fields are skipped.
type Plan struct {
	// Stop stops the services (supervise.Supervisor.Stop); it gets a
	// context with StopTimeout, after which it must SIGKILL.
	Stop        func(context.Context) error
	StopTimeout time.Duration
	// Unmount lists mount points to unmount, innermost first (/data).
	Unmount []string
	// UnmountTries is how many plain unmounts to try before a lazy one.
	UnmountTries int
	// Final are closed right before the system call (the watchdog's magic
	// close: until then a hung shutdown still gets the box reset).
	Final   []io.Closer
	Console io.Writer
	Log     *slog.Logger
	// Syscall is reboot(2); tests replace it.
	Syscall func(cmd int) error
}

// Run performs the shutdown. It returns only if the final system call fails.
func (p Plan) Run(a Action) error {
	log := p.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if p.Stop != nil {
		t := p.StopTimeout
		if t <= 0 {
			t = 10 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), t)
		if err := p.Stop(ctx); err != nil {
			log.Warn("shutdown: stop services", "err", err)
		}
		cancel()
	}
	unix.Sync()
	for _, m := range p.Unmount {
		if err := unmount(m, p.UnmountTries); err != nil {
			log.Error("shutdown: unmount", "path", m, "err", err)
		} else {
			log.Info("shutdown: unmounted", "path", m)
		}
	}
	unix.Sync()
	for _, c := range p.Final {
		if err := c.Close(); err != nil {
			log.Warn("shutdown: close", "err", err)
		}
	}
	if p.Console != nil {
		fmt.Fprintln(p.Console, a.Line())
	}
	sc := p.Syscall
	if sc == nil {
		sc = unix.Reboot
	}
	if err := sc(a.cmd()); err != nil {
		return fmt.Errorf("shutdown: reboot(2) %v: %w", a, err)
	}
	return nil
}

// unmount tries a clean unmount, then a lazy one (MNT_DETACH): the
// file system is then cleaned up once its last user is gone, and the
// preceding sync has written the data.
func unmount(path string, tries int) error {
	if tries <= 0 {
		tries = 10
	}
	var err error
	for i := range tries {
		err = unix.Unmount(path, 0)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			// EINVAL: not a mount point (already gone).
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(time.Duration(i+1) * 20 * time.Millisecond)
	}
	if lerr := unix.Unmount(path, unix.MNT_DETACH); lerr != nil {
		return fmt.Errorf("unmount %s: %w (lazy: %v)", path, err, lerr)
	}
	return fmt.Errorf("unmount %s: %w: detached lazily", path, err)
}
