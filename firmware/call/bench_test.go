package call

import (
	"runtime"
	"testing"
	"time"
)

// BenchmarkSippCalls measures complete calls per second through the B2BUA
// with media anchored (relay ports bound, pinholes opened and closed, CDR
// written): sipp caller → harness → sipp callee, INVITE/180/200/ACK/BYE,
// no hold time, offered at 1000 calls/s (sipp -r). Each op is one call.
// Offered 2000/s on 2 cores (box and both sipps sharing them) answers
// pass 500 ms now and then: INVITEs are retransmitted, sipp's built-in
// uas aborts a call on an INVITE retransmission that arrives after its 200,
// and that call ends with 408 after Timer B (~1 % of calls).
func BenchmarkSippCalls(b *testing.B) {
	h := startHarness(b)
	h.dir.set("102", sippUAS(b, ""))
	n := max(b.N, 3000) // sipp start-up dominates shorter runs
	go func() {
		for range h.ended {
		}
	}()
	b.ResetTimer()
	took := sippUAC(b, "uac.xml", "102", h.addr, n, 1000, 200, "-d", "0")
	b.StopTimer()
	b.ReportMetric(float64(n)/took.Seconds(), "calls/s")
	if c := h.b.Counters(); c.Answered < uint64(n) {
		b.Fatalf("%d of %d calls answered", c.Answered, n)
	}
}

// BenchmarkMemoryPerCall holds calls up (sipp callers pausing 20 s) and
// reports the B2BUA's and relay's heap per connected call.
func BenchmarkMemoryPerCall(b *testing.B) {
	const held = 500
	h := startHarness(b)
	h.dir.set("102", sippUAS(b, ""))
	go func() {
		for range h.ended {
		}
	}()
	var before, during runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sippUAC(b, "uac.xml", "102", h.addr, held, 500, held, "-d", "20000")
	}()
	for deadline := time.Now().Add(60 * time.Second); h.b.Active() < held; {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d calls up", h.b.Active(), held)
		}
		time.Sleep(50 * time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&during)
	b.ReportMetric(float64(int64(during.HeapInuse)-int64(before.HeapInuse))/held, "heap-bytes/call")
	b.ReportMetric(float64(int64(during.NumGC)), "gc")
	for i := 0; i < b.N; i++ {
	}
	<-done
}
