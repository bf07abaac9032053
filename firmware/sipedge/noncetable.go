package sipedge

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// ncTable remembers, per authenticated nonce, the highest nonce count seen
// (RFC 7616 §3.4.5 replay protection) until the nonce stops being fresh.
// It is sized once: a fixed array of 8-way buckets split into shards with
// their own lock. A nonce may sit in either of two buckets of its shard
// (the less loaded one: two choices keep buckets even, so the table holds
// to high load); a slot whose nonce has expired is free.
//
// The table never refuses: when both buckets hold only live nonces, the
// entry of the oldest nonce (by issue time) gives way, an entry whose
// owner is over its quota first (see nonceQuotaUser), and its bucket's
// floor rises to that issue time. A nonce missing from the table and
// issued at or before the floor of one of its buckets may have been
// forgotten, so it is answered as stale (a new challenge, which a phone
// takes without asking anyone and which is charged to nobody), never
// accepted again: forgetting cannot open a replay. The table's size thus
// bounds how long a nonce can be reused, not how many phones can
// authenticate: past slots ÷ TTL new nonces per second the oldest are
// re-challenged, and the box's CPU, not the table, is the limit.
//
// Entries are keyed by 64 bits of the nonce's MAC, which a client cannot
// choose, and live only as long as the nonce is fresh (issue time + TTL),
// so a site's steady state is rate × TTL entries: 10,000 phones
// re-registering every 60 s with a 5 min TTL hold ~50,000.
type ncTable struct {
	shards []ncShard
	mask   uint64 // buckets per shard - 1
}

const (
	ncWays = 8
	// ncEntrySize is the memory per slot in bytes (see ncEntry).
	ncEntrySize = 40
)

type ncShard struct {
	mu      sync.Mutex
	buckets [][ncWays]ncEntry
	floors  []int64  // per bucket: issue time (Unix ns) of the newest nonce evicted from it
	_       [40]byte // keep shard locks on separate cache lines
}

// ncEntry is one tracked nonce; exp == 0 or in the past means free.
type ncEntry struct {
	key uint64 // from the nonce's MAC
	fp  uint64 // transaction of the request that set nc (0: unknown)
	at  int64  // when nc was accepted, Unix ns; bit 0: owner over quota (evicted first)
	iss int64  // when the nonce was issued, Unix ns
	exp uint32 // Unix seconds from which the slot is free again
	nc  uint32
}

// newNCTable returns a table with at least slots slots (rounded up to a
// power of two, at least one bucket per shard).
func newNCTable(slots int) *ncTable {
	buckets := max((slots+ncWays-1)/ncWays, 1)
	buckets = 1 << bits.Len(uint(buckets-1)) // round up to a power of two
	shards := min(16, buckets)
	t := &ncTable{shards: make([]ncShard, shards), mask: uint64(buckets/shards - 1)}
	for i := range t.shards {
		t.shards[i].buckets = make([][ncWays]ncEntry, buckets/shards)
		t.shards[i].floors = make([]int64, buckets/shards)
		for j := range t.shards[i].floors {
			t.shards[i].floors[j] = math.MinInt64
		}
	}
	return t
}

// slots reports the table's capacity in entries.
func (t *ncTable) slots() int { return len(t.shards) * len(t.shards[0].buckets) * ncWays }

// expSecs is the first whole Unix second after until: the slot stays
// taken while the nonce can still be fresh.
func expSecs(until time.Time) uint32 {
	return uint32(min(max(until.Unix()+1, 1), 1<<32-1))
}

func (t *ncTable) place(key uint64) (sh *ncShard, b1, b2 uint64) {
	sh = &t.shards[key%uint64(len(t.shards))]
	h := key / uint64(len(t.shards))
	return sh, h & t.mask, (h>>32 ^ h*0x9e3779b97f4a7c15) & t.mask
}

// over reports an entry whose owner had more than its quota.
func (e *ncEntry) over() bool { return e.at&1 == 1 }

// accepted sets when nc was accepted, keeping the over-quota mark.
func (e *ncEntry) accepted(now time.Time) { e.at = now.UnixNano()&^1 | e.at&1 }

// ncUse is what the table did with a nonce count.
type ncUse struct {
	res      useResult
	inserted bool // the nonce is new to the table
	evicted  bool // a live nonce gave way for it
}

// use records nc for the nonce with key, issued at iss and fresh until
// until; see Nonces.use.
func (t *ncTable) use(now time.Time, key uint64, iss int64, until time.Time, nc uint32, fp uint64, retrans time.Duration) ncUse {
	sh, b1, b2 := t.place(key)
	nowS := uint32(min(max(now.Unix(), 0), 1<<32-1))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// Look the nonce up in both buckets; a new one goes to the bucket with
	// fewer live entries (two choices keep the fullest bucket near the
	// average, so the table fills evenly).
	var free [2]*ncEntry
	var used [2]int
	var oldest *ncEntry
	oldestB := b1
	for j, b := range [2]uint64{b1, b2} {
		bk := &sh.buckets[b]
		for i := range bk {
			e := &bk[i]
			if e.exp <= nowS {
				if free[j] == nil {
					free[j] = e
				}
				continue
			}
			used[j]++
			// The victim if both buckets are full: over quota first, then
			// the oldest.
			if oldest == nil || (e.over() && !oldest.over()) || (e.over() == oldest.over() && e.iss < oldest.iss) {
				oldest, oldestB = e, b
			}
			if e.key != key || e.iss != iss {
				continue
			}
			if nc <= e.nc {
				if nc == e.nc && fp != 0 && fp == e.fp && now.Sub(time.Unix(0, e.at&^1)) <= retrans {
					return ncUse{res: useRetrans}
				}
				return ncUse{res: useReplay}
			}
			e.nc, e.fp = nc, fp
			e.accepted(now)
			return ncUse{res: useOK}
		}
	}
	if iss <= sh.floors[b1] || iss <= sh.floors[b2] {
		return ncUse{res: useStale}
	}
	slot := free[0]
	if slot == nil || (free[1] != nil && used[1] < used[0]) {
		slot = free[1]
	}
	evicted := false
	if slot == nil {
		// Both buckets are full of live nonces: the oldest gives way, and
		// its bucket remembers that nonces up to its age may be missing.
		slot, evicted = oldest, true
		sh.floors[oldestB] = max(sh.floors[oldestB], oldest.iss)
	}
	*slot = ncEntry{key: key, fp: fp, at: now.UnixNano() &^ 1, iss: iss, exp: expSecs(until), nc: nc}
	return ncUse{res: useOK, inserted: true, evicted: evicted}
}

// mark flags the nonce (key, iss) as its owner's beyond quota: it still
// counts (no replay), and is the first to give way when space runs out.
func (t *ncTable) mark(key uint64, iss int64) {
	sh, b1, b2 := t.place(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, b := range [2]uint64{b1, b2} {
		for i := range sh.buckets[b] {
			if e := &sh.buckets[b][i]; e.key == key && e.iss == iss {
				e.at |= 1
				return
			}
		}
	}
}

// live counts the entries not yet expired at now (for tests and reports).
func (t *ncTable) live(now time.Time) int {
	nowS := uint32(min(max(now.Unix(), 0), 1<<32-1))
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for b := range sh.buckets {
			for _, e := range sh.buckets[b] {
				if e.exp > nowS {
					n++
				}
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// Per-owner bounds on the count table: one extension, or one source
// address, holds at most this many nonces safe from eviction; beyond that
// its oldest are marked and give way first when the table is full, so a
// flood from one credential evicts its own nonces, not other phones'.
// Nothing is refused or forgotten while the table has room: one
// credential in front of many devices (a registrar, a load tester) keeps
// working. An extension's phones (a few contacts re-registering every
// minute with a 5 min TTL) hold a few dozen at most; a source may be an
// office NAT in front of hundreds of phones.
const (
	nonceQuotaUser   = 32
	nonceQuotaSource = 1024
)

// ringItem is one nonce an owner holds.
type ringItem struct {
	key uint64
	iss int64
}

// ownerRing is the nonces one owner holds in the table, oldest first.
type ownerRing struct {
	mu    sync.Mutex
	items []ringItem // circular once full
	head  int        // index of the oldest once full
	last  int64      // newest issue time pushed (Unix ns), for idle cleanup
}

func newOwnerRing() *ownerRing { return &ownerRing{} }

// push adds it; when the ring already holds quota items the oldest goes
// and is returned.
func (r *ownerRing) push(it ringItem, quota int) (out ringItem, evicted bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = max(r.last, it.iss)
	if len(r.items) < quota {
		r.items = append(r.items, it)
		return ringItem{}, false
	}
	out = r.items[r.head]
	r.items[r.head] = it
	r.head = (r.head + 1) % len(r.items)
	return out, true
}

// owners is a bounded map of owner rings.
type owners[K comparable] struct {
	mu    sync.Mutex
	m     map[K]*ownerRing
	max   int
	quota int
}

func newOwners[K comparable](maxOwners, quota int) *owners[K] {
	return &owners[K]{m: map[K]*ownerRing{}, max: maxOwners, quota: quota}
}

// get returns k's ring, making it; nil when the map is full of owners
// with live nonces (the table's own eviction still applies to them).
func (o *owners[K]) get(now time.Time, ttl time.Duration, k K) *ownerRing {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := o.m[k]; r != nil {
		return r
	}
	if len(o.m) >= o.max {
		idle := now.Add(-ttl - time.Minute).UnixNano()
		for key, r := range o.m {
			r.mu.Lock()
			last := r.last
			r.mu.Unlock()
			if last < idle {
				delete(o.m, key) // all its nonces have expired
			}
		}
		if len(o.m) >= o.max {
			return nil
		}
	}
	r := newOwnerRing()
	o.m[k] = r
	return r
}
