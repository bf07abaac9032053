package sipedge

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Digest algorithms (RFC 8760 names).
const (
	AlgMD5    = "MD5"
	AlgSHA256 = "SHA-256"
)

// maxAuthHeader bounds the Authorization header we are willing to parse.
const maxAuthHeader = 2048

// Credentials are the parameters of a Digest Authorization header.
type Credentials struct {
	Username, Realm, Nonce, URI, Response, Algorithm, CNonce, QOP, NC, Opaque string
}

var (
	errNotDigest   = errors.New("digest: scheme is not Digest")
	errDigestParse = errors.New("digest: malformed parameters")
)

// ParseDigest parses the value of an Authorization header (RFC 7616 / 3261
// syntax: "Digest" SP auth-param *("," auth-param)). It is strict: bounded
// size, no duplicate parameters, quoted-string escapes resolved.
func ParseDigest(v string) (Credentials, error) {
	var c Credentials
	if len(v) > maxAuthHeader {
		return c, fmt.Errorf("%w: %d bytes", errDigestParse, len(v))
	}
	v = strings.TrimLeft(v, " \t")
	if len(v) < 7 || !strings.EqualFold(v[:6], "Digest") || (v[6] != ' ' && v[6] != '\t') {
		return c, errNotDigest
	}
	s := v[7:]
	var seen uint16 // bit per known parameter; unknown ones may repeat harmlessly
	for n := 0; ; n++ {
		if n > 16 {
			return c, fmt.Errorf("%w: too many parameters", errDigestParse)
		}
		s = strings.TrimLeft(s, " \t")
		i := strings.IndexByte(s, '=')
		if i <= 0 {
			return c, fmt.Errorf("%w: missing '='", errDigestParse)
		}
		name := strings.ToLower(strings.TrimRight(s[:i], " \t"))
		if !isToken(name) {
			return c, fmt.Errorf("%w: bad parameter name", errDigestParse)
		}
		s = strings.TrimLeft(s[i+1:], " \t")
		var val string
		if v, rest, ok := plainQuoted(s); ok {
			val, s = v, rest
		} else if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			j, closed := 1, false
			for ; j < len(s); j++ {
				ch := s[j]
				if ch == '\\' && j+1 < len(s) {
					j++
					b.WriteByte(s[j])
					continue
				}
				if ch == '"' {
					closed = true
					break
				}
				if ch < 0x20 && ch != '\t' {
					return c, fmt.Errorf("%w: control character", errDigestParse)
				}
				b.WriteByte(ch)
			}
			if !closed {
				return c, fmt.Errorf("%w: unterminated quote", errDigestParse)
			}
			val, s = b.String(), s[j+1:]
		} else {
			j := strings.IndexAny(s, ", \t")
			if j < 0 {
				j = len(s)
			}
			val, s = s[:j], s[j:]
			if !isToken(val) {
				return c, fmt.Errorf("%w: bad token value", errDigestParse)
			}
		}
		var field *string
		var bit uint16
		switch name {
		case "username":
			field, bit = &c.Username, 1
		case "realm":
			field, bit = &c.Realm, 2
		case "nonce":
			field, bit = &c.Nonce, 4
		case "uri":
			field, bit = &c.URI, 8
		case "response":
			field, bit = &c.Response, 16
		case "algorithm":
			field, bit = &c.Algorithm, 32
		case "cnonce":
			field, bit = &c.CNonce, 64
		case "qop":
			field, bit = &c.QOP, 128
		case "nc":
			field, bit = &c.NC, 256
		case "opaque":
			field, bit = &c.Opaque, 512
		}
		if field != nil {
			if seen&bit != 0 {
				return c, fmt.Errorf("%w: duplicate %s", errDigestParse, name)
			}
			seen |= bit
			*field = val
		}
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		if s[0] != ',' {
			return c, fmt.Errorf("%w: expected ','", errDigestParse)
		}
		s = s[1:]
	}
	if c.Username == "" || c.Nonce == "" || c.Response == "" || c.URI == "" {
		return c, fmt.Errorf("%w: missing username, nonce, uri or response", errDigestParse)
	}
	return c, nil
}

// plainQuoted takes the common quoted string without escapes or control
// characters without copying; ok is false for anything else.
func plainQuoted(s string) (val, rest string, ok bool) {
	if len(s) < 2 || s[0] != '"' {
		return "", s, false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return s[1:i], s[i+1:], true
		case c == '\\' || (c < 0x20 && c != '\t'):
			return "", s, false
		}
	}
	return "", s, false
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch <= ' ' || ch >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", ch) >= 0 {
			// '/' appears in no digest token we accept; '-' and '.' are fine.
			return false
		}
	}
	return true
}

// hexHash is hex(H(p1:p2:...)).
func hexHash(alg string, parts ...string) string {
	var stack [512]byte
	b := stack[:0]
	for i, p := range parts {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, p...)
	}
	var out [64]byte
	return string(out[:hexSum(alg, &out, b)])
}

// hexSum writes hex(H(b)) into out and returns its length: 32 for MD5, 64
// for SHA-256.
func hexSum(alg string, out *[64]byte, b []byte) int {
	if alg == AlgSHA256 {
		sum := sha256.Sum256(b)
		hex.Encode(out[:], sum[:])
		return 64
	}
	sum := md5.Sum(b)
	hex.Encode(out[:], sum[:])
	return 32
}

// HA1 computes H(username:realm:password) for alg.
func HA1(alg, user, realm, password string) string {
	return hexHash(alg, user, realm, password)
}

// digestResponse computes the qop=auth response (RFC 7616 §3.4.1).
func digestResponse(alg, ha1, method string, c Credentials) string {
	var out [64]byte
	return string(out[:responseSum(&out, alg, []byte(ha1), method, c)])
}

// responseSum is digestResponse into out without allocating (for
// parameters within ParseDigest's bounds); it returns the length.
func responseSum(out *[64]byte, alg string, ha1 []byte, method string, c Credentials) int {
	var stack [maxAuthHeader + 256]byte
	b := append(append(append(stack[:0], method...), ':'), c.URI...)
	var ha2 [64]byte
	n := hexSum(alg, &ha2, b)
	b = append(append(stack[:0], ha1...), ':')
	b = append(append(b, c.Nonce...), ':')
	b = append(append(b, c.NC...), ':')
	b = append(append(b, c.CNonce...), ':')
	b = append(append(b, c.QOP...), ':')
	b = append(b, ha2[:n]...)
	return hexSum(alg, out, b)
}

// Nonces issues stateless HMAC nonces bound to the source address and tracks
// the nonce counts of nonces that authenticated, so a replayed (nonce, nc)
// fails. The tracking table is fixed-size (see ncTable): memory is bounded
// and allocated once; one extension and one source may hold only a few of
// its slots (nonceQuotaUser, nonceQuotaSource).
type Nonces struct {
	key     [32]byte
	ttl     time.Duration
	retrans time.Duration // see retransWindow
	macs    sync.Pool     // *macState keyed with key
	table   *ncTable
	users   *owners[string]
	sources *owners[netip.Addr]

	// Evicted counts live nonces the full table forgot for a newer one;
	// OwnerEvicted those marked to go first, their extension or source
	// being past its quota;
	// Forgotten the requests answered as stale because their nonce had
	// been forgotten. None of them is anyone's failure.
	Evicted, OwnerEvicted, Forgotten atomic.Uint64
}

// retransWindow is how long after acceptance a request with the same
// (nonce, nc) and the same transaction counts as a retransmission: 64*T1,
// the time a UDP client keeps retransmitting (RFC 3261 Timer F).
const retransWindow = 32 * time.Second

// NewNonces returns a nonce issuer with a fresh random key; nonces die with
// the process, which at worst costs phones one extra challenge. maxTracked
// is how many live authenticated nonces the count table must hold; it gets
// twice that many slots (see ncTable), ncEntrySize bytes each.
func NewNonces(ttl time.Duration, maxTracked int) (*Nonces, error) {
	n := &Nonces{ttl: ttl, retrans: retransWindow, table: newNCTable(2 * maxTracked),
		users: newOwners[string](maxTracked, nonceQuotaUser), sources: newOwners[netip.Addr](maxTracked, nonceQuotaSource)}
	if _, err := rand.Read(n.key[:]); err != nil {
		return nil, fmt.Errorf("digest: nonce key: %w", err)
	}
	return n, nil
}

const nonceRaw = 8 + 8 + 16

// nonceLen is the length of an issued nonce (unpadded base64url).
var nonceLen = base64.RawURLEncoding.EncodedLen(nonceRaw)

// macState is a pooled HMAC with its input and output buffers: hashing
// through the hash.Hash interface would move stack buffers to the heap.
type macState struct {
	h   hash.Hash
	in  [16 + 16]byte // nonce body, then the source address
	sum [32]byte
}

// mac is the nonce MAC of body (time and random bytes) for src. When
// random is set it first fills body[8:] with fresh random bytes.
func (n *Nonces) mac(body *[16]byte, src netip.Addr, random bool) (out [16]byte) {
	st, _ := n.macs.Get().(*macState)
	if st == nil {
		st = &macState{h: hmac.New(sha256.New, n.key[:])}
	}
	copy(st.in[:8], body[:8])
	if random {
		rand.Read(st.in[8:16])
		copy(body[8:], st.in[8:16])
	} else {
		copy(st.in[8:16], body[8:])
	}
	a := src.As16()
	copy(st.in[16:], a[:])
	st.h.Reset()
	st.h.Write(st.in[:])
	copy(out[:], st.h.Sum(st.sum[:0]))
	n.macs.Put(st)
	return out
}

// Issue returns a new nonce for a client at src.
func (n *Nonces) Issue(now time.Time, src netip.Addr) string {
	var b [64]byte
	return string(n.appendNonce(b[:0], now, src))
}

// appendNonce appends a new nonce for a client at src to b.
func (n *Nonces) appendNonce(b []byte, now time.Time, src netip.Addr) []byte {
	var raw [nonceRaw]byte
	var body [16]byte
	binary.BigEndian.PutUint64(body[:8], uint64(now.UnixNano()))
	mac := n.mac(&body, src, true)
	copy(raw[:16], body[:])
	copy(raw[16:], mac[:])
	return base64.RawURLEncoding.AppendEncode(b, raw[:])
}

// nonceState is the result of checking a nonce.
type nonceState int

const (
	nonceBad nonceState = iota
	nonceStale
	nonceFresh
)

// check verifies a nonce for src. For a fresh one it also returns its key
// in the count table (part of its MAC: unpredictable without the nonce
// key, so a client cannot aim at another's slot), when it was issued
// (Unix ns) and when it stops being fresh.
func (n *Nonces) check(now time.Time, nonce string, src netip.Addr) (st nonceState, key uint64, iss int64, until time.Time) {
	if len(nonce) != nonceLen {
		return nonceBad, 0, 0, time.Time{}
	}
	var enc [64]byte
	var b [nonceRaw]byte
	if _, err := base64.RawURLEncoding.Decode(b[:], enc[:copy(enc[:], nonce)]); err != nil {
		return nonceBad, 0, 0, time.Time{}
	}
	mac := n.mac((*[16]byte)(b[:16]), src, false)
	if !hmac.Equal(b[16:], mac[:]) {
		return nonceBad, 0, 0, time.Time{}
	}
	iss = int64(binary.BigEndian.Uint64(b[:8]))
	issued := time.Unix(0, iss)
	if now.Sub(issued) > n.ttl || issued.After(now.Add(time.Minute)) {
		return nonceStale, 0, 0, time.Time{}
	}
	return nonceFresh, binary.BigEndian.Uint64(mac[:8]), iss, issued.Add(n.ttl)
}

// useResult is the outcome of recording a nonce count.
type useResult int

const (
	useOK      useResult = iota
	useReplay            // nc not above the last one seen
	useRetrans           // the accepted request itself again (same fp, within the window)
	useStale             // the nonce may have been forgotten (evicted): challenge again, charge nobody
)

// use records nc for the authenticated nonce with table key key, issued
// at iss (Unix ns) and fresh until until, that user authenticated with
// from src. fp names the request's transaction (0: none); a request that
// repeats the last accepted nc with the same non-zero fp within
// retransWindow is a retransmission, not a replay.
func (n *Nonces) use(now time.Time, key uint64, iss int64, until time.Time, nc uint32, fp uint64, user string, src netip.Addr) useResult {
	u := n.table.use(now, key, iss, until, nc, fp, n.retrans)
	if u.res == useStale {
		n.Forgotten.Add(1)
	}
	if u.evicted {
		n.Evicted.Add(1)
	}
	if !u.inserted {
		return u.res
	}
	// A new nonce: it counts against its extension and its source; past
	// a quota the owner's own oldest nonce is marked to give way first.
	if r := n.users.get(now, n.ttl, user); r != nil {
		if out, ok := r.push(ringItem{key: key, iss: iss}, nonceQuotaUser); ok {
			n.table.mark(out.key, out.iss)
			n.OwnerEvicted.Add(1)
		}
	}
	if r := n.sources.get(now, n.ttl, src); r != nil {
		if out, ok := r.push(ringItem{key: key, iss: iss}, nonceQuotaSource); ok {
			n.table.mark(out.key, out.iss)
			n.OwnerEvicted.Add(1)
		}
	}
	return u.res
}

// AuthResult is the outcome of checking a request's credentials.
type AuthResult int

// Only AuthFailed is evidence against the source: a wrong response (or an
// unknown user) on a fresh nonce the box issued to that very address, which
// a sender spoofing the address never saw. Everything else is answered
// with a new challenge and charged to nobody: anyone can put a victim's
// address on a UDP packet with a made-up or captured nonce.
const (
	AuthNone     AuthResult = iota // no usable Digest credentials: challenge
	AuthOK                         // credentials verified
	AuthStale                      // expired (or forgotten, see ncTable) nonce: challenge with stale=true
	AuthFailed                     // wrong password or unknown user on a fresh nonce issued to this source
	AuthReplayed                   // valid response with a reused (nonce, nc)
	// AuthRetransmit: valid response with the (nonce, nc) of the accepted
	// request this one retransmits (same transaction, see Nonces.use).
	AuthRetransmit
	AuthForged    // nonce not issued by this box to this source
	AuthInvalid   // malformed or unacceptable parameters (realm, qop, nc, algorithm)
	AuthThrottled // the source is throttled for this user: nothing was checked
)

func (r AuthResult) String() string {
	return [...]string{"none", "ok", "stale", "failed", "replayed", "retransmission", "forged nonce", "invalid credentials", "throttled"}[r]
}

// AuthCounters count stage-5 outcomes.
type AuthCounters struct {
	OK, Challenged, Failed, Replayed, Forged, Invalid, Stale atomic.Uint64
}

// HA1Source looks up a user's HA1 for an algorithm.
type HA1Source interface {
	HA1(user, alg string) (string, bool)
}

// Authenticator verifies Digest credentials. Unknown users take the same
// path as known ones against a keyed fake HA1, so timing and answers match.
type Authenticator struct {
	Counters   AuthCounters
	Realm      string
	Algorithms []string
	Nonces     *Nonces
	Users      HA1Source
	fakeKey    [32]byte
	fakeMACs   sync.Pool
}

// NewAuthenticator returns an authenticator for realm offering algs.
func NewAuthenticator(realm string, algs []string, nonces *Nonces, users HA1Source) (*Authenticator, error) {
	a := &Authenticator{Realm: realm, Algorithms: algs, Nonces: nonces, Users: users}
	if _, err := rand.Read(a.fakeKey[:]); err != nil {
		return nil, fmt.Errorf("digest: fake key: %w", err)
	}
	return a, nil
}

func (a *Authenticator) offers(alg string) bool {
	for _, x := range a.Algorithms {
		if x == alg {
			return true
		}
	}
	return false
}

// Challenges returns the WWW-Authenticate values, preferred algorithm first.
func (a *Authenticator) Challenges(now time.Time, src netip.Addr, stale bool) []string {
	return a.challenges(now, src, stale, a.Algorithms)
}

// challenges is Challenges for algs (a subset of a.Algorithms).
func (a *Authenticator) challenges(now time.Time, src netip.Addr, stale bool, algs []string) []string {
	a.Counters.Challenged.Add(1)
	nonce := a.Nonces.Issue(now, src)
	out := make([]string, 0, len(algs))
	for _, alg := range algs {
		v := `Digest realm="` + a.Realm + `", nonce="` + nonce + `", algorithm=` + alg + `, qop="auth"`
		if stale {
			v += ", stale=true"
		}
		out = append(out, v)
	}
	return out
}

// Verify checks the Authorization header value hdr of a request.
func (a *Authenticator) Verify(now time.Time, src netip.Addr, method, hdr string) (AuthResult, Credentials) {
	return a.VerifyTx(now, src, method, hdr, 0)
}

// VerifyTx is Verify for a request whose transaction fingerprint is fp
// (0: none). It can return AuthRetransmit.
func (a *Authenticator) VerifyTx(now time.Time, src netip.Addr, method, hdr string, fp uint64) (AuthResult, Credentials) {
	return a.verifyGuarded(now, src, method, hdr, fp, nil)
}

// verifyGuarded is VerifyTx that first asks g whether src is throttled
// for the user named in hdr: then nothing is checked (AuthThrottled), so
// a throttled source learns nothing about the password.
func (a *Authenticator) verifyGuarded(now time.Time, src netip.Addr, method, hdr string, fp uint64, g *Guard) (AuthResult, Credentials) {
	r, c := a.verify(now, src, method, hdr, fp, g)
	switch r {
	case AuthOK, AuthRetransmit:
		a.Counters.OK.Add(1)
	case AuthFailed:
		a.Counters.Failed.Add(1)
	case AuthReplayed:
		a.Counters.Replayed.Add(1)
	case AuthForged:
		a.Counters.Forged.Add(1)
	case AuthInvalid:
		a.Counters.Invalid.Add(1)
	case AuthStale:
		a.Counters.Stale.Add(1)
	}
	return r, c
}

func (a *Authenticator) verify(now time.Time, src netip.Addr, method, hdr string, fp uint64, g *Guard) (AuthResult, Credentials) {
	c, err := ParseDigest(hdr)
	if err != nil {
		if errors.Is(err, errNotDigest) {
			return AuthNone, c
		}
		return AuthInvalid, c
	}
	if g != nil && g.Throttled(now, src, c.Username) {
		return AuthThrottled, c
	}
	alg := c.Algorithm
	if alg == "" {
		alg = AlgMD5
	}
	if !a.offers(alg) || c.Realm != a.Realm || c.QOP != "auth" || len(c.NC) != 8 || c.CNonce == "" {
		return AuthInvalid, c
	}
	nc, err := strconv.ParseUint(c.NC, 16, 32)
	if err != nil || nc == 0 {
		return AuthInvalid, c
	}
	state, key, issued, until := a.Nonces.check(now, c.Nonce, src)
	switch state {
	case nonceBad:
		return AuthForged, c
	case nonceStale:
		// The password is not checked on an expired nonce: the answer
		// (stale or not) would otherwise be an oracle nobody is charged for.
		return AuthStale, c
	}
	// The fake HA1 is computed for every user so both paths cost the same.
	var ha1 [64]byte
	n := a.fakeHA1(&ha1, alg, c.Username)
	stored, known := a.Users.HA1(c.Username, alg)
	if known {
		n = copy(ha1[:], stored)
	}
	var want [64]byte
	wn := responseSum(&want, alg, ha1[:n], method, c)
	ok := equalHexFold(want[:wn], c.Response)
	if !ok || !known {
		return AuthFailed, c
	}
	switch a.Nonces.use(now, key, issued, until, uint32(nc), fp, c.Username, src) {
	case useReplay:
		return AuthReplayed, c
	case useRetrans:
		return AuthRetransmit, c
	case useStale:
		return AuthStale, c
	}
	return AuthOK, c
}

// fakeState is a pooled HMAC for fake HA1s with its buffers (see macState).
type fakeState struct {
	h   hash.Hash
	in  [len(AlgSHA256) + 1 + maxAuthHeader]byte
	sum [32]byte
}

// fakeHA1 writes the keyed stand-in HA1 of an unknown user into out.
func (a *Authenticator) fakeHA1(out *[64]byte, alg, user string) int {
	st, _ := a.fakeMACs.Get().(*fakeState)
	if st == nil {
		st = &fakeState{h: hmac.New(sha256.New, a.fakeKey[:])}
	}
	in := append(append(append(st.in[:0], alg...), 0), user...)
	st.h.Reset()
	st.h.Write(in)
	var hx [64]byte
	hex.Encode(hx[:], st.h.Sum(st.sum[:0]))
	a.fakeMACs.Put(st)
	return hexSum(alg, out, hx[:])
}

// equalHexFold compares the lower-case hex want with got, ASCII
// case-insensitively; the time depends on the length and on got (the
// client's own value), not on want.
func equalHexFold(want []byte, got string) bool {
	if len(want) != len(got) {
		return false
	}
	var diff byte
	for i := range want {
		c := got[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		diff |= c ^ want[i]
	}
	return subtle.ConstantTimeByteEq(diff, 0) == 1
}
