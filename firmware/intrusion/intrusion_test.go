package intrusion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/logs/syslogtest"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// clock is a fake clock the tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// geo maps 198.51.100.0/24 to DE and 203.0.113.0/24 to CN.
type geo struct{}

var netDE, netCN = netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24")

func (geo) Country(a netip.Addr) string {
	switch {
	case netDE.Contains(a):
		return "DE"
	case netCN.Contains(a):
		return "CN"
	}
	return ""
}

func openDB(t testing.TB, path string) *store.DB {
	t.Helper()
	db, err := store.Open(path, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

var day1 = time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)

// events of two UTC days: the last nanosecond of 10 March and midnight of
// 11 March fall on different days, whatever the local zone says.
func testEvents() []logs.Event {
	late := day1.Add(24*time.Hour - time.Nanosecond)
	next := day1.Add(24 * time.Hour)
	cet := time.FixedZone("CET", 3600)
	ev := func(t time.Time, k logs.Kind, src, user, ua, reason string) logs.Event {
		return logs.Event{Time: t, Kind: k, Source: src, User: user, UserAgent: ua, Reason: reason}
	}
	return []logs.Event{
		ev(day1.Add(time.Hour), logs.KindAuthFailure, "198.51.100.7:5060", "201", "", "wrong password"),
		ev(day1.Add(2*time.Hour), logs.KindAuthFailure, "198.51.100.7:5061", "201", "", "wrong password"),
		ev(day1.Add(3*time.Hour), logs.KindNonceReplay, "198.51.100.7:5060", "202", "", "stale"),
		ev(day1.Add(4*time.Hour), logs.KindBan, "198.51.100.7/32", "", "", "sip-bruteforce"),
		ev(day1.Add(5*time.Hour), logs.KindBan, "203.0.113.9", "203", "", "sip-throttle: auth failures (this extension only)"),
		ev(day1.Add(6*time.Hour), logs.KindScanner, "203.0.113.9", "", "friendly-scanner", ""),
		ev(day1.Add(7*time.Hour), logs.KindScanner, "[2001:db8::1]:5060", "", "sipvicious", ""),
		ev(day1.Add(8*time.Hour), logs.KindFlood, "192.0.2.1:5060", "", "", "rate"),
		ev(day1.Add(9*time.Hour), logs.KindAdminLoginFailure, "192.0.2.44", "root", "", "bad password"),
		ev(day1.Add(9*time.Hour), logs.KindAdminBan, "192.0.2.44/32", "", "", "admin-login-spray"),
		ev(day1.Add(10*time.Hour), logs.Kind("dialplan.burst"), "", "210", "", "burst"),
		ev(day1.Add(10*time.Hour), logs.KindRegister, "192.0.2.5:5060", "210", "", ""),
		// 2026-03-11 00:30 CET is still 10 March in UTC.
		ev(time.Date(2026, 3, 11, 0, 30, 0, 0, cet), logs.KindAuthFailure, "203.0.113.9:5060", "201", "", "x"),
		ev(late, logs.KindBan, "203.0.113.10/32", "", "", "sip-flood"),
		ev(next, logs.KindBan, "198.51.100.8/32", "", "", "sip-scan"),
		ev(next, logs.KindScanner, "198.51.100.8", "", "friendly-scanner", ""),
	}
}

func TestReportFigures(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db := openDB(t, path)
	clk := &clock{t: day1.Add(36 * time.Hour)}
	a, err := New(Config{DB: db, Geo: geo{}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range testEvents() {
		a.Observe(e)
	}
	check := func(t *testing.T, a *Aggregator) {
		rep, err := a.Report("2026-03-10", "2026-03-11")
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Days) != 2 || rep.Days[0].Date != "2026-03-10" || rep.Days[1].Date != "2026-03-11" {
			t.Fatalf("days %+v", rep.Days)
		}
		d1, d2 := rep.Days[0], rep.Days[1]
		for _, c := range []struct {
			name      string
			got, want any
		}{
			{"day1 bans", d1.Bans, uint64(3)},
			{"day1 ban reasons", d1.BanReasons, []Count{{Key: "admin-login-spray", Count: 1}, {Key: "sip-bruteforce", Count: 1}, {Key: "sip-flood", Count: 1}}},
			{"day1 throttles", d1.Throttles, uint64(1)},
			{"day1 auth failures", d1.AuthFailures, uint64(4)},
			{"day1 scanners", d1.Scanners, uint64(2)},
			{"day1 floods", d1.Floods, uint64(1)},
			{"day1 admin failures", d1.AdminFailures, uint64(1)},
			{"day1 admin bans", d1.AdminBans, uint64(1)},
			{"day1 fraud", d1.Fraud, uint64(1)},
			{"day1 registers", d1.Events["sip.register"], uint64(1)},
			{"day1 sources", d1.TopSources, []SourceCount{
				{Source: "198.51.100.7", Country: "DE", Count: 4}, {Source: "203.0.113.9", Country: "CN", Count: 3},
				{Source: "192.0.2.44", Count: 2}, {Source: "192.0.2.1", Count: 1}, {Source: "203.0.113.10", Country: "CN", Count: 1},
				{Source: "2001:db8::1", Count: 1}}},
			{"day1 countries", d1.TopCountries, []Count{{Key: "CN", Count: 4}, {Key: "DE", Count: 4}}},
			{"day1 extensions", d1.AttackedExtensions, []Count{{Key: "201", Count: 3}, {Key: "202", Count: 1}, {Key: "203", Count: 1}}},
			{"day1 agents", d1.ScannerAgents, []Count{{Key: "friendly-scanner", Count: 1}, {Key: "sipvicious", Count: 1}}},
			{"day1 admin sources", d1.AdminSources, []SourceCount{{Source: "192.0.2.44", Count: 2}}},
			{"day1 fraud extensions", d1.FraudExtensions, []Count{{Key: "210", Count: 1}}},
			{"day2 bans", d2.Bans, uint64(1)},
			{"day2 sources", d2.TopSources, []SourceCount{{Source: "198.51.100.8", Country: "DE", Count: 2}}},
			{"total bans", rep.Total.Bans, uint64(4)},
			{"total sources head", rep.Total.TopSources[0], SourceCount{Source: "198.51.100.7", Country: "DE", Count: 4}},
			{"total countries", rep.Total.TopCountries, []Count{{Key: "DE", Count: 6}, {Key: "CN", Count: 4}}},
			{"total agents", rep.Total.ScannerAgents, []Count{{Key: "friendly-scanner", Count: 2}, {Key: "sipvicious", Count: 1}}},
		} {
			g, _ := json.Marshal(c.got)
			w, _ := json.Marshal(c.want)
			if string(g) != string(w) {
				t.Errorf("%s: got %s, want %s", c.name, g, w)
			}
		}
	}
	t.Run("memory", func(t *testing.T) { check(t, a) })
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// A restart: a new store handle and aggregator read the days back.
	db = openDB(t, path)
	defer db.Close()
	a, err = New(Config{DB: db, Geo: geo{}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("after restart", func(t *testing.T) { check(t, a) })
	// Events after the restart add to the stored day, not replace it.
	a.Observe(logs.Event{Time: day1.Add(time.Hour), Kind: logs.KindBan, Source: "192.0.2.9/32", Reason: "sip-flood"})
	rep, err := a.Report("2026-03-10", "2026-03-10")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Days[0].Bans != 4 || rep.Days[0].AuthFailures != 4 {
		t.Errorf("after restart and one more ban: %+v", rep.Days[0])
	}
}

// TestFloodBounded: a flood of distinct sources, User-Agents and user
// names keeps every sketch at its bound, the stored day under
// maxDayBytes, and still finds the one source that sent the most.
func TestFloodBounded(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db"))
	defer db.Close()
	clk := &clock{t: day1.Add(12 * time.Hour)}
	a, err := New(Config{DB: db, Geo: geo{}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200_000
	long := strings.Repeat("x", 200)
	for i := range n {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		a.Observe(logs.Event{Time: day1.Add(time.Hour), Kind: logs.KindAuthFailure, Source: ip.String() + ":5060",
			User: fmt.Sprintf("%d%s", i, long)})
		a.Observe(logs.Event{Time: day1.Add(time.Hour), Kind: logs.KindScanner, Source: ip.String(), UserAgent: fmt.Sprintf("ua-%d", i)})
		a.Observe(logs.Event{Time: day1.Add(time.Hour), Kind: logs.Kind(fmt.Sprintf("x.%d", i%1000))})
		if i%4 == 0 {
			a.Observe(logs.Event{Time: day1.Add(time.Hour), Kind: logs.KindFlood, Source: "198.51.100.66:5060"})
		}
	}
	d := a.days[dayNumber(day1)]
	for name, got := range map[string][2]int{
		"sources": {d.sources.len(), capSources}, "extensions": {d.extensions.len(), capExtensions},
		"agents": {d.agents.len(), capAgents}, "kinds": {len(d.events), maxKinds + 1},
	} {
		if got[0] > got[1] {
			t.Errorf("%s: %d entries, bound %d", name, got[0], got[1])
		}
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	var size int
	if err := db.View(func(tx *store.Tx) error {
		return tx.ForEach(DaysBucket, func(_ string, raw []byte) error { size += len(raw); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if size > maxDayBytes {
		t.Errorf("stored day %d bytes, bound %d", size, maxDayBytes)
	}
	rep, err := a.Report("2026-03-10", "2026-03-10")
	if err != nil {
		t.Fatal(err)
	}
	if top := rep.Days[0].TopSources[0]; top.Source != "198.51.100.66" || top.Count < n/4 {
		t.Errorf("heavy hitter lost: %+v", top)
	}
	if rep.Days[0].AuthFailures != n || rep.Days[0].Scanners != n {
		t.Errorf("counters: %+v", rep.Days[0])
	}
}

func TestParseRange(t *testing.T) {
	now := time.Date(2026, 3, 10, 23, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		from, to     string
		field        string // "" accepted
		wantF, wantT string
	}{
		{"", "", "", "2026-03-04", "2026-03-10"},
		{"2026-03-01", "2026-03-10", "", "2026-03-01", "2026-03-10"},
		{"2026-03-10", "2026-03-10", "", "2026-03-10", "2026-03-10"},
		{"2025-12-09", "2026-03-10", "", "2025-12-09", "2026-03-10"}, // 92 days
		{"2025-12-08", "2026-03-10", "from", "", ""},                 // 93 days
		{"2026-03-11", "", "from", "", ""},
		{"", "2026-03-11", "to", "", ""},
		{"2026-3-1", "", "from", "", ""},
		{"yesterday", "", "from", "", ""},
		{"", "2026-02-30", "to", "", ""},
		{"1999-12-31", "2000-01-01", "from", "", ""},
		{"2026-03-05", "2026-03-04", "from", "", ""},
		{"2026-03-05T00:00:00Z", "", "from", "", ""},
	} {
		f, to, err := ParseRange(c.from, c.to, now)
		var re *RangeError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%q..%q: %v", c.from, c.to, err)
		case c.field == "" && (dayDate(f) != c.wantF || dayDate(to) != c.wantT):
			t.Errorf("%q..%q: %s..%s", c.from, c.to, dayDate(f), dayDate(to))
		case c.field != "" && (!errors.As(err, &re) || re.Field != c.field || !errors.Is(err, ErrRange)):
			t.Errorf("%q..%q: %v, want a range error on %s", c.from, c.to, err, c.field)
		}
	}
}

// TestDailySummarySyslog: with the setting on, the previous day's figures
// arrive at a real collector as one RFC 5424 message; with it off, or once
// sent, nothing more goes out.
func TestDailySummarySyslog(t *testing.T) {
	col := syslogtest.Start(t, true)
	db := openDB(t, filepath.Join(t.TempDir(), "db"))
	defer db.Close()
	snd := logs.NewSender(logs.SenderConfig{Hostname: "box1"})
	if err := snd.Apply(logs.SyslogSettings{Enabled: true, Address: col.Addr, Transport: logs.TransportTLS,
		CAPEM: col.CAPEM, Facility: logs.FacilityAuto}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go snd.Run(ctx)
	clk := &clock{t: day1.Add(10 * time.Hour)}
	a, err := New(Config{DB: db, Geo: geo{}, Summary: snd, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range testEvents() {
		a.Observe(e)
	}
	clk.set(day1.Add(24*time.Hour + time.Minute)) // just after midnight UTC
	if n, err := a.SendDue(); n != 0 || err != nil {
		t.Fatalf("setting off: sent %d, %v", n, err)
	}
	if err := db.Update(func(tx *store.Tx) error { _, err := SaveSettingsTx(tx, Settings{DailySyslog: true}); return err }); err != nil {
		t.Fatal(err)
	}
	if n, err := a.SendDue(); n != 1 || err != nil {
		t.Fatalf("sent %d, %v", n, err)
	}
	m := col.Wait(t, MsgID)
	for _, want := range []string{
		"<85>1 ", " box1 edgepbx - intrusion.daily [report@32473 ",
		`date="2026-03-10"`, `bans="3"`, `throttles="1"`, `auth_failures="4"`, `scanner_drops="2"`,
		`admin_login_failures="1"`, `admin_bans="1"`, `fraud_events="1"`,
		`top_sources="198.51.100.7(DE)=4 203.0.113.9(CN)=3 192.0.2.44=2 192.0.2.1=1 203.0.113.10(CN)=1"`,
		`top_countries="CN=4 DE=4"`, `attacked_extensions="201=3 202=1 203=1"`,
		`scanner_user_agents="friendly-scanner=1 sipvicious=1"`,
		"intrusion report 2026-03-10: 3 bans",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("summary lacks %q:\n%s", want, m)
		}
	}
	if n, err := a.SendDue(); n != 0 || err != nil {
		t.Errorf("second call the same day: sent %d, %v", n, err)
	}
}

func TestSummaryNotSentWhileSyslogOff(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db"))
	defer db.Close()
	snd := logs.NewSender(logs.SenderConfig{}) // off
	clk := &clock{t: day1.Add(25 * time.Hour)}
	a, err := New(Config{DB: db, Summary: snd, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *store.Tx) error { _, err := SaveSettingsTx(tx, Settings{DailySyslog: true}); return err }); err != nil {
		t.Fatal(err)
	}
	if n, err := a.SendDue(); n != 0 || err != nil {
		t.Fatalf("syslog off: sent %d, %v", n, err)
	}
	var last string
	_ = db.View(func(tx *store.Tx) error { _, err := tx.Get(SettingsBucket, sentKey, &last); return err })
	if last != "" {
		t.Errorf("day marked sent while syslog was off: %q", last)
	}
}

func TestRetentionTrim(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db"))
	defer db.Close()
	clk := &clock{t: day1}
	a, err := New(Config{DB: db, Now: clk.Now, KeepDays: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		a.Observe(logs.Event{Time: day1.Add(time.Duration(i) * 24 * time.Hour), Kind: logs.KindFlood, Source: "192.0.2.1"})
	}
	clk.set(day1.Add(5 * 24 * time.Hour))
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	_ = db.View(func(tx *store.Tx) error {
		return tx.ForEach(DaysBucket, func(k string, _ []byte) error { keys = append(keys, k); return nil })
	})
	if strings.Join(keys, " ") != "2026-03-13 2026-03-14 2026-03-15" {
		t.Errorf("kept %v", keys)
	}
	if len(a.days) > memDays {
		t.Errorf("%d days in memory", len(a.days))
	}
}
