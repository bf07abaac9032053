package qemu

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"golang.org/x/sys/unix"
)

// inNewNetns runs f on a thread that lives in a fresh network namespace, with
// that namespace's path; the thread is discarded afterwards.
func inNewNetns(t *testing.T, f func(nsPath string, inside func(func()))) {
	t.Helper()
	type job struct {
		fn   func()
		done chan struct{}
	}
	jobs := make(chan job)
	ready := make(chan error)
	path := make(chan string, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- err
			return
		}
		path <- fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		ready <- nil
		for j := range jobs {
			j.fn()
			close(j.done)
		}
	}()
	if err := <-ready; err != nil {
		netnstest.Unavailable(t, "cannot create a network namespace: %v", err)
	}
	defer close(jobs)
	f(<-path, func(fn func()) {
		d := make(chan struct{})
		jobs <- job{fn, d}
		<-d
	})
}

func TestOpenTapInNetns(t *testing.T) {
	inNewNetns(t, func(ns string, inside func(func())) {
		f, err := openTap(ns, "edgetap0")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		inside(func() {
			if _, err := net.InterfaceByName("edgetap0"); err != nil {
				t.Errorf("tap not in the namespace: %v", err)
			}
		})
		if _, err := net.InterfaceByName("edgetap0"); err == nil {
			t.Error("tap leaked into the host namespace")
		}
		if _, err := openTap("/nonexistent/netns", "edgetap1"); err == nil {
			t.Error("missing netns accepted")
		}
	})
}
