package sipedge

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Calls is the B2BUA as the edge sees it; *call.B2BUA implements it. The
// edge authenticates and filters; the B2BUA never sees credentials.
type Calls interface {
	OnInvite(req *sip.Request, tx sip.ServerTransaction, caller call.Identity)
	OnUpdate(req *sip.Request, tx sip.ServerTransaction)
	OnBye(req *sip.Request, tx sip.ServerTransaction)
	OnAck(req *sip.Request, tx sip.ServerTransaction)
	OnCancel(req *sip.Request, tx sip.ServerTransaction)
	OnRefer(req *sip.Request, tx sip.ServerTransaction)
	OnPrack(req *sip.Request, tx sip.ServerTransaction)
	OnInfo(req *sip.Request, tx sip.ServerTransaction)
}

// callsBox lets atomic.Pointer hold an interface.
type callsBox struct{ c Calls }

// SetCalls hands call requests to c from now on. The B2BUA is built after
// the edge (it sends through the edge's Client), so it is set here rather
// than in Deps; call it before Serve. Without it INVITEs get 501.
func (s *Server) SetCalls(c Calls) {
	if c == nil {
		s.calls.Store(nil)
		return
	}
	s.calls.Store(&callsBox{c: c})
}

func (s *Server) callHandler() Calls {
	if b := s.calls.Load(); b != nil {
		return b.c
	}
	return nil
}

// Client is the edge's own SIP client: requests sent with it leave from the
// edge's sockets, so answers and in-dialog requests come back through the
// security chain.
func (s *Server) Client() *sipgo.Client { return s.client }

// Contact is the box's host:port for Contact headers on transport: the
// bound address, with an unspecified host replaced by Deps.Host.
func (s *Server) Contact(transport string) string {
	hp := s.contactHost(transport)
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return hp
	}
	if a, err := netip.ParseAddr(host); err == nil && a.IsUnspecified() && s.deps.Host != "" {
		return net.JoinHostPort(s.deps.Host, port)
	}
	return hp
}

// isCallMethod reports the methods the B2BUA handles.
func isCallMethod(m sip.RequestMethod) bool {
	switch m {
	case sip.INVITE, sip.ACK, sip.BYE, sip.CANCEL, sip.UPDATE, sip.REFER, sip.PRACK, sip.INFO:
		return true
	}
	return false
}

// dispatchCall is stage 7 for call methods. New INVITEs from extensions
// are digest-authenticated like REGISTERs (same answers for unknown users
// and wrong passwords); trunk sources are identified by address. In-dialog
// requests (re-INVITE, UPDATE, BYE, REFER, PRACK, INFO) and CANCEL are not challenged:
// the dialog identifiers the box generated are their credential, and the
// B2BUA answers 481 to unknown ones.
func (s *Server) dispatchCall(now time.Time, src netip.Addr, req *sip.Request, tx sip.ServerTransaction, answer answerFunc, h Calls) {
	tx = s.onFlowTx(req, tx)
	switch req.Method {
	case sip.ACK:
		h.OnAck(req, tx) // never answered
		return
	case sip.CANCEL:
		h.OnCancel(req, tx)
		return
	case sip.BYE:
		h.OnBye(req, tx)
		return
	case sip.UPDATE:
		h.OnUpdate(req, tx)
		return
	case sip.REFER: // in-dialog only: the B2BUA answers 481 otherwise
		h.OnRefer(req, tx)
		return
	case sip.PRACK: // in-dialog (RFC 3262): 481 for unknown dialogs
		h.OnPrack(req, tx)
		return
	case sip.INFO: // in-dialog DTMF (RFC 6086): 481 for unknown dialogs
		h.OnInfo(req, tx)
		return
	}
	if to := req.To(); to != nil && to.Params.Has("tag") {
		h.OnInvite(req, tx, call.Identity{}) // re-INVITE: identity ignored
		return
	}
	if name, trunk := s.policy.Trunk(src); trunk {
		h.OnInvite(req, tx, call.Identity{Trunk: name})
		return
	}
	user, _, ok := s.authenticate(now, src, req, answer, 0)
	if !ok {
		return
	}
	h.OnInvite(req, tx, call.Identity{Extension: user})
}

// Directory adapts the location service and the trunk configuration to
// call.Directory. policy gives each extension's or trunk's SRTP policy
// (nil: SRTPOptional for all).
func (s *Server) Directory(policy func(call.Identity) media.Policy) call.Directory {
	return &directory{s: s, policy: policy}
}

type directory struct {
	s      *Server
	policy func(call.Identity) media.Policy
}

// Contacts returns ext's live bindings, the most recently refreshed first.
func (d *directory) Contacts(ext string) []call.Target {
	bs := d.s.location.Lookup(d.s.now(), ext)
	slices.SortStableFunc(bs, func(a, b Binding) int { return b.Expires.Compare(a.Expires) })
	out := make([]call.Target, 0, len(bs))
	for _, b := range bs {
		t, err := call.TargetFromBinding(b.Contact, b.Source, b.Transport)
		if err != nil {
			continue // checked at REGISTER; a binding that fails is skipped
		}
		out = append(out, t)
	}
	return out
}

// Trunk returns where calls over a trunk go: its registrar when it
// registers, else its single peer address on port 5060.
func (d *directory) Trunk(name string) (call.Target, bool) {
	for _, t := range d.s.cfg.Trunks {
		if t.Name != name {
			continue
		}
		if r := t.Register; r != nil {
			host, port, err := net.SplitHostPort(r.Registrar)
			if err != nil {
				host, port = r.Registrar, "5060"
			}
			tp := strings.ToLower(r.Transport)
			if tp == "" {
				tp = "udp"
			}
			return call.Target{URI: sip.Uri{Scheme: "sip", Host: host, Port: atoiPort(port)},
				Dest: net.JoinHostPort(host, port), Transport: tp}, true
		}
		for _, p := range t.Peers {
			if p.IsSingleIP() {
				a := p.Addr().String()
				return call.Target{URI: sip.Uri{Scheme: "sip", Host: a},
					Dest: net.JoinHostPort(a, "5060"), Transport: "udp"}, true
			}
		}
		return call.Target{}, false
	}
	return call.Target{}, false
}

// Credentials are a registering trunk's username and sealed password,
// which the B2BUA answers the trunk's INVITE challenges with.
func (d *directory) Credentials(name string) (user, pass string, ok bool) {
	for _, t := range d.s.cfg.Trunks {
		if t.Name != name || t.Register == nil || t.Register.Username == "" {
			continue
		}
		pw, err := trunkPassword(d.s.deps.Store, name)
		if err != nil || pw == "" {
			return "", "", false
		}
		return t.Register.Username, pw, true
	}
	return "", "", false
}

func (d *directory) Policy(id call.Identity) media.Policy {
	if d.policy == nil {
		return media.SRTPOptional
	}
	return d.policy(id)
}

func atoiPort(p string) int {
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 {
		return 0
	}
	return n
}

// PINFailed charges a wrong PIN typed on a call of the box's own
// applications (voicemail) to the guard exactly like a failed digest of
// src for account: the same throttles, and a source that keeps failing
// across accounts is banned in the firewall. The caller reports only a
// source the call proved (a digest-authenticated phone). banned: the
// source is banned now.
func (s *Server) PINFailed(src netip.Addr, account string) (banned bool) {
	// The security event is the application's (voicemail.pin_failure).
	return s.guard.AuthFailed(s.now(), src.Unmap(), account) == GuardBanned
}

// PINThrottled reports whether src may not try PINs for account now (it
// failed too often), or is banned.
func (s *Server) PINThrottled(src netip.Addr, account string) bool {
	now := s.now()
	return s.bans.Banned(now, src.Unmap()) || s.guard.Throttled(now, src.Unmap(), account)
}

// PINOK clears src's failure count for account after a right PIN.
func (s *Server) PINOK(src netip.Addr, account string) { s.guard.AuthOK(src.Unmap(), account) }
