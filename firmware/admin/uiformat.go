package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/init/netconf/netspec"
)

// Change is one field of an audit entry's change: its path in the
// recorded JSON and the value before and after ("" when absent).
type Change struct {
	Field         string
	Before, After string
}

// maxDiffFields bounds the lines one entry's change shows; the rest are
// counted on a last line (the export has them all).
const maxDiffFields = 40

// auditDiff flattens an audit entry's before and after JSON into the fields
// that differ, sorted by path. A value that is not a JSON object (or not
// JSON) is one field named "value".
func auditDiff(before, after json.RawMessage) []Change {
	b, a := map[string]string{}, map[string]string{}
	flatten(b, "", before)
	flatten(a, "", after)
	keys := map[string]bool{}
	for k := range b {
		keys[k] = true
	}
	for k := range a {
		keys[k] = true
	}
	var out []Change
	for k := range keys {
		if b[k] != a[k] {
			out = append(out, Change{Field: k, Before: b[k], After: a[k]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Field < out[j].Field })
	if len(out) > maxDiffFields {
		n := len(out) - maxDiffFields
		out = append(out[:maxDiffFields], Change{Field: "…", After: fmt.Sprintf("%d more fields (see the export)", n)})
	}
	return out
}

// flatten adds raw's leaves to m under dotted paths (lists as [i]). The
// audit log bounds what it stores, so depth is bounded too; a guard stops
// at 16 levels anyway.
func flatten(m map[string]string, path string, raw json.RawMessage) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		m[orValue(path)] = string(raw)
		return
	}
	flattenValue(m, path, v, 0)
}

func orValue(path string) string {
	if path == "" {
		return "value"
	}
	return path
}

func flattenValue(m map[string]string, path string, v any, depth int) {
	if depth > 16 {
		b, _ := json.Marshal(v)
		m[orValue(path)] = string(b)
		return
	}
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			m[orValue(path)] = "{}"
		}
		for k, e := range x {
			p := k
			if path != "" {
				p = path + "." + k
			}
			flattenValue(m, p, e, depth+1)
		}
	case []any:
		if len(x) == 0 {
			m[orValue(path)] = "[]"
		}
		// Short lists of plain values read best on one line.
		if plain(x) {
			b, _ := json.Marshal(x)
			m[orValue(path)] = string(b)
			return
		}
		for i, e := range x {
			flattenValue(m, path+"["+strconv.Itoa(i)+"]", e, depth+1)
		}
	case string:
		m[orValue(path)] = strconv.Quote(x)
	case nil:
		m[orValue(path)] = "null"
	default:
		m[orValue(path)] = fmt.Sprint(x)
	}
}

func plain(l []any) bool {
	if len(l) > 8 {
		return false
	}
	for _, e := range l {
		switch e.(type) {
		case map[string]any, []any:
			return false
		}
	}
	return true
}

// localTime renders t in the box's time zone with the UTC time on hover
// and in the machine-readable datetime attribute.
func localTime(loc *time.Location, t time.Time) template.HTML {
	if t.IsZero() {
		return ""
	}
	if loc == nil {
		loc = time.UTC
	}
	u := t.UTC()
	return template.HTML(fmt.Sprintf(`<time datetime="%s" title="%s UTC">%s</time>`,
		template.HTMLEscapeString(u.Format(time.RFC3339)), template.HTMLEscapeString(u.Format("2006-01-02 15:04:05")),
		template.HTMLEscapeString(t.In(loc).Format("2006-01-02 15:04:05 MST"))))
}

// zoneCache holds the box's display time zone (set on the System page, kept
// by PID 1) for a short while, so a page costs no control-socket request
// in the common case. A time change drops it (forgetZone).
type zoneCache struct {
	mu  sync.Mutex
	loc *time.Location
	at  time.Time
}

// zoneTTL is how long a zone read from PID 1 is used before asking again.
const zoneTTL = time.Minute

// zone is the box's display time zone; UTC when it cannot be read.
func (s *Server) zone(ctx context.Context) *time.Location {
	s.zc.mu.Lock()
	defer s.zc.mu.Unlock()
	now := s.clock.Now()
	if s.zc.loc != nil && now.Sub(s.zc.at) < zoneTTL && now.After(s.zc.at) {
		return s.zc.loc
	}
	loc := time.UTC
	if s.netw != nil {
		ctx, cancel := context.WithTimeout(ctx, pid1Timeout)
		defer cancel()
		if st, err := s.netw.GetTime(ctx); err == nil {
			if l, err := netspec.LoadZone(st.Config.TimeZone); err == nil {
				loc = l
			}
		}
	}
	s.zc.loc, s.zc.at = loc, now
	return loc
}

// forgetZone makes the next page read the zone again.
func (s *Server) forgetZone() {
	s.zc.mu.Lock()
	s.zc.loc = nil
	s.zc.mu.Unlock()
}
