package qemu

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgepbx/edgepbx/image"
)

// Boot starts QEMU for a built image, with the machine its board profile
// names. ctx bounds the VM's life; see BootTarget.
func Boot(ctx context.Context, img *image.Image, opts ...Option) (*VM, error) {
	t, err := TargetOf(img)
	if err != nil {
		return nil, err
	}
	return BootTarget(ctx, t, opts...)
}

// TargetOf describes how to boot img.
func TargetOf(img *image.Image) (Target, error) {
	if img == nil {
		return Target{}, errors.New("qemu: no image")
	}
	p := img.Board
	if p.QEMU == nil {
		return Target{}, fmt.Errorf("qemu: board %s is not a QEMU machine", p.Name)
	}
	arch, err := ParseArch(p.Arch)
	if err != nil {
		return Target{}, fmt.Errorf("qemu: board %s: %w", p.Name, err)
	}
	return Target{
		Arch:      arch,
		Binary:    p.QEMU.Binary,
		Machine:   p.QEMU.Machine,
		CPU:       p.QEMU.CPU,
		Console:   p.Console,
		Kernel:    img.Kernel,
		Initramfs: img.Initramfs,
		Cmdline:   img.Cmdline,
	}, nil
}
