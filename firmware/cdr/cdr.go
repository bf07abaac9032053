// Package cdr keeps call detail records: one per call, written to the store
// when the call ends (bucket cdr.records), queried newest first with filters
// and a cursor, exported as CSV or JSON lines, and purged after the
// retention the privacy settings give (firmware/privacy), which can also
// mask phone numbers after some days (privacy.go).
package cdr

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// bucket holds records keyed by start time (fixed-width hex nanoseconds)
// and call ID, so key order is time order.
const bucket = "cdr.records"

// maxField bounds strings that come from SIP headers.
const maxField = 128

// Result is how a call ended.
type Result string

// Results.
const (
	Answered  Result = "answered"
	Busy      Result = "busy"
	NoAnswer  Result = "no_answer"
	Rejected  Result = "rejected" // refused by policy (dial plan, licence, limits)
	Failed    Result = "failed"   // network or peer error
	Cancelled Result = "cancelled"
)

// Record is one call.
type Record struct {
	ID        string `json:"id"`
	From      string `json:"from"`    // calling extension or number
	To        string `json:"to"`      // called extension or number as routed
	Dialled   string `json:"dialled"` // normalised number as dialled
	Direction string `json:"direction"`
	Trunk     string `json:"trunk,omitempty"`

	Start  time.Time `json:"start"`
	Answer time.Time `json:"answer,omitzero"`
	End    time.Time `json:"end"`
	// Duration is the billable time, End − Answer (0 if not answered).
	Duration time.Duration `json:"duration"`

	Result    Result `json:"result"`
	SIPStatus int    `json:"sip_status,omitempty"` // final response for unanswered calls
	Cause     string `json:"cause,omitempty"`      // e.g. "caller BYE", "callee BYE", "session timer", "dialplan: class of service"

	Codec string `json:"codec,omitempty"`
	// SRTP per leg: caller side, callee side.
	SRTPCaller bool `json:"srtp_caller"`
	SRTPCallee bool `json:"srtp_callee"`
	// MOS is a MOS-style estimate from RTCP reports; 0 means none.
	MOS      float64 `json:"mos,omitempty"`
	LossPct  float64 `json:"loss_pct,omitempty"`
	JitterMs float64 `json:"jitter_ms,omitempty"`
	// Recording names the call's recordings ("recorded call/…"), or why
	// a call the policy wanted recorded was not; "": not recorded by policy.
	Recording string `json:"recording,omitempty"`
	// Masked says the phone numbers were masked by the privacy settings.
	Masked bool `json:"masked,omitempty"`
}

// Store writes and reads records. It holds no state besides the store.
type Store struct{ db *store.DB }

// New returns a CDR store on db.
func New(db *store.DB) *Store { return &Store{db: db} }

func clip(s string) string {
	if len(s) <= maxField {
		return strings.ToValidUTF8(s, "?")
	}
	s = s[:maxField]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func key(start time.Time, id string) string {
	return fmt.Sprintf("%016x/%s", uint64(start.UnixNano()), id)
}

// Validate checks a record before it is stored.
func (r *Record) validate() error {
	if r.ID == "" || len(r.ID) > maxField || strings.ContainsAny(r.ID, "/\x00") {
		return errors.New("cdr: call ID empty, too long or containing '/'")
	}
	if r.Start.IsZero() || r.Start.Unix() < 0 || r.End.Before(r.Start) {
		return errors.New("cdr: bad start/end time")
	}
	if !r.Answer.IsZero() && (r.Answer.Before(r.Start) || r.End.Before(r.Answer)) {
		return errors.New("cdr: answer time outside the call")
	}
	switch r.Result {
	case Answered, Busy, NoAnswer, Rejected, Failed, Cancelled:
	default:
		return fmt.Errorf("cdr: unknown result %q", r.Result)
	}
	if (r.Result == Answered) != !r.Answer.IsZero() {
		return errors.New("cdr: answered calls, and only those, have an answer time")
	}
	for _, f := range []float64{r.MOS, r.LossPct, r.JitterMs} {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return errors.New("cdr: bad quality figure")
		}
	}
	return nil
}

// Write stores one record. Strings from the wire are clipped; the duration
// is computed from the times. Writing the same call twice replaces it.
func (s *Store) Write(r Record) error {
	r.From, r.To, r.Dialled, r.Direction, r.Trunk, r.Cause, r.Codec =
		clip(r.From), clip(r.To), clip(r.Dialled), clip(r.Direction), clip(r.Trunk), clip(r.Cause), clip(r.Codec)
	r.Recording = clip(r.Recording)
	if err := r.validate(); err != nil {
		return err
	}
	r.Start, r.End = r.Start.UTC(), r.End.UTC()
	r.Duration = 0
	if !r.Answer.IsZero() {
		r.Answer = r.Answer.UTC()
		r.Duration = r.End.Sub(r.Answer)
	}
	return s.db.Update(func(tx *store.Tx) error {
		if err := tx.Put(bucket, key(r.Start, r.ID), r); err != nil {
			return fmt.Errorf("cdr: write %s: %w", r.ID, err)
		}
		return nil
	})
}

// errStop ends a ForEach early.
var errStop = errors.New("stop")

// Range returns the records of calls that started in [from, to), oldest
// first, at most limit (0: 1000).
func (s *Store) Range(from, to time.Time, limit int) ([]Record, error) {
	if limit <= 0 {
		limit = 1000
	}
	lo := fmt.Sprintf("%016x/", uint64(max(from.UnixNano(), 0)))
	hi := fmt.Sprintf("%016x/", uint64(max(to.UnixNano(), 0)))
	var out []Record
	err := s.db.View(func(tx *store.Tx) error {
		// The store API has no seek: keys before lo are skipped unparsed.
		return tx.ForEach(bucket, func(k string, raw []byte) error {
			if k < lo {
				return nil
			}
			if k >= hi || len(out) >= limit {
				return errStop
			}
			var r Record
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("cdr: decode %s: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	return out, nil
}
