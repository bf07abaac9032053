package logs

import (
	"context"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
)

// maxAuditCatchUp bounds the audit entries one poll queues: after a long
// outage with the sender off or a huge import, older ones count as dropped.
const maxAuditCatchUp = 1 << 16

// auditChunk is how many entries one read of the chain returns.
const auditChunk = 512

// FollowAudit forwards audit entries after sequence number after (the
// caller passes AuditResume(head) when it wires the sender: where the
// durable queue says the last run stopped, else the head, so older history
// is not sent again). The audit log has no hook (entries commit inside
// other packages' transactions), so it reads the chain head every
// interval, one cheap read, and fetches only the entries after the last
// one queued when the head moved. The position is kept with the queue's
// next commit, so a restart resumes after the last entry the queue holds.
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
			if h.Seq < last {
				last = h.Seq // a restored store moved it back
				s.sp.auditMark(last)
			}
			continue
		}
		if !s.on.Load() {
			last = h.Seq // off: nothing to send, nothing to catch up later
			s.sp.auditMark(last)
			continue
		}
		if n := h.Seq - last; n > maxAuditCatchUp {
			s.auditDrop.Add(n - maxAuditCatchUp)
			last = h.Seq - maxAuditCatchUp // the newest, as the queue bound would
		}
		for last < h.Seq && ctx.Err() == nil {
			entries, err := l.After(last, int(min(h.Seq-last, auditChunk)))
			if err != nil {
				s.cfg.Logger.Warn("syslog: audit entries", "err", err)
				break
			}
			if len(entries) == 0 {
				last = h.Seq
				break
			}
			before := last
			for _, e := range entries {
				if e.Seq <= last || e.Seq > h.Seq {
					continue
				}
				s.Audit(AuditRecord{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Source: e.Source, Action: e.Action,
					Target: e.Target, Outcome: e.Outcome, Detail: e.Detail, Hash: e.Hash})
				last = e.Seq
			}
			if last == before {
				last = h.Seq // nothing new in range: do not spin
			}
			s.sp.auditMark(last)
		}
	}
}
