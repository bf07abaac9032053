package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrHardStop reports that the guest did not power off in time and QEMU was
// stopped from the host instead.
var ErrHardStop = errors.New("qemu: guest did not power off, QEMU stopped hard")

// VM is a running QEMU guest.
type VM struct {
	cmd      *exec.Cmd
	cons     *console
	qmp      atomic.Pointer[qmp] // set once the monitor is up
	dir      string
	forwards []Forward
	started  time.Time
	cfg      config
	stderr   *tailBuffer

	inMu  sync.Mutex
	stdin *os.File

	exited  chan struct{}
	waitErr error // set before exited is closed
}

// BootTarget starts QEMU for t. ctx bounds the VM's life: when it ends, QEMU is
// killed. Use Powerdown for a clean stop.
func BootTarget(ctx context.Context, t Target, opts ...Option) (*VM, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	t, err := t.withDefaults(cfg.kvm)
	if err != nil {
		return nil, err
	}
	if t.Arch == ArchX86_64 && !cfg.kvm && !hasParam(t.Cmdline, "tsc_early_khz") && !slices.ContainsFunc(cfg.appendArgs, func(p string) bool { return hasParam(p, "tsc_early_khz") }) {
		cfg.tscKHz = hostTSCkHz()
	}
	files := []string{t.Kernel, t.Initramfs}
	if t.UEFI != nil {
		files = []string{t.UEFI.Code, t.UEFI.Vars, t.UEFI.Disk}
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
	}
	bin, err := exec.LookPath(t.Binary)
	if err != nil {
		return nil, fmt.Errorf("qemu: %s not found (Debian package %s): %w", t.Binary, debianPackage(t.Arch), err)
	}
	if cfg.kvm {
		if _, err := os.Stat("/dev/kvm"); err != nil {
			return nil, fmt.Errorf("qemu: KVM requested but unavailable: %w", err)
		}
	}
	if cfg.dataDisk != "" {
		created, err := EnsureDataDisk(ctx, cfg.dataDisk, cfg.dataDiskSize)
		if err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
		if created {
			cfg.logger.Info("created data disk", "path", cfg.dataDisk, "bytes", cfg.dataDiskSize)
		}
	}
	var tap *os.File
	if cfg.tap != nil {
		if tap, err = openTap(cfg.tap.netns, cfg.tap.name); err != nil {
			return nil, err
		}
		defer tap.Close()
		if cfg.runNet != nil {
			if err := cfg.runNet.configureTap(); err != nil {
				return nil, err
			}
		}
	}

	// A port picked free may be taken again before QEMU binds it: retry then.
	const tries = 3
	for try := 1; ; try++ {
		vm, err := start(ctx, bin, t, cfg, tap)
		if err == nil {
			return vm, nil
		}
		if !errors.Is(err, errPortTaken) || try == tries {
			return nil, err
		}
		cfg.logger.Warn("host port taken, retrying", "err", err)
	}
}

var errPortTaken = errors.New("host forward port taken")

func start(ctx context.Context, bin string, t Target, cfg config, tap *os.File) (_ *VM, err error) {
	fw, err := pickPorts(cfg.forwards)
	if err != nil {
		return nil, err
	}
	cfg.forwards = fw
	dir, err := os.MkdirTemp("", "edgepbx-qemu-")
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	qmpPath := dir + "/qmp.sock"
	a, err := args(t, cfg, qmpPath)
	if err != nil {
		return nil, err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("qemu: %w", err)
	}
	vm := &VM{
		cons:     newConsole(cfg.consoleLines),
		dir:      dir,
		forwards: fw,
		cfg:      cfg,
		stderr:   &tailBuffer{max: 16 << 10},
		stdin:    inW,
		exited:   make(chan struct{}),
	}
	cmd := exec.Command(bin, a...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, vm.stderr
	if tap != nil {
		cmd.ExtraFiles = []*os.File{tap} // fd 3 == tapFD
	}
	// Own process group: a terminal's ^C goes to edgepbx, which powers the
	// guest down, not straight to QEMU. Pdeathsig: no orphaned VMs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cfg.logger.Debug("starting qemu", "cmd", bin+" "+strings.Join(a, " "))
	vm.started = time.Now()
	if err := cmd.Start(); err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("qemu: start %s: %w", bin, err)
	}
	inR.Close()
	outW.Close() // the console reader sees EOF when QEMU exits
	vm.cmd = cmd
	consoleDone := make(chan struct{})
	go func() {
		vm.cons.run(outR, cfg.consoleLog)
		outR.Close()
		close(consoleDone)
	}()
	go func() {
		werr := cmd.Wait()
		<-consoleDone
		if werr != nil {
			werr = fmt.Errorf("qemu exited: %w: %s", werr, strings.TrimSpace(vm.stderr.String()))
		}
		vm.waitErr = werr
		inW.Close()
		close(vm.exited)
		os.RemoveAll(dir)
	}()
	go func() {
		select {
		case <-ctx.Done():
			vm.Kill()
		case <-vm.exited:
		}
	}()

	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	q, err := dialQMP(dctx, qmpPath, vm.exited)
	if err != nil {
		vm.Kill()
		<-vm.exited
		msg := vm.stderr.String()
		if strings.Contains(msg, "host forwarding rule") || strings.Contains(msg, "Address already in use") {
			return nil, fmt.Errorf("%w: %s", errPortTaken, strings.TrimSpace(msg))
		}
		return nil, fmt.Errorf("qemu: %w: %s", err, strings.TrimSpace(msg))
	}
	vm.qmp.Store(q)
	go func() {
		<-vm.exited
		q.close()
	}()
	return vm, nil
}

// pickPorts gives every forward without a host port a free loopback port.
func pickPorts(in []Forward) ([]Forward, error) {
	out := append([]Forward(nil), in...)
	var closers []func() error
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for i := range out {
		if out[i].HostPort != 0 {
			continue
		}
		switch out[i].Proto {
		case "tcp":
			l, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				return nil, fmt.Errorf("qemu: pick free tcp port: %w", err)
			}
			closers = append(closers, l.Close)
			out[i].HostPort = l.Addr().(*net.TCPAddr).Port
		case "udp":
			c, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				return nil, fmt.Errorf("qemu: pick free udp port: %w", err)
			}
			closers = append(closers, c.Close)
			out[i].HostPort = c.LocalAddr().(*net.UDPAddr).Port
		}
	}
	return out, nil
}

func debianPackage(a Arch) string {
	if a == ArchARM64 {
		return "qemu-system-arm"
	}
	return "qemu-system-x86"
}

// Forwards returns the port forwards with the host ports chosen at boot.
func (vm *VM) Forwards() []Forward { return append([]Forward(nil), vm.forwards...) }

// HostPort returns the host port forwarded to guestPort over proto, or 0.
func (vm *VM) HostPort(proto string, guestPort int) int {
	for _, f := range vm.forwards {
		if f.Proto == proto && f.GuestPort == guestPort {
			return f.HostPort
		}
	}
	return 0
}

// Started is when QEMU was started.
func (vm *VM) Started() time.Time { return vm.started }

// PID is QEMU's process id.
func (vm *VM) PID() int { return vm.cmd.Process.Pid }

// WaitLine waits for the next console line (after the last one matched) that
// starts with prefix, ignoring leading blanks. It fails when ctx ends or QEMU
// exits first, naming the prefix and showing the console's tail.
func (vm *VM) WaitLine(ctx context.Context, prefix string) (string, error) {
	return vm.cons.wait(ctx, prefix)
}

// WaitFirst is WaitLine for several prefixes: it returns the first line that
// starts with any of them, e.g. "edgepbx: ready" or "edgepbx: HALTED".
func (vm *VM) WaitFirst(ctx context.Context, prefixes ...string) (string, error) {
	return vm.cons.wait(ctx, prefixes...)
}

// Lines returns the console lines kept so far (the last few thousand).
func (vm *VM) Lines() []string { return vm.cons.all() }

// Tail returns the last n console lines formatted for an error message.
func (vm *VM) Tail(n int) string { return vm.cons.tail(n) }

// SendLine types s and a newline on the guest's console.
func (vm *VM) SendLine(s string) error {
	if strings.ContainsAny(s, "\r\n") {
		return fmt.Errorf("qemu: console line %q contains a line break", s)
	}
	vm.inMu.Lock()
	defer vm.inMu.Unlock()
	if _, err := vm.stdin.WriteString(s + "\n"); err != nil {
		return fmt.Errorf("qemu: console input: %w", err)
	}
	return nil
}

// Powerdown presses the guest's power button (QMP system_powerdown) and waits
// for QEMU to exit: until ctx's deadline, or the stop timeout (60 s) when ctx
// has none. If the guest does not power off in time, QEMU is stopped hard and
// the error wraps ErrHardStop.
func (vm *VM) Powerdown(ctx context.Context) error {
	select {
	case <-vm.exited:
		return vm.waitErr
	default:
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(vm.cfg.stopTimeout)
	}
	limit := time.Until(deadline).Round(time.Second)
	qctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if _, err := vm.qmp.Load().exec(qctx, "system_powerdown"); err != nil {
		select {
		case <-vm.exited: // powered off while we asked
			return vm.waitErr
		default:
		}
		vm.hardStop()
		return fmt.Errorf("%w: system_powerdown failed: %v", ErrHardStop, err)
	}
	select {
	case <-vm.exited:
		return vm.waitErr
	case <-qctx.Done():
		vm.hardStop()
		return fmt.Errorf("%w: no poweroff within %s of system_powerdown\n%s", ErrHardStop, limit, vm.Tail(20))
	case <-ctx.Done():
		vm.hardStop()
		return fmt.Errorf("%w: %v", ErrHardStop, ctx.Err())
	}
}

// hardStop asks QEMU to quit, then kills it.
func (vm *VM) hardStop() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	vm.qmp.Load().exec(ctx, "quit")
	select {
	case <-vm.exited:
	case <-time.After(5 * time.Second):
		vm.Kill()
	}
}

// Kill stops QEMU at once (SIGKILL) and waits for it to be gone.
func (vm *VM) Kill() {
	select {
	case <-vm.exited:
		return
	default:
	}
	vm.cmd.Process.Kill()
	<-vm.exited
}

// Wait waits for QEMU to exit and returns nil when it exited with status 0
// (the guest powered off, or QEMU was asked to quit).
func (vm *VM) Wait() error {
	<-vm.exited
	return vm.waitErr
}

// Exited is closed when QEMU has exited.
func (vm *VM) Exited() <-chan struct{} { return vm.exited }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
