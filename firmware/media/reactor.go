package media

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"unsafe"

	"github.com/pion/rtp"
	"golang.org/x/sys/unix"
)

// The relay's data path is a reactor: a few loops (Config.Loops), each an
// epoll instance over the non-blocking UDP sockets of many calls, served by
// one goroutine. A call's four sockets all live on one loop, so the loop
// reads a socket with recvmmsg, checks and transforms the packets and
// writes them with sendmmsg on the other leg's socket without locks,
// channels or goroutine hops, and without allocating. Loops run while the
// relay has calls and stop with the last one.

// loop is one reactor. Fields below the line are touched only by its
// goroutine.
type loop struct {
	epfd, evfd int
	v6         bool
	done       chan struct{}
	calls      int // guarded by Relay.mu

	mu   sync.Mutex
	cmds []loopCmd

	// --- loop goroutine only ---
	socks  []*socket // by fd
	events []unix.EpollEvent
	rx     *rxBatch
	w      *worker
	quit   bool
}

type loopCmd struct {
	f    func(*loop)
	done chan struct{}
}

// loopBufs are a loop's packet buffers; a relay keeps those of stopped
// loops, so calls that come and go do not reallocate them.
type loopBufs struct {
	events []unix.EpollEvent
	rx     *rxBatch
	w      *worker
}

func newLoopBufs(batch int) loopBufs {
	return loopBufs{events: make([]unix.EpollEvent, 128), rx: newRxBatch(batch), w: newWorker(batch)}
}

func newLoop(bufs loopBufs, v6 bool) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("media: epoll: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("media: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("media: epoll add eventfd: %w", err)
	}
	lp := &loop{epfd: epfd, evfd: evfd, v6: v6, done: make(chan struct{}),
		events: bufs.events, rx: bufs.rx, w: bufs.w}
	go lp.run()
	return lp, nil
}

// do runs f on the loop goroutine between two rounds of I/O and waits for
// it, so f may change what the loop owns.
func (lp *loop) do(f func(*loop)) {
	c := loopCmd{f: f, done: make(chan struct{})}
	lp.mu.Lock()
	lp.cmds = append(lp.cmds, c)
	lp.mu.Unlock()
	var one = [8]byte{1}
	for {
		// The counter cannot overflow in practice; EAGAIN would mean it is
		// already non-zero, which wakes the loop just as well.
		if _, err := unix.Write(lp.evfd, one[:]); err != unix.EINTR {
			break
		}
	}
	<-c.done
}

// stop ends the loop goroutine, closes its descriptors and returns its
// buffers. The loop must hold no sockets any more.
func (lp *loop) stop() loopBufs {
	lp.do(func(lp *loop) { lp.quit = true })
	<-lp.done
	unix.Close(lp.epfd)
	unix.Close(lp.evfd)
	return loopBufs{events: lp.events, rx: lp.rx, w: lp.w}
}

func (lp *loop) run() {
	defer close(lp.done)
	for {
		n, err := unix.EpollWait(lp.epfd, lp.events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			// Only a bug (closed epfd) gets here; serving nothing is
			// better than spinning.
			panic(fmt.Sprintf("media: epoll_wait: %v", err))
		}
		wake := false
		for _, ev := range lp.events[:n] {
			fd := int(ev.Fd)
			if fd == lp.evfd {
				wake = true
				continue
			}
			// Commands run only after the round, so every socket in this
			// round's events is still registered and open.
			if fd < len(lp.socks) && lp.socks[fd] != nil {
				lp.serve(lp.socks[fd])
			}
		}
		if wake {
			var buf [8]byte
			unix.Read(lp.evfd, buf[:])
			lp.mu.Lock()
			cmds := lp.cmds
			lp.cmds = nil
			lp.mu.Unlock()
			for _, c := range cmds {
				c.f(lp)
				close(c.done)
			}
			if lp.quit {
				return
			}
		}
	}
}

// add registers sockets with the loop (loop goroutine only).
func (lp *loop) add(ss ...*socket) error {
	for i, s := range ss {
		for s.fd >= len(lp.socks) {
			lp.socks = append(lp.socks, make([]*socket, len(lp.socks)+64)...)
		}
		// Level-triggered: one recvmmsg per ready socket and round keeps
		// busy sockets from starving the others.
		if err := unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, s.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.fd)}); err != nil {
			lp.remove(ss[:i]...)
			return fmt.Errorf("media: epoll add: %w", err)
		}
		lp.socks[s.fd] = s
	}
	return nil
}

// remove unregisters and closes sockets (loop goroutine only).
func (lp *loop) remove(ss ...*socket) {
	for _, s := range ss {
		if s == nil || s.fd >= len(lp.socks) || lp.socks[s.fd] != s {
			continue
		}
		unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
		lp.socks[s.fd] = nil
		s.close()
	}
}

// socket is one bound, non-blocking UDP socket of a leg. Its descriptor is
// closed only by its loop (or before it was ever registered), so the loop
// never uses a closed or reused descriptor; other writers (DTLS) take mu.
type socket struct {
	fd   int
	port uint16
	leg  *leg
	rtcp bool // the odd (RTCP) port of the pair
	v6   bool

	mu     sync.RWMutex
	closed bool
}

func listenUDP(addr netip.Addr, port uint16) (*socket, error) {
	v6 := addr.Is6()
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(port), Addr: addr.As4()}
	if v6 {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(port), Addr: addr.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	// A burst of a few hundred packets must not overflow between rounds.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", netip.AddrPortFrom(addr, port), err)
	}
	return &socket{fd: fd, port: port, v6: v6}, nil
}

func (s *socket) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		unix.Close(s.fd)
	}
}

// writeTo sends one datagram from outside the loop (DTLS records).
func (s *socket) writeTo(b []byte, to netip.AddrPort) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, net.ErrClosed
	}
	var sa unix.Sockaddr
	if s.v6 {
		sa = &unix.SockaddrInet6{Port: int(to.Port()), Addr: to.Addr().As16()}
	} else {
		if !to.Addr().Unmap().Is4() {
			return 0, fmt.Errorf("media: IPv6 destination %s on an IPv4 socket", to)
		}
		sa = &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().Unmap().As4()}
	}
	if err := unix.Sendto(s.fd, b, 0, sa); err != nil {
		return 0, fmt.Errorf("media: send to %s: %w", to, err)
	}
	return len(b), nil
}

// maxPacket bounds a media datagram; anything larger is dropped.
const maxPacket = 1500

// rxBatch is a loop's recvmmsg state: buffers and source addresses.
type rxBatch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	bufs  [][]byte
}

func newRxBatch(n int) *rxBatch {
	b := &rxBatch{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]unix.RawSockaddrInet6, n), bufs: make([][]byte, n)}
	for i := range n {
		// One byte more than accepted, so truncation shows as length.
		b.bufs[i] = make([]byte, maxPacket+1)
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(maxPacket + 1)
		h := &b.hdrs[i].Hdr
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
	}
	return b
}

// recv reads up to len(hdrs) datagrams without blocking.
func (b *rxBatch) recv(fd int) (int, error) {
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.hdrs[i].Hdr.Flags = 0
	}
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(n), nil
	}
}

// from returns datagram i's source address.
func (b *rxBatch) from(i int) netip.AddrPort {
	sa := &b.names[i]
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// ntohs reads a port stored in network byte order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func htons(p uint16) uint16 {
	var v uint16
	b := (*[2]byte)(unsafe.Pointer(&v))
	b[0], b[1] = byte(p>>8), byte(p)
	return v
}

// txPkt is one datagram queued for a destination socket.
type txPkt struct {
	b   []byte
	dst netip.AddrPort
}

// Generic segmentation offload (UDP_SEGMENT, Linux ≥ 4.18): a run of
// equal-sized datagrams to one destination goes through the stack as one
// buffer and is split at the device (or, on loopback, at the receiver).
const (
	maxSegments   = 64    // UDP_MAX_SEGMENTS
	maxGSOBytes   = 65000 // below the 64 KiB IP limit with headers
	maxGSOSegment = 1200  // larger datagrams may exceed the path MTU: sent alone
)

// txBatch builds sendmmsg messages for one destination socket.
type txBatch struct {
	pkts  []txPkt
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	ctrl  []byte
	first []int // first packet of each message, plus the end
}

var cmsgSegSpace = unix.CmsgSpace(2)

func newTxBatch(n int) *txBatch {
	return &txBatch{pkts: make([]txPkt, 0, n), hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n), ctrl: make([]byte, n*cmsgSegSpace), first: make([]int, n+1)}
}

// build turns the packets from i on into messages, grouping runs for GSO
// when gso is set, and returns the message count.
func (t *txBatch) build(i int, gso, v6 bool) int {
	m := 0
	for j := i; j < len(t.pkts); m++ {
		start, size, dst := j, len(t.pkts[j].b), t.pkts[j].dst
		total := size
		for j++; gso && size <= maxGSOSegment && j < len(t.pkts) && j-start < maxSegments && t.pkts[j].dst == dst &&
			len(t.pkts[j-1].b) == size && len(t.pkts[j].b) <= size && total+len(t.pkts[j].b) <= maxGSOBytes; j++ {
			total += len(t.pkts[j].b)
		}
		for k := start; k < j; k++ {
			t.iovs[k].Base = &t.pkts[k].b[0]
			t.iovs[k].SetLen(len(t.pkts[k].b))
		}
		h := &t.hdrs[m].Hdr
		h.Iov = &t.iovs[start]
		h.SetIovlen(j - start)
		h.Name = (*byte)(unsafe.Pointer(&t.names[m]))
		h.Namelen = putSockaddr(&t.names[m], dst, v6)
		h.Control = nil
		h.SetControllen(0)
		if j-start > 1 {
			c := t.ctrl[m*cmsgSegSpace : (m+1)*cmsgSegSpace]
			ch := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
			ch.Level = unix.SOL_UDP
			ch.Type = unix.UDP_SEGMENT
			ch.SetLen(unix.CmsgLen(2))
			*(*uint16)(unsafe.Pointer(&c[unix.CmsgLen(0)])) = uint16(size)
			h.Control = &c[0]
			h.SetControllen(cmsgSegSpace)
		}
		t.first[m] = start
		t.first[m+1] = j
	}
	return m
}

func putSockaddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort, v6 bool) uint32 {
	if !v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(ap.Port()), Addr: ap.Addr().Unmap().As4()}
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(ap.Port()), Addr: ap.Addr().As16()}
	return unix.SizeofSockaddrInet6
}

// flush sends the queued packets on fd and empties the batch. It returns
// the packets sent and dropped. Send errors drop the message at fault and
// go on; a kernel or device that refuses GSO turns it off for good.
func (t *txBatch) flush(fd int, gso *bool, v6 bool) (sent, dropped int) {
	defer func() { t.pkts = t.pkts[:0] }()
	for i := 0; i < len(t.pkts); {
		m := t.build(i, *gso, v6)
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&t.hdrs[0])), uintptr(m), 0, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno == 0 && n > 0:
			for k := 0; k < int(n); k++ {
				sent += t.first[k+1] - t.first[k]
			}
			i = t.first[n]
		case errno == unix.EAGAIN || errno == unix.ENOBUFS:
			// The socket's send buffer is full: a real-time relay drops.
			return sent, dropped + len(t.pkts) - i
		case *gso && t.first[1]-t.first[0] > 1 && (errno == unix.EIO || errno == unix.EINVAL || errno == unix.ENOPROTOOPT || errno == unix.EOPNOTSUPP):
			*gso = false
		default:
			dropped += t.first[1] - t.first[0]
			i = t.first[1]
		}
	}
	return sent, dropped
}

// worker is a loop's per-batch scratch state for the packet path.
type worker struct {
	hdr     rtp.Header
	scratch []byte
	out     [][]byte    // output buffer per received datagram, made on first use
	tx      [2]*txBatch // toward the other leg's RTP and RTCP sockets
	gso     bool        // UDP_SEGMENT still accepted by the kernel
	rx      legCounters // received in this batch, added to the leg's stats once
}

type legCounters struct{ received, bytes uint64 }

func newWorker(n int) *worker {
	return &worker{scratch: make([]byte, maxPacket+64), out: make([][]byte, n),
		tx: [2]*txBatch{newTxBatch(n), newTxBatch(n)}, gso: true}
}

// outBuf returns the output buffer of received datagram slot.
func (w *worker) outBuf(slot int) []byte {
	if w.out[slot] == nil {
		w.out[slot] = make([]byte, maxPacket+64)
	}
	return w.out[slot][:0]
}

// serve reads one ready socket once and relays what it got.
func (lp *loop) serve(s *socket) {
	l := s.leg
	n, err := lp.rx.recv(s.fd)
	if err != nil {
		if !errors.Is(err, unix.EAGAIN) {
			// Transient (e.g. a pending ICMP error): keep serving.
			l.stats.readErrors.Add(1)
		}
		return
	}
	st := l.state.Load()
	o := l.other()
	ost := o.state.Load()
	w := lp.w
	w.rx = legCounters{}
	for i := range n {
		h := &lp.rx.hdrs[i]
		if int(h.Len) > maxPacket || h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			l.stats.droppedMalformed.Add(1)
			continue
		}
		l.handle(w, i, st, ost, lp.rx.bufs[i][:h.Len], lp.rx.from(i), s.rtcp)
	}
	if w.rx.received > 0 {
		l.stats.received.Add(w.rx.received)
		l.stats.bytes.Add(w.rx.bytes)
	}
	for k, t := range w.tx {
		if len(t.pkts) == 0 {
			continue
		}
		sock := o.rtp
		if k == 1 && (ost == nil || !ost.mux) {
			sock = o.rtcp
		}
		sent, dropped := t.flush(sock.fd, &w.gso, sock.v6)
		if sent > 0 {
			o.stats.sent.Add(uint64(sent))
		}
		if dropped > 0 {
			o.stats.writeErrors.Add(uint64(dropped))
		}
	}
}
