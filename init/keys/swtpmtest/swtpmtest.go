// Package swtpmtest runs a real software TPM 2.0 (swtpm, Debian package
// swtpm) for tests: one process per "box", its state in a directory the
// test chooses, so a restart with the same directory is the same TPM and
// another directory is another box.
package swtpmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TPM is a running swtpm.
type TPM struct {
	State string // state directory (the "chip")
	Sock  string // TPM command socket (for go-tpm's linuxudstpm)
	Ctrl  string // control socket (for QEMU's -chardev socket)
	cmd   *exec.Cmd
	done  chan struct{}
}

// Require skips the test when swtpm is not installed, or fails it under CI.
func Require(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("swtpm")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("swtpm not installed (.ci/deps installs it): %v", err)
		}
		t.Skip("swtpm not installed")
	}
	return p
}

// Start runs swtpm on state (created if missing) with a command socket for
// go-tpm; it is stopped when the test ends.
func Start(t testing.TB, state string) *TPM {
	return start(t, state, true)
}

// StartForQEMU runs swtpm with only the control channel, which QEMU's
// tpm-emulator backend connects to (QEMU drives the TPM's init and startup).
func StartForQEMU(t testing.TB, state string) *TPM {
	return start(t, state, false)
}

func start(t testing.TB, state string, server bool) *TPM {
	t.Helper()
	bin := Require(t)
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	// Sockets live in a short temp dir: sun_path is 108 bytes.
	sd, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sd) })
	tp := &TPM{State: state, Ctrl: filepath.Join(sd, "ctrl"), done: make(chan struct{})}
	args := []string{"socket", "--tpm2", "--tpmstate", "dir=" + state,
		"--ctrl", "type=unixio,path=" + tp.Ctrl}
	if server {
		tp.Sock = filepath.Join(sd, "sock")
		args = append(args, "--server", "type=unixio,path="+tp.Sock, "--flags", "not-need-init,startup-clear")
	} else {
		args = append(args, "--terminate")
	}
	tp.cmd = exec.Command(bin, args...)
	// Its stderr says "Data client disconnected" after every command
	// (go-tpm's socket transport reconnects per command): not shown.
	if err := tp.cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	go func() { tp.cmd.Wait(); close(tp.done) }()
	t.Cleanup(tp.Stop)
	want := tp.Ctrl
	if server {
		want = tp.Sock
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(want); err == nil {
			return tp
		}
		select {
		case <-tp.done:
			t.Fatalf("swtpm exited before listening: %v", tp.cmd.ProcessState)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm: %s did not appear", want)
		}
	}
}

// Stop ends swtpm (its state stays in State) and waits for it.
func (tp *TPM) Stop() {
	select {
	case <-tp.done:
		return
	default:
	}
	tp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-tp.done:
	case <-time.After(10 * time.Second):
		tp.cmd.Process.Kill()
		<-tp.done
	}
}
