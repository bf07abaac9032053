package sipedge

import (
	"bytes"
	"crypto/rand"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/emiago/sipgo/sip"
)

// The fast REGISTER path: most UDP REGISTERs are written the same plain
// way, and for those the stateless path needs only a dozen fields. scanRegister
// takes them from the datagram in place, without sipgo's parser, and
// accepts only a strict subset of RFC 3261: one Via hop (SIP/2.0/UDP, RFC
// 3261 branch), name-addrs in <>, canonical numbers, known header names in
// their full form and usual case, no folding, no body. For that subset the
// chain's stage 2 checks are satisfied by construction and sipgo would
// serialise the echoed headers exactly as they arrived, so answers are
// written straight into a reused buffer with the same bytes sipgo would
// produce. Anything else (compact forms, several Vias or Contacts, escapes,
// IPv6 literals, unknown headers, "Contact: *", ...) goes to the sipgo path
// unchanged: it keeps the RFC 3261/4475 semantics. FuzzFastRegister checks
// the two against each other.

// maxFastHeaders bounds the header lines the scanner looks at.
const maxFastHeaders = 40

// fastReq is what the stateless path uses of a REGISTER; the slices point
// into the datagram.
type fastReq struct {
	ruriHost    []byte
	viaHost     []byte
	viaPort     int    // 0: none
	viaParams   []byte // ";p1;p2=v" as sent
	rport       bool   // a valueless rport: the answer reports the source (RFC 3581)
	branch      []byte
	from, to    []byte // the values as sent (canonical)
	fromDisplay []byte
	fromUser    []byte
	toUser      []byte
	toHost      []byte
	toTag       bool
	callID      []byte
	cseq        uint32
	cseqRaw     []byte
	contact     []byte // URI inside <>; nil: no Contact
	contactExp  int64  // -1: no expires parameter
	expires     int64  // -1: no Expires header
	auth        []byte // nil: no Authorization
	ua          []byte
}

// Header bits for headers that must appear exactly (or at most) once.
const (
	fhVia = 1 << iota
	fhFrom
	fhTo
	fhCallID
	fhCSeq
	fhContact
	fhExpires
	fhAuth
	fhCL
	fhMF
	fhUA
	fhRequired = fhVia | fhFrom | fhTo | fhCallID | fhCSeq | fhCL
)

var crlf = []byte("\r\n")

// scanRegister fills r from data when data is a REGISTER in the subset
// described above; false sends it to the sipgo path.
func scanRegister(data []byte, r *fastReq) bool {
	*r = fastReq{contactExp: -1, expires: -1}
	if !bytes.HasPrefix(data, registerPrefix) {
		return false
	}
	eol := bytes.Index(data, crlf)
	if eol < 0 {
		return false
	}
	line := data[len(registerPrefix):eol]
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 || string(line[sp+1:]) != "SIP/2.0" {
		return false
	}
	if _, host, ok := scanURI(line[:sp]); ok {
		r.ruriHost = host
	} else {
		return false
	}
	rest := data[eol+2:]
	var seen uint16
	once := func(bit uint16) bool {
		dup := seen&bit != 0
		seen |= bit
		return !dup
	}
	for n := 0; ; n++ {
		if n > maxFastHeaders {
			return false
		}
		i := bytes.Index(rest, crlf)
		if i < 0 {
			return false
		}
		if i == 0 {
			rest = rest[2:]
			break
		}
		line, rest = rest[:i], rest[i+2:]
		c := bytes.IndexByte(line, ':')
		if c <= 0 || c+2 >= len(line) || line[c+1] != ' ' {
			return false
		}
		name, val := line[:c], line[c+2:]
		if !plainValue(val) {
			return false
		}
		var ok bool
		switch string(name) {
		case "Via":
			ok = once(fhVia) && scanVia(val, r)
		case "From":
			ok = once(fhFrom)
			if ok {
				r.from = val
				r.fromDisplay, r.fromUser, _, _, _, ok = scanNameAddr(val)
			}
		case "To":
			ok = once(fhTo)
			if ok {
				r.to = val
				_, r.toUser, r.toHost, _, r.toTag, ok = scanNameAddr(val)
			}
		case "Call-ID":
			r.callID = val
			ok = once(fhCallID) && allIn(val, callIDChars)
		case "CSeq":
			ok = once(fhCSeq) && scanCSeq(val, r)
		case "Contact":
			ok = once(fhContact)
			if ok {
				var uri []byte
				_, _, _, uri, _, ok = scanNameAddr(val)
				r.contact = uri
				ok = ok && len(uri) <= 512 && contactExpires(val[bytes.LastIndexByte(val, '>')+1:], r)
			}
		case "Expires":
			var v uint32
			v, ok = canonicalUint(val, 9)
			ok = once(fhExpires) && ok
			r.expires = int64(v)
		case "Authorization":
			ok = once(fhAuth)
			r.auth = val
		case "Content-Length":
			ok = once(fhCL) && string(val) == "0"
		case "Max-Forwards":
			v, okv := canonicalUint(val, 3)
			ok = once(fhMF) && okv && v > 0 && v <= 255
		case "User-Agent":
			ok = once(fhUA)
			r.ua = val
		case "Allow", "Supported", "Allow-Events", "Accept", "Accept-Language", "Accept-Encoding":
			ok = true // carried by sipgo as generic headers the chain ignores
		}
		if !ok {
			return false
		}
	}
	return len(rest) == 0 && seen&fhRequired == fhRequired
}

// plainValue: printable ASCII without leading or trailing space.
func plainValue(v []byte) bool {
	if len(v) == 0 || v[0] == ' ' || v[len(v)-1] == ' ' {
		return false
	}
	for _, c := range v {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// Character classes of the subset (narrower than RFC 3261's).
var (
	tokenChars   = charClass("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*+")
	hostChars    = charClass("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
	callIDChars  = charClass("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*+@:/%")
	displayChars = charClass("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+ ")
)

type charSet [256]bool

func charClass(s string) *charSet {
	var c charSet
	for i := 0; i < len(s); i++ {
		c[s[i]] = true
	}
	return &c
}

func allIn(b []byte, set *charSet) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !set[c] {
			return false
		}
	}
	return true
}

// canonicalUint parses 1..maxDigits decimal digits without leading zeros.
func canonicalUint(b []byte, maxDigits int) (uint32, bool) {
	if len(b) == 0 || len(b) > maxDigits || (b[0] == '0' && len(b) > 1) {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return uint32(v), v <= 1<<32-1
}

// scanURI takes "sip:" [user "@"] host [":" port] *(";" token ["=" token]).
func scanURI(u []byte) (user, host []byte, ok bool) {
	rest, found := bytes.CutPrefix(u, []byte("sip:"))
	if !found {
		return nil, nil, false
	}
	if at := bytes.IndexByte(rest, '@'); at >= 0 {
		user, rest = rest[:at], rest[at+1:]
		if !allIn(user, tokenChars) {
			return nil, nil, false
		}
	}
	end := bytes.IndexAny(rest, ":;")
	if end < 0 {
		end = len(rest)
	}
	host, rest = rest[:end], rest[end:]
	if !allIn(host, hostChars) || host[0] == '-' || host[0] == '.' {
		return nil, nil, false
	}
	if len(rest) > 0 && rest[0] == ':' {
		end := bytes.IndexByte(rest, ';')
		if end < 0 {
			end = len(rest)
		}
		if p, ok := canonicalUint(rest[1:end], 5); !ok || p == 0 || p > 65535 {
			return nil, nil, false
		}
		rest = rest[end:]
	}
	return user, host, scanParams(rest, nil)
}

// scanParams takes *(";" token ["=" token]) with distinct names and calls
// f (if set) for each.
func scanParams(p []byte, f func(name, val []byte, hasVal bool) bool) bool {
	var names [16][]byte
	n := 0
	for len(p) > 0 {
		if p[0] != ';' || n == len(names) {
			return false
		}
		p = p[1:]
		end := bytes.IndexByte(p, ';')
		if end < 0 {
			end = len(p)
		}
		kv := p[:end]
		p = p[end:]
		name, val, hasVal := bytes.Cut(kv, []byte("="))
		if !allIn(name, tokenChars) || (hasVal && !allIn(val, tokenChars)) {
			return false
		}
		for _, prev := range names[:n] {
			if bytes.EqualFold(prev, name) {
				return false
			}
		}
		names[n] = name
		n++
		if f != nil && !f(name, val, hasVal) {
			return false
		}
	}
	return true
}

// scanNameAddr takes [DQUOTE display DQUOTE SP] "<" URI ">" params.
func scanNameAddr(v []byte) (display, user, host, uri []byte, tag, ok bool) {
	if len(v) > 0 && v[0] == '"' {
		j := bytes.IndexByte(v[1:], '"') + 1
		if j <= 1 || j+2 >= len(v) || v[j+1] != ' ' {
			return
		}
		display, v = v[1:j], v[j+2:]
		if !allIn(display, displayChars) || display[0] == ' ' || display[len(display)-1] == ' ' {
			return
		}
	}
	if len(v) == 0 || v[0] != '<' {
		return
	}
	k := bytes.IndexByte(v, '>')
	if k < 0 {
		return
	}
	uri = v[1:k]
	if user, host, ok = scanURI(uri); !ok {
		return
	}
	ok = scanParams(v[k+1:], func(name, _ []byte, hasVal bool) bool {
		if string(name) == "tag" {
			tag = hasVal
		}
		return true
	})
	return
}

// scanVia takes "SIP/2.0/UDP" SP host [":" port] params with an RFC 3261
// branch.
func scanVia(v []byte, r *fastReq) bool {
	rest, found := bytes.CutPrefix(v, []byte("SIP/2.0/UDP "))
	if !found {
		return false
	}
	end := bytes.IndexAny(rest, ":;")
	if end < 0 {
		end = len(rest)
	}
	r.viaHost, rest = rest[:end], rest[end:]
	if !allIn(r.viaHost, hostChars) || r.viaHost[0] == '-' || r.viaHost[0] == '.' {
		return false
	}
	if len(rest) > 0 && rest[0] == ':' {
		end := bytes.IndexByte(rest, ';')
		if end < 0 {
			end = len(rest)
		}
		p, ok := canonicalUint(rest[1:end], 5)
		if !ok || p == 0 || p > 65535 {
			return false
		}
		r.viaPort, rest = int(p), rest[end:]
	}
	r.viaParams = rest
	received := false
	ok := scanParams(rest, func(name, val []byte, hasVal bool) bool {
		switch string(name) {
		case "branch":
			r.branch = val
		case "rport":
			r.rport = !hasVal
		case "received":
			received = true
		}
		return true
	})
	// RFC 2543 or bare-cookie branches, and a received the answer would
	// have to rewrite, take the sipgo path.
	return ok && len(r.branch) > len(sip.RFC3261BranchMagicCookie) &&
		bytes.HasPrefix(r.branch, []byte(sip.RFC3261BranchMagicCookie)) && !(r.rport && received)
}

func scanCSeq(v []byte, r *fastReq) bool {
	num, method, ok := bytes.Cut(v, []byte(" "))
	if !ok || string(method) != "REGISTER" {
		return false
	}
	n, ok := canonicalUint(num, 10)
	if !ok || n > 1<<31-1 {
		return false
	}
	r.cseq, r.cseqRaw = n, num
	return true
}

// contactExpires takes the Contact's header parameters; only expires
// matters to the registrar.
func contactExpires(params []byte, r *fastReq) bool {
	return scanParams(params, func(name, val []byte, hasVal bool) bool {
		if string(name) != "expires" {
			return true
		}
		n, ok := canonicalUint(val, 9)
		r.contactExp = int64(n)
		return hasVal && ok
	})
}

// fastScratch is one worker's reusable state for the fast path.
type fastScratch struct {
	req   fastReq
	out   []byte // the answer being written
	key   []byte // transaction key
	src   []byte // source as ip:port
	nonce [64]byte
	rnd   [16]byte
}

// appendSource appends raddr as net.Addr.String() writes it, without
// allocating for IPv4 sources.
func appendSource(b []byte, raddr net.Addr) []byte {
	if ua, ok := raddr.(*net.UDPAddr); ok && ua.Zone == "" {
		if ip4 := ua.IP.To4(); ip4 != nil {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip4)), uint16(ua.Port)).AppendTo(b)
		}
	}
	return append(b, raddr.String()...)
}

// fastTxKey is txKey for a scanned request.
func fastTxKey(b, src []byte, r *fastReq) []byte {
	b = append(b, src...)
	b = append(b, 0)
	b = append(b, r.viaHost...)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(r.viaPort), 10)
	b = append(b, 0)
	b = append(b, r.branch...)
	b = append(b, 0)
	b = append(b, r.callID...)
	b = append(b, 0)
	b = append(b, r.cseqRaw...)
	return append(b, " REGISTER"...)
}

// fastUDP answers a scanned REGISTER; it mirrors statelessUDP, precheck,
// authenticate, challenge and register for the subset.
func (s *Server) fastUDP(sc *fastScratch, raddr net.Addr, src netip.Addr) {
	r := &sc.req
	now := s.now()
	sc.src = appendSource(sc.src[:0], raddr)
	sc.key = sc.key[:0]
	if r.auth != nil {
		sc.key = fastTxKey(sc.key, sc.src, r)
		if res, hit := s.retrans.getBytes(now, sc.key); hit {
			_, _ = s.udp.WriteTo(res, raddr)
			return
		}
	}
	// Stage 2 holds by construction of the subset; stages 3 and 4 as
	// precheck runs them.
	s.validator.Counters.Passed.Add(1)
	if s.policy.domainRegister(r.ruriHost, r.toHost, src).Drop {
		return
	}
	if s.policy.Zone(src).Drop {
		return
	}
	if r.auth == nil {
		s.fastChallenge(sc, now, raddr, src, false)
		return
	}
	res, cred := s.auth.verifyGuarded(now, src, "REGISTER", string(r.auth), s.fingerprintBytes(sc.key), s.guard)
	switch res {
	case AuthThrottled:
		s.fastFinish(sc, now, raddr, fastHead(sc, 403, "Forbidden"))
		return
	case AuthOK, AuthRetransmit:
		s.guard.AuthOK(src, cred.Username)
		if res == AuthOK {
			s.guard.Prove(now, addrPortOf(raddr), flowProofTTL)
		}
		s.fastRegister(sc, now, raddr, src, cred.Username, res == AuthRetransmit)
		return
	case AuthFailed:
		s.fastEvent(sc, logs.KindAuthFailure, cred.Username, res.String())
		switch s.guard.AuthFailed(now, src, cred.Username) {
		case GuardBanned:
			return // banned now: no answer
		case GuardThrottled:
			s.fastFinish(sc, now, raddr, fastHead(sc, 403, "Forbidden"))
			return
		}
	case AuthReplayed:
		// Not charged (see authenticate).
		s.fastEvent(sc, logs.KindNonceReplay, cred.Username, res.String())
	case AuthForged, AuthInvalid:
		s.fastEvent(sc, logs.KindAuthFailure, cred.Username, res.String())
	}
	s.fastChallenge(sc, now, raddr, src, res == AuthStale)
}

func (s *Server) fastEvent(sc *fastScratch, kind logs.Kind, user, reason string) {
	r := &sc.req
	e := logs.Event{Kind: kind, Source: string(sc.src), Transport: "UDP", User: user,
		UserAgent: string(r.ua), Reason: reason, Display: string(r.fromDisplay)}
	if user == "" {
		e.User = string(r.fromUser)
	}
	s.deps.Security.Record(e)
}

var (
	baresip0 = []byte("baresip v0.")
	baresip1 = []byte("baresip v1.")
)

func (s *Server) fastChallenge(sc *fastScratch, now time.Time, raddr net.Addr, src netip.Addr, stale bool) {
	a := s.auth
	md5Only := bytes.HasPrefix(sc.req.ua, baresip0) || bytes.HasPrefix(sc.req.ua, baresip1) // md5OnlyUA
	if md5Only && !a.offers(AlgMD5) {
		md5Only = false
	}
	a.Counters.Challenged.Add(1)
	nonce := a.Nonces.appendNonce(sc.nonce[:0], now, src)
	b := fastHead(sc, 401, "Unauthorized")
	for _, alg := range a.Algorithms {
		if md5Only && alg != AlgMD5 {
			continue
		}
		b = append(b, `WWW-Authenticate: Digest realm="`...)
		b = append(b, a.Realm...)
		b = append(b, `", nonce="`...)
		b = append(b, nonce...)
		b = append(b, `", algorithm=`...)
		b = append(b, alg...)
		b = append(b, `, qop="auth"`...)
		if stale {
			b = append(b, ", stale=true"...)
		}
		b = append(b, crlf...)
		if md5Only {
			break
		}
	}
	s.fastFinish(sc, now, raddr, b)
}

func (s *Server) fastRegister(sc *fastScratch, now time.Time, raddr net.Addr, src netip.Addr, user string, retrans bool) {
	r := &sc.req
	if string(r.toUser) != user {
		s.fastEvent(sc, logs.KindAuthFailure, user, "to-user mismatch")
		s.fastFinish(sc, now, raddr, fastHead(sc, 403, "Forbidden"))
		return
	}
	lim := s.location.Limits()
	defExp := lim.MaxExpires
	if r.expires >= 0 {
		defExp = time.Duration(r.expires) * time.Second
	}
	var updates []ContactUpdate
	var one [1]ContactUpdate
	if r.contact != nil {
		exp := defExp
		if r.contactExp >= 0 {
			exp = time.Duration(r.contactExp) * time.Second
		}
		if exp != 0 && exp < lim.MinExpires {
			b := fastHead(sc, 423, "Interval Too Brief")
			b = append(b, "Min-Expires: "...)
			b = strconv.AppendInt(b, int64(lim.MinExpires/time.Second), 10)
			s.fastFinish(sc, now, raddr, append(b, crlf...))
			return
		}
		exp = min(exp, lim.MaxExpires)
		one[0] = ContactUpdate{Contact: string(r.contact), Expires: exp}
		updates = one[:]
	}
	if len(updates) > 0 {
		b := Binding{CallID: string(r.callID), CSeq: r.cseq, Source: string(sc.src), Transport: "UDP", UserAgent: string(r.ua)}
		if s.location.register(now, user, b, updates, false, src, retrans) == regOutOfOrder {
			s.fastFinish(sc, now, raddr, fastHead(sc, 500, "Out Of Order"))
			return
		}
		if !retrans {
			kind := logs.KindRegister
			if allZero(updates) {
				kind = logs.KindUnregister
			}
			s.fastEvent(sc, kind, user, "")
		}
	}
	b := fastHead(sc, 200, "OK")
	for _, bd := range s.location.Lookup(now, user) {
		left := bd.Expires.Sub(now).Round(time.Second)
		b = append(b, "Contact: <"...)
		b = append(b, bd.Contact...)
		b = append(b, ">;expires="...)
		b = strconv.AppendInt(b, int64(left/time.Second), 10)
		b = append(b, crlf...)
	}
	b = append(b, "Date: "...)
	b = now.UTC().AppendFormat(b, sipDate)
	s.fastFinish(sc, now, raddr, append(b, crlf...))
}

// fastHead starts an answer the way sip.NewResponseFromRequest and
// Response.StringWrite write it: status line, Via (with RFC 3581 rport and
// received filled in), From, To (with a fresh tag when it has none),
// Call-ID, CSeq and Content-Length.
func fastHead(sc *fastScratch, code int, reason string) []byte {
	r := &sc.req
	b := append(sc.out[:0], "SIP/2.0 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, reason...)
	b = append(b, "\r\nVia: SIP/2.0/UDP "...)
	b = append(b, r.viaHost...)
	if r.viaPort > 0 {
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(r.viaPort), 10)
	}
	if !r.rport {
		b = append(b, r.viaParams...)
	} else {
		// As sipgo: the valueless rport gets the source port, received
		// (absent, see scanVia) the source host, appended.
		host, port := sc.src, []byte(nil)
		if i := bytes.LastIndexByte(sc.src, ':'); i >= 0 {
			host, port = bytes.Trim(sc.src[:i], "[]"), sc.src[i+1:]
		}
		for p := r.viaParams; len(p) > 0; {
			end := bytes.IndexByte(p[1:], ';') + 1
			if end == 0 {
				end = len(p)
			}
			if string(p[:end]) == ";rport" {
				b = append(append(b, ";rport="...), port...)
			} else {
				b = append(b, p[:end]...)
			}
			p = p[end:]
		}
		b = append(b, ";received="...)
		b = append(b, host...)
	}
	b = append(b, "\r\nFrom: "...)
	b = append(b, r.from...)
	b = append(b, "\r\nTo: "...)
	b = append(b, r.to...)
	if !r.toTag {
		b = append(b, ";tag="...)
		b = appendUUID(b, &sc.rnd)
	}
	b = append(b, "\r\nCall-ID: "...)
	b = append(b, r.callID...)
	b = append(b, "\r\nCSeq: "...)
	b = append(b, r.cseqRaw...)
	b = append(b, " REGISTER\r\nContent-Length: 0\r\n"...)
	return b
}

// fastFinish ends the answer, keeps it for retransmissions of an
// authenticated request and sends it.
func (s *Server) fastFinish(sc *fastScratch, now time.Time, raddr net.Addr, b []byte) {
	b = append(b, crlf...)
	sc.out = b
	if len(sc.key) > 0 {
		s.retrans.put(now, string(sc.key), bytes.Clone(b))
	}
	_, _ = s.udp.WriteTo(b, raddr) // lost: the phone retransmits
}

// appendUUID appends a random (version 4) UUID in its text form, as the
// To tag sipgo would add.
func appendUUID(b []byte, rnd *[16]byte) []byte {
	_, _ = rand.Read(rnd[:])
	rnd[6] = rnd[6]&0x0f | 0x40
	rnd[8] = rnd[8]&0x3f | 0x80
	const hexd = "0123456789abcdef"
	for i, c := range rnd {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexd[c>>4], hexd[c&0x0f])
	}
	return b
}
