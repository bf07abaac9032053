package shutdown

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"golang.org/x/sys/unix"
)

type step struct {
	name  string
	steps *[]string
}

func (s step) Close() error { *s.steps = append(*s.steps, s.name); return nil }

func mounted(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

func TestOrderedShutdown(t *testing.T) {
	netnstest.NeedRoot(t, "mounting file systems")
	for _, tt := range []struct {
		name string
		a    Action
		cmd  int
		busy bool
	}{
		{"poweroff", Poweroff, unix.LINUX_REBOOT_CMD_POWER_OFF, false},
		{"reboot with busy data", Reboot, unix.LINUX_REBOOT_CMD_RESTART, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := t.TempDir()
			if err := unix.Mount("tmpfs", data, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Unmount(data, unix.MNT_DETACH) })
			if tt.busy {
				f, err := os.Create(filepath.Join(data, "held"))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
			}
			var steps []string
			var console strings.Builder
			p := Plan{
				Stop: func(ctx context.Context) error {
					if _, ok := ctx.Deadline(); !ok {
						t.Error("stop without deadline")
					}
					if !mounted(t, data) {
						t.Error("data unmounted before services stopped")
					}
					steps = append(steps, "stop")
					return nil
				},
				Unmount:      []string{data},
				UnmountTries: 2,
				Console:      &console,
				Syscall: func(cmd int) error {
					if mounted(t, data) {
						t.Error("reboot while /data mounted")
					}
					steps = append(steps, "syscall")
					if cmd != tt.cmd {
						t.Errorf("cmd %#x, want %#x", cmd, tt.cmd)
					}
					return nil
				},
			}
			p.Final = append(p.Final, step{"watchdog", &steps})
			if err := p.Run(tt.a); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(steps, ","); got != "stop,watchdog,syscall" {
				t.Fatalf("steps %s", got)
			}
			if console.String() != tt.a.Line()+"\n" {
				t.Fatalf("console %q", console.String())
			}
		})
	}
}

func TestLines(t *testing.T) {
	if Poweroff.Line() != "edgepbx: power off" || Reboot.Line() != "edgepbx: reboot" {
		t.Fatal(Poweroff.Line(), Reboot.Line())
	}
}
