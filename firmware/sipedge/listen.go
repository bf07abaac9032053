package sipedge

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// udpWorkers is how many sockets (each with its worker goroutine) serve
// the UDP transport: one per CPU, at most 8.
func udpWorkers() int { return min(max(runtime.GOMAXPROCS(0), 1), 8) }

// listenUDP binds n UDP sockets to addr as one SO_REUSEPORT group; the
// kernel then spreads datagrams over them by a hash of the source address
// and port, so one source always reaches the same socket. With port 0 the
// first socket picks the port and the others join it.
//
// Linux lets a socket join a reuseport group only when it sets
// SO_REUSEPORT too and belongs to the same effective UID as the sockets
// already bound: another user's process cannot take a share of the SIP
// traffic, and one that binds without SO_REUSEPORT gets EADDRINUSE. A
// process of the same UID as edgepbxd could join, as it could anyway read
// edgepbxd's memory or keys; the appliance runs nothing else as that user.
// So that a second edgepbxd fails to start instead of quietly taking half
// the phones, a fixed port is first probed with a plain bind, which fails
// while any socket (a reuseport group included) holds it.
func listenUDP(ctx context.Context, addr string, n int) ([]*net.UDPConn, error) {
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "0" && port != "" {
		probe, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, err
		}
		probe.Close()
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			if serr != nil {
				return
			}
			// Multicast for groups this socket never joined (SIP PnP's
			// 224.0.1.75, joined by provisioning's responder on the same
			// port) must not reach the edge: it would answer or count it.
			if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0); serr != nil {
				serr = fmt.Errorf("IP_MULTICAST_ALL: %w", serr)
				return
			}
			// IPv6 sockets have their own switch (Linux ≥ 4.20); an IPv4
			// socket refuses it.
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0)
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("udp socket options: %w", serr)
		}
		return nil
	}}
	var conns []*net.UDPConn
	fail := func(err error) ([]*net.UDPConn, error) {
		for _, c := range conns {
			c.Close()
		}
		return nil, err
	}
	for i := range max(n, 1) {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return fail(err)
		}
		c, ok := pc.(*net.UDPConn)
		if !ok {
			pc.Close()
			return fail(fmt.Errorf("not a UDP socket: %T", pc))
		}
		conns = append(conns, c)
		if i == 0 {
			// The others join the port the first got (":0" picks one).
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return fail(err)
			}
			addr = net.JoinHostPort(host, strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port))
		}
	}
	return conns, nil
}

// ConnCounters count stream connection admission.
type ConnCounters struct {
	Accepted, OverTotal, OverSource, Banned atomic.Uint64
}

// connLimiter caps stream connections per source and in total, drops banned
// sources at accept, and gives every read an idle deadline.
type connLimiter struct {
	// limits is replaced whole by set: lowered caps refuse new connections
	// while existing ones stay up; a new idle timeout applies from a
	// connection's next read.
	limits   atomic.Pointer[connLimits]
	bans     *Bans
	counters *ConnCounters
	// key is the unit the per-source cap counts: hosts inside the SIP
	// zones (one busy device on an IPv6 segment must not use up its
	// neighbours' share), /64s outside.
	key func(netip.Addr) netip.Prefix

	mu    sync.Mutex
	total int
	per   map[netip.Prefix]int
}

type connLimits struct {
	max, perSource int
	idle           time.Duration
}

func newConnLimiter(max, perSource int, idle time.Duration, bans *Bans, c *ConnCounters) *connLimiter {
	cl := &connLimiter{bans: bans, counters: c, per: map[netip.Prefix]int{}, key: sourceKey}
	cl.set(max, perSource, idle)
	return cl
}

func (cl *connLimiter) set(max, perSource int, idle time.Duration) {
	cl.limits.Store(&connLimits{max: max, perSource: perSource, idle: idle})
}

// admit counts a new connection from src; it returns the key to release
// it with (the key of src may change with the settings meanwhile).
func (cl *connLimiter) admit(src netip.Addr) (netip.Prefix, bool) {
	lim := cl.limits.Load()
	k := cl.key(src)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.total >= lim.max {
		cl.counters.OverTotal.Add(1)
		return k, false
	}
	if cl.per[k] >= lim.perSource {
		cl.counters.OverSource.Add(1)
		return k, false
	}
	cl.total++
	cl.per[k]++
	cl.counters.Accepted.Add(1)
	return k, true
}

func (cl *connLimiter) release(k netip.Prefix) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.total--
	if cl.per[k]--; cl.per[k] <= 0 {
		delete(cl.per, k)
	}
}

// limitListener applies a connLimiter to a listener.
type limitListener struct {
	net.Listener
	cl *connLimiter
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := addrOf(c.RemoteAddr())
		if l.cl.bans.Banned(time.Now(), src) {
			l.cl.counters.Banned.Add(1)
			c.Close()
			continue
		}
		k, ok := l.cl.admit(src)
		if !ok {
			c.Close()
			continue
		}
		return &limitConn{Conn: c, cl: l.cl, key: k}, nil
	}
}

type limitConn struct {
	net.Conn
	cl   *connLimiter
	key  netip.Prefix
	once sync.Once
}

// Read sets the idle deadline first: a silent connection is closed after
// the idle timeout (TCP keep-alives are CRLFs, which count as reads).
func (c *limitConn) Read(b []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.cl.limits.Load().idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *limitConn) Close() error {
	c.once.Do(func() { c.cl.release(c.key) })
	return c.Conn.Close()
}

// preparedListener runs the slow start of a connection (TLS handshake and
// reading the WebSocket upgrade request) in its own goroutine under a
// deadline: sipgo's WS/WSS Serve upgrades inline in its accept loop, so one
// stalled client would otherwise block every new connection.
type preparedListener struct {
	net.Listener
	timeout time.Duration
	ready   chan net.Conn
	done    chan struct{}
	once    sync.Once
	err     error
}

func newPreparedListener(l net.Listener, timeout time.Duration) *preparedListener {
	p := &preparedListener{Listener: l, timeout: timeout, ready: make(chan net.Conn), done: make(chan struct{})}
	go p.acceptLoop()
	return p
}

func (p *preparedListener) acceptLoop() {
	for {
		c, err := p.Listener.Accept()
		if err != nil {
			p.err = err
			p.Close()
			return
		}
		go p.prepare(c)
	}
}

// maxUpgradeHeader bounds the HTTP upgrade request.
const maxUpgradeHeader = 8192

func (p *preparedListener) prepare(c net.Conn) {
	// Closing on a timer works whatever deadlines the conn sets per read.
	t := time.AfterFunc(p.timeout, func() { c.Close() })
	if tc, ok := c.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			t.Stop()
			c.Close()
			return
		}
	}
	buf := make([]byte, 0, 1024)
	tmp := make([]byte, 1024)
	for !bytes.Contains(buf, []byte("\r\n\r\n")) {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil || len(buf) > maxUpgradeHeader {
			t.Stop()
			c.Close()
			return
		}
	}
	if !t.Stop() {
		return // timer fired: already closed
	}
	select {
	case p.ready <- &prefixConn{Conn: c, prefix: buf}:
	case <-p.done:
		c.Close()
	}
}

func (p *preparedListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.ready:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

func (p *preparedListener) Close() error {
	p.once.Do(func() { close(p.done) })
	return p.Listener.Close()
}

// prefixConn replays bytes already read before handing the conn on.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
