package sip

import (
	"errors"
	"hash/maphash"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// udpSocketBuffer is the receive and send buffer asked for on the UDP
// socket. The kernel's default (~208 KiB) overflows when a few hundred
// phones re-register at once, and every dropped REGISTER costs its phone a
// 500 ms retransmission. Linux clamps the value to net.core.rmem_max.
const udpSocketBuffer = 4 << 20

// slowQueue bounds the datagrams waiting for sipgo's reader; when it is
// full more are dropped, as the kernel would drop them.
const slowQueue = 512

// UDPCounters count the UDP front end.
type UDPCounters struct {
	SlowPath, SlowDropped, WorkDropped, ReadErrors atomic.Uint64
}

// udpFront reads the UDP socket for the chain: one reader hands each
// datagram to one of several workers (one per CPU), which run stage 1 and
// the stateless REGISTER path; everything else goes on to sipgo through the
// net.PacketConn udpFront implements. A datagram's worker is chosen by its
// source and Call-ID, so the requests of one phone's registration are
// handled in the order they arrived, while different phones (or sipp's
// simulated ones) are answered in parallel, as sipgo's per-transaction
// goroutines were.
type udpFront struct {
	net.PacketConn // the socket; writes go straight to it
	filter         *ReadFilter
	maxBytes       int
	seed           maphash.Seed
	work           []chan datagram
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

// workQueue bounds each worker's backlog; beyond it datagrams are dropped,
// as the kernel would drop them.
const workQueue = 1024

func newUDPFront(conn net.PacketConn, f *ReadFilter, maxBytes int) *udpFront {
	if uc, ok := conn.(*net.UDPConn); ok {
		// Best effort: an unprivileged process gets at most rmem_max.
		_ = uc.SetReadBuffer(udpSocketBuffer)
		_ = uc.SetWriteBuffer(udpSocketBuffer)
	}
	u := &udpFront{PacketConn: conn, filter: f, maxBytes: maxBytes, seed: maphash.MakeSeed(),
		slow: make(chan datagram, slowQueue), done: make(chan struct{})}
	// One byte more than the limit so oversize datagrams are seen as such.
	u.bufs.New = func() any { b := make([]byte, maxBytes+1); return &b }
	for i := 0; i < workers(); i++ {
		u.work = append(u.work, make(chan datagram, workQueue))
	}
	return u
}

// workers is how many goroutines run the chain on UDP datagrams.
func workers() int { return min(max(runtime.GOMAXPROCS(0), 1), 8) }

var callIDName, callIDCompact = []byte("call-id"), []byte("i")

// start launches the reader and the workers; all stop when the socket is
// closed, and then sipgo's reader gets net.ErrClosed.
func (u *udpFront) start() {
	var wg sync.WaitGroup
	for _, q := range u.work {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.serve(q)
		}()
	}
	go func() {
		u.read()
		for _, q := range u.work {
			close(q)
		}
		wg.Wait()
		close(u.done)
	}()
}

func (u *udpFront) read() {
	for {
		bp := u.bufs.Get().(*[]byte)
		n, from, err := u.PacketConn.ReadFrom(*bp)
		if err != nil {
			u.bufs.Put(bp)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			u.Counters.ReadErrors.Add(1)
			time.Sleep(time.Millisecond) // never spin on a persistent error
			continue
		}
		if n == 0 {
			u.bufs.Put(bp)
			continue
		}
		// Same source and Call-ID, same worker: a phone's requests stay in order.
		var h maphash.Hash
		h.SetSeed(u.seed)
		if ua, ok := from.(*net.UDPAddr); ok {
			h.Write(ua.IP)
			h.WriteByte(byte(ua.Port >> 8))
			h.WriteByte(byte(ua.Port))
		} else {
			h.WriteString(from.String())
		}
		cid := rawHeader((*bp)[:n], callIDName)
		if cid == nil {
			cid = rawHeader((*bp)[:n], callIDCompact)
		}
		h.Write(cid)
		select {
		case u.work[h.Sum64()%uint64(len(u.work))] <- datagram{buf: bp, n: n, from: from}:
		default:
			u.Counters.WorkDropped.Add(1)
			u.bufs.Put(bp)
		}
	}
}

func (u *udpFront) serve(q chan datagram) {
	for d := range q {
		if out := u.filter.check(d.from, "UDP", (*d.buf)[:d.n]); out != nil {
			select {
			case u.slow <- datagram{buf: d.buf, n: copy(*d.buf, out), from: d.from}:
				u.Counters.SlowPath.Add(1)
				continue // sipgo's ReadFrom returns the buffer
			default:
				u.Counters.SlowDropped.Add(1)
			}
		}
		u.bufs.Put(d.buf)
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

// Close closes the socket; the readers, then sipgo's reader, stop.
func (u *udpFront) Close() error { return u.PacketConn.Close() }
