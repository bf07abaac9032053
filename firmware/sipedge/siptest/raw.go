package siptest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// hang bounds Recv's wait: it only stops a broken test from hanging, it
// never judges speed.
const hang = 20 * time.Second

// Raw is a raw SIP client, so tests write the exact bytes of each message
// and see the exact bytes the box answers. Over UDP it has one socket; over
// TCP or TLS one connection it opened. It listens nowhere else, so a
// request the box sends over another flow never reaches it.
type Raw struct {
	tb        testing.TB
	transport string
	edge      netip.AddrPort
	udp       *net.UDPConn
	conn      net.Conn
	rd        *bufio.Reader
}

// NewRaw opens a client of transport ("UDP", "TCP" or "TLS") that sends to
// edge. A UDP client binds to local (any 127/8 address is local on Linux);
// a TCP or TLS client dials edge and ignores it.
func NewRaw(tb testing.TB, transport string, local netip.Addr, edge netip.AddrPort) *Raw {
	tb.Helper()
	edge = unmap(edge)
	r := &Raw{tb: tb, transport: transport, edge: edge}
	var err error
	switch transport {
	case "UDP":
		var c *net.UDPConn
		if c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0))); err == nil {
			return RawUDP(tb, c, edge)
		}
	case "TCP":
		r.conn, err = net.Dial("tcp", edge.String())
	case "TLS":
		r.conn, err = tls.Dial("tcp", edge.String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	default:
		err = fmt.Errorf("unknown transport %q", transport)
	}
	if err != nil {
		tb.Fatalf("raw %s phone: %v", transport, err)
	}
	if r.conn != nil {
		r.rd = bufio.NewReader(r.conn)
		tb.Cleanup(func() { r.conn.Close() })
	}
	return r
}

// RawUDP is a UDP client on a socket the test opened itself (say, inside a
// network namespace); it is closed when the test ends.
func RawUDP(tb testing.TB, c *net.UDPConn, edge netip.AddrPort) *Raw {
	tb.Cleanup(func() { c.Close() })
	return &Raw{tb: tb, transport: "UDP", edge: unmap(edge), udp: c}
}

// unmap turns ::ffff:a.b.c.d (what net.UDPAddr.AddrPort gives for an IPv4
// address parsed as 16 bytes) into a.b.c.d, which an IPv4 socket can send to.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Local is the client's own address (host:port), as its Via and Contact
// name it.
func (r *Raw) Local() string {
	if r.udp != nil {
		return r.udp.LocalAddr().String()
	}
	return r.conn.LocalAddr().String()
}

// Edge is where the client sends.
func (r *Raw) Edge() netip.AddrPort { return r.edge }

// MoveUDP gives a UDP client a new source port, as a NAT does when its
// mapping expires. The old socket stays open and unread.
func (r *Raw) MoveUDP() {
	r.tb.Helper()
	ip := r.udp.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		r.tb.Fatal(err)
	}
	r.udp = c
	r.tb.Cleanup(func() { c.Close() })
}

// Send writes msg exactly as given.
func (r *Raw) Send(msg string) {
	r.tb.Helper()
	var err error
	if r.udp != nil {
		_, err = r.udp.WriteToUDPAddrPort([]byte(msg), r.edge)
	} else {
		_, err = io.WriteString(r.conn, msg)
	}
	if err != nil {
		r.tb.Fatal(err)
	}
}

// Flood writes msg once over UDP and returns the error instead of failing
// the test, so flood goroutines may call it (Send's Fatal belongs to the
// test's goroutine).
func (r *Raw) Flood(msg []byte) error {
	if r.udp == nil {
		return errors.New("siptest: Flood needs a UDP phone")
	}
	_, err := r.udp.WriteToUDPAddrPort(msg, r.edge)
	return err
}

// Read returns the bytes of the next message and where it came from (over
// TCP or TLS: the edge), or an error when none came within wait. Tests that
// check the box stays silent pass a short wait; it is never a speed limit.
func (r *Raw) Read(wait time.Duration) ([]byte, netip.AddrPort, error) {
	deadline := time.Now().Add(wait)
	if r.udp != nil {
		buf := make([]byte, 65535)
		r.udp.SetReadDeadline(deadline)
		n, from, err := r.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil, from, err
		}
		return buf[:n], from, nil
	}
	r.conn.SetReadDeadline(deadline)
	var head strings.Builder
	length := 0
	for {
		line, err := r.rd.ReadString('\n')
		if err != nil {
			return nil, r.edge, err
		}
		if line == "\r\n" && head.Len() == 0 {
			continue // keep-alive
		}
		head.WriteString(line)
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if line == "\r\n" {
			break
		}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r.rd, body); err != nil {
		return nil, r.edge, err
	}
	return append([]byte(head.String()), body...), r.edge, nil
}

// Recv returns the next message, parsed, and where it came from; nothing
// at all, or bytes that do not parse, fail the test.
func (r *Raw) Recv() (sip.Message, netip.AddrPort) {
	r.tb.Helper()
	b, from, err := r.Read(hang)
	if err != nil {
		r.tb.Fatalf("%s phone: nothing from the box: %v", r.transport, err)
	}
	m, err := sip.ParseMessage(b)
	if err != nil {
		r.tb.Fatalf("unparsable: %v\n%s", err, b)
	}
	return m, from
}
