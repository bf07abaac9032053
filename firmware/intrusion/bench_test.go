package intrusion

import (
	"net/netip"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
)

// benchEvents is an attack mix: SIP auth failures from 4,096 sources over
// 64 extensions, scanner drops and bans.
func benchEvents(t time.Time) []logs.Event {
	evs := make([]logs.Event, 0, 4096)
	for i := range 4096 {
		src := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}).String()
		var e logs.Event
		switch i % 8 {
		case 0:
			e = logs.Event{Kind: logs.KindScanner, Source: src, UserAgent: "friendly-scanner " + strconv.Itoa(i%20)}
		case 1:
			e = logs.Event{Kind: logs.KindBan, Source: src + "/32", Reason: "sip-bruteforce"}
		default:
			e = logs.Event{Kind: logs.KindAuthFailure, Source: src + ":5060", User: strconv.Itoa(200 + i%64), Reason: "wrong password"}
		}
		e.Time = t
		evs = append(evs, e)
	}
	return evs
}

// BenchmarkObserve is the cost the report adds to each security event.
//
//	go test -run '^$' -bench 'Observe' -benchmem ./firmware/intrusion/
func BenchmarkObserve(b *testing.B) {
	for _, c := range []struct {
		name string
		geo  Geo
	}{{"geoip-off", nil}, {"geoip-on", geo{}}} {
		b.Run(c.name, func(b *testing.B) {
			db := openDB(b, filepath.Join(b.TempDir(), "db"))
			defer db.Close()
			a, err := New(Config{DB: db, Geo: c.geo, Now: func() time.Time { return day1 }})
			if err != nil {
				b.Fatal(err)
			}
			evs := benchEvents(day1.Add(time.Hour))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				a.Observe(evs[i%len(evs)])
				i++
			}
		})
	}
}

// BenchmarkObserveParallel: many SIP goroutines recording at once.
func BenchmarkObserveParallel(b *testing.B) {
	db := openDB(b, filepath.Join(b.TempDir(), "db"))
	defer db.Close()
	a, err := New(Config{DB: db, Geo: geo{}, Now: func() time.Time { return day1 }})
	if err != nil {
		b.Fatal(err)
	}
	evs := benchEvents(day1.Add(time.Hour))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			a.Observe(evs[i%len(evs)])
			i++
		}
	})
}

// BenchmarkReport30Days1M: the report over 30 days after 1,000,000
// events (about 33,000 a day from 100,000 distinct sources), written to
// the store; the query reads 30 stored days, never the events.
//
//	go test -run '^$' -bench 'Report30Days' -benchmem ./firmware/intrusion/
func BenchmarkReport30Days1M(b *testing.B) {
	db := openDB(b, filepath.Join(b.TempDir(), "db"))
	defer db.Close()
	now := day1.Add(29*24*time.Hour + 12*time.Hour)
	a, err := New(Config{DB: db, Geo: geo{}, Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	const total = 1_000_000
	for i := range total {
		d := i * 30 / total
		src := netip.AddrFrom4([4]byte{10, byte(i % 100_000 >> 16), byte(i % 100_000 >> 8), byte(i % 100_000)})
		e := logs.Event{Time: day1.Add(time.Duration(d)*24*time.Hour + time.Hour), Source: src.String() + ":5060"}
		switch i % 4 {
		case 0:
			e.Kind, e.Source, e.Reason = logs.KindBan, src.String()+"/32", "sip-bruteforce"
		case 1:
			e.Kind, e.UserAgent = logs.KindScanner, "sipvicious"
		default:
			e.Kind, e.User = logs.KindAuthFailure, strconv.Itoa(200+i%300)
		}
		a.Observe(e)
		if i%50_000 == 0 {
			if err := a.Flush(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := a.Flush(); err != nil {
		b.Fatal(err)
	}
	from, to := dayDate(dayNumber(day1)), dayDate(dayNumber(now))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rep, err := a.Report(from, to)
		if err != nil || len(rep.Days) != 30 || rep.Total.Bans != total/4 {
			b.Fatalf("%v %d %d", err, len(rep.Days), rep.Total.Bans)
		}
	}
}

// BenchmarkForget is one subject request over 400 full days (every list
// at its bound): what the privacy Find/Export/Forget and an hourly
// truncating sweep cost, with Observe waiting meanwhile.
//
//	go test -run '^$' -bench 'Forget' -benchtime 5x ./firmware/intrusion/
func BenchmarkForget(b *testing.B) {
	db := openDB(b, filepath.Join(b.TempDir(), "db"))
	defer db.Close()
	clk := &clock{t: day1}
	a, err := New(Config{DB: db, Now: clk.Now})
	if err != nil {
		b.Fatal(err)
	}
	for d := range 400 {
		t := day1.Add(time.Duration(d) * 24 * time.Hour)
		clk.set(t)
		for _, e := range benchEvents(t) {
			a.Observe(e)
		}
		if err := a.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	sz, _ := db.BucketSize(DaysBucket)
	b.ResetTimer()
	for range b.N {
		if _, err := a.Forget(Subject{Name: "201", Addr: netip.MustParseAddr("198.51.0.7")}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(sz.Bytes)/float64(sz.Keys), "stored-B/day")
}
