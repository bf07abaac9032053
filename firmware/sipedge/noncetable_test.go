package sipedge

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
)

func TestNCTableEntrySize(t *testing.T) {
	if got := unsafe.Sizeof(ncEntry{}); got != ncEntrySize {
		t.Fatalf("ncEntry is %d bytes, documented %d", got, ncEntrySize)
	}
}

// TestNCTableReplayAndRetransmission walks one nonce through the outcomes
// a request can have, on a fake clock.
func TestNCTableReplayAndRetransmission(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	until := t0.Add(5 * time.Minute)
	steps := []struct {
		at   time.Duration
		nc   uint32
		fp   uint64
		want useResult
	}{
		{0, 1, 7, useOK},
		{time.Second, 1, 7, useRetrans},               // same transaction within Timer F
		{time.Second, 1, 8, useReplay},                // same nc, another transaction
		{time.Second, 1, 0, useReplay},                // unknown transaction: never a retransmission
		{40 * time.Second, 1, 7, useReplay},           // retransmission window over
		{41 * time.Second, 3, 9, useOK},               // nc may skip ahead
		{42 * time.Second, 2, 10, useReplay},          // but never go back
		{5*time.Minute + 2*time.Second, 1, 11, useOK}, // nonce expired: its slot is free (check() calls it stale first)
	}
	tb := newNCTable(64)
	for i, st := range steps {
		if got := tb.use(t0.Add(st.at), 42, t0.UnixNano(), until, st.nc, st.fp, retransWindow).res; got != st.want {
			t.Fatalf("step %d: got %v, want %v", i, got, st.want)
		}
	}
}

// TestNCTableSite: 10,000 phones re-registering every 60 s, each with a
// fresh nonce (the usual phone), for 15 minutes, after a burst where all
// register in the same second: the default-sized table holds every one
// (none is forgotten).
func TestNCTableSite(t *testing.T) {
	cfg := pbxconfig.DefaultSIP()
	n, err := NewNonces(cfg.NonceTTL, cfg.Guard.MaxTracked)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	seed := maphash.MakeSeed()
	var kb [16]byte
	const phones, period = 10000, 60
	for sec := 0; sec < 15*60; sec++ {
		now := t0.Add(time.Duration(sec) * time.Second)
		for p := 0; p < phones; p++ {
			// Second 0 is the burst; afterwards phone p re-registers at
			// second p%period of each minute.
			if sec > 0 && (sec < period || p%period != sec%period) {
				continue
			}
			binary.LittleEndian.PutUint64(kb[:8], uint64(sec))
			binary.LittleEndian.PutUint64(kb[8:], uint64(p))
			key := maphash.Bytes(seed, kb[:])
			if got := n.use(now, key, now.UnixNano(), now.Add(cfg.NonceTTL), 1, 0, fmt.Sprint(p), netip.AddrFrom4([4]byte{10, 0, byte(p >> 8), byte(p)})); got != useOK {
				t.Fatalf("second %d phone %d: %v (live %d of %d slots)", sec, p, got, n.table.live(now), n.table.slots())
			}
		}
	}
	if n.Evicted.Load() != 0 || n.OwnerEvicted.Load() != 0 {
		t.Fatalf("evicted %d, over quota %d", n.Evicted.Load(), n.OwnerEvicted.Load())
	}
	end := t0.Add(15 * time.Minute)
	t.Logf("live nonces %d in %d slots (%d bytes each, %d KiB)", n.table.live(end), n.table.slots(), ncEntrySize, n.table.slots()*ncEntrySize/1024)
}

func BenchmarkNCTableUse(b *testing.B) {
	n, _ := NewNonces(5*time.Minute, 65536)
	now := time.Now()
	seed := maphash.MakeSeed()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		key := maphash.Comparable(seed, i)
		n.use(now, key, now.UnixNano()+int64(i), now.Add(time.Minute), 1, 0, "101", netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
}
