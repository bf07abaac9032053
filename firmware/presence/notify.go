package presence

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/emiago/sipgo/sip"
)

// bucket is a token bucket: rate tokens per second, at most burst saved.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newBucket(rate, burst int, now func() time.Time) *bucket {
	return &bucket{rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: now(), now: now}
}

// take removes a token, or says how long until one is there.
func (b *bucket) take() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// enqueueLocked asks for a NOTIFY on b: queued once, merged while one is
// in flight (sent when it ends).
func (s *Server) enqueueLocked(b *sub) {
	if s.closed || b.gone {
		return
	}
	if b.busy {
		b.dirty = true
		return
	}
	if b.queued {
		return
	}
	b.queued = true
	s.outstanding++
	s.queue = append(s.queue, b)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// dispatch sends the queued NOTIFYs at the configured rate, each as its
// own transaction, at most MaxInFlight waiting for answers.
func (s *Server) dispatch() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		var b *sub
		if len(s.queue) > 0 {
			b = s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			if len(s.queue) == 0 {
				s.queue = nil // let the backing array go after a burst
			}
		}
		s.mu.Unlock()
		if b == nil {
			select {
			case <-s.wake:
				continue
			case <-s.ctx.Done():
				return
			}
		}
		for d := s.bucket.take(); d > 0; d = s.bucket.take() {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
		}
		select {
		case s.slots <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		s.mu.Lock()
		b.queued = false
		if b.gone {
			s.outstanding--
			s.mu.Unlock()
			<-s.slots
			continue
		}
		req := s.buildLocked(b)
		b.busy = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.slots }()
			s.deliver(b, req)
		}()
	}
}

// buildLocked makes b's next NOTIFY with the target's current state.
func (s *Server) buildLocked(b *sub) *sip.Request {
	b.cseq++
	b.version++
	var body []byte
	t := s.targets[b.target]
	switch b.pkg {
	case PkgDialog:
		body = dialogInfo(b.version-1, b.resource, s.viewLocked(b, t))
	case PkgPresence:
		st := presenceState{}
		if s.cfg.Registered != nil {
			st.registered = s.cfg.Registered(b.target)
		}
		if t != nil {
			st.dnd = t.dnd
			for _, d := range t.dialogs {
				if d.endGen == 0 {
					st.busy = true
				}
			}
		}
		body = pidf(b.resource, st)
	case PkgMWI:
		m := Mailbox{}
		if t != nil && t.mwi != nil {
			m = *t.mwi
		}
		body = messageSummary(b.resource, m)
	}
	if t != nil {
		b.sentGen = t.gen
		if b.pkg == PkgDialog {
			s.purgeLocked(b.target, t, s.cfg.now())
		}
	}
	req := sip.NewRequest(sip.NOTIFY, b.contact)
	from := &sip.FromHeader{Address: b.boxURI}
	from.Params.Add("tag", b.boxTag)
	to := &sip.ToHeader{Address: b.phoneURI}
	if b.phoneTag != "" {
		to.Params.Add("tag", b.phoneTag)
	}
	cid := sip.CallIDHeader(b.callID)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: b.cseq, MethodName: sip.NOTIFY})
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: b.host}})
	ev := b.pkg.String()
	if b.eventID != "" {
		ev += ";id=" + b.eventID
	}
	req.AppendHeader(sip.NewHeader("Event", ev))
	switch {
	case b.final != "":
		req.AppendHeader(sip.NewHeader("Subscription-State", "terminated;reason="+b.final))
	case b.unsolicited:
		req.AppendHeader(sip.NewHeader("Subscription-State", "active"))
	default:
		left := max(b.expires.Sub(s.cfg.now()), time.Second)
		req.AppendHeader(sip.NewHeader("Subscription-State", "active;expires="+secs(left)))
	}
	req.AppendHeader(sip.NewHeader("Content-Type", b.pkg.ContentType()))
	req.SetBody(body)
	req.SetDestination(b.dest)
	req.SetTransport(b.transport)
	return req
}

// viewLocked is target t's dialogs as b's subscriber may see them: ids
// made opaque, the remote party only when the subscriber may see it
// (another extension: Visibility; an outside caller calling in: unless it
// hid its number; numbers the entity dialled out: never).
func (s *Server) viewLocked(b *sub, t *target) []dialogView {
	if t == nil {
		return nil
	}
	out := make([]dialogView, 0, len(t.dialogs))
	for _, d := range t.dialogs {
		if d.endGen != 0 && d.endGen <= b.sentGen {
			continue // ended before this subscriber's last NOTIFY
		}
		v := dialogView{id: s.opaqueID(d.ev.ID), state: d.ev.State, direction: d.ev.Direction}
		if d.endGen != 0 {
			v.state = call.DialogTerminated
		}
		r := d.ev.Remote
		switch {
		case r.Private:
		case r.Extension != "":
			if validTarget(r.Extension) && (r.Extension == b.subscriber || s.cfg.Visibility.MaySee(b.subscriber, r.Extension)) {
				v.remote = "sip:" + r.Extension + "@" + hostForURI(b.host)
			}
		case r.Number != "" && d.ev.Direction == call.Recipient && validTarget(r.Number):
			v.remote = "sip:" + r.Number + "@" + hostForURI(b.host)
		}
		out = append(out, v)
	}
	return out
}

// deliver runs one NOTIFY transaction and applies its outcome (RFC 6665
// §4.2.2, RFC 5057): 2xx keeps the subscription; 481, a timeout or any
// other failure but a transient one removes it.
func (s *Server) deliver(b *sub, req *sip.Request) {
	code, err := s.transact(req)
	s.notifies.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outstanding--
	b.busy = false
	transient := code == 491 || code == 500 || code == 503 || code == 504
	ok := err == nil && code >= 200 && code < 300
	if !ok {
		s.notifyFailed.Add(1)
	}
	switch {
	case ok, transient && !b.oneShot:
		if b.dirty && !b.gone {
			b.dirty = false
			s.enqueueLocked(b)
		}
	default:
		if !b.oneShot && s.subs[b.key] == b {
			s.removeLocked(b)
			s.removed.Add(1)
		}
	}
}

var errNoFinal = errors.New("NOTIFY: no final response")

// transact sends req and waits for its final response.
func (s *Server) transact(req *sip.Request) (int, error) {
	ctx, stop := context.WithTimeout(s.ctx, s.cfg.NotifyTimeout)
	defer stop()
	tx, err := s.cfg.Sender.TransactionRequest(ctx, req)
	if err != nil {
		return 0, err
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode >= 200 {
				return res.StatusCode, nil
			}
		case <-tx.Done():
			select {
			case res := <-tx.Responses():
				if res.StatusCode >= 200 {
					return res.StatusCode, nil
				}
			default:
			}
			if err := tx.Err(); err != nil {
				return 0, err
			}
			return 0, errNoFinal
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
