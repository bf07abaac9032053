package sipedge

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/emiago/sipgo/sip"
)

// flowPhone is a raw phone on one transport that only ever talks over the
// flow it registered on (siptest.Raw: one UDP socket, or one TCP/TLS
// connection it opened).
type flowPhone struct {
	raw       *siptest.Raw
	t         testing.TB
	transport string // UDP, TCP, TLS
	user      string
	edge      netip.AddrPort // where the phone sends (the box as it reaches it)
	local     string
	contact   string // host:port in its Contact (kept when its source moves)
	cseq      int
	callID    string
}

func newFlowPhone(t testing.TB, transport, user string, edge netip.AddrPort) *flowPhone {
	t.Helper()
	raw := siptest.NewRaw(t, transport, netip.MustParseAddr("127.0.0.1"), edge)
	p := &flowPhone{raw: raw, t: t, transport: transport, user: user, edge: edge, callID: randHex(8), local: raw.Local()}
	p.contact = p.local
	return p
}

// moveUDP gives the phone a new source port, as a NAT does when its
// mapping expires; its Contact stays the same.
func (p *flowPhone) moveUDP() {
	p.t.Helper()
	p.raw.MoveUDP()
	p.local = p.raw.Local()
}

func (p *flowPhone) send(msg string) {
	p.t.Helper()
	p.raw.Send(msg)
}

// recv returns the next message and, over UDP, the address it came from
// (over TCP/TLS it came over the phone's connection).
func (p *flowPhone) recv() (sip.Message, netip.AddrPort) {
	p.t.Helper()
	return p.raw.Recv()
}

func (p *flowPhone) recvResponse() *sip.Response {
	p.t.Helper()
	m, _ := p.recv()
	r, ok := m.(*sip.Response)
	if !ok {
		p.t.Fatalf("got a request, want a response:\n%s", m)
	}
	return r
}

func (p *flowPhone) registerMsg(auth string) string {
	p.cseq++
	host := p.edge.Addr().String()
	var b strings.Builder
	fmt.Fprintf(&b, "REGISTER sip:%s SIP/2.0\r\n", host)
	fmt.Fprintf(&b, "Via: SIP/2.0/%s %s;branch=z9hG4bK%s;rport\r\n", p.transport, p.local, randHex(8))
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=%s\r\n", p.user, host, randHex(4))
	fmt.Fprintf(&b, "To: <sip:%s@%s>\r\n", p.user, host)
	fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: %d REGISTER\r\n", p.callID, p.cseq)
	fmt.Fprintf(&b, "Contact: <sip:%s@%s;transport=%s>\r\nExpires: 600\r\n", p.user, p.contact, strings.ToLower(p.transport))
	if auth != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", auth)
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

func (p *flowPhone) register() {
	p.t.Helper()
	p.send(p.registerMsg(""))
	r := p.recvResponse()
	if r.StatusCode != 401 {
		p.t.Fatalf("first REGISTER over %s: %s", p.transport, r.StartLine())
	}
	uri := "sip:" + p.edge.Addr().String()
	p.send(p.registerMsg(authHeader("SHA-256", p.user, testPassword, "edgepbx", challengeOf(p.t, r, "SHA-256"), uri, "00000001", randHex(4))))
	if r := p.recvResponse(); r.StatusCode != 200 {
		p.t.Fatalf("REGISTER over %s: %s", p.transport, r.StartLine())
	}
}

// expect reads the box's next request, wants method, and checks that it
// came over the phone's flow (UDP: from the address and port the phone
// registered to) with a Via the phone can answer to: the box's address
// and port as the phone reached it, never an unspecified one.
func (p *flowPhone) expect(method sip.RequestMethod) *sip.Request {
	p.t.Helper()
	m, from := p.recv()
	req, ok := m.(*sip.Request)
	if !ok || req.Method != method {
		p.t.Fatalf("%s phone: got\n%s\nwant %s", p.transport, m, method)
	}
	if from != p.edge {
		p.t.Errorf("%s %s came from %s, want %s (where the phone registered)", p.transport, method, from, p.edge)
	}
	v := req.Via()
	if v == nil {
		p.t.Fatalf("%s without Via", method)
	}
	if !strings.EqualFold(v.Transport, p.transport) || v.Host != p.edge.Addr().String() || v.Port != int(p.edge.Port()) {
		p.t.Errorf("%s %s: Via %s, want SIP/2.0/%s %s", p.transport, method, v.Value(), p.transport, p.edge)
	}
	if ct := req.Contact(); ct != nil && ct.Address.Host != p.edge.Addr().String() {
		p.t.Errorf("%s %s: Contact %s, want the box at %s", p.transport, method, ct.Value(), p.edge.Addr())
	}
	return req
}

func (p *flowPhone) respond(req *sip.Request, code int, body []byte) {
	p.t.Helper()
	res := sip.NewResponseFromRequest(req, code, "OK", nil)
	if code == 200 && req.Method == sip.INVITE {
		res.To().Params.Add("tag", randHex(4))
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: p.user, Host: p.edge.Addr().String(),
			Port: mustPort(p.contact), UriParams: sip.HeaderParams{{K: "transport", V: strings.ToLower(p.transport)}}}})
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody(body)
	}
	p.send(res.String())
}

func mustPort(hp string) int {
	_, port, _ := net.SplitHostPort(hp)
	n, _ := strconv.Atoi(port)
	return n
}

// TestRequestsLeaveOnRegisteredFlow: for each of UDP, TCP and TLS a phone
// registers (over UDP on the stateless REGISTER path) and is called: the
// INVITE, the ACK of its 200 and the BYE reach it over the flow it
// registered on (UDP: from the port it registered to; TCP/TLS: over its
// own connection) with a Via naming the box as the phone reached it.
// Before, the UDP INVITE came from a new socket with Via 0.0.0.0:<port>.
func TestRequestsLeaveOnRegisteredFlow(t *testing.T) {
	for _, tc := range []struct {
		transport, bind string
		move            bool // the callee re-registers from a new port during the call
	}{
		{"UDP", "127.0.0.1", false}, {"TCP", "127.0.0.1", false}, {"TLS", "127.0.0.1", false},
		// Wildcard binds: the box's address is the one the phone reached.
		{"UDP", "0.0.0.0", false}, {"TCP", "0.0.0.0", false}, {"TLS", "0.0.0.0", false},
		// In-dialog requests follow the phone's new flow.
		{"UDP", "127.0.0.1", true},
	} {
		transport := tc.transport
		name := transport + " on " + tc.bind
		if tc.move {
			name += " moved"
		}
		t.Run(name, func(t *testing.T) {
			var db *store.DB
			var ended chan cdr.Record
			s := startServerTuned(t, func(c *pbxconfig.SIP) {
				c.UDP, c.TCP, c.TLS = tc.bind+":0", tc.bind+":0", tc.bind+":0"
			}, func(d *store.DB) { db = d }, selfSigned(t), func(s *Server) { _, _, ended = startCalls(t, s, db) })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			bound := netip.MustParseAddrPort(s.Addr(strings.ToLower(transport)).String())
			edge := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), bound.Port())
			callee := newFlowPhone(t, transport, "102", edge)
			callee.register()

			caller := siptest.NewPhone(t, "101", testPassword)
			caller.Register(ctx, "127.0.0.1", s.udp.Port)
			type dialed struct{ err error }
			done := make(chan dialed, 1)
			var bye func(context.Context) error
			go func() {
				d, _, err := caller.Dial(ctx, "127.0.0.1", s.udp.Port, "102")
				if err == nil {
					bye = d.Bye
				}
				done <- dialed{err}
			}()
			inv := callee.expect(sip.INVITE)
			sdp := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
			callee.respond(inv, 200, []byte(sdp))
			callee.expect(sip.ACK)
			if r := <-done; r.err != nil {
				t.Fatalf("call 101 -> 102 over %s: %v", transport, r.err)
			}
			if tc.move {
				callee.moveUDP()
				callee.register()
			}
			if err := bye(ctx); err != nil {
				t.Fatal(err)
			}
			callee.respond(callee.expect(sip.BYE), 200, nil)
			select {
			case r := <-ended:
				if r.Result != cdr.Answered {
					t.Fatalf("CDR %+v", r)
				}
			case <-ctx.Done():
				t.Fatal("no CDR")
			}
		})
	}
}

// TestLocationMoved: a contact re-registered from a new source moves the
// flow of requests in dialogs set up over the old one, only for the same
// transport, only while the binding lives, never while the old source
// still has a live binding, and never by another extension's REGISTER.
func TestLocationMoved(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newLocation(4)
	reg := func(user, contact, src string, cseq uint32) {
		t.Helper()
		b := Binding{CallID: user + contact, CSeq: cseq, Source: src, Transport: "UDP"}
		if r := l.Register(now, user, b, []ContactUpdate{{Contact: contact, Expires: time.Hour}}, false, netip.MustParseAddrPort(src).Addr()); r != regOK {
			t.Fatalf("register %s from %s: %v", user, src, r)
		}
	}
	reg("101", "sip:101@10.0.0.5:5060", "192.0.2.1:40000", 1)
	reg("101", "sip:101@10.0.0.5:5060", "192.0.2.1:40001", 2) // NAT gave a new port
	// Another extension registering a contact from the same public address
	// moves nothing of 101's.
	reg("102", "sip:102@10.0.0.6:5060", "192.0.2.1:40002", 1)
	tests := []struct {
		name, transport, src string
		at                   time.Time
		want                 string
	}{
		{"moved", "UDP", "192.0.2.1:40000", now, "192.0.2.1:40001"},
		{"current flow", "UDP", "192.0.2.1:40001", now, ""},
		{"other extension", "UDP", "192.0.2.1:40002", now, ""},
		{"other transport", "TCP", "192.0.2.1:40000", now, ""},
		{"never registered", "UDP", "198.51.100.1:5060", now, ""},
		{"binding expired", "UDP", "192.0.2.1:40000", now.Add(2 * time.Hour), ""},
	}
	for _, tc := range tests {
		got, ok := l.Moved(tc.at, tc.transport, tc.src)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: Moved = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}
