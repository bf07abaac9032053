package netfw_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// An external test package: init/control imports netfw.

// noPower is PID 1's power side, which this benchmark never exercises.
type noPower struct{}

func (noPower) Health(control.Health) {}
func (noPower) Reboot() error         { return nil }
func (noPower) Poweroff() error       { return nil }

// BenchmarkPinholeViaControlSocket: OpenPinhole + ClosePinhole from the
// edgepbxd side of PID 1's control socket (framing, peer check, JSON,
// validation) to the kernel and back, against nftables in a fresh netns.
func BenchmarkPinholeViaControlSocket(b *testing.B) {
	netnstest.NeedRoot(b, "network namespaces and nftables")
	ns := make(chan netns.NsHandle, 1)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		h, err := netns.New()
		ns <- h
		errc <- err
	}()
	box := <-ns
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	defer box.Close()

	bounds := netfw.DefaultBounds()
	bounds.OpsPerSecond, bounds.OpsBurst = 1e9, 1e9
	fw, err := netfw.New(netfw.WithNetNS(int(box)), netfw.WithBounds(bounds))
	if err != nil {
		b.Fatal(err)
	}
	defer fw.Close()
	if err := fw.Apply(netfw.DefaultPolicy()); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "init.sock")
	srv, err := control.Listen(control.Config{Path: path, UID: 0, GID: 0, Firewall: fw, System: noPower{},
		ConnRate: 1e9, ConnBurst: 1 << 30, GlobalRate: 1e9, GlobalBurst: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	cl, err := control.Dial(path)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()

	var lat []time.Duration
	i := 0
	for b.Loop() {
		ph := netfw.Pinhole{Remote: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), LocalPort: uint16(10000 + i%10000)}
		i++
		start := time.Now()
		if err := cl.OpenPinhole(ctx, ph); err != nil {
			b.Fatal(err)
		}
		if err := cl.ClosePinhole(ctx, ph); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// The control socket dispatches to *netfw.Firewall.
var _ control.Firewall = (*netfw.Firewall)(nil)
