package sipedge

import (
	"bytes"
	"hash/maphash"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// The UDP REGISTER path is stateless: statelessUDP answers every REGISTER
// from the read filter, before sipgo would create a server transaction (a
// goroutine, timers and ~32 s of state per request). What a transaction
// would add is done here: a retransmitted request gets the answer the first
// copy got, from a bounded cache; a retransmission whose cached answer was
// evicted is recognised by the nonce table (AuthRetransmit) and re-applied
// with the same outcome; anything later is a replay. TCP, TLS, WSS, trunk
// sources and other methods keep sipgo's stateful path (handle).

// retransTTL is how long an answer is kept for retransmissions: 64*T1, the
// lifetime of a non-INVITE server transaction over UDP (RFC 3261 Timer J).
const retransTTL = 32 * time.Second

// RetransCounters count the retransmission cache.
type RetransCounters struct {
	Hits, Stored, Evicted atomic.Uint64
}

// respCache keeps the last answer per UDP transaction, oldest first, bounded
// in entries and in bytes. Entries leave in insertion order, which is also
// expiry order because the lifetime is fixed.
type respCache struct {
	ttl      time.Duration
	maxBytes int

	mu       sync.Mutex
	m        map[string]int // key -> slot
	slots    []cacheSlot    // ring; live entries are start .. start+n-1
	start    int
	n        int
	bytes    int
	Counters RetransCounters
}

type cacheSlot struct {
	key     string
	res     []byte
	expires time.Time
}

func newRespCache(entries, maxBytes int, ttl time.Duration) *respCache {
	return &respCache{ttl: ttl, maxBytes: maxBytes, m: make(map[string]int, entries), slots: make([]cacheSlot, entries)}
}

// popOldest drops the oldest entry; mu is held.
func (c *respCache) popOldest(now time.Time) {
	sl := &c.slots[c.start]
	if now.Before(sl.expires) {
		c.Counters.Evicted.Add(1) // pushed out early: AuthRetransmit covers it
	}
	delete(c.m, sl.key)
	c.bytes -= len(sl.key) + len(sl.res)
	*sl = cacheSlot{}
	c.start = (c.start + 1) % len(c.slots)
	c.n--
}

// get returns the cached answer for key if it has not expired.
func (c *respCache) get(now time.Time, key string) ([]byte, bool) {
	return c.getBytes(now, []byte(key))
}

// getBytes is get without converting the key.
func (c *respCache) getBytes(now time.Time, key []byte) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.m[string(key)]
	if !ok || !now.Before(c.slots[i].expires) {
		return nil, false
	}
	c.Counters.Hits.Add(1)
	return c.slots[i].res, true
}

// put stores res as the answer for key (res is not copied: the caller
// hands it over). An entry larger than the whole budget is not kept.
func (c *respCache) put(now time.Time, key string, res []byte) {
	size := len(key) + len(res)
	if size > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.m[key]; ok {
		// A second answer in one transaction (not done today): keep the last.
		c.bytes += len(res) - len(c.slots[i].res)
		c.slots[i].res = res
		return
	}
	// Expired entries go first; then the oldest live ones while over budget.
	for c.n > 0 && !now.Before(c.slots[c.start].expires) {
		c.popOldest(now)
	}
	for c.n > 0 && (c.n == len(c.slots) || c.bytes+size > c.maxBytes) {
		c.popOldest(now)
	}
	i := (c.start + c.n) % len(c.slots)
	c.slots[i] = cacheSlot{key: key, res: res, expires: now.Add(c.ttl)}
	c.m[key] = i
	c.n++
	c.bytes += size
	c.Counters.Stored.Add(1)
}

// size reports the entries (live or not yet swept) and their bytes.
func (c *respCache) size() (entries, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.bytes
}

// txKey names the UDP transaction of req the way RFC 3261 §17.2.3 matches
// server transactions (top Via branch and sent-by, method) plus the source
// address, Call-ID and CSeq number. ok is false when a part is missing; the
// validator then rejects the request anyway.
func txKey(req *sip.Request) (string, bool) {
	via, cid, cseq := req.Via(), req.CallID(), req.CSeq()
	if via == nil || cid == nil || cseq == nil {
		return "", false
	}
	branch, _ := via.Params.Get("branch")
	var b []byte
	var stack [256]byte
	b = stack[:0]
	b = append(b, req.Source()...)
	b = append(b, 0)
	b = append(b, via.Host...)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(via.Port), 10)
	b = append(b, 0)
	b = append(b, branch...)
	b = append(b, 0)
	b = append(b, cid.Value()...)
	b = append(b, 0)
	b = strconv.AppendUint(b, uint64(cseq.SeqNo), 10)
	b = append(b, ' ')
	b = append(b, cseq.MethodName...)
	return string(b), true
}

// fingerprint is the nonce table's compact form of a transaction key; it
// is never 0 (0 means "no transaction").
func (s *Server) fingerprint(key string) uint64 {
	if key == "" {
		return 0
	}
	return maphash.String(s.fpSeed, key) | 1
}

// fingerprintBytes is fingerprint for a key in bytes (the same value).
func (s *Server) fingerprintBytes(key []byte) uint64 {
	if len(key) == 0 {
		return 0
	}
	return maphash.Bytes(s.fpSeed, key) | 1
}

var registerPrefix = []byte("REGISTER ")

// statelessUDP answers a UDP REGISTER from the read filter. It reports true
// when the datagram is finished (answered or dropped); false hands it to
// sipgo unchanged (other methods, trunk sources, unparsable packets, which
// sipgo refuses the same way).
func (s *Server) statelessUDP(raddr net.Addr, src netip.Addr, data []byte) bool {
	if !bytes.HasPrefix(data, registerPrefix) {
		return false
	}
	if _, trunk := s.policy.Trunk(src); trunk {
		return false
	}
	if s.front != nil {
		sc, _ := s.front.scratch.Get().(*fastScratch)
		if sc == nil {
			sc = new(fastScratch)
		}
		fast := scanRegister(data, &sc.req)
		if fast {
			s.fastUDP(sc, raddr, src)
		}
		s.front.scratch.Put(sc)
		if fast {
			return true
		}
	}
	return s.statelessSlow(raddr, src, data)
}

// statelessSlow is the stateless path for REGISTERs outside the fast
// path's subset: sipgo parses them and the chain's stages run on the
// parsed request.
func (s *Server) statelessSlow(raddr net.Addr, src netip.Addr, data []byte) bool {
	m, err := s.parser.ParseSIP(data)
	if err != nil {
		return false
	}
	req, ok := m.(*sip.Request)
	if !ok {
		return false
	}
	req.SetTransport("UDP")
	req.SetSource(raddr.String())
	now := s.now()
	// Requests without credentials get a fresh stateless challenge each time
	// (a sweep must not fill the cache); answers to requests with credentials
	// are cached, so a retransmission is neither verified nor counted twice.
	authed := firstHeader(req, "Authorization") != nil
	var key string
	if authed {
		key, _ = txKey(req)
	}
	if key != "" {
		if res, hit := s.retrans.get(now, key); hit {
			_, _ = s.udp.WriteTo(res, raddr) // lost: the phone retransmits again
			return true
		}
	}
	send := func(code int, reason string, hs ...sip.Header) {
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		for _, h := range hs {
			res.AppendHeader(h)
		}
		buf := s.bufs.Get().(*bytes.Buffer)
		buf.Reset()
		res.StringWrite(buf)
		if key != "" {
			s.retrans.put(now, key, bytes.Clone(buf.Bytes()))
		}
		_, _ = s.udp.WriteTo(buf.Bytes(), raddr)
		if buf.Cap() <= 64<<10 {
			s.bufs.Put(buf)
		}
	}
	if !s.precheck(now, src, req, send) {
		return true
	}
	if !authed {
		s.challenge(now, src, req, send, false)
		return true
	}
	user, retrans, ok := s.authenticate(now, src, req, send, s.fingerprint(key))
	if ok {
		s.register(now, src, req, send, user, retrans)
	}
	return true
}
