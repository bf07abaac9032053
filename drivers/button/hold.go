package button

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// eviocgkey is EVIOCGKEY(len): _IOC(_IOC_READ, 'E', 0x18, len), the
// current up/down state of every key.
func eviocgkey(n uintptr) uintptr { return 2<<30 | n<<16 | 'E'<<8 | 0x18 }

// powerDown asks the device whether its power key is down right now.
func powerDown(f *os.File) bool {
	var bits [keyMax/8 + 1]byte
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), eviocgkey(uintptr(len(bits))), uintptr(unsafe.Pointer(&bits[0])))
	return errno == 0 && bits[KeyPower/8]&(1<<(KeyPower%8)) != 0
}

// HeldAtBoot reports whether a power key is held down now and stays down
// for d (the factory-reset gesture: held 10 s at boot). When no key is
// down it returns false at once, so a normal boot is not delayed. prompt
// is called once when a held key is seen, before the wait.
func HeldAtBoot(ctx context.Context, devDir string, d time.Duration, prompt func(), log *slog.Logger) bool {
	paths, _ := filepath.Glob(filepath.Join(devDir, "input", "event*"))
	sort.Strings(paths)
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if !hasPowerKey(f) || !powerDown(f) {
			f.Close()
			continue
		}
		log.Warn("power button held at boot", "device", p)
		if prompt != nil {
			prompt()
		}
		held := heldFor(ctx, f, d)
		f.Close()
		return held
	}
	return false
}

// heldFor reads events from r (a key already down) and reports whether no
// release of the power key came within d. r is read by a goroutine that
// ends when the caller closes it.
func heldFor(ctx context.Context, r io.Reader, d time.Duration) bool {
	released := make(chan struct{})
	go func() {
		buf := make([]byte, eventSize*64)
		var rest []byte
		for {
			n, err := r.Read(buf)
			rest = append(rest, buf[:n]...)
			for _, e := range Parse(rest) {
				if e.Type == EvKey && e.Code == KeyPower && e.Value == 0 {
					close(released)
					return
				}
			}
			rest = rest[len(rest)/eventSize*eventSize:]
			if err != nil {
				// A device gone (unplugged) is not a key held.
				close(released)
				return
			}
		}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-released:
		return false
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
