package admin

import (
	"fmt"
	"sync"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/auth"
)

// flood sends n parallel wrong logins for n different accounts from one
// source and counts the answers by status.
func flood(e *env, n int, src string) map[int]int {
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.client(src)
			r := c.do("POST", "/api/v1/login", LoginRequest{Username: fmt.Sprintf("guess%d", i), Password: "Wrong-guess-123"})
			mu.Lock()
			counts[r.code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return counts
}

// TestParallelFloodBounded: of 100 parallel wrong logins from one address,
// exactly SourceMaxFailures reach the password check; the others are
// refused before hashing, and the source is banned once.
func TestParallelFloodBounded(t *testing.T) {
	e, _ := claimed(t)
	counts := flood(e, 100, "203.0.113.66")
	if counts[401] != auth.DefaultPolicy().SourceMaxFailures || counts[429] != 100-counts[401] {
		t.Fatalf("answers %v", counts)
	}
	if bans := e.bans.list(); len(bans) != 1 || bans[0].Prefix.String() != "203.0.113.66/32" {
		t.Fatalf("bans %v", bans)
	}
}

// BenchmarkParallelWrongLogins100 measures how long 100 parallel wrong
// logins from one address take to be answered (throttled and banned) with
// the production argon2id parameters.
func BenchmarkParallelWrongLogins100(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		e := newEnvWith(b, auth.NewHasher(auth.DefaultParams, auth.DefaultConcurrency, auth.DefaultQueue))
		c := e.client("192.0.2.50")
		c.must(200, "POST", "/api/v1/claim", ClaimRequest{SetupCode: setupCode, Username: "root1", Password: adminPW})
		b.StartTimer()
		counts := flood(e, 100, "203.0.113.66")
		if counts[429] != 90 || len(e.bans.list()) != 1 {
			b.Fatalf("answers %v", counts)
		}
	}
}

// BenchmarkAuthenticatedAPI measures GET /api/v1/me with a session cookie
// (session lookup, role check, JSON) through the handler.
func BenchmarkAuthenticatedAPI(b *testing.B) {
	e, a := claimed(b)
	_ = e
	b.ReportAllocs()
	for b.Loop() {
		if r := a.do("GET", "/api/v1/me", nil); r.code != 200 {
			b.Fatal(r.code)
		}
	}
}

// BenchmarkAuthenticatedPage measures the dashboard page render.
func BenchmarkAuthenticatedPage(b *testing.B) {
	_, a := claimed(b)
	b.ReportAllocs()
	for b.Loop() {
		if r := a.do("GET", "/", nil); r.code != 200 {
			b.Fatal(r.code)
		}
	}
}
