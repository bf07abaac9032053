package sipedge

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"golang.org/x/sys/unix"
)

// testFront binds a front end of n sockets on a free loopback port whose
// chain is stage 1 plus finish (in place of the stateless path).
func testFront(t *testing.T, n int, finish func(net.Addr, netip.Addr, []byte) bool) *udpFront {
	t.Helper()
	conns, err := listenUDP(context.Background(), "127.0.0.1:0", n)
	if err != nil {
		t.Fatal(err)
	}
	g := guardConfig(pbxconfig.DefaultSIP().Guard)
	bans := newBans()
	f := newReadFilter(bans, newGuard(g, bans, func(netip.Addr) bool { return false }, func(netfw.Ban) {}), nil, 1500, nil)
	f.stateless, f.udpFront = finish, true
	u := newUDPFront(conns, f, 1500)
	t.Cleanup(func() { u.Close() })
	return u
}

// TestUDPFrontPerSourceOrder: the datagrams of one source are handled in
// the order they were sent, while many sources are served by several
// sockets and workers at once.
func TestUDPFrontPerSourceOrder(t *testing.T) {
	const sources, each = 24, 200 // under the default flood limit per source
	type rec struct {
		last, got int
	}
	var mu sync.Mutex
	seen := map[string]*rec{}
	var bad []string
	all := make(chan struct{})
	total := 0
	u := testFront(t, 4, func(from net.Addr, _ netip.Addr, data []byte) bool {
		n, err := strconv.Atoi(string(data))
		if err != nil {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		r := seen[from.String()]
		if r == nil {
			r = &rec{last: -1}
			seen[from.String()] = r
		}
		if n <= r.last {
			bad = append(bad, fmt.Sprintf("%s: %d after %d", from, n, r.last))
		}
		r.last = n
		r.got++
		if total++; total == sources*each {
			close(all)
		}
		return true
	})
	u.start()
	srv := u.LocalAddr().(*net.UDPAddr)
	var wg sync.WaitGroup
	for i := range sources {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 3, byte(1+i))})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each {
				if _, err := c.WriteToUDP([]byte(strconv.Itoa(n)), srv); err != nil {
					t.Error(err)
					return
				}
				if n%50 == 49 {
					runtime.Gosched() // let the workers drain: the test checks order, not buffer sizes
				}
			}
		}()
	}
	wg.Wait()
	<-all // loopback with 4 MiB buffers does not lose these
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("out of order: %v", bad)
	}
	if len(seen) != sources {
		t.Fatalf("%d sources seen, want %d", len(seen), sources)
	}
}

// TestUDPFrontClose: closing the front end stops every worker, then
// sipgo's reader gets net.ErrClosed, and the port is free again.
func TestUDPFrontClose(t *testing.T) {
	u := testFront(t, 3, func(net.Addr, netip.Addr, []byte) bool { return false })
	u.start()
	addr := u.LocalAddr().String()
	// A datagram the chain does not finish reaches sipgo's reader.
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("OPTIONS")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1500)
	n, from, err := u.ReadFrom(b)
	if err != nil || string(b[:n]) != "OPTIONS" || from.String() != c.LocalAddr().String() {
		t.Fatalf("ReadFrom = %q, %v, %v", b[:n], from, err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := u.ReadFrom(b); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom after Close: %v, want net.ErrClosed", err)
	}
	// done is closed only after every worker returned; no socket is left.
	again, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("port still bound after Close: %v", err)
	}
	again.Close()
}

// TestUDPPortGroupClosed: nobody else can take the port or join the
// reuseport group: a plain bind fails, a second edgepbxd's listenUDP
// fails, and so does SO_REUSEPORT from another effective UID.
func TestUDPPortGroupClosed(t *testing.T) {
	conns, err := listenUDP(context.Background(), "127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	addr := conns[0].LocalAddr().(*net.UDPAddr)
	if c, err := net.ListenUDP("udp", addr); err == nil {
		c.Close()
		t.Fatal("plain bind joined the port")
	}
	// A second edgepbxd (same user) fails as it did with one socket.
	if second, err := listenUDP(context.Background(), addr.String(), 2); err == nil {
		for _, c := range second {
			c.Close()
		}
		t.Fatal("a second listenUDP joined the group")
	}
	netnstest.NeedRoot(t, "binding as another user")
	errc := make(chan error, 1)
	go func() {
		// setresuid on this thread only (the raw syscall, not Go's
		// all-threads one); the thread is thrown away afterwards.
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 65534, ^uintptr(0)); e != 0 {
			errc <- fmt.Errorf("setresuid: %w", e)
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			errc <- err
			return
		}
		err = unix.Bind(fd, &unix.SockaddrInet4{Port: addr.Port, Addr: [4]byte{127, 0, 0, 1}})
		if err == nil {
			errc <- errors.New("another user joined the reuseport group")
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			errc <- fmt.Errorf("bind: %w, want EADDRINUSE", err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestUDPFrontAllocs: a worker answering a REGISTER challenge, from
// stage 1 to the sendto, allocates nothing per datagram.
func TestUDPFrontAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(t.TempDir(), "edgepbx.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lg, err := logs.New(db, 100)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Algorithms = []string{AlgMD5}
	// As TestFastPathAllocations: stage 3 on a non-exempt source builds a
	// sip.Request for Policy.Domain, which allocates.
	cfg.Allowlist = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	// Not served: the test plays the worker's reads.
	s, err := New(cfg, Deps{Store: db, Banner: newRecordingBanner(), Security: lg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	p := &phone{t: t, srv: s.Addr("udp").(*net.UDPAddr), user: "101", tag: "t1", call: "c1", local: sink.LocalAddr().String()}
	msg, _ := p.register(regOpts{})
	w := s.front.workers[0]
	n := copy(*w.buf, msg)
	ap := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	before := s.filter.Counters.Passed.Load()
	allocs := testing.AllocsPerRun(200, func() { s.front.handle(w, n, ap) })
	if s.filter.Counters.Passed.Load() == before {
		t.Fatal("the chain did not run")
	}
	if allocs > 0 {
		t.Fatalf("%.1f allocations per challenge, want 0", allocs)
	}
	// The answers went out from the worker's socket.
	sink.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 2000)
	if n, from, err := sink.ReadFromUDP(b); err != nil || !bytes.HasPrefix(b[:n], []byte("SIP/2.0 401 ")) || from.String() != w.conn.LocalAddr().String() {
		t.Fatalf("answer %q from %v: %v", b[:min(n, 40)], from, err)
	}
}
