package ivr

import (
	"fmt"
	"time"

	"github.com/edgepbx/edgepbx/init/netconf/netspec"
)

// LoadZone loads an IANA zone from the zone database embedded in the
// binary (time/tzdata via netspec: the image ships no zoneinfo).
func LoadZone(name string) (*time.Location, error) { return netspec.LoadZone(name) }

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

func weekday(s string) (time.Weekday, bool) {
	d, ok := weekdays[s]
	return d, ok
}

// clock parses "HH:MM" (00:00-24:00) to minutes after midnight.
func clock(s string) (int, error) {
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("want HH:MM")
	}
	n := [4]int{}
	for i, j := range []int{0, 1, 3, 4} {
		if s[j] < '0' || s[j] > '9' {
			return 0, fmt.Errorf("want HH:MM")
		}
		n[i] = int(s[j] - '0')
	}
	h, m := n[0]*10+n[1], n[2]*10+n[3]
	if h > 24 || m > 59 || h == 24 && m != 0 {
		return 0, fmt.Errorf("want HH:MM")
	}
	return h*60 + m, nil
}

// Location is the zone a condition is evaluated in: its own, else the
// configuration's, else box (the box's zone; nil: UTC).
func (c Config) Location(t TimeCondition, box *time.Location) *time.Location {
	for _, z := range []string{t.Zone, c.Zone} {
		if z != "" {
			if loc, err := LoadZone(z); err == nil {
				return loc
			}
		}
	}
	if box == nil {
		return time.UTC
	}
	return box
}

// IsOpen reports whether now falls in t's hours and on no holiday, by the
// wall clock of loc. Wall-clock comparison is what makes a DST change
// right: 08:00 is 08:00 local on both sides of it. A range that names a
// time skipped by a spring-forward change starts at the first minute that
// exists after it.
func (t TimeCondition) IsOpen(now time.Time, loc *time.Location) bool {
	local := now.In(loc)
	date := local.Format(time.DateOnly)
	for _, h := range t.Holidays {
		to := h.To
		if to == "" {
			to = h.From
		}
		if date >= h.From && date <= to { // YYYY-MM-DD compares as text
			return false
		}
	}
	minute := local.Hour()*60 + local.Minute()
	for _, h := range t.Hours {
		from, err1 := clock(h.From)
		to, err2 := clock(h.To)
		if err1 != nil || err2 != nil {
			continue
		}
		for _, d := range h.Days {
			if wd, ok := weekday(d); ok && wd == local.Weekday() && minute >= from && minute < to {
				return true
			}
		}
	}
	return false
}

// Resolve is where time condition t sends a call at now.
func (c Config) Resolve(t TimeCondition, now time.Time, box *time.Location) string {
	if t.IsOpen(now, c.Location(t, box)) {
		return t.Open
	}
	return t.Closed
}
