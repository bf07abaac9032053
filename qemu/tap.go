package qemu

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// openTap creates tap device name inside the network namespace at netnsPath
// and returns its file, which QEMU inherits. QEMU itself stays in the host's
// namespace; only the device lives in the test's.
func openTap(netnsPath, name string) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	res := make(chan result, 1)
	// Namespaces are per thread: the work runs on its own goroutine, locked
	// to a thread. If that thread cannot return to its namespace it stays
	// locked and dies with the goroutine, so no other code ever runs there.
	go func() {
		runtime.LockOSThread()
		f, restored, err := tapIn(netnsPath, name)
		if restored {
			runtime.UnlockOSThread()
		}
		res <- result{f, err}
	}()
	r := <-res
	return r.f, r.err
}

func tapIn(netnsPath, name string) (_ *os.File, restored bool, _ error) {
	ns, err := os.Open(netnsPath)
	if err != nil {
		return nil, true, fmt.Errorf("qemu: tap netns: %w", err)
	}
	defer ns.Close()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, true, fmt.Errorf("qemu: tap: own netns: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("qemu: tap: enter %s: %w", netnsPath, err)
	}
	f, terr := createTap(name)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		if f != nil {
			f.Close()
		}
		return nil, false, fmt.Errorf("qemu: tap: return to own netns: %w", err)
	}
	return f, true, terr
}

func createTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("qemu: tap: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("qemu: tap %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("qemu: tap %q: TUNSETIFF: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}
