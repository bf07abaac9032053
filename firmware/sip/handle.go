package sip

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/emiago/sipgo/sip"
)

func sourceOf(req *sip.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, hs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hs {
		res.AppendHeader(h)
	}
	_ = tx.Respond(res) // a lost answer is the client's retransmission problem
}

func headerValue(req *sip.Request, name string) string {
	if h := req.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

func (s *Server) event(kind logs.Kind, req *sip.Request, user, reason string) {
	e := logs.Event{Kind: kind, Source: req.Source(), Transport: req.Transport(), User: user,
		UserAgent: headerValue(req, "User-Agent"), Reason: reason}
	if f := req.From(); f != nil {
		e.Display = f.DisplayName
		if user == "" {
			e.User = f.Address.User
		}
	}
	s.deps.Log.Record(e)
}

// answerFunc sends a response built from the request being checked.
type answerFunc func(code int, reason string, hs ...sip.Header)

// precheck runs stages 2 to 4 and the OPTIONS gate. It reports false when
// the request is finished: answered through answer, or dropped.
func (s *Server) precheck(now time.Time, src netip.Addr, req *sip.Request, answer answerFunc) bool {
	if v := s.validator.Check(req); v.Drop || v.Status != 0 {
		s.event(logs.KindInvalid, req, "", v.Reason)
		if !v.Drop && req.Method != sip.ACK {
			answer(v.Status, v.Reason, v.Headers...)
		}
		return false
	}
	if v := s.policy.Domain(req, src); v.Drop {
		return false
	}
	if v := s.policy.Zone(src); v.Drop {
		return false
	}
	if req.Method == sip.ACK {
		return false // ACKs of our non-2xx answers are absorbed by the transaction layer
	}
	if req.Method == sip.OPTIONS {
		// Keep-alive and trunk monitoring only; scanners learn nothing.
		if _, trunk := s.policy.Trunk(src); trunk || s.location.Registered(now, src) {
			answer(200, "OK", sip.NewHeader("Allow", "REGISTER, OPTIONS"))
		}
		return false
	}
	return true
}

// handle runs stages 2 to 7 for every request sipgo parsed (stage 1 ran on
// the raw bytes). Dropped requests get no answer at all.
func (s *Server) handle(req *sip.Request, tx sip.ServerTransaction) {
	now := s.now()
	src := sourceOf(req)
	if !src.IsValid() {
		return
	}
	answer := func(code int, reason string, hs ...sip.Header) { respond(tx, req, code, reason, hs...) }
	if !s.precheck(now, src, req, answer) {
		return
	}
	if _, trunk := s.policy.Trunk(src); trunk {
		// IP-authenticated trunk: the source address is the identity.
		// Calls are routed by a later stage; registration is not for trunks.
		respond(tx, req, 501, "Not Implemented")
		return
	}
	user, ok := s.authenticate(now, src, req, tx)
	if !ok {
		return
	}
	switch req.Method {
	case sip.REGISTER:
		s.register(now, src, req, tx, user)
	default:
		respond(tx, req, 501, "Not Implemented")
	}
}

var authzName = []byte("authorization")

// statelessChallenge answers a UDP REGISTER without credentials from the
// read filter, before sipgo creates a transaction: the 401 is stateless
// (a retransmission just gets a fresh one), so challenge floods and
// enumeration sweeps leave no 32 s transaction state behind. The answer is
// built exactly like the stateful path's. It reports true when the datagram
// is finished (answered or dropped).
func (s *Server) statelessChallenge(raddr net.Addr, src netip.Addr, data []byte) bool {
	if !bytes.HasPrefix(data, []byte("REGISTER ")) || rawHeader(data, authzName) != nil {
		return false
	}
	if _, trunk := s.policy.Trunk(src); trunk {
		return false
	}
	m, err := s.parser.ParseSIP(data)
	if err != nil {
		return false // sipgo refuses it the same way
	}
	req, ok := m.(*sip.Request)
	if !ok {
		return false
	}
	req.SetTransport("UDP")
	req.SetSource(raddr.String())
	send := func(code int, reason string, hs ...sip.Header) {
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		for _, h := range hs {
			res.AppendHeader(h)
		}
		_, _ = s.udp.WriteTo([]byte(res.String()), raddr) // lost: the phone retransmits
	}
	now := s.now()
	if s.precheck(now, src, req, send) {
		var hs []sip.Header
		for _, c := range s.auth.Challenges(now, src, false) {
			hs = append(hs, sip.NewHeader("WWW-Authenticate", c))
		}
		send(401, "Unauthorized", hs...)
	}
	return true
}

// authenticate is stages 5 and 6. Unknown users and wrong passwords take
// the same path and get the same answer: a 401 with a fresh challenge.
func (s *Server) authenticate(now time.Time, src netip.Addr, req *sip.Request, tx sip.ServerTransaction) (string, bool) {
	hdr := headerValue(req, "Authorization")
	res, cred := AuthNone, Credentials{}
	if hdr != "" {
		res, cred = s.auth.Verify(now, src, string(req.Method), hdr)
	}
	switch res {
	case AuthOK:
		s.guard.AuthOK(src)
		return cred.Username, true
	case AuthFailed, AuthReplayed:
		kind := logs.KindAuthFailure
		if res == AuthReplayed {
			kind = logs.KindNonceReplay
		}
		s.event(kind, req, cred.Username, res.String())
		if s.guard.AuthFailed(now, src, cred.Username) {
			return "", false // banned now: no answer
		}
	}
	s.challenge(now, src, req, tx, res == AuthStale)
	return "", false
}

func (s *Server) challenge(now time.Time, src netip.Addr, req *sip.Request, tx sip.ServerTransaction, stale bool) {
	var hs []sip.Header
	for _, c := range s.auth.Challenges(now, src, stale) {
		hs = append(hs, sip.NewHeader("WWW-Authenticate", c))
	}
	respond(tx, req, 401, "Unauthorized", hs...)
}

// register is the registrar (RFC 3261 §10.3) for an authenticated user.
func (s *Server) register(now time.Time, src netip.Addr, req *sip.Request, tx sip.ServerTransaction, user string) {
	if req.To().Address.User != user {
		// Credentials of one extension cannot register another's AOR.
		s.event(logs.KindAuthFailure, req, user, "to-user mismatch")
		respond(tx, req, 403, "Forbidden")
		return
	}
	defExp := s.cfg.MaxExpires
	if v := headerValue(req, "Expires"); v != "" {
		n, ok := parseUint32(v)
		if !ok {
			respond(tx, req, 400, "Bad Expires")
			return
		}
		defExp = time.Duration(n) * time.Second
	}
	var updates []ContactUpdate
	removeAll := false
	for _, h := range req.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			respond(tx, req, 400, "Bad Contact")
			return
		}
		if c.Address.Wildcard {
			if defExp != 0 || len(req.GetHeaders("Contact")) != 1 {
				respond(tx, req, 400, "Bad Wildcard")
				return
			}
			removeAll = true
			continue
		}
		exp := defExp
		if v, ok := c.Params.Get("expires"); ok {
			n, ok := parseUint32(v)
			if !ok {
				respond(tx, req, 400, "Bad Contact Expires")
				return
			}
			exp = time.Duration(n) * time.Second
		}
		if exp != 0 && exp < s.cfg.MinExpires {
			respond(tx, req, 423, "Interval Too Brief", sip.NewHeader("Min-Expires", secs(s.cfg.MinExpires)))
			return
		}
		if exp > s.cfg.MaxExpires {
			exp = s.cfg.MaxExpires
		}
		uri := c.Address.String()
		if len(uri) > 512 {
			respond(tx, req, 400, "Contact Too Long")
			return
		}
		updates = append(updates, ContactUpdate{Contact: uri, Expires: exp})
	}
	b := Binding{CallID: req.CallID().Value(), CSeq: req.CSeq().SeqNo, Source: req.Source(),
		Transport: req.Transport(), UserAgent: headerValue(req, "User-Agent")}
	if len(updates) > 0 || removeAll {
		if s.location.Register(now, user, b, updates, removeAll, src) == regOutOfOrder {
			respond(tx, req, 500, "Out Of Order")
			return
		}
		kind := logs.KindRegister
		if removeAll || allZero(updates) {
			kind = logs.KindUnregister
		}
		s.event(kind, req, user, "")
	}
	var hs []sip.Header
	for _, bd := range s.location.Lookup(now, user) {
		left := bd.Expires.Sub(now).Round(time.Second)
		hs = append(hs, sip.NewHeader("Contact", "<"+bd.Contact+">;expires="+strconv.Itoa(int(left/time.Second))))
	}
	hs = append(hs, sip.NewHeader("Date", now.UTC().Format(time.RFC1123)))
	respond(tx, req, 200, "OK", hs...)
}

func allZero(us []ContactUpdate) bool {
	for _, u := range us {
		if u.Expires != 0 {
			return false
		}
	}
	return true
}
