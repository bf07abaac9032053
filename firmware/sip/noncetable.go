package sip

import (
	"math/bits"
	"sync"
	"time"
)

// ncTable remembers, per authenticated nonce, the highest nonce count seen
// (RFC 7616 §3.4.5 replay protection) until the nonce stops being fresh.
// It is sized once: a fixed array of 8-way buckets split into shards with
// their own lock. A nonce may sit in either of two buckets of its shard
// (the less loaded one: two choices keep buckets even, so the table
// holds to high load); a slot whose nonce
// has expired is free. When both buckets hold only live nonces the table
// refuses the new one (fail closed: forgetting a live nonce would let it be
// replayed).
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
	ncEntrySize = 32
)

type ncShard struct {
	mu      sync.Mutex
	buckets [][ncWays]ncEntry
	_       [40]byte // keep shard locks on separate cache lines
}

// ncEntry is one tracked nonce; exp == 0 or in the past means free.
type ncEntry struct {
	key uint64 // from the nonce's MAC
	fp  uint64 // transaction of the request that set nc (0: unknown)
	at  int64  // when nc was accepted, Unix ns
	exp uint32 // Unix seconds from which the slot is free again
	nc  uint32
}

// ncFull is use's extra outcome: no free slot.
const ncFull useResult = -1

// newNCTable returns a table with at least slots slots (rounded up to a
// power of two, at least one bucket per shard).
func newNCTable(slots int) *ncTable {
	buckets := max((slots+ncWays-1)/ncWays, 1)
	buckets = 1 << bits.Len(uint(buckets-1)) // round up to a power of two
	shards := min(16, buckets)
	t := &ncTable{shards: make([]ncShard, shards), mask: uint64(buckets/shards - 1)}
	for i := range t.shards {
		t.shards[i].buckets = make([][ncWays]ncEntry, buckets/shards)
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

// use records nc for the nonce with key, fresh until until; see Nonces.use.
func (t *ncTable) use(now time.Time, key uint64, until time.Time, nc uint32, fp uint64, retrans time.Duration) useResult {
	sh := &t.shards[key%uint64(len(t.shards))]
	h := key / uint64(len(t.shards))
	b1, b2 := h&t.mask, (h>>32^h*0x9e3779b97f4a7c15)&t.mask
	nowS := uint32(min(max(now.Unix(), 0), 1<<32-1))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// Look the nonce up in both buckets; a new one goes to the bucket with
	// fewer live entries (two choices keep the fullest bucket near the
	// average, so the table fills evenly).
	var free [2]*ncEntry
	var used [2]int
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
			if e.key != key {
				continue
			}
			if nc <= e.nc {
				if nc == e.nc && fp != 0 && fp == e.fp && now.Sub(time.Unix(0, e.at)) <= retrans {
					return useRetrans
				}
				return useReplay
			}
			e.nc, e.fp, e.at = nc, fp, now.UnixNano()
			return useOK
		}
	}
	slot := free[0]
	if slot == nil || (free[1] != nil && used[1] < used[0]) {
		slot = free[1]
	}
	if slot == nil {
		return ncFull
	}
	*slot = ncEntry{key: key, fp: fp, at: now.UnixNano(), exp: expSecs(until), nc: nc}
	return useOK
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
