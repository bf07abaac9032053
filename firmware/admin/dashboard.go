package admin

import (
	"context"
	"fmt"
	"html/template"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/cdr"
)

// Activity keeps the last 24 hours of the dashboard's sampled series, one
// bucket per hour, in memory: registered phones (the most seen in the
// hour) and attacks (refused SIP logins, scanner packets and bans: the
// growth of a counter edgepbxd keeps since its start). Calls come from the
// call records, which are stored. Safe for concurrent use.
type Activity struct {
	mu      sync.Mutex
	hours   [24]activityHour
	last    uint64 // the attack counter at the previous sample
	sampled bool
}

type activityHour struct {
	hour       int64 // Unix time / 3600; 0: empty
	registered int
	attacks    uint64
}

// NewActivity returns an empty series.
func NewActivity() *Activity { return &Activity{} }

// Sample records the phones registered now and the attack counter's total.
// A counter that went down (edgepbxd restarted) starts counting again.
func (a *Activity) Sample(now time.Time, registered int, attacks uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := now.Unix() / 3600
	b := &a.hours[h%24]
	if b.hour != h {
		*b = activityHour{hour: h}
	}
	b.registered = max(b.registered, registered)
	if a.sampled && attacks >= a.last {
		b.attacks += attacks - a.last
	}
	a.last, a.sampled = attacks, true
}

// series returns the 24 hourly values ending with now's hour, oldest first.
func (a *Activity) series(now time.Time) (registered, attacks [24]int) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := now.Unix() / 3600
	for i := range 24 {
		h := cur - 23 + int64(i)
		if b := a.hours[((h%24)+24)%24]; b.hour == h {
			registered[i], attacks[i] = b.registered, int(min(b.attacks, 1<<31-1))
		}
	}
	return
}

// everRegistered reports whether a phone was registered in the last 24 h.
func (a *Activity) everRegistered(now time.Time) bool {
	r, _ := a.series(now)
	for _, n := range r {
		if n > 0 {
			return true
		}
	}
	return false
}

// Step is one line of the setup checklist of a new box.
type Step struct {
	Name, Done, Todo, Link string
	OK                     bool
}

// checklist is the way from a new box to a working one, from real state:
// claimed, an extension, a phone registered, a trunk, a call answered, a
// backup.
func (s *Server) checklist(now time.Time) []Step {
	steps := []Step{{Name: "Claim the box", OK: true, Done: "claimed, you are signed in", Link: "/account"}}
	exts := 0
	if s.exts != nil {
		exts = len(s.exts.List())
	}
	steps = append(steps, Step{Name: "Create an extension", OK: exts > 0, Link: "/extensions",
		Done: fmt.Sprintf("%d extension(s)", exts), Todo: "no extension yet: create one for each phone"})
	reg := s.activity.everRegistered(now)
	steps = append(steps, Step{Name: "Register a phone", OK: reg, Link: "/extensions",
		Done: "a phone registered in the last 24 hours", Todo: "no phone has registered: set one up with its extension's settings"})
	trunks := 0
	if s.tel != nil {
		trunks = len(s.tel.Current().Trunks)
	}
	steps = append(steps, Step{Name: "Add a trunk", OK: trunks > 0, Link: "/telephony",
		Done: fmt.Sprintf("%d trunk(s)", trunks), Todo: "no trunk: calls cannot leave the box"})
	answered := false
	if p, err := s.callRecords().Query(cdr.Query{Result: cdr.Answered, Limit: 1}); err == nil {
		answered = len(p.Records) > 0
	}
	steps = append(steps, Step{Name: "Make a test call", OK: answered, Link: "/calls",
		Done: "a call was answered", Todo: "no answered call yet: call another extension or out through the trunk"})
	backups := 0
	if s.backups != nil {
		if l, err := s.backups.List(); err == nil {
			backups = len(l)
		}
	}
	steps = append(steps, Step{Name: "Make a backup", OK: backups > 0, Link: "/system#backups",
		Done: fmt.Sprintf("%d backup(s) on the box", backups), Todo: "no backup: make one and keep its key off the box"})
	return steps
}

// adminChecks are the dashboard lines the admin side knows best: things
// to do (a pending firewall change, backups, time) with the page to do
// them on.
func (s *Server) adminChecks(ctx context.Context) []StatusItem {
	var items []StatusItem
	if s.exts != nil && len(s.exts.List()) == 0 {
		items = append(items, StatusItem{Name: "Extensions", Value: "none", Level: LevelWarn,
			Reason: "No phone can register until an extension exists.", Link: "/extensions"})
	}
	if s.fw != nil {
		ctx, cancel := context.WithTimeout(ctx, pid1Timeout)
		st, err := s.fw.GetPolicy(ctx)
		cancel()
		if err == nil && st.Pending != nil {
			items = append(items, StatusItem{Name: "Firewall change", Value: "waiting for confirmation", Level: LevelWarn,
				Reason: "It is reverted unless confirmed from a new connection.", Link: "/firewall"})
		}
	}
	if s.backups != nil {
		it := StatusItem{Name: "Backups", Link: "/system#backups"}
		l, err := s.backups.List()
		last, _ := s.audit.Query(audit.Filter{Action: "backup.create", Limit: 1})
		switch {
		case err != nil:
			it.Value, it.Level, it.Reason = "unavailable", LevelBad, "The backup directory cannot be read."
		case len(last) > 0 && last[0].Outcome == audit.Failed:
			it.Value, it.Level, it.Reason = "last backup failed", LevelBad, last[0].Detail
		case len(l) == 0:
			it.Value, it.Level, it.Reason = "never made", LevelWarn, "Make one before the box holds anything you would miss."
		default:
			age := s.clock.Now().Sub(l[0].Created)
			it.Value, it.OK, it.Level = fmt.Sprintf("%d on the box, newest %s ago", len(l), age.Round(time.Minute)), true, LevelOK
			if age > 8*24*time.Hour {
				it.Level, it.OK, it.Reason = LevelWarn, false, "The newest backup is more than a week old."
			}
		}
		items = append(items, it)
	}
	if s.netw != nil {
		ctx, cancel := context.WithTimeout(ctx, pid1Timeout)
		st, err := s.netw.GetTime(ctx)
		cancel()
		it := StatusItem{Name: "Time", Link: "/system#time"}
		switch {
		case err != nil:
			it.Value, it.Level, it.Reason = "unknown", LevelWarn, "PID 1 did not answer."
		case len(st.Config.NTP) == 0:
			it.Value, it.Level, it.Reason = "no NTP server", LevelWarn, "The clock is never corrected; certificates and call times drift."
		case st.Error != "":
			it.Value, it.Level, it.Reason = "not synchronised", LevelWarn, st.Error
		case st.Synced.IsZero():
			it.Value, it.Level, it.Reason = "not synchronised yet", LevelWarn, "No NTP server has answered since the box started."
		default:
			it.Value, it.OK, it.Level = "synchronised with "+st.Server, true, LevelOK
		}
		items = append(items, it)
	}
	return items
}

// chart is one small bar chart of 24 hourly values, drawn on the server
// as SVG (no script, nothing the CSP has to allow).
type chart struct {
	Title, Class string
	Total        int
	SVG          template.HTML
}

func barChart(title, class string, v [24]int, now time.Time, loc *time.Location) chart {
	const w, h, top, bottom = 240, 80, 12, 14
	peak, total := 0, 0
	for _, n := range v {
		peak, total = max(peak, n), total+n
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %d %d" role="img" aria-label="%s, last 24 hours: %d in all, at most %d in an hour">`, w, h+bottom, template.HTMLEscapeString(title), total, peak)
	bw := float64(w) / 24
	for i, n := range v {
		if n == 0 {
			continue
		}
		bh := float64(h-top) * float64(n) / float64(peak)
		fmt.Fprintf(&b, `<rect class="bar %s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%d</title></rect>`, class, float64(i)*bw+1, float64(h)-bh, bw-2, bh, n)
	}
	fmt.Fprintf(&b, `<line class="axis" x1="0" y1="%d" x2="%d" y2="%d"/>`, h, w, h)
	fmt.Fprintf(&b, `<text x="0" y="9">%d</text>`, peak)
	if loc == nil {
		loc = time.UTC
	}
	start := now.Add(-23 * time.Hour).In(loc)
	fmt.Fprintf(&b, `<text x="0" y="%d">%s</text><text x="%d" y="%d" text-anchor="end">now</text></svg>`, h+bottom-2, start.Format("15:00"), w, h+bottom-2)
	return chart{Title: title, Class: class, Total: total, SVG: template.HTML(b.String())}
}

// charts are the dashboard's calls, registrations and attacks of the last
// 24 hours.
func (s *Server) charts(now time.Time, loc *time.Location) []chart {
	var calls [24]int
	cur := now.Unix() / 3600
	if p, err := s.callRecords().Query(cdr.Query{Since: now.Add(-24 * time.Hour), Limit: cdr.MaxLimit}); err == nil {
		for _, r := range p.Records {
			if i := 23 - (cur - r.Start.Unix()/3600); i >= 0 && i < 24 {
				calls[i]++
			}
		}
	}
	reg, att := s.activity.series(now)
	return []chart{barChart("Calls", "call", calls, now, loc), barChart("Registered phones", "reg", reg, now, loc), barChart("Attacks refused", "attack", att, now, loc)}
}
