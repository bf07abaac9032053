package intrusion

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// ErrRange marks a refused report range; the *RangeError names the field.
var ErrRange = errors.New("invalid report range")

// RangeError is a refused from/to parameter.
type RangeError struct {
	Field  string // "from" or "to"
	Reason string
}

func (e *RangeError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }

// Is makes errors.Is(err, ErrRange) true.
func (e *RangeError) Is(target error) bool { return target == ErrRange }

// Count is one entry of a top list.
type Count struct {
	Key   string `json:"key"`
	Count uint64 `json:"count"`
	// Err bounds how much Count may overstate (space-saving sketch; 0
	// while the day saw fewer distinct keys than the sketch holds).
	Err uint64 `json:"err,omitempty"`
}

// SourceCount is one offending source.
type SourceCount struct {
	Source  string `json:"source"`
	Country string `json:"country,omitempty"` // GeoIP database in use now
	Count   uint64 `json:"count"`
	Err     uint64 `json:"err,omitempty"`
}

// Figures are one day's (or a range's) report.
type Figures struct {
	Date               string            `json:"date,omitempty"` // empty for the range total
	Bans               uint64            `json:"bans"`
	BanReasons         []Count           `json:"ban_reasons"`
	Throttles          uint64            `json:"throttles"`
	AuthFailures       uint64            `json:"auth_failures"`
	Scanners           uint64            `json:"scanner_drops"`
	Floods             uint64            `json:"floods"`
	Invalid            uint64            `json:"invalid"`
	AdminFailures      uint64            `json:"admin_login_failures"`
	AdminBans          uint64            `json:"admin_bans"`
	Fraud              uint64            `json:"fraud_events"`
	Events             map[string]uint64 `json:"events"`
	TopSources         []SourceCount     `json:"top_sources"`
	TopCountries       []Count           `json:"top_countries"`
	AttackedExtensions []Count           `json:"attacked_extensions"`
	ScannerAgents      []Count           `json:"scanner_user_agents"`
	AdminSources       []SourceCount     `json:"admin_sources"`
	FraudExtensions    []Count           `json:"fraud_extensions"`
}

// Report is GET /api/v1/security/report.
type Report struct {
	From  string    `json:"from"`
	To    string    `json:"to"`
	GeoIP bool      `json:"geoip"` // a country database was consulted for the sources
	Days  []Figures `json:"days"`  // one per day of the range, oldest first
	Total Figures   `json:"total"` // the range; top lists are sums of the days' lists
}

// ParseRange checks from/to (YYYY-MM-DD, UTC days, both inclusive):
// empty to is today, empty from is six days before to; from <= to <=
// today, at most MaxRangeDays days.
func ParseRange(from, to string, now time.Time) (int64, int64, error) {
	today := dayNumber(now)
	t := today
	if to != "" {
		n, err := parseDate("to", to)
		if err != nil {
			return 0, 0, err
		}
		if n > today {
			return 0, 0, &RangeError{"to", "is after today (" + dayDate(today) + ", UTC)"}
		}
		t = n
	}
	f := t - 6
	if from != "" {
		n, err := parseDate("from", from)
		if err != nil {
			return 0, 0, err
		}
		f = n
	}
	if f > t {
		return 0, 0, &RangeError{"from", "is after to"}
	}
	if t-f+1 > MaxRangeDays {
		return 0, 0, &RangeError{"from", fmt.Sprintf("range longer than %d days", MaxRangeDays)}
	}
	return f, t, nil
}

func parseDate(field, s string) (int64, error) {
	if len(s) != len(dateLayout) {
		return 0, &RangeError{field, "must be a date YYYY-MM-DD"}
	}
	t, err := time.Parse(dateLayout, s)
	if err != nil || t.Year() < 2000 {
		return 0, &RangeError{field, "must be a date YYYY-MM-DD from 2000 on"}
	}
	return dayNumber(t), nil
}

// Report returns the figures of the days from..to (ParseRange): days still
// in memory as they are now, the others as stored.
func (a *Aggregator) Report(from, to string) (Report, error) {
	f, t, err := ParseRange(from, to, a.cfg.Now())
	if err != nil {
		return Report{}, err
	}
	rep := Report{From: dayDate(f), To: dayDate(t), Days: make([]Figures, 0, t-f+1)}
	recs := make(map[int64]record, t-f+1)
	a.mu.Lock()
	for n, d := range a.days {
		if n >= f && n <= t {
			recs[n] = d.record()
		}
	}
	a.mu.Unlock()
	err = a.cfg.DB.View(func(tx *store.Tx) error {
		for n := f; n <= t; n++ {
			if _, ok := recs[n]; ok {
				continue
			}
			var r record
			ok, err := tx.Get(DaysBucket, dayDate(n), &r)
			if err != nil {
				return err
			}
			if ok {
				recs[n] = r
			}
		}
		return nil
	})
	if err != nil {
		return Report{}, fmt.Errorf("intrusion: read %s: %w", DaysBucket, err)
	}
	var total record
	for n := f; n <= t; n++ {
		r := recs[n]
		rep.Days = append(rep.Days, a.figures(dayDate(n), r))
		total.add(r)
	}
	rep.Total = a.figures("", total)
	if g, ok := a.cfg.Geo.(interface{ GeoIPLoaded() bool }); ok {
		rep.GeoIP = g.GeoIPLoaded()
	} else {
		rep.GeoIP = a.cfg.Geo != nil
	}
	return rep, nil
}

// add sums o into r (top lists: per-key sums of the days' counters).
func (r *record) add(o record) {
	if r.Events == nil {
		r.Events = map[logs.Kind]uint64{}
	}
	for k, v := range o.Events {
		r.Events[k] += v
	}
	r.Bans += o.Bans
	r.Throttles += o.Throttles
	r.AuthFail += o.AuthFail
	r.Scanners += o.Scanners
	r.Floods += o.Floods
	r.Invalid += o.Invalid
	r.AdminFail += o.AdminFail
	r.AdminBans += o.AdminBans
	r.Fraud += o.Fraud
	r.Reasons = merge(r.Reasons, o.Reasons)
	r.Sources = merge(r.Sources, o.Sources)
	r.Countries = merge(r.Countries, o.Countries)
	r.Extensions = merge(r.Extensions, o.Extensions)
	r.Agents = merge(r.Agents, o.Agents)
	r.Admin = merge(r.Admin, o.Admin)
	r.FraudExt = merge(r.FraudExt, o.FraudExt)
}

func merge[K comparable](a, b []Counter[K]) []Counter[K] {
	if len(b) == 0 {
		return a
	}
	idx := make(map[K]int, len(a))
	for i, c := range a {
		idx[c.Key] = i
	}
	for _, c := range b {
		if i, ok := idx[c.Key]; ok {
			a[i].Count += c.Count
			a[i].Err += c.Err
			continue
		}
		idx[c.Key] = len(a)
		a = append(a, c)
	}
	return a
}

func top[K comparable](c []Counter[K], less func(a, b K) int, str func(K) string) []Count {
	c = slices.Clone(c)
	sortCounters(c, less)
	out := make([]Count, 0, min(TopN, len(c)))
	for _, x := range c[:min(TopN, len(c))] {
		out = append(out, Count{Key: str(x.Key), Count: x.Count, Err: x.Err})
	}
	return out
}

func (a *Aggregator) sourcesTop(c []Counter[netip.Addr]) []SourceCount {
	out := []SourceCount{}
	c = slices.Clone(c)
	sortCounters(c, netip.Addr.Compare)
	for _, x := range c[:min(TopN, len(c))] {
		sc := SourceCount{Source: x.Key.String(), Count: x.Count, Err: x.Err}
		if a.cfg.Geo != nil {
			sc.Country = a.cfg.Geo.Country(x.Key)
		}
		out = append(out, sc)
	}
	return out
}

func ident(s string) string { return s }

func (a *Aggregator) figures(date string, r record) Figures {
	f := Figures{Date: date, Bans: r.Bans, Throttles: r.Throttles, AuthFailures: r.AuthFail, Scanners: r.Scanners,
		Floods: r.Floods, Invalid: r.Invalid, AdminFailures: r.AdminFail, AdminBans: r.AdminBans, Fraud: r.Fraud,
		Events: map[string]uint64{}}
	for k, v := range r.Events {
		f.Events[string(k)] = v
	}
	f.BanReasons = top(r.Reasons, cmp.Compare[string], ident)
	f.TopSources = a.sourcesTop(r.Sources)
	f.TopCountries = top(r.Countries, cmp.Compare[string], ident)
	f.AttackedExtensions = top(r.Extensions, cmp.Compare[string], ident)
	f.ScannerAgents = top(r.Agents, cmp.Compare[string], ident)
	f.AdminSources = a.sourcesTop(r.Admin)
	f.FraudExtensions = top(r.FraudExt, cmp.Compare[string], ident)
	return f
}

// Settings are the admin's choices for the report.
type Settings struct {
	// DailySyslog sends one structured message per day with the previous
	// day's figures to the remote syslog collector (when one is set up).
	DailySyslog bool `json:"daily_syslog"`
}

// LoadSettings returns the stored settings (default: no daily summary).
func LoadSettings(db *store.DB) (Settings, error) {
	var s Settings
	err := db.View(func(tx *store.Tx) error {
		_, err := tx.Get(SettingsBucket, settingsKey, &s)
		return err
	})
	if err != nil {
		return Settings{}, fmt.Errorf("intrusion: read %s: %w", SettingsBucket, err)
	}
	return s, nil
}

// SaveSettingsTx stores s inside tx (with its audit entry) and returns the
// settings it replaces.
func SaveSettingsTx(tx *store.Tx, s Settings) (Settings, error) {
	var prev Settings
	if _, err := tx.Get(SettingsBucket, settingsKey, &prev); err != nil {
		return Settings{}, fmt.Errorf("intrusion: read %s: %w", SettingsBucket, err)
	}
	if err := tx.Put(SettingsBucket, settingsKey, s); err != nil {
		return Settings{}, fmt.Errorf("intrusion: write %s: %w", SettingsBucket, err)
	}
	return prev, nil
}

// MsgID is the RFC 5424 MSGID of the daily summary.
const MsgID = "intrusion.daily"

// SendDue sends the summaries of the days before today not yet sent (at
// most catchUpDays back; yesterday's alone the first time), when the admin enabled them; it returns how
// many went out. A day counts as sent once the syslog sender queued it.
func (a *Aggregator) SendDue() (int, error) {
	if a.cfg.Summary == nil {
		return 0, nil
	}
	set, err := LoadSettings(a.cfg.DB)
	if err != nil || !set.DailySyslog {
		return 0, err
	}
	today := dayNumber(a.cfg.Now())
	var last string
	if err := a.cfg.DB.View(func(tx *store.Tx) error {
		_, err := tx.Get(SettingsBucket, sentKey, &last)
		return err
	}); err != nil {
		return 0, fmt.Errorf("intrusion: read %s: %w", SettingsBucket, err)
	}
	// The first summary ever is yesterday's; after downtime, the missed
	// days, at most catchUpDays back.
	first := today - 1
	if last != "" {
		first = today - catchUpDays
		if n, err := parseDate("sent", last); err == nil && n+1 > first {
			first = n + 1
		}
	}
	sent := 0
	for n := first; n < today; n++ {
		rep, err := a.Report(dayDate(n), dayDate(n))
		if err != nil {
			return sent, err
		}
		params, text := summaryParams(rep.Days[0])
		if !a.cfg.Summary.Summary(a.cfg.Now(), MsgID, text, params) {
			return sent, nil // remote syslog off: try again later
		}
		if err := a.cfg.DB.Update(func(tx *store.Tx) error { return tx.Put(SettingsBucket, sentKey, dayDate(n)) }); err != nil {
			return sent, fmt.Errorf("intrusion: write %s: %w", SettingsBucket, err)
		}
		sent++
	}
	return sent, nil
}

// summaryTop is how many entries of each list the syslog summary carries
// (the message stays well under the sender's 8 KiB bound).
const summaryTop = 5

// summaryParams are the structured-data parameters of f's daily summary.
func summaryParams(f Figures) ([]logs.SDParam, string) {
	num := func(v uint64) string { return strconv.FormatUint(v, 10) }
	list := func(c []Count) string {
		var b strings.Builder
		for i, x := range c[:min(summaryTop, len(c))] {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%s=%d", clipKey(x.Key), x.Count)
		}
		return b.String()
	}
	var src strings.Builder
	for i, s := range f.TopSources[:min(summaryTop, len(f.TopSources))] {
		if i > 0 {
			src.WriteByte(' ')
		}
		src.WriteString(s.Source)
		if s.Country != "" {
			src.WriteString("(" + s.Country + ")")
		}
		fmt.Fprintf(&src, "=%d", s.Count)
	}
	p := []logs.SDParam{
		{Name: "date", Value: f.Date},
		{Name: "bans", Value: num(f.Bans)},
		{Name: "throttles", Value: num(f.Throttles)},
		{Name: "auth_failures", Value: num(f.AuthFailures)},
		{Name: "scanner_drops", Value: num(f.Scanners)},
		{Name: "floods", Value: num(f.Floods)},
		{Name: "admin_login_failures", Value: num(f.AdminFailures)},
		{Name: "admin_bans", Value: num(f.AdminBans)},
		{Name: "fraud_events", Value: num(f.Fraud)},
		{Name: "ban_reasons", Value: list(f.BanReasons)},
		{Name: "top_sources", Value: src.String()},
		{Name: "top_countries", Value: list(f.TopCountries)},
		{Name: "attacked_extensions", Value: list(f.AttackedExtensions)},
		{Name: "scanner_user_agents", Value: list(f.ScannerAgents)},
	}
	text := fmt.Sprintf("intrusion report %s: %d bans, %d throttles, %d auth failures, %d scanner drops, %d admin login failures, %d fraud events",
		f.Date, f.Bans, f.Throttles, f.AuthFailures, f.Scanners, f.AdminFailures, f.Fraud)
	return p, text
}

// clipKey keeps a list entry short (User-Agents, extension names are the
// attacker's): 64 bytes, spaces and '=' replaced so the list stays readable.
func clipKey(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '=' {
			return '_'
		}
		return r
	}, s)
}

// Today is the aggregator's current UTC day (for the UI's defaults).
func (a *Aggregator) Today() string { return dayDate(dayNumber(a.cfg.Now())) }
