package connlog

import (
	"crypto/rand"
	"errors"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newLog(t testing.TB, anon Anonymiser) (*Log, *fakeClock) {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(t.TempDir(), "c.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	return New(db, clk, anon), clk
}

func TestQueryFiltersAndPages(t *testing.T) {
	l, clk := newLog(t, nil)
	for i := range 25 {
		kind, res := SIPRegister, OK
		if i%5 == 0 {
			kind, res = AdminLoginFailed, Failed
		}
		l.Record(Entry{Kind: kind, Source: "192.0.2.1:5060", User: []string{"101", "102"}[i%2], Method: "REGISTER", Result: res})
		clk.Advance(time.Second)
	}
	var all []Entry
	f := Filter{Kind: "sip.", Limit: 7}
	for pages := 0; ; pages++ {
		p, err := l.Query(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p.Entries...)
		if p.Next == "" {
			break
		}
		if len(p.Entries) != 7 || pages > 5 {
			t.Fatalf("page %d: %d entries", pages, len(p.Entries))
		}
		f.Before = p.Next
	}
	if len(all) != 20 {
		t.Fatalf("paged through %d SIP entries, want 20", len(all))
	}
	for i := 1; i < len(all); i++ {
		if !all[i].Time.Before(all[i-1].Time) {
			t.Fatalf("not newest first at %d", i)
		}
	}
	if all[0].Source != "192.0.2.1" || all[0].Port != 5060 {
		t.Fatalf("source and port: %+v", all[0])
	}
	p, _ := l.Query(Filter{User: "102", Result: Failed})
	for _, e := range p.Entries {
		if e.User != "102" || e.Result != Failed {
			t.Fatalf("filter leaked %+v", e)
		}
	}
	if len(p.Entries) != 2 {
		t.Fatalf("user 102 failures: %d, want 2", len(p.Entries))
	}
	if _, err := l.Query(Filter{Limit: MaxLimit + 1}); !errors.Is(err, ErrFilter) {
		t.Fatalf("limit over the bound: %v", err)
	}
}

func TestPurgeAndForget(t *testing.T) {
	l, clk := newLog(t, nil)
	l.Record(Entry{Kind: SIPRegister, User: "101", Result: OK})
	l.Record(Entry{Kind: SIPRegister, User: "102", Result: OK})
	clk.Advance(48 * time.Hour)
	l.Record(Entry{Kind: SIPRegister, User: "101", Result: OK})
	if n, err := l.Purge(clk.Now().Add(-24 * time.Hour)); err != nil || n != 2 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if n, err := l.Forget("101"); err != nil || n != 1 {
		t.Fatalf("forget: %d %v", n, err)
	}
	if p, _ := l.Query(Filter{}); len(p.Entries) != 0 {
		t.Fatalf("left: %+v", p.Entries)
	}
}

func TestAnonymisedAtFlushAndBounded(t *testing.T) {
	l, _ := newLog(t, func(a netip.Addr, _ time.Time) string { return "masked" })
	l.Record(Entry{Kind: AdminLogin, Source: "[2001:db8::1]:443", User: strings.Repeat("u", 1000), Result: OK})
	l.Record(Entry{Kind: AdminLogin, Source: "not an address", Result: OK})
	p, err := l.Query(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Entries[1].Source != "masked" || p.Entries[1].Port != 443 || len(p.Entries[1].User) != maxField {
		t.Fatalf("entry: %+v", p.Entries[1])
	}
	if p.Entries[0].Source != "invalid" {
		t.Fatalf("non-address source kept: %+v", p.Entries[0])
	}
	for range MaxPending + 10 {
		l.Record(Entry{Kind: SIPRegister})
	}
	if l.Dropped() != 10 {
		t.Fatalf("dropped %d, want 10", l.Dropped())
	}
}

func TestParseFilter(t *testing.T) {
	for _, tc := range []struct {
		q  string
		ok bool
	}{
		{"kind=sip.&user=101&limit=50", true},
		{"since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:00Z", true},
		{"limit=501", false},
		{"limit=-1", false},
		{"since=yesterday", false},
		{"user=a&user=b", false},
		{"colour=red", false},
		{"since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", false},
		{"user=" + strings.Repeat("x", 200), false},
	} {
		v, _ := url.ParseQuery(tc.q)
		_, err := ParseFilter(v)
		if (err == nil) != tc.ok {
			t.Errorf("%q: %v", tc.q, err)
		}
		if err != nil && !errors.Is(err, ErrFilter) {
			t.Errorf("%q: untyped error %v", tc.q, err)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	f.Add("kind=sip.&user=101&limit=50&before=0000")
	f.Add("since=2026-01-01T00:00:00Z")
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		fl, err := ParseFilter(v)
		if err == nil && (fl.Limit < 0 || fl.Limit > MaxLimit || len(fl.User) > maxField) {
			t.Fatalf("accepted out-of-bounds filter %+v", fl)
		}
	})
}
