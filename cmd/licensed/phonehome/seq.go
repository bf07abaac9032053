package phonehome

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgepbx/edgepbx/firmware/license"
)

// bSeqs holds, per licence (sub-bucket) and box (key: install id and
// hardware fingerprint, so a cloned disk on other hardware, already flagged
// as a clone, does not also read as a rollback), the highest
// check-in counter the box sent. The box persists its counter before each
// request, so a counter at or below this one means its licence state was
// rolled back (an older database restored) or deleted: the evidence the
// box's own disk cannot keep.
const bSeqs = "seqs"

// SeqLog is what the server keeps per box for the rollback check.
type SeqLog struct {
	InstallID   string        `json:"install"`
	Fingerprint string        `json:"hw"`
	Serial      string        `json:"serial"`
	Last        uint64        `json:"last"` // highest counter seen
	Time        time.Time     `json:"time"` // when it was seen
	Flag        *RollbackFlag `json:"flag,omitempty"`
}

// RollbackFlag says a box sent a counter that did not move forward. It
// stays set, and every answer to that box says so, until the vendor clears it.
type RollbackFlag struct {
	Sent   uint64    `json:"sent"`
	Last   uint64    `json:"last"`
	Reason string    `json:"reason"`
	Time   time.Time `json:"time"`
}

// checkSeq records the request's counter in tx and puts the verdict into
// resp. Boxes that send no counter (older firmware) are not judged.
func (s *Server) checkSeq(tx Tx, ev *events, req *license.Request, now time.Time, resp *license.Response) error {
	if req.Seq == 0 {
		return nil
	}
	key := req.InstallID + " " + req.Fingerprint
	var l SeqLog
	found, err := getJSON(tx, tSeqs, req.LicenceID, key, &l)
	if err != nil {
		return err
	}
	if !found {
		n, err := tx.Count(tSeqs, req.LicenceID)
		if err != nil {
			return err
		}
		if n >= maxAnchorBoxes {
			ev.add(func() {
				s.log.Warn("check-in counter not kept: too many installs for licence", "licence", req.LicenceID)
			})
			return nil
		}
	}
	resp.LastSeq = l.Last
	if l.Last > 0 && req.Seq <= l.Last && l.Flag == nil {
		l.Flag = &RollbackFlag{Sent: req.Seq, Last: l.Last, Time: now,
			Reason: fmt.Sprintf("check-in counter %d sent, %d seen on %s: the box's licence state is older than one it sent before", req.Seq, l.Last, l.Time.Format(time.DateOnly))}
		sent, last := req.Seq, l.Last
		ev.add(func() {
			s.log.Warn("licence state rollback", "licence", req.LicenceID, "install", req.InstallID, "sent", sent, "last", last)
			s.metrics.flags.WithLabelValues("rollback").Inc()
		})
	}
	if req.Seq > l.Last {
		l.Last, l.Time = req.Seq, now
	}
	l.InstallID, l.Fingerprint, l.Serial = req.InstallID, req.Fingerprint, req.Serial
	if l.Flag != nil {
		resp.StateRollback, resp.RollbackReason = true, l.Flag.Reason
	}
	return putJSON(tx, tSeqs, req.LicenceID, key, l)
}

// Seqs lists the check-in counters kept for each box of a licence.
func (s *Server) Seqs(id string) ([]SeqLog, error) {
	out := []SeqLog{}
	err := s.store.View(context.Background(), func(tx Tx) error {
		return tx.List(tSeqs, id, func(k string, v []byte) error {
			var l SeqLog
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("decode seq %s/%s: %w", id, k, err)
			}
			out = append(out, l)
			return nil
		})
	})
	return out, err
}

// ClearRollbackFlag clears the rollback flags of an install once the vendor
// has looked into them (a backup restored on purpose); the counters stay.
func (s *Server) ClearRollbackFlag(id, install string) error {
	return s.store.Update(context.Background(), id, func(tx Tx) error {
		type rec struct {
			k string
			l SeqLog
		}
		var flagged []rec
		err := tx.List(tSeqs, id, func(k string, v []byte) error {
			var l SeqLog
			if err := json.Unmarshal(v, &l); err != nil {
				return err
			}
			if l.InstallID == install && l.Flag != nil {
				flagged = append(flagged, rec{k, l})
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(flagged) == 0 {
			return errors.New("licensed: that box is not flagged")
		}
		for _, r := range flagged {
			r.l.Flag = nil
			if err := putJSON(tx, tSeqs, id, r.k, r.l); err != nil {
				return err
			}
		}
		return nil
	})
}
