// Package watchdog drives a Linux watchdog device (/dev/watchdogN): set the
// timeout, ping it only while the system is healthy, and disarm it with the
// magic close on an orderly shutdown.
//
// It speaks the kernel watchdog API directly (the same ioctls that
// github.com/mdlayher/watchdog uses): that package always opens
// /dev/watchdog and cannot set the timeout, and boards name their device
// and timeout.
package watchdog

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Device is an open, armed watchdog. Opening arms it: from then on the box
// resets unless Ping is called within the timeout.
type Device struct {
	f        *os.File
	Identity string
}

// Open opens and arms the watchdog at path.
func Open(path string) (*Device, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("watchdog %s: %w", path, err)
	}
	d := &Device{f: f}
	if info, err := unix.IoctlGetWatchdogInfo(int(f.Fd())); err == nil {
		d.Identity = strings.TrimRight(string(info.Identity[:]), "\x00")
	}
	return d, nil
}

// SetTimeout sets the timeout and returns what the driver accepted.
func (d *Device) SetTimeout(t time.Duration) (time.Duration, error) {
	s := int(t / time.Second)
	if s < 1 {
		return 0, fmt.Errorf("watchdog: timeout %v below one second", t)
	}
	if err := unix.IoctlSetPointerInt(int(d.f.Fd()), unix.WDIOC_SETTIMEOUT, s); err != nil {
		return 0, fmt.Errorf("watchdog: set timeout %ds: %w", s, err)
	}
	got, err := unix.IoctlGetInt(int(d.f.Fd()), unix.WDIOC_GETTIMEOUT)
	if err != nil {
		return 0, fmt.Errorf("watchdog: get timeout: %w", err)
	}
	return time.Duration(got) * time.Second, nil
}

// Ping resets the countdown.
func (d *Device) Ping() error {
	if err := unix.IoctlWatchdogKeepalive(int(d.f.Fd())); err != nil {
		return fmt.Errorf("watchdog: ping: %w", err)
	}
	return nil
}

// Close disarms the watchdog with the magic close ("V"), for an orderly
// shutdown. Drivers built with nowayout ignore it and keep counting.
func (d *Device) Close() error {
	_, werr := d.f.Write([]byte("V"))
	cerr := d.f.Close()
	if werr != nil {
		return fmt.Errorf("watchdog: magic close: %w", werr)
	}
	return cerr
}

// Pinger is what Keep pets.
type Pinger interface{ Ping() error }

// Keep pings p every interval while healthy() says so, until ctx is done.
// When the system stays unhealthy for longer than the device timeout, the
// watchdog resets the box: that is the point.
func Keep(ctx context.Context, p Pinger, interval time.Duration, healthy func() bool, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	wasHealthy := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok := healthy()
		if ok != wasHealthy {
			log.Warn("watchdog", "petting", ok)
			wasHealthy = ok
		}
		if !ok {
			continue
		}
		if err := p.Ping(); err != nil {
			log.Error("watchdog ping failed", "err", err)
		}
	}
}
