package provision

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The DHCP server serves the subnet its interface had when it started. When
// the box's addresses change (PID 1's network commit or revert, a VLAN
// re-created, an address removed) the server must follow at once: never
// hand out a pool on a subnet the box no longer has, nor go on naming an
// address it no longer holds as server and router. An rtnetlink socket
// subscribed to link and IPv4 address changes wakes the server; it only
// wakes it (the messages are not parsed: what changed is read back from
// the interface), so nothing here reads input anyone but the kernel sends.
// Joining these groups needs no privilege. A slow poll covers what a lost
// notification (a full socket buffer) would miss.

// ifPoll is how often the interface is re-read without a notification.
const ifPoll = 10 * time.Second

// ifWatch signals C after any link or IPv4 address change in the network
// namespace it was made in.
type ifWatch struct {
	f *os.File
	C chan struct{}
}

// newIfWatch subscribes in the calling thread's network namespace.
func newIfWatch() (*ifWatch, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("dhcp: rtnetlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dhcp: rtnetlink subscribe: %w", err)
	}
	w := &ifWatch{f: os.NewFile(uintptr(fd), "rtnetlink"), C: make(chan struct{}, 1)}
	go w.read()
	return w, nil
}

func (w *ifWatch) read() {
	buf := make([]byte, 16<<10)
	for {
		_, err := w.f.Read(buf)
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			return // closed
		}
		select { // ENOBUFS: notifications were lost, so something changed
		case w.C <- struct{}{}:
		default:
		}
	}
}

// Close stops the watch.
func (w *ifWatch) Close() error { return w.f.Close() }

// changes is w.C, or nil (never ready) without a watch.
func (w *ifWatch) changes() <-chan struct{} {
	if w == nil {
		return nil
	}
	return w.C
}

// ifaceState is what the server was started on: the interface's index and
// its first IPv4 address with the subnet mask.
type ifaceState struct {
	index int
	self  netip.Addr
	bits  int
}

// readIface reads name's state; it must run in the server's network
// namespace (the calling goroutine of RunDHCP).
func readIface(name string) (ifaceState, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return ifaceState{}, fmt.Errorf("dhcp: interface %s: %w", name, err)
	}
	self, mask, err := ifaceIPv4(ifi)
	if err != nil {
		return ifaceState{}, err
	}
	return ifaceState{index: ifi.Index, self: self, bits: maskBits(mask)}, nil
}
