package sipedge

import (
	"bytes"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// FilterCounters count stage-1 outcomes.
type FilterCounters struct {
	Passed, Banned, Limited, Scanner, Oversize, Malformed atomic.Uint64
}

// ReadFilter is stage 1: it sees raw bytes before sipgo parses them and
// drops, without any answer, packets from banned sources, packets whose
// User-Agent names a scanner, and oversize packets. Every packet also feeds
// the Guard's per-source rate.
type ReadFilter struct {
	bans  *Bans
	guard *Guard
	// scanners is replaced whole by Server.Apply; a packet loads it once.
	scanners atomic.Pointer[[][]byte] // lower case
	// maxBytes is fixed at start: udpFront's buffers and the parser are
	// sized from it.
	maxBytes int
	now      func() time.Time
	onDrop   func(kind string, src netip.Addr, ua string)
	// stateless, when set, may fully answer a UDP datagram itself (see
	// Server.statelessChallenge); it reports true when it did.
	stateless func(raddr net.Addr, src netip.Addr, data []byte) bool
	// udpFront is set when udpFront reads the UDP socket and has run this
	// stage already: sipgo's filter call then passes UDP data through.
	udpFront bool
	Counters FilterCounters
}

func newReadFilter(bans *Bans, guard *Guard, scanners []string, maxBytes int, onDrop func(string, netip.Addr, string)) *ReadFilter {
	f := &ReadFilter{bans: bans, guard: guard, maxBytes: maxBytes, now: time.Now, onDrop: onDrop}
	f.setScanners(scanners)
	return f
}

// setScanners replaces the scanner User-Agent list; the next packet uses it.
func (f *ReadFilter) setScanners(scanners []string) {
	l := make([][]byte, 0, len(scanners))
	for _, s := range scanners {
		l = append(l, bytes.ToLower([]byte(s)))
	}
	f.scanners.Store(&l)
}

// addrPortOf is addrOf with the port (0 where a has none).
func addrPortOf(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return netip.AddrPortFrom(ip.Unmap(), uint16(v.Port))
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return netip.AddrPortFrom(ip.Unmap(), uint16(v.Port))
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func addrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// Filter is the sip.TransportReadFilter. It returns nil to drop; it never
// returns an error because sipgo stops a UDP listener on a filter error.
func (f *ReadFilter) Filter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	if f.udpFront && isUDP(info.Transport) {
		return data, nil // udpFront already ran this stage on the datagram
	}
	return f.check(info.RemoteAddr, info.Transport, data), nil
}

func isUDP(transport string) bool { return transport == "UDP" || transport == "udp" }

// check is stage 1 plus, for UDP, the stateless REGISTER path; nil means
// the data is finished (dropped or answered).
func (f *ReadFilter) check(from net.Addr, transport string, data []byte) []byte {
	ap := addrPortOf(from)
	src := ap.Addr()
	out := f.CheckFrom(ap, transport, data)
	if out != nil && f.stateless != nil && isUDP(transport) && f.stateless(from, src, out) {
		return nil
	}
	return out
}

// Check applies stage 1 to one read from src (port unknown); nil means drop.
func (f *ReadFilter) Check(src netip.Addr, transport string, data []byte) []byte {
	return f.CheckFrom(netip.AddrPortFrom(src, 0), transport, data)
}

// CheckFrom applies stage 1 to one read from src; nil means drop.
func (f *ReadFilter) CheckFrom(ap netip.AddrPort, transport string, data []byte) []byte {
	now := f.now()
	src := ap.Addr()
	if !src.IsValid() {
		f.Counters.Malformed.Add(1)
		return nil
	}
	if f.bans.Banned(now, src) {
		f.Counters.Banned.Add(1)
		return nil
	}
	if f.guard.Packet(now, ap, isUDP(transport)) {
		if f.bans.Banned(now, src) {
			f.Counters.Banned.Add(1)
		} else {
			f.Counters.Limited.Add(1)
		}
		return nil
	}
	// Stream transports deliver chunks; the parser enforces their size limit.
	if len(data) > f.maxBytes && (transport == "UDP" || transport == "udp") {
		f.Counters.Oversize.Add(1)
		return nil
	}
	if ua := userAgent(data); ua != nil {
		for _, s := range *f.scanners.Load() {
			if containsFold(ua, s) {
				f.Counters.Scanner.Add(1)
				if f.onDrop != nil {
					f.onDrop("scanner", src, string(ua))
				}
				return nil
			}
		}
	}
	f.Counters.Passed.Add(1)
	return data
}

// containsFold reports whether h contains the lower-case needle, ignoring
// ASCII case, without allocating (it runs on every packet). A needle with
// non-ASCII bytes falls back to Unicode lower-casing.
func containsFold(h, needle []byte) bool {
	for _, c := range needle {
		if c >= 0x80 {
			return bytes.Contains(bytes.ToLower(h), needle)
		}
	}
	for i := 0; i+len(needle) <= len(h); i++ {
		j := 0
		for ; j < len(needle); j++ {
			c := h[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != needle[j] {
				break
			}
		}
		if j == len(needle) {
			return true
		}
	}
	return false
}

var uaName = []byte("user-agent")

// userAgent returns the value of the first User-Agent header line in the
// header section of data (no compact form exists for User-Agent).
func userAgent(data []byte) []byte { return rawHeader(data, uaName) }

// rawHeader returns the value of the first header line called name (lower
// case, a name without compact form) in the header section of data.
func rawHeader(data, name []byte) []byte {
	if end := bytes.Index(data, []byte("\r\n\r\n")); end >= 0 {
		data = data[:end]
	}
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		var line []byte
		if i < 0 {
			line, data = data, nil
		} else {
			line, data = data[:i], data[i+1:]
		}
		if len(line) > len(name) && bytes.EqualFold(line[:len(name)], name) {
			rest := bytes.TrimLeft(line[len(name):], " \t")
			if len(rest) > 0 && rest[0] == ':' {
				return bytes.TrimSpace(rest[1:])
			}
		}
	}
	return nil
}
