// Package button watches evdev input devices for the power key. Under QEMU,
// `system_powerdown` produces one: through the ACPI power button (module
// "button") on x86 and through gpio-keys on arm64 virt; both need "evdev".
package button

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux input constants (linux/input-event-codes.h).
const (
	EvKey    = 0x01
	KeyPower = 116
	keyMax   = 0x2ff
)

// eventSize is sizeof(struct input_event) on 64-bit kernels (amd64, arm64):
// a 16-byte timeval, then type u16, code u16, value s32.
const eventSize = 24

// Event is one decoded input event.
type Event struct {
	Type  uint16
	Code  uint16
	Value int32
}

// Parse decodes whole input events from b (a trailing partial one is ignored).
func Parse(b []byte) []Event {
	var out []Event
	for ; len(b) >= eventSize; b = b[eventSize:] {
		out = append(out, Event{
			Type:  binary.NativeEndian.Uint16(b[16:]),
			Code:  binary.NativeEndian.Uint16(b[18:]),
			Value: int32(binary.NativeEndian.Uint32(b[20:])),
		})
	}
	return out
}

// IsPowerPress reports a power key going down.
func (e Event) IsPowerPress() bool { return e.Type == EvKey && e.Code == KeyPower && e.Value == 1 }

// eviocgbit is EVIOCGBIT(ev, len): _IOC(_IOC_READ, 'E', 0x20+ev, len).
func eviocgbit(ev, n uintptr) uintptr { return 2<<30 | n<<16 | 'E'<<8 | (0x20 + ev) }

// hasPowerKey asks the device whether it can send KEY_POWER.
func hasPowerKey(f *os.File) bool {
	var bits [keyMax/8 + 1]byte
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), eviocgbit(EvKey, uintptr(len(bits))), uintptr(unsafe.Pointer(&bits[0])))
	return errno == 0 && bits[KeyPower/8]&(1<<(KeyPower%8)) != 0
}

// Watch opens every /dev/input/event* device under devDir that has a power
// key and calls onPress for each press until ctx is done. It returns the
// devices it watches; none is not an error (the box just has no button).
func Watch(ctx context.Context, devDir string, onPress func(), log *slog.Logger) ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(devDir, "input", "event*"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var watching []string
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			log.Warn("input device", "path", p, "err", err)
			continue
		}
		if !hasPowerKey(f) {
			f.Close()
			continue
		}
		watching = append(watching, p)
		go func() {
			<-ctx.Done()
			f.Close()
		}()
		go read(f, onPress, log)
	}
	return watching, nil
}

func read(f *os.File, onPress func(), log *slog.Logger) {
	buf := make([]byte, eventSize*64)
	for {
		n, err := f.Read(buf)
		if err != nil {
			log.Debug("input device closed", "path", f.Name(), "err", err)
			return
		}
		for _, e := range Parse(buf[:n]) {
			if e.IsPowerPress() {
				log.Info("power button pressed", "device", f.Name())
				onPress()
			}
		}
	}
}

// String names the constant for logs.
func (e Event) String() string {
	return fmt.Sprintf("type=%d code=%d value=%d", e.Type, e.Code, e.Value)
}
