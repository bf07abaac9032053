package phonehome

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/edgepbx/edgepbx/firmware/license"
)

const (
	// bAnchors holds, per licence (sub-bucket) and install id (key), the
	// audit chain heads that box sent.
	bAnchors = "anchors"
	// MaxAnchors bounds the anchors kept per box: over a year of daily
	// check-ins with a changing log.
	MaxAnchors = 400
	// maxAnchorBoxes bounds the installs recorded per licence, so a
	// leaked licence id cannot grow the store without end.
	maxAnchorBoxes = 64
)

// Anchor is one audit chain head received from a box.
type Anchor struct {
	Seq  uint64    `json:"seq"`
	Hash string    `json:"hash"` // hex: the first 32 hex digits of the audit head hash
	Time time.Time `json:"time"` // first received
	Seen time.Time `json:"seen"` // last received (a quiet log sends the same head daily)
}

// AuditFlag says a box's audit log stopped matching its anchors. It stays
// set, and every answer to that box says so, until the vendor clears it.
type AuditFlag struct {
	Seq    uint64    `json:"seq"` // the anchored entry that no longer matches
	Reason string    `json:"reason"`
	Time   time.Time `json:"time"`
}

// AnchorLog is what the server keeps per box.
type AnchorLog struct {
	InstallID string     `json:"install"`
	Serial    string     `json:"serial"`
	Anchors   []Anchor   `json:"anchors"` // oldest first, at most MaxAnchors
	Flag      *AuditFlag `json:"flag,omitempty"`
	// Cleared are flags the vendor cleared (newest last, at most
	// maxCleared), with the anchors they were raised against.
	Cleared []ClearedFlag `json:"cleared,omitempty"`
}

// ClearedFlag is a cleared AuditFlag with the anchors it judged against.
type ClearedFlag struct {
	AuditFlag
	Cleared time.Time `json:"cleared"`
	Anchors []Anchor  `json:"anchors"`
}

// maxCleared bounds the cleared flags kept per box.
const maxCleared = 8

// check compares a new anchor with the kept ones: the sequence number must
// not go backwards, and a sequence number anchored before must come with
// the same hash.
func (l *AnchorLog) check(a Anchor) *AuditFlag {
	if n := len(l.Anchors); n > 0 && a.Seq < l.Anchors[n-1].Seq {
		last := l.Anchors[n-1].Seq
		return &AuditFlag{Seq: last, Reason: fmt.Sprintf("log cut short: head at seq %d, seq %d was anchored before", a.Seq, last)}
	}
	for _, old := range l.Anchors {
		if old.Seq == a.Seq && old.Hash != a.Hash {
			return &AuditFlag{Seq: a.Seq, Reason: fmt.Sprintf("log rewritten: entry %d has another hash than anchored on %s", a.Seq, old.Time.Format(time.DateOnly))}
		}
	}
	return nil
}

// checkPrev compares an entry anchored before, as the box's log holds it
// now (Request.AuditPrev), with what was anchored: a log rewritten and then
// grown past its old head has a new head the kept anchors cannot judge,
// but its old entries no longer match.
func (l *AnchorLog) checkPrev(p Anchor) *AuditFlag {
	for _, old := range l.Anchors {
		if old.Seq == p.Seq && old.Hash != p.Hash {
			return &AuditFlag{Seq: p.Seq, Reason: fmt.Sprintf("log rewritten: entry %d has another hash than anchored on %s", p.Seq, old.Time.Format(time.DateOnly))}
		}
	}
	return nil
}

// add appends a (or refreshes the last anchor when the head did not move)
// and keeps the newest MaxAnchors.
func (l *AnchorLog) add(a Anchor) {
	if n := len(l.Anchors); n > 0 && l.Anchors[n-1].Seq == a.Seq && l.Anchors[n-1].Hash == a.Hash {
		l.Anchors[n-1].Seen = a.Seen
		return
	}
	l.Anchors = append(l.Anchors, a)
	if over := len(l.Anchors) - MaxAnchors; over > 0 {
		l.Anchors = slices.Delete(l.Anchors, 0, over)
	}
}

// anchor records the request's audit anchor in tx and puts the verdict
// into resp. Only known licences keep anchors.
func (s *Server) anchor(tx Tx, ev *events, req *license.Request, now time.Time, resp *license.Response) error {
	if req.Audit == "" {
		return nil
	}
	wa, err := license.ParseAnchor(req.Audit)
	if err != nil {
		return fmt.Errorf("audit anchor: %w", err) // Validate passed: cannot happen
	}
	var l AnchorLog
	found, err := getJSON(tx, tAnchors, req.LicenceID, req.InstallID, &l)
	if err != nil {
		return err
	}
	if !found {
		n, err := tx.Count(tAnchors, req.LicenceID)
		if err != nil {
			return err
		}
		if n >= maxAnchorBoxes {
			ev.add(func() { s.log.Warn("audit anchor not kept: too many installs for licence", "licence", req.LicenceID) })
			return nil
		}
	}
	a := Anchor{Seq: wa.Seq, Hash: wa.HashHex(), Time: now, Seen: now}
	f := l.check(a)
	if f == nil && req.AuditPrev != "" {
		pa, err := license.ParseAnchor(req.AuditPrev)
		if err != nil {
			return fmt.Errorf("audit anchor: %w", err) // Validate passed: cannot happen
		}
		f = l.checkPrev(Anchor{Seq: pa.Seq, Hash: pa.HashHex()})
	}
	if f != nil && l.Flag == nil {
		f.Time = now
		l.Flag = f
		ev.add(func() {
			s.log.Warn("audit chain anchor mismatch", "licence", req.LicenceID, "install", req.InstallID, "seq", f.Seq, "reason", f.Reason)
			s.metrics.flags.WithLabelValues("audit").Inc()
		})
	}
	l.InstallID, l.Serial = req.InstallID, req.Serial
	l.add(a)
	if l.Flag != nil {
		resp.AuditRollback, resp.AuditSeq, resp.AuditReason = true, l.Flag.Seq, l.Flag.Reason
	}
	return putJSON(tx, tAnchors, req.LicenceID, req.InstallID, l)
}

// Anchors lists the audit anchors kept for each box of a licence, so a
// vendor or auditor can compare an exported log's head with them.
func (s *Server) Anchors(id string) ([]AnchorLog, error) {
	out := []AnchorLog{}
	err := s.store.View(context.Background(), func(tx Tx) error {
		return tx.List(tAnchors, id, func(k string, v []byte) error {
			var l AnchorLog
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("decode anchors %s/%s: %w", id, k, err)
			}
			out = append(out, l)
			return nil
		})
	})
	return out, err
}

// ClearAuditFlag clears a box's audit flag once the vendor has looked into
// it; the anchors stay, and the next check-in is compared with them again.
func (s *Server) ClearAuditFlag(id, install string) error {
	return s.store.Update(context.Background(), id, func(tx Tx) error {
		var l AnchorLog
		found, err := getJSON(tx, tAnchors, id, install, &l)
		if err != nil {
			return err
		}
		if !found {
			return errors.New("licensed: no anchors for that box")
		}
		if l.Flag == nil {
			return errors.New("licensed: that box is not flagged")
		}
		// Clearing accepts the log as it is now as the new baseline: the
		// old anchors go with the flag into the record, so the rewritten
		// entries are not flagged again on the next check-in.
		l.Cleared = append(l.Cleared, ClearedFlag{AuditFlag: *l.Flag, Cleared: s.now(), Anchors: l.Anchors})
		if over := len(l.Cleared) - maxCleared; over > 0 {
			l.Cleared = slices.Delete(l.Cleared, 0, over)
		}
		l.Flag, l.Anchors = nil, nil
		return putJSON(tx, tAnchors, id, install, l)
	})
}
