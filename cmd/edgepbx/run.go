package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgepbx/edgepbx/image"
	"github.com/edgepbx/edgepbx/qemu"
)

type runFlags struct {
	buildFlags
	data      string
	httpsPort int
	sipPort   int
	kvm       bool
	memory    int
	bootWait  time.Duration
}

func newRunCmd(g *globalFlags) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run --board B",
		Short: "Build (when needed) and boot a board's image under QEMU",
		Long: `Boots the image with a persistent data disk (created and formatted on first
use) and forwards host ports on 127.0.0.1 to the guest's HTTPS (443) and SIP
(5060 udp+tcp) ports. Prints the admin URL and setup code once the appliance
is ready. Ctrl-C powers the VM off cleanly; a second Ctrl-C stops it at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), g, f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&f.data, "data", "", "data disk image (default OUT/BOARD/data.img)")
	cmd.Flags().IntVar(&f.httpsPort, "https-port", 0, "host port for HTTPS (0: pick a free one)")
	cmd.Flags().IntVar(&f.sipPort, "sip-port", 0, "host port for SIP udp+tcp (0: pick free ones)")
	cmd.Flags().BoolVar(&f.kvm, "kvm", false, "use KVM instead of TCG")
	cmd.Flags().IntVar(&f.memory, "memory", 512, "guest memory in MiB")
	cmd.Flags().DurationVar(&f.bootWait, "boot-timeout", 5*time.Minute, "how long to wait for the appliance to be ready")
	return cmd
}

const powerdownTimeout = 60 * time.Second

func run(ctx context.Context, g *globalFlags, f runFlags, stdout, stderr io.Writer) error {
	img, err := buildImage(ctx, g, f.buildFlags)
	if err != nil {
		return err
	}
	// From here on a signal means "power the VM off", not "cancel".
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx = context.WithoutCancel(ctx)
	printImage(stderr, img)
	data := f.data
	if data == "" {
		data = filepath.Join(filepath.Dir(img.Initramfs), "data.img")
	}
	for {
		reboot, err := runOnce(ctx, g, f, img, data, sigs, stdout, stderr)
		if err != nil || !reboot {
			return err
		}
		fmt.Fprintln(stderr, "==> guest rebooted: starting it again")
	}
}

// runOnce boots the VM once; reboot tells that the guest asked for a reboot
// (QEMU runs with -no-reboot, so the runner restarts it).
func runOnce(ctx context.Context, g *globalFlags, f runFlags, img *image.Image, data string,
	sigs <-chan os.Signal, stdout, stderr io.Writer) (reboot bool, err error) {
	// The VM outlives Ctrl-C on purpose: the signal is turned into a clean
	// poweroff below, so its context is not the signal's.
	vmCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	vm, err := qemu.Boot(vmCtx, img,
		qemu.WithDataDisk(data),
		qemu.WithHostForward("tcp", f.httpsPort, 443),
		qemu.WithHostForward("udp", f.sipPort, 5060),
		qemu.WithHostForward("tcp", f.sipPort, 5060),
		qemu.WithKVM(f.kvm),
		qemu.WithMemory(f.memory),
		qemu.WithConsoleLog(stdout),
		qemu.WithLogger(g.logger()),
	)
	if err != nil {
		return false, err
	}
	defer vm.Kill()

	ready := make(chan error, 1)
	go func() { ready <- announce(vmCtx, vm, f.bootWait, stderr) }()

	for {
		select {
		case err := <-ready:
			if err != nil {
				fmt.Fprintf(stderr, "\n==> %v\n==> the VM keeps running for inspection; Ctrl-C powers it off\n", err)
			}
			ready = nil
		case <-sigs:
			fmt.Fprintf(stderr, "\n==> powering the VM off (system_powerdown, up to %s; Ctrl-C again to stop it at once)\n", powerdownTimeout)
			pctx, pcancel := context.WithTimeout(context.Background(), powerdownTimeout)
			done := make(chan error, 1)
			go func() { done <- vm.Powerdown(pctx) }()
			select {
			case err = <-done:
			case <-sigs:
				vm.Kill()
				err = <-done
			}
			pcancel()
			if err != nil {
				return false, fmt.Errorf("power off: %w", err)
			}
			fmt.Fprintln(stderr, "==> powered off")
			return false, nil
		case <-vm.Exited():
			if err := vm.Wait(); err != nil {
				return false, err
			}
			switch state := lastState(vm); state {
			case "edgepbx: reboot":
				return true, nil
			case "edgepbx: power off":
				fmt.Fprintln(stderr, "==> the appliance powered itself off")
				return false, nil
			default:
				// -no-reboot turns a kernel panic or reset into a plain exit.
				return false, fmt.Errorf("QEMU exited without the appliance powering off (kernel panic or reset?)\n%s", vm.Tail(20))
			}
		}
	}
}

// announce waits for the appliance to be ready and prints how to reach it
// from this host: the guest's own addresses mean nothing here.
func announce(ctx context.Context, vm *qemu.VM, timeout time.Duration, w io.Writer) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	line, err := vm.WaitFirst(wctx, "edgepbx: ready", "edgepbx: HALTED")
	if err != nil {
		return fmt.Errorf("appliance not ready: %w", firstLine(err))
	}
	if strings.HasPrefix(line, "edgepbx: HALTED") {
		return fmt.Errorf("appliance stopped in its safe state: %s", strings.TrimPrefix(line, "edgepbx: "))
	}
	// The banner follows the ready line; a claimed box shows no setup code.
	code := "(none shown: the box is already claimed)"
	bctx, bcancel := context.WithTimeout(ctx, 10*time.Second)
	defer bcancel()
	if l, err := vm.WaitLine(bctx, "setup code:"); err == nil {
		code = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "setup code:"))
	}
	fmt.Fprintf(w, "\n==> edgepbx is ready (%.1fs after QEMU start)\n", time.Since(vm.Started()).Seconds())
	fmt.Fprintf(w, "    admin URL:   https://127.0.0.1:%d/\n", vm.HostPort("tcp", 443))
	fmt.Fprintf(w, "    setup code:  %s\n", code)
	fmt.Fprintf(w, "    SIP:         udp 127.0.0.1:%d, tcp 127.0.0.1:%d\n", vm.HostPort("udp", 5060), vm.HostPort("tcp", 5060))
	fmt.Fprintf(w, "    Ctrl-C powers the VM off.\n\n")
	return nil
}

// lastState is the last "edgepbx:" state line on the console.
func lastState(vm *qemu.VM) string {
	lines := vm.Lines()
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "edgepbx: reboot") || strings.HasPrefix(l, "edgepbx: power off") {
			return l
		}
	}
	return ""
}

// firstLine keeps the error's first line: the console tail is already on the
// terminal.
func firstLine(err error) error {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return errors.New(s)
}
