package sip

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ConnCounters count stream connection admission.
type ConnCounters struct {
	Accepted, OverTotal, OverSource, Banned atomic.Uint64
}

// connLimiter caps stream connections per source and in total, drops banned
// sources at accept, and gives every read an idle deadline.
type connLimiter struct {
	max, perSource int
	idle           time.Duration
	bans           *Bans
	counters       *ConnCounters

	mu    sync.Mutex
	total int
	per   map[netip.Prefix]int
}

func newConnLimiter(max, perSource int, idle time.Duration, bans *Bans, c *ConnCounters) *connLimiter {
	return &connLimiter{max: max, perSource: perSource, idle: idle, bans: bans, counters: c, per: map[netip.Prefix]int{}}
}

func (cl *connLimiter) admit(src netip.Addr) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	k := sourceKey(src)
	if cl.total >= cl.max {
		cl.counters.OverTotal.Add(1)
		return false
	}
	if cl.per[k] >= cl.perSource {
		cl.counters.OverSource.Add(1)
		return false
	}
	cl.total++
	cl.per[k]++
	cl.counters.Accepted.Add(1)
	return true
}

func (cl *connLimiter) release(src netip.Addr) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	k := sourceKey(src)
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
		if !l.cl.admit(src) {
			c.Close()
			continue
		}
		return &limitConn{Conn: c, cl: l.cl, src: src}, nil
	}
}

type limitConn struct {
	net.Conn
	cl   *connLimiter
	src  netip.Addr
	once sync.Once
}

// Read sets the idle deadline first: a silent connection is closed after
// the idle timeout (TCP keep-alives are CRLFs, which count as reads).
func (c *limitConn) Read(b []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.cl.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *limitConn) Close() error {
	c.once.Do(func() { c.cl.release(c.src) })
	return c.Conn.Close()
}
