package audit

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Filter selects entries; zero fields match everything.
type Filter struct {
	Actor   string    `json:"actor,omitempty"`
	Action  string    `json:"action,omitempty"` // prefix match: "auth." selects all auth events
	Source  string    `json:"source,omitempty"`
	Outcome string    `json:"outcome,omitempty"`
	Since   time.Time `json:"since,omitempty"`
	Until   time.Time `json:"until,omitempty"`
	Limit   int       `json:"limit,omitempty"` // newest Limit entries; 0 means all
}

// MaxLimit bounds one page of results for the UI and API.
const MaxLimit = 1000

func (f Filter) match(e Entry) bool {
	switch {
	case f.Actor != "" && e.Actor != f.Actor,
		f.Action != "" && !strings.HasPrefix(e.Action, f.Action),
		f.Source != "" && e.Source != f.Source,
		f.Outcome != "" && e.Outcome != f.Outcome,
		!f.Since.IsZero() && e.Time.Before(f.Since),
		!f.Until.IsZero() && !e.Time.Before(f.Until):
		return false
	}
	return true
}

// Query returns the matching entries, oldest first.
func (l *Log) Query(f Filter) ([]Entry, error) {
	var out []Entry
	err := l.db.View(func(tx *store.Tx) error {
		var err error
		out, err = queryTx(tx, f)
		return err
	})
	return out, err
}

func queryTx(tx *store.Tx, f Filter) ([]Entry, error) {
	var out []Entry
	err := tx.ForEach(logBucket, func(key string, raw []byte) error {
		var e Entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("audit: decode %s: %w", key, err)
		}
		if f.match(e) {
			out = append(out, e)
			if f.Limit > 0 && len(out) > f.Limit {
				out = out[1:]
			}
		}
		return nil
	})
	return out, err
}

// Export formats.
const (
	FormatJSONLines = "jsonl"
	FormatCSV       = "csv"
)

// ErrFormat is returned for an unknown export format.
var ErrFormat = errors.New("audit: unknown export format")

// HeadLine is the last line of a JSON-lines export: the chain head when
// the export was made, read in the same transaction as the entries.
type HeadLine struct {
	Head Head `json:"audit_head"`
}

// HeadRow is the first column of the last CSV row, which carries the head:
// action "audit.head", its sequence number as the target, its hash in the
// hash column.
const HeadRow = "head"

// Export writes the matching entries to w as JSON lines or CSV, followed by
// the chain head. Exports keep the hashes so a copy can be checked against
// the box later, and the head anchors the copy: keep it off the box and a
// later rewrite of the log up to it is detectable.
func (l *Log) Export(w io.Writer, format string, f Filter) error {
	if format != FormatJSONLines && format != FormatCSV {
		return fmt.Errorf("%w %q", ErrFormat, format)
	}
	var entries []Entry
	var h head
	err := l.db.View(func(tx *store.Tx) error {
		if _, err := tx.Get(metaBucket, headKey, &h); err != nil {
			return fmt.Errorf("audit: read head: %w", err)
		}
		var err error
		entries, err = queryTx(tx, f)
		return err
	})
	if err != nil {
		return err
	}
	hd := Head{Seq: h.Seq, Hash: h.Hash, Time: l.clock.Now().UTC()}
	if format == FormatJSONLines {
		enc := json.NewEncoder(w)
		for _, e := range entries {
			if err := enc.Encode(e); err != nil {
				return fmt.Errorf("audit: export: %w", err)
			}
		}
		if err := enc.Encode(HeadLine{Head: hd}); err != nil {
			return fmt.Errorf("audit: export: %w", err)
		}
		return nil
	}
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"seq", "time", "actor", "source", "action", "target", "outcome", "detail", "before", "after", "prev_hash", "hash"})
	for _, e := range entries {
		rec := []string{strconv.FormatUint(e.Seq, 10), e.Time.Format(time.RFC3339Nano), e.Actor, e.Source, e.Action,
			e.Target, e.Outcome, e.Detail, string(e.Before), string(e.After), e.PrevHash, e.Hash}
		for i, s := range rec {
			rec[i] = csvSafe(s)
		}
		if err := cw.Write(rec); err != nil {
			return fmt.Errorf("audit: export: %w", err)
		}
	}
	_ = cw.Write([]string{HeadRow, hd.Time.Format(time.RFC3339Nano), "", "", "audit.head", strconv.FormatUint(hd.Seq, 10), "", "", "", "", "", hd.Hash})
	cw.Flush()
	return cw.Error()
}

// csvSafe stops spreadsheet formula injection from attacker-chosen fields
// such as a username typed into the login form.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
