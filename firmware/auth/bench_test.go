package auth

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
)

// BenchmarkArgon2idHash measures one hash with DefaultParams (B/op shows the
// memory each hash takes).
func BenchmarkArgon2idHash(b *testing.B) {
	h := NewHasher(DefaultParams, 1, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Hash(context.Background(), "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoginThroughput runs parallel wrong-password logins through the
// service with the default hasher bound (2 concurrent, 32 queued); logins
// beyond the queue are refused with ErrBusy and counted as "busy/op".
func BenchmarkLoginThroughput(b *testing.B) {
	s, _ := newServiceB(b)
	var busy atomic.Int64
	b.SetParallelism(8) // 16 goroutines on 2 cores: more callers than hashing slots
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := Client{Addr: netip.MustParseAddr("192.0.2.1")}
		for pb.Next() {
			_, err := s.Login(context.Background(), c, "root1", "wrong-password-xyz")
			if errors.Is(err, ErrBusy) {
				busy.Add(1)
			} else if !errors.Is(err, ErrInvalidCredentials) && !errors.Is(err, ErrThrottled) {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(busy.Load())/float64(b.N), "busy/op")
}
