package sipedge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Flows (RFC 5626 in spirit): a request to a phone must leave over the flow
// the phone registered on, or a phone behind NAT (or one that accepts
// requests only from its registrar) never sees it.
//
//   - UDP: every request leaves from the listening port the phones send to.
//     sipgo would otherwise look for a connection to the destination in its
//     pool, which never holds phones that registered on the stateless path
//     (it never saw their datagrams), and open a new socket on a random port
//     with an unspecified address in Via. Requests are bound to the
//     listener instead (sip.Request.Laddr) and carry a Via the edge writes:
//     the bound address, or, on a wildcard bind, Deps.Host or the address
//     the kernel sends to the destination from.
//   - TCP, TLS: sipgo keeps each accepted connection in its pool under the
//     peer's address, which is the binding's source, so requests reuse the
//     connection the phone registered over; its Via is that connection's
//     local address. Only an unspecified Contact host is fixed here.

// Sender is what the B2BUA sends with (call.Config.Client): the edge's
// sipgo client, each request bound to its flow.
func (s *Server) Sender() call.Sender { return flowSender{s: s} }

type flowSender struct{ s *Server }

func (f flowSender) TransactionRequest(ctx context.Context, req *sip.Request, options ...sipgo.ClientRequestOption) (sip.ClientTransaction, error) {
	if err := f.s.onFlow(req); err != nil {
		return nil, err
	}
	return f.s.client.TransactionRequest(ctx, req, options...)
}

func (f flowSender) WriteRequest(req *sip.Request, options ...sipgo.ClientRequestOption) error {
	if err := f.s.onFlow(req); err != nil {
		return err
	}
	return f.s.client.WriteRequest(req, options...)
}

// onFlow binds req (its destination and transport set) to the flow it
// leaves on and gives it a valid Via and the flow's address as the box's
// Contact; a Via already there (a CANCEL copies its INVITE's) is kept.
func (s *Server) onFlow(req *sip.Request) error {
	if s.down.Load() {
		// sipgo would open a new socket (over UDP on the listener's
		// freed port) and leave its reader running.
		return fmt.Errorf("sip: %s not sent: %w", req.Method, net.ErrClosed)
	}
	if to := req.To(); to != nil && to.Params.Has("tag") {
		// In a dialog: the phone may have re-registered from a new
		// address (NAT) since; its old flow is gone.
		if now, ok := s.location.Moved(s.now(), req.Transport(), req.Destination()); ok {
			req.SetDestination(now)
		}
	}
	host, port, err := s.flowAddr(req.Transport(), req.Destination())
	if err != nil {
		return fmt.Errorf("sip: %s to %s: %w", req.Method, req.Destination(), err)
	}
	if strings.EqualFold(req.Transport(), "UDP") {
		la := s.front.LocalAddr().(*net.UDPAddr) // flowAddr checked it
		req.Laddr = sip.Addr{IP: la.IP, Port: la.Port}
		if req.Via() == nil {
			via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: host, Port: port, Params: sip.NewParams()}
			via.Params.Add("branch", sip.GenerateBranchN(16))
			via.Params.Add("rport", "")
			req.PrependHeader(via)
		}
	}
	setContact(req, host, port)
	return nil
}

// flowAddr is the box's address and port on the flow to peer over
// transport, as the peer reaches it: UDP, the listener's port; TCP and
// TLS, the local end of the connection sipgo holds to peer (the one the
// phone registered or called over), else the listener's.
func (s *Server) flowAddr(transport, peer string) (string, int, error) {
	var bound net.Addr
	switch strings.ToUpper(transport) {
	case "UDP":
		if s.front == nil {
			return "", 0, errors.New("UDP is not enabled")
		}
		bound = s.front.LocalAddr()
	case "TCP", "TLS":
		if c, err := s.ua.TransportLayer().GetConnection(transport, peer); err == nil && c != nil {
			bound = c.LocalAddr()
			_, _ = c.TryClose() // GetConnection took a reference
		} else if bound = s.Addr(strings.ToLower(transport)); bound == nil {
			return "", 0, fmt.Errorf("%s is not enabled", transport)
		}
	default:
		return "", 0, fmt.Errorf("transport %q", transport)
	}
	ap, err := netip.ParseAddrPort(bound.String())
	if err != nil {
		return "", 0, err
	}
	host, err := s.sentByHost(ap.Addr(), peer)
	return host, int(ap.Port()), err
}

// sentByHost is the box's address as a peer sees it when the socket is
// bound to ip: ip itself, or on a wildcard bind Deps.Host (the box's
// public address behind NAT), else the source address the kernel picks
// for peer.
func (s *Server) sentByHost(ip netip.Addr, peer string) (string, error) {
	if !ip.IsUnspecified() {
		return ip.Unmap().String(), nil
	}
	if s.deps.Host != "" {
		return s.deps.Host, nil
	}
	// Connecting a UDP socket sends nothing; it only asks for the route.
	c, err := net.Dial("udp", peer)
	if err != nil {
		return "", err
	}
	defer c.Close()
	la, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return "", err
	}
	return la.Addr().Unmap().String(), nil
}

// setContact puts host:port in the box's Contact of m (the B2BUA never
// passes a peer's Contact on, so a Contact in its messages is its own).
func setContact(m sip.Message, host string, port int) {
	for _, h := range m.GetHeaders("Contact") {
		if ct, ok := h.(*sip.ContactHeader); ok {
			ct.Address.Host, ct.Address.Port = host, port
		}
	}
}

// flowTx answers a request over its flow with the box's Contact set to
// the address the request reached (the B2BUA's configured Contact names
// the listener, which may be a wildcard or another transport's port).
type flowTx struct {
	sip.ServerTransaction
	s   *Server
	req *sip.Request
}

func (s *Server) onFlowTx(req *sip.Request, tx sip.ServerTransaction) sip.ServerTransaction {
	if tx == nil {
		return nil
	}
	return flowTx{ServerTransaction: tx, s: s, req: req}
}

func (t flowTx) Respond(res *sip.Response) error {
	if res.Contact() != nil {
		if host, port, err := t.s.flowAddr(t.req.Transport(), t.req.Source()); err == nil {
			setContact(res, host, port)
		}
	}
	return t.ServerTransaction.Respond(res)
}
