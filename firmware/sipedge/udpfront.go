package sipedge

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// udpSocketBuffer is the receive and send buffer asked for on each UDP
// socket. The kernel's default (~208 KiB) overflows when a few hundred
// phones re-register at once, and every dropped REGISTER costs its phone a
// 500 ms retransmission. Linux clamps the value to net.core.rmem_max.
const udpSocketBuffer = 4 << 20

// slowQueue bounds the datagrams waiting for sipgo's reader; when it is
// full more are dropped, as the kernel would drop them.
const slowQueue = 512

// UDPCounters count the UDP front end. WorkDropped stays 0 since each
// worker reads its own socket (the kernel's receive buffer is the queue);
// it is kept for the counters' consumers.
type UDPCounters struct {
	SlowPath, SlowDropped, WorkDropped, ReadErrors atomic.Uint64
}

// udpFront reads the UDP sockets for the chain and implements, for sipgo,
// the one net.PacketConn of the UDP transport. There is one socket per
// worker, all bound to the same address with SO_REUSEPORT (listenUDP): the
// kernel hashes each datagram's source address and port to one socket, so
// the requests of one phone are read by one worker in the order they
// arrived, while different phones are answered in parallel. A worker reads
// its socket, runs stage 1 and the stateless REGISTER path on the datagram
// and sends the answer from the same socket, with no hand-over between
// goroutines and no allocation per datagram; what the front end does not
// finish goes on to sipgo through ReadFrom, whose answers leave from the
// first socket (same local address).
type udpFront struct {
	net.PacketConn // the first socket: LocalAddr, deadlines, sipgo's writes
	conns          []*net.UDPConn
	filter         *ReadFilter
	maxBytes       int
	workers        []*udpWorker
	bufs           sync.Pool
	scratch        sync.Pool // *fastScratch for the fast REGISTER path
	slow           chan datagram
	done           chan struct{}
	Counters       UDPCounters
}

type datagram struct {
	buf  *[]byte // pooled; data is (*buf)[:n]
	n    int
	from net.Addr
}

// udpWorker owns one socket and the reused state of its reads. from is
// handed to the chain as the source of the datagram being handled and is
// overwritten by the next read: nothing on the fast path keeps it, and the
// slow path gets its own copy.
type udpWorker struct {
	conn *net.UDPConn
	buf  *[]byte
	ap   netip.AddrPort
	ip   [16]byte
	from net.UDPAddr
}

func newUDPFront(conns []*net.UDPConn, f *ReadFilter, maxBytes int) *udpFront {
	u := &udpFront{PacketConn: conns[0], conns: conns, filter: f, maxBytes: maxBytes,
		slow: make(chan datagram, slowQueue), done: make(chan struct{})}
	// One byte more than the limit so oversize datagrams are seen as such.
	u.bufs.New = func() any { b := make([]byte, maxBytes+1); return &b }
	for _, c := range conns {
		// Best effort: an unprivileged process gets at most rmem_max.
		_ = c.SetReadBuffer(udpSocketBuffer)
		_ = c.SetWriteBuffer(udpSocketBuffer)
		u.workers = append(u.workers, &udpWorker{conn: c, buf: u.bufs.Get().(*[]byte)})
	}
	return u
}

// start launches one worker per socket; all stop when the sockets are
// closed, and then sipgo's reader gets net.ErrClosed.
func (u *udpFront) start() {
	var wg sync.WaitGroup
	for _, w := range u.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.serve(w)
		}()
	}
	go func() {
		wg.Wait()
		close(u.done)
	}()
}

func (u *udpFront) serve(w *udpWorker) {
	for {
		n, ap, err := w.conn.ReadFromUDPAddrPort(*w.buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			u.Counters.ReadErrors.Add(1)
			time.Sleep(time.Millisecond) // never spin on a persistent error
			continue
		}
		if n > 0 {
			u.handle(w, n, ap)
		}
	}
}

// handle runs the chain on the datagram in w.buf[:n] from ap.
func (u *udpFront) handle(w *udpWorker, n int, ap netip.AddrPort) {
	w.ap = ap
	a := ap.Addr().Unmap()
	if a.Is4() {
		*(*[4]byte)(w.ip[:4]) = a.As4()
		w.from.IP = w.ip[:4]
	} else {
		w.ip = a.As16()
		w.from.IP = w.ip[:]
	}
	w.from.Port, w.from.Zone = int(ap.Port()), a.Zone()
	out := u.filter.check(&w.from, "UDP", (*w.buf)[:n])
	if out == nil {
		return
	}
	// sipgo keeps the address; the worker's is rewritten by the next read.
	from := &net.UDPAddr{IP: append(net.IP(nil), w.from.IP...), Port: w.from.Port, Zone: w.from.Zone}
	select {
	case u.slow <- datagram{buf: w.buf, n: copy(*w.buf, out), from: from}:
		u.Counters.SlowPath.Add(1)
		w.buf = u.bufs.Get().(*[]byte) // sipgo's ReadFrom returns the old one
	default:
		u.Counters.SlowDropped.Add(1)
	}
}

// ReadFrom is sipgo's reader: it gets the datagrams the front end did not
// finish itself.
func (u *udpFront) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-u.slow:
		n := copy(b, (*d.buf)[:d.n])
		u.bufs.Put(d.buf)
		return n, d.from, nil
	case <-u.done:
		return 0, nil, net.ErrClosed
	}
}

// WriteTo sends b to addr. An answer to the datagram a worker is handling
// (addr is that worker's source) leaves from the worker's own socket, as
// the kernel expects of a reuseport group and without contending with the
// other workers; anything else (sipgo's writes) from the first socket.
func (u *udpFront) WriteTo(b []byte, addr net.Addr) (int, error) {
	for _, w := range u.workers {
		if addr == net.Addr(&w.from) {
			return w.conn.WriteToUDPAddrPort(b, w.ap)
		}
	}
	return u.PacketConn.WriteTo(b, addr)
}

// Close closes every socket; the workers, then sipgo's reader, stop.
func (u *udpFront) Close() error {
	var errs []error
	for _, c := range u.conns {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
