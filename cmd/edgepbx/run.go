package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
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
	net       string
}

func newRunCmd(g *globalFlags) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run --board B",
		Short: "Build (when needed) and boot a board's image under QEMU",
		Long: `Boots the image with a persistent data disk (created and formatted on first
use) and prints the admin URL, the setup code and how to point a softphone at
it once the appliance is ready. Ctrl-C powers the VM off cleanly; a second
Ctrl-C stops it at once.

--net tap (the default as root) puts the guest on a private link to this host
(a tap in its own network namespace, routed to the host only): SIP over UDP,
TCP and TLS and RTP all work, and the guest reaches nothing but this host's
phones. --net user (the default otherwise) needs no privileges but QEMU's
user networking carries no UDP from the guest, so only HTTPS and SIP over
TCP/TLS are forwarded (to 127.0.0.1) and calls have no audio.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), g, f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&f.data, "data", "", "data disk image (default OUT/BOARD/data.img)")
	cmd.Flags().IntVar(&f.httpsPort, "https-port", 0, "host port for HTTPS (0: pick a free one)")
	cmd.Flags().IntVar(&f.sipPort, "sip-port", 0, "--net user: host port for SIP tcp (0: pick a free one; TLS takes the next free one)")
	cmd.Flags().StringVar(&f.net, "net", "auto", "guest network: tap (root; UDP SIP and audio), user (no privileges; TCP only) or auto")
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
	var rn *qemu.RunNet
	switch mode, err := netMode(f.net, os.Geteuid()); {
	case err != nil:
		return err
	case mode == "tap":
		if rn, err = qemu.NewRunNet(); err != nil {
			return fmt.Errorf("%w (run as root, or use --net user: no UDP SIP, no audio)", err)
		}
		defer rn.Close()
	default:
		fmt.Fprintln(stderr, "==> --net user: QEMU's user networking drops the guest's UDP, so SIP works over TCP/TLS only and calls carry no audio; run as root (sudo make run) for UDP SIP and audio")
	}
	for {
		reboot, err := runOnce(ctx, g, f, img, data, rn, sigs, stdout, stderr)
		if err != nil || !reboot {
			return err
		}
		fmt.Fprintln(stderr, "==> guest rebooted: starting it again")
	}
}

// runOnce boots the VM once; reboot tells that the guest asked for a reboot
// (QEMU runs with -no-reboot, so the runner restarts it).
func runOnce(ctx context.Context, g *globalFlags, f runFlags, img *image.Image, data string,
	rn *qemu.RunNet, sigs <-chan os.Signal, stdout, stderr io.Writer) (reboot bool, err error) {
	// The VM outlives Ctrl-C on purpose: the signal is turned into a clean
	// poweroff below, so its context is not the signal's.
	vmCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := []qemu.Option{
		qemu.WithDataDisk(data),
		qemu.WithKVM(f.kvm),
		qemu.WithMemory(f.memory),
		qemu.WithConsoleLog(stdout),
		qemu.WithLogger(g.logger()),
	}
	if rn != nil {
		opts = append(opts, qemu.WithRunNet(rn))
	} else {
		opts = append(opts,
			qemu.WithHostForward("tcp", f.httpsPort, 443),
			qemu.WithHostForward("tcp", f.sipPort, 5060),
			qemu.WithHostForward("tcp", 0, 5061))
	}
	vm, err := qemu.Boot(vmCtx, img, opts...)
	if err != nil {
		return false, err
	}
	defer vm.Kill()

	ready := make(chan error, 1)
	go func() { ready <- announce(vmCtx, vm, rn, f.bootWait, stderr) }()

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
func announce(ctx context.Context, vm *qemu.VM, rn *qemu.RunNet, timeout time.Duration, w io.Writer) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	line, err := vm.WaitFirst(wctx, "edgepbx: ready", "edgepbx: HALTED")
	if err != nil {
		return fmt.Errorf("appliance not ready: %w", firstLine(err))
	}
	if strings.HasPrefix(line, "edgepbx: HALTED") {
		return fmt.Errorf("appliance stopped in its safe state: %s", strings.TrimPrefix(line, "edgepbx: "))
	}
	// The banner follows the ready line: the certificate's fingerprint, then
	// the setup code, or "claimed" instead.
	code, fp := "(none shown: the box is already claimed)", ""
	bctx, bcancel := context.WithTimeout(ctx, 10*time.Second)
	defer bcancel()
	for {
		l, err := vm.WaitFirst(bctx, "tls sha256:", "setup code:", "claimed:")
		if err != nil {
			break
		}
		k, v, _ := strings.Cut(strings.TrimSpace(l), ":")
		v = strings.TrimSpace(v)
		if k == "tls sha256" {
			fp = v
			continue
		}
		if k == "setup code" {
			code = v
		}
		break
	}
	fmt.Fprintf(w, "\n==> edgepbx is ready (%.1fs after QEMU start)\n", time.Since(vm.Started()).Seconds())
	writeHowTo(w, reachFor(vm, rn), code, fp)
	return nil
}

// reach is where this host finds the appliance's services.
type reach struct {
	Admin               string // host:port
	SIPUDP, SIPTCP, TLS string // host:port; "" when not reachable
	Audio               bool
	From                string // this host's address on the link, "" for loopback
}

func reachFor(vm *qemu.VM, rn *qemu.RunNet) reach {
	if rn != nil {
		g := rn.Guest.Addr().String()
		return reach{Admin: g, SIPUDP: net.JoinHostPort(g, "5060"), SIPTCP: net.JoinHostPort(g, "5060"),
			TLS: net.JoinHostPort(g, "5061"), Audio: true, From: rn.Host.String()}
	}
	lo := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	return reach{Admin: lo(vm.HostPort("tcp", 443)), SIPTCP: lo(vm.HostPort("tcp", 5060)), TLS: lo(vm.HostPort("tcp", 5061))}
}

// writeHowTo prints the admin URL and how to point a softphone at the box.
func writeHowTo(w io.Writer, r reach, code, fingerprint string) {
	fmt.Fprintf(w, "    admin URL:   https://%s/\n", r.Admin)
	fmt.Fprintf(w, "    setup code:  %s\n", code)
	if fingerprint != "" {
		fmt.Fprintf(w, "    certificate: sha256 %s (self-signed on first boot; check it in the browser)\n", fingerprint)
	}
	fmt.Fprintf(w, "    softphone:   claim the box, add an extension (Extensions page), then register with\n")
	fmt.Fprintf(w, "                 user = the extension, password = the one shown once, domain = the server below\n")
	if r.SIPUDP != "" {
		fmt.Fprintf(w, "      UDP:       server %s  transport UDP\n", r.SIPUDP)
	} else {
		fmt.Fprintf(w, "      UDP:       not available with --net user (QEMU's user networking drops the guest's UDP)\n")
	}
	fmt.Fprintf(w, "      TCP:       server %s  transport TCP\n", r.SIPTCP)
	fmt.Fprintf(w, "      TLS:       server %s  transport TLS (the box's certificate is self-signed: import it\n", r.TLS)
	fmt.Fprintf(w, "                 as a trusted CA in the softphone, or accept it after checking the sha256 above)\n")
	if r.Audio {
		fmt.Fprintf(w, "      audio:     RTP flows directly; this host talks to the box from %s\n", r.From)
	} else {
		fmt.Fprintf(w, "      audio:     none with --net user; run as root (sudo make run) for UDP SIP and audio\n")
	}
	fmt.Fprintf(w, "    Ctrl-C powers the VM off.\n\n")
}

// netMode resolves --net: auto picks tap for root (it needs CAP_NET_ADMIN).
func netMode(flag string, euid int) (string, error) {
	switch flag {
	case "tap", "user":
		return flag, nil
	case "auto", "":
		if euid == 0 {
			return "tap", nil
		}
		return "user", nil
	}
	return "", fmt.Errorf("--net %q: want tap, user or auto", flag)
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
