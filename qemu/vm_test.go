package qemu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// A guest that never boots (a kernel of zeros) ignores the power button:
// Powerdown must stop QEMU hard and say so, WaitLine must name what it waited
// for, and the VM must be gone afterwards.
func TestPowerdownHardStop(t *testing.T) {
	netnstest.NeedTool(t, "qemu-system-aarch64", "qemu-system-arm")
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "Image"), filepath.Join(dir, "initrd")
	os.WriteFile(kernel, make([]byte, 64<<10), 0o644)
	os.WriteFile(initrd, make([]byte, 512), 0o644)
	vm, err := BootTarget(context.Background(), Target{Arch: ArchARM64, Kernel: kernel, Initramfs: initrd},
		WithHostForward("tcp", 0, 443), WithMemory(128))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Kill)
	if p := vm.HostPort("tcp", 443); p <= 0 {
		t.Errorf("no host port for 443: %+v", vm.Forwards())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = vm.WaitLine(ctx, "edgepbx: ready")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `"edgepbx: ready"`) {
		t.Errorf("WaitLine on a silent guest: %v", err)
	}
	if err := vm.SendLine("a\nb"); err == nil {
		t.Error("SendLine accepted a line break")
	}
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = vm.Powerdown(ctx)
	if !errors.Is(err, ErrHardStop) {
		t.Fatalf("Powerdown of a guest that ignores it: %v, want ErrHardStop", err)
	}
	select {
	case <-vm.Exited():
	default:
		t.Fatal("QEMU still running after a hard stop")
	}
}

func TestBootTargetErrors(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]struct {
		target Target
		opts   []Option
		want   string
	}{
		"missing kernel": {Target{Arch: ArchX86_64, Kernel: filepath.Join(dir, "nope"), Initramfs: filepath.Join(dir, "nope2")}, nil, "nope"},
		"missing binary": {Target{Arch: ArchX86_64, Binary: "qemu-system-none", Kernel: "/proc/version", Initramfs: "/proc/version"}, nil, "qemu-system-none not found"},
		"bad option":     {Target{Arch: ArchX86_64, Kernel: "/k", Initramfs: "/i"}, []Option{WithMemory(1)}, "memory"},
	}
	for name, tc := range tests {
		_, err := BootTarget(context.Background(), tc.target, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
}
