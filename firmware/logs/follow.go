package logs

import (
	"context"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
)

// FollowAudit forwards audit entries after sequence number after (the
// caller reads the head when it wires the sender, so nothing recorded
// from then on is missed and older history is not sent again). The audit
// log has no hook (entries commit inside other packages' transactions), so
// it reads the chain head every interval, one cheap read, and fetches only
// the entries after the last one sent when the head moved. Entries beyond a queue's worth in one interval
// count as dropped.
func (s *Sender) FollowAudit(ctx context.Context, l *audit.Log, after uint64, every time.Duration) error {
	last := after
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		h, err := l.Head()
		if err != nil {
			s.cfg.Logger.Warn("syslog: audit head", "err", err)
			continue
		}
		if h.Seq <= last {
			last = h.Seq // a restored store may move it back
			continue
		}
		if !s.on.Load() {
			last = h.Seq // off: nothing to send, nothing to catch up later
			continue
		}
		n := h.Seq - last
		from := last
		if n > uint64(len(s.q)) {
			s.dropped.Add(n - uint64(len(s.q)))
			n = uint64(len(s.q))
			from = h.Seq - n // the newest queue's worth, as before
		}
		entries, err := l.After(from, int(n))
		if err != nil {
			s.cfg.Logger.Warn("syslog: audit entries", "err", err)
			continue
		}
		for _, e := range entries {
			if e.Seq <= last || e.Seq > h.Seq {
				continue
			}
			s.Audit(AuditRecord{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Source: e.Source, Action: e.Action,
				Target: e.Target, Outcome: e.Outcome, Detail: e.Detail, Hash: e.Hash})
		}
		last = h.Seq
	}
}
