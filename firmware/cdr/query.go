package cdr

import (
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Query bounds.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
	// MaxExport bounds one export (a year of a busy small office).
	MaxExport = 200000
)

// ErrQuery wraps every refused query parameter.
var ErrQuery = errors.New("cdr: bad query")

// Export formats.
const (
	FormatCSV        = "csv"
	FormatJSONLines  = "jsonl"
	maxQueryParamLen = 256
)

// Query selects records: calls that started in [Since, Until) (zero: open),
// with Party in the caller, the callee or the dialled number (substring),
// over Trunk, with Result and Direction (exact). Results come newest
// first, at most Limit (0: DefaultLimit); Cursor continues after a page
// (Page.Next).
type Query struct {
	Since, Until time.Time
	Party        string
	Trunk        string
	Result       Result
	Direction    string
	Limit        int
	Cursor       string
}

// Page is one answer to a Query. Next is the cursor of the following
// (older) page; empty: this was the last.
type Page struct {
	Records []Record `json:"records"`
	Next    string   `json:"next,omitempty"`
}

func queryErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrQuery, fmt.Sprintf(format, a...))
}

// queryKeys are the parameters ParseQuery knows; "format" belongs to the
// export and is read by its caller.
var queryKeys = map[string]bool{"since": true, "until": true, "party": true, "trunk": true,
	"result": true, "direction": true, "limit": true, "cursor": true, "format": true}

// ParseQuery reads a Query from URL parameters (the admin API and the Calls
// page): since/until as RFC 3339 or YYYY-MM-DD (a day is its midnight UTC;
// until=YYYY-MM-DD includes that day), party (digits, '+', '*', '#' and
// letters: extension names), trunk, result, direction, limit (1..MaxLimit),
// cursor. Unknown or repeated parameters and out-of-range values are
// refused. Empty values mean "not set".
func ParseQuery(v url.Values) (Query, error) {
	q := Query{}
	for k, vals := range v {
		if !queryKeys[k] {
			return Query{}, queryErr("unknown parameter %.32q", k)
		}
		if len(vals) > 1 {
			return Query{}, queryErr("parameter %s given more than once", k)
		}
		if len(vals) == 1 && len(vals[0]) > maxQueryParamLen {
			return Query{}, queryErr("parameter %s longer than %d bytes", k, maxQueryParamLen)
		}
	}
	var err error
	if q.Since, err = parseTime(v.Get("since"), false); err != nil {
		return Query{}, queryErr("since: %v", err)
	}
	if q.Until, err = parseTime(v.Get("until"), true); err != nil {
		return Query{}, queryErr("until: %v", err)
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		return Query{}, queryErr("since must be before until")
	}
	q.Party = strings.TrimSpace(v.Get("party"))
	if len(q.Party) > 64 || strings.ContainsFunc(q.Party, func(r rune) bool {
		return !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("+*#-_.", r)))
	}) {
		return Query{}, queryErr("party: up to 64 letters, digits and + * # - _ .")
	}
	q.Trunk = v.Get("trunk")
	if len(q.Trunk) > 32 || strings.ContainsFunc(q.Trunk, func(r rune) bool {
		return !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_'))
	}) {
		return Query{}, queryErr("trunk: up to 32 letters, digits, - or _")
	}
	switch r := Result(v.Get("result")); r {
	case "", Answered, Busy, NoAnswer, Rejected, Failed, Cancelled:
		q.Result = r
	default:
		return Query{}, queryErr("result: want answered, busy, no_answer, rejected, failed or cancelled")
	}
	switch d := v.Get("direction"); d {
	case "", "internal", "outbound", "inbound", "emergency":
		q.Direction = d
	default:
		return Query{}, queryErr("direction: want internal, outbound, inbound or emergency")
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxLimit {
			return Query{}, queryErr("limit: want 1..%d", MaxLimit)
		}
		q.Limit = n
	}
	if c := v.Get("cursor"); c != "" {
		if _, err := decodeCursor(c); err != nil {
			return Query{}, err
		}
		q.Cursor = c
	}
	return q, nil
}

func parseTime(s string, endOfDay bool) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		d, derr := time.Parse("2006-01-02", s)
		if derr != nil {
			return time.Time{}, errors.New("want RFC 3339 (2026-05-01T09:00:00Z) or YYYY-MM-DD")
		}
		t = d
		if endOfDay {
			t = t.AddDate(0, 0, 1)
		}
	}
	// Keys hold Unix nanoseconds as unsigned: before 1970 or past 2262
	// would wrap around.
	if t.Year() < 1970 || t.Year() > 2200 {
		return time.Time{}, errors.New("year out of range 1970..2200")
	}
	return t.UTC(), nil
}

// A cursor is the key of the last record returned, base64url: opaque to
// clients, checked like a key when it comes back.
func encodeCursor(k string) string { return base64.RawURLEncoding.EncodeToString([]byte(k)) }

func decodeCursor(c string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(raw) < 18 || len(raw) > 17+maxField || raw[16] != '/' {
		return "", queryErr("cursor: not one this box handed out")
	}
	k := string(raw)
	if _, err := strconv.ParseUint(k[:16], 16, 64); err != nil || strings.ContainsAny(k[17:], "/\x00") {
		return "", queryErr("cursor: not one this box handed out")
	}
	return k, nil
}

// match applies the filters other than time to a decoded record.
func (q Query) match(r *Record) bool {
	if q.Party != "" && !strings.Contains(r.From, q.Party) && !strings.Contains(r.To, q.Party) && !strings.Contains(r.Dialled, q.Party) {
		return false
	}
	return (q.Trunk == "" || r.Trunk == q.Trunk) && (q.Result == "" || r.Result == q.Result) &&
		(q.Direction == "" || r.Direction == q.Direction)
}

// bounds are the key range [lo, hi) of q's time range and cursor.
func (q Query) bounds() (lo, hi string, err error) {
	lo = ""
	if !q.Since.IsZero() {
		lo = fmt.Sprintf("%016x/", uint64(max(q.Since.UnixNano(), 0)))
	}
	hi = "\xff"
	if !q.Until.IsZero() {
		hi = fmt.Sprintf("%016x/", uint64(max(q.Until.UnixNano(), 0)))
	}
	if q.Cursor != "" {
		c, err := decodeCursor(q.Cursor)
		if err != nil {
			return "", "", err
		}
		hi = min(hi, c)
	}
	return lo, hi, nil
}

type keyed struct {
	key string
	rec Record
	raw []byte // undecoded record when no filter needs decoding
}

// Query returns the newest records matching q, newest first. The store
// has no reverse seek: it walks the range oldest first and keeps the last
// Limit+1 matches in a ring, so memory stays bounded by Limit whatever the
// number of records.
func (s *Store) Query(q Query) (Page, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	if limit > MaxLimit {
		return Page{}, queryErr("limit: want 1..%d", MaxLimit)
	}
	lo, hi, err := q.bounds()
	if err != nil {
		return Page{}, err
	}
	ring := make([]keyed, limit+1)
	n := 0 // matches seen
	party, trunk := []byte(q.Party), []byte(`"`+q.Trunk+`"`)
	filtered := q.Party != "" || q.Trunk != "" || q.Result != "" || q.Direction != ""
	err = s.db.View(func(tx *store.Tx) error {
		return tx.ForEach(bucket, func(k string, raw []byte) error {
			if k < lo {
				return nil
			}
			if k >= hi {
				return errStop
			}
			// Cheap byte checks before decoding (JSON escapes none of
			// the characters a party or trunk filter may hold).
			if (len(party) > 0 && !bytes.Contains(raw, party)) || (q.Trunk != "" && !bytes.Contains(raw, trunk)) {
				return nil
			}
			slot := &ring[n%len(ring)]
			if !filtered {
				// Only the last Limit records are decoded, at the end.
				slot.key, slot.raw = k, append(slot.raw[:0], raw...)
				n++
				return nil
			}
			slot.rec = Record{}
			if err := json.Unmarshal(raw, &slot.rec); err != nil {
				return fmt.Errorf("cdr: decode %s: %w", k, err)
			}
			if !q.match(&slot.rec) {
				return nil
			}
			slot.key = k
			n++
			return nil
		})
	})
	if err != nil && !errors.Is(err, errStop) {
		return Page{}, err
	}
	p := Page{Records: []Record{}}
	for i := 0; i < min(n, limit); i++ {
		slot := &ring[(n-1-i)%len(ring)]
		if !filtered {
			slot.rec = Record{}
			if err := json.Unmarshal(slot.raw, &slot.rec); err != nil {
				return Page{}, fmt.Errorf("cdr: decode %s: %w", slot.key, err)
			}
		}
		p.Records = append(p.Records, slot.rec)
	}
	if n > limit {
		p.Next = encodeCursor(ring[(n-limit)%len(ring)].key)
	}
	return p, nil
}

// csvHeader are the CSV export's columns.
var csvHeader = []string{"id", "start", "answer", "end", "duration_s", "from", "to", "dialled", "direction", "trunk",
	"result", "sip_status", "cause", "codec", "srtp_caller", "srtp_callee", "mos", "loss_pct", "jitter_ms"}

// csvSafe defuses spreadsheet formulas: a cell starting with = + - @ (or
// tab/CR) is prefixed with a quote. Numbers dialled as "+44…" become
// "'+44…", which spreadsheets show as text, as wanted.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func timeCell(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func fcell(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// Export writes the records matching q (newest first, Limit and Cursor
// ignored, at most MaxExport) as CSV or JSON lines and returns how many.
// It reads page by page so a long export holds no lock for long.
func (s *Store) Export(w io.Writer, format string, q Query) (int, error) {
	var cw *csv.Writer
	var enc *json.Encoder
	switch format {
	case FormatCSV:
		cw = csv.NewWriter(w)
		if err := cw.Write(csvHeader); err != nil {
			return 0, err
		}
	case FormatJSONLines:
		enc = json.NewEncoder(w)
	default:
		return 0, queryErr("format: want csv or jsonl")
	}
	q.Limit, q.Cursor = MaxLimit, ""
	n := 0
	for n < MaxExport {
		p, err := s.Query(q)
		if err != nil {
			return n, err
		}
		for _, r := range p.Records {
			if n >= MaxExport {
				break
			}
			if cw != nil {
				err = cw.Write([]string{r.ID, timeCell(r.Start), timeCell(r.Answer), timeCell(r.End),
					strconv.FormatInt(int64(r.Duration/time.Second), 10), csvSafe(r.From), csvSafe(r.To), csvSafe(r.Dialled),
					r.Direction, r.Trunk, string(r.Result), strconv.Itoa(r.SIPStatus), csvSafe(r.Cause), csvSafe(r.Codec),
					strconv.FormatBool(r.SRTPCaller), strconv.FormatBool(r.SRTPCallee), fcell(r.MOS), fcell(r.LossPct), fcell(r.JitterMs)})
			} else {
				err = enc.Encode(r)
			}
			if err != nil {
				return n, fmt.Errorf("cdr: export: %w", err)
			}
			n++
		}
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	if cw != nil {
		cw.Flush()
		if err := cw.Error(); err != nil {
			return n, fmt.Errorf("cdr: export: %w", err)
		}
	}
	return n, nil
}
