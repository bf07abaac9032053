package sipedge

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/connlog"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/presence"
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

// firstHeader returns the first header called name (ASCII case-insensitive,
// no compact forms). sipgo's GetHeader lower-cases the name of every header
// it passes, allocating for each generic one; this compares in place.
func firstHeader(req *sip.Request, name string) sip.Header {
	for _, h := range req.Headers() {
		if strings.EqualFold(h.Name(), name) {
			return h
		}
	}
	return nil
}

// headersNamed returns the headers called name, like GetHeaders without
// its allocations.
func headersNamed(req *sip.Request, name string) []sip.Header {
	var out []sip.Header
	for _, h := range req.Headers() {
		if strings.EqualFold(h.Name(), name) {
			out = append(out, h)
		}
	}
	return out
}

func headerValue(req *sip.Request, name string) string {
	if h := firstHeader(req, name); h != nil {
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
	s.deps.Security.Record(e)
	s.connection(e, req.Method.String())
}

// connection copies registration outcomes into the connection log. It
// costs one mutex and an append (connlog.Record); the rest happens when
// the log flushes.
func (s *Server) connection(e logs.Event, method string) {
	if s.deps.Connections == nil {
		return
	}
	var kind, result string
	switch e.Kind {
	case logs.KindRegister:
		kind, result = connlog.SIPRegister, connlog.OK
	case logs.KindUnregister:
		kind, result = connlog.SIPUnregister, connlog.OK
	case logs.KindAuthFailure, logs.KindNonceReplay:
		if method != "REGISTER" {
			return
		}
		kind, result = connlog.SIPRegisterFail, connlog.Failed
	default:
		return
	}
	s.deps.Connections.Record(connlog.Entry{Time: e.Time, Kind: kind, Source: e.Source, User: e.User, Method: method,
		Transport: e.Transport, Result: result, Detail: e.Reason})
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
	if req.Method == sip.ACK && s.calls.Load() == nil {
		return false // ACKs of our non-2xx answers are absorbed by the transaction layer
	}
	if req.Method == sip.OPTIONS {
		// Keep-alive and trunk monitoring only; scanners learn nothing.
		if _, trunk := s.policy.Trunk(src); trunk || s.location.Registered(now, src) {
			allow := "REGISTER, OPTIONS"
			if s.calls.Load() != nil {
				allow = "INVITE, ACK, CANCEL, BYE, UPDATE, REFER, PRACK, REGISTER, OPTIONS"
			}
			var hs []sip.Header
			if s.events.Load() != nil {
				allow += ", SUBSCRIBE, NOTIFY"
				hs = append(hs, sip.NewHeader("Allow-Events", presence.AllowEvents))
			}
			answer(200, "OK", append(hs, sip.NewHeader("Allow", allow))...)
		}
		return false
	}
	return true
}

// handle runs stages 2 to 7 for every request sipgo parsed (stage 1 ran on
// the raw bytes). Dropped requests get no answer at all.
func (s *Server) handle(req *sip.Request, tx sip.ServerTransaction) {
	s.stateful.Add(1)
	now := s.now()
	src := sourceOf(req)
	if !src.IsValid() {
		return
	}
	answer := func(code int, reason string, hs ...sip.Header) { respond(tx, req, code, reason, hs...) }
	if s.profileSubscribe(src, req, tx) {
		return // SIP PnP by unicast: no domain, no credentials (profile.go)
	}
	if !s.precheck(now, src, req, answer) {
		return
	}
	if h := s.callHandler(); h != nil && isCallMethod(req.Method) {
		s.dispatchCall(now, src, req, tx, answer, h)
		return
	}
	if _, trunk := s.policy.Trunk(src); trunk {
		// IP-authenticated trunk: the source address is the identity.
		// Calls are routed by a later stage; registration is not for trunks.
		answer(501, "Not Implemented")
		return
	}
	if h := s.eventHandler(); h != nil && req.Method == sip.SUBSCRIBE {
		s.dispatchSubscribe(now, src, req, tx, answer, h)
		return
	}
	user, _, ok := s.authenticate(now, src, req, answer, 0)
	if !ok {
		return
	}
	switch req.Method {
	case sip.REGISTER:
		s.register(now, src, req, answer, user, false)
	default:
		answer(501, "Not Implemented")
	}
}

// authenticate is stages 5 and 6. Unknown users and wrong passwords take
// the same path and get the same answer: a 401 with a fresh challenge.
// fp identifies the request's UDP transaction for the stateless path (0 on
// the stateful one, where sipgo absorbs retransmissions); retrans reports a
// retransmission of an accepted request whose cached answer was evicted.
func (s *Server) authenticate(now time.Time, src netip.Addr, req *sip.Request, answer answerFunc, fp uint64) (user string, retrans, ok bool) {
	hdr := headerValue(req, "Authorization")
	res, cred := AuthNone, Credentials{}
	if hdr != "" {
		res, cred = s.auth.verifyGuarded(now, src, string(req.Method), hdr, fp, s.guard)
	}
	switch res {
	case AuthThrottled:
		// Nothing was checked: a throttled pair learns nothing, right
		// password or not.
		answer(403, "Forbidden")
		return "", false, false
	case AuthOK, AuthRetransmit:
		s.guard.AuthOK(src, cred.Username)
		if ap, err := netip.ParseAddrPort(req.Source()); err == nil && res == AuthOK && isUDP(req.Transport()) {
			s.guard.Prove(now, ap, flowProofTTL)
		}
		return cred.Username, res == AuthRetransmit, true
	case AuthFailed:
		s.event(logs.KindAuthFailure, req, cred.Username, res.String())
		switch s.guard.AuthFailed(now, src, cred.Username) {
		case GuardBanned:
			return "", false, false // banned now: no answer
		case GuardThrottled:
			answer(403, "Forbidden")
			return "", false, false
		}
	case AuthReplayed:
		// Not charged: a captured request replayed from a spoofed
		// address is no evidence against that address.
		s.event(logs.KindNonceReplay, req, cred.Username, res.String())
	case AuthForged, AuthInvalid:
		s.event(logs.KindAuthFailure, req, cred.Username, res.String())
	}
	s.challenge(now, src, req, answer, res == AuthStale)
	return "", false, false
}

func (s *Server) challenge(now time.Time, src netip.Addr, req *sip.Request, answer answerFunc, stale bool) {
	algs := s.auth.Algorithms
	if md5OnlyUA(headerValue(req, "User-Agent")) && slices.Contains(algs, AlgMD5) {
		algs = []string{AlgMD5}
	}
	cs := s.auth.challenges(now, src, stale, algs)
	hs := make([]sip.Header, 0, len(cs))
	for _, c := range cs {
		hs = append(hs, sip.NewHeader("WWW-Authenticate", c))
	}
	answer(401, "Unauthorized", hs...)
}

// md5OnlyUA reports a UAC whose digest code fails a 401 that carries any
// challenge with an algorithm it lacks instead of taking the one it has
// (RFC 8760 §2.4): baresip 1.x on libre 1.x (Debian 12's baresip-core)
// answers SHA-256 + MD5 challenges, in either order, with ENOSYS and never
// registers. Challenging it with MD5 alone gives nobody anything new: MD5
// is offered and accepted for every UAC anyway; all others still get
// SHA-256 first.
func md5OnlyUA(ua string) bool {
	return strings.HasPrefix(ua, "baresip v0.") || strings.HasPrefix(ua, "baresip v1.")
}

// register is the registrar (RFC 3261 §10.3) for an authenticated user.
// retrans re-applies a retransmitted request (same Call-ID and CSeq) whose
// first answer is no longer cached; it is not logged a second time.
func (s *Server) register(now time.Time, src netip.Addr, req *sip.Request, answer answerFunc, user string, retrans bool) {
	if req.To().Address.User != user {
		// Credentials of one extension cannot register another's AOR.
		s.event(logs.KindAuthFailure, req, user, "to-user mismatch")
		answer(403, "Forbidden")
		return
	}
	lim := s.location.Limits() // live bounds (Server.Apply)
	defExp := lim.MaxExpires
	if v := headerValue(req, "Expires"); v != "" {
		n, ok := parseUint32(v)
		if !ok {
			answer(400, "Bad Expires")
			return
		}
		defExp = time.Duration(n) * time.Second
	}
	var updates []ContactUpdate
	removeAll := false
	contacts := headersNamed(req, "Contact")
	for _, h := range contacts {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			answer(400, "Bad Contact")
			return
		}
		if c.Address.Wildcard {
			if defExp != 0 || len(contacts) != 1 {
				answer(400, "Bad Wildcard")
				return
			}
			removeAll = true
			continue
		}
		exp := defExp
		if v, ok := c.Params.Get("expires"); ok {
			n, ok := parseUint32(v)
			if !ok {
				answer(400, "Bad Contact Expires")
				return
			}
			exp = time.Duration(n) * time.Second
		}
		if exp != 0 && exp < lim.MinExpires {
			answer(423, "Interval Too Brief", sip.NewHeader("Min-Expires", secs(lim.MinExpires)))
			return
		}
		if exp > lim.MaxExpires {
			exp = lim.MaxExpires
		}
		uri := c.Address.String()
		if len(uri) > 512 {
			answer(400, "Contact Too Long")
			return
		}
		updates = append(updates, ContactUpdate{Contact: uri, Expires: exp})
	}
	b := Binding{CallID: req.CallID().Value(), CSeq: req.CSeq().SeqNo, Source: req.Source(),
		Transport: req.Transport(), UserAgent: headerValue(req, "User-Agent")}
	if len(updates) > 0 || removeAll {
		if s.location.register(now, user, b, updates, removeAll, src, retrans) == regOutOfOrder {
			answer(500, "Out Of Order")
			return
		}
		if !retrans {
			kind := logs.KindRegister
			if removeAll || allZero(updates) {
				kind = logs.KindUnregister
			}
			s.event(kind, req, user, "")
		}
	}
	bs := s.location.Lookup(now, user)
	hs := make([]sip.Header, 0, len(bs)+1)
	for _, bd := range bs {
		left := bd.Expires.Sub(now).Round(time.Second)
		hs = append(hs, sip.NewHeader("Contact", "<"+bd.Contact+">;expires="+strconv.Itoa(int(left/time.Second))))
	}
	// RFC 3261 §25.1: SIP-date is always "GMT" (time.RFC1123 would say "UTC").
	hs = append(hs, sip.NewHeader("Date", now.UTC().Format(sipDate)))
	answer(200, "OK", hs...)
}

const sipDate = "Mon, 02 Jan 2006 15:04:05 GMT"

func allZero(us []ContactUpdate) bool {
	for _, u := range us {
		if u.Expires != 0 {
			return false
		}
	}
	return true
}
