package media

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/pion/rtcp"
)

// legStats counts per leg; the reactor loop updates it lock-free.
type legStats struct {
	received, bytes, sent                                         atomic.Uint64
	droppedSource, droppedCrypto, droppedMalformed, droppedNoPeer atomic.Uint64
	readErrors, writeErrors                                       atomic.Uint64
	handshakes, handshakeFailures                                 atomic.Uint64 // DTLS
	injected, injectErrors                                        atomic.Uint64 // the box's own audio (inject.go)

	mu        sync.Mutex // guards the RTCP quality figures (RTCP is rare)
	reports   int
	lostSum   float64 // sum of fraction-lost samples
	jitterMax uint32  // RTP timestamp units
}

// noteRTCP keeps the reception quality the peer reports about what the box
// sent it (receiver report blocks of SR/RR packets).
func (s *legStats) noteRTCP(plain []byte) {
	pkts, err := rtcp.Unmarshal(plain)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range pkts {
		var rr []rtcp.ReceptionReport
		switch p := p.(type) {
		case *rtcp.ReceiverReport:
			rr = p.Reports
		case *rtcp.SenderReport:
			rr = p.Reports
		}
		for _, r := range rr {
			s.reports++
			s.lostSum += float64(r.FractionLost) / 256
			s.jitterMax = max(s.jitterMax, r.Jitter)
		}
	}
}

// LegStats is a snapshot of one leg's counters.
type LegStats struct {
	Received, Bytes, Sent uint64
	// Drops by reason: wrong source address/port, SRTP auth or replay
	// failure (or DTLS not finished), not RTP/RTCP/DTLS or bad size, other
	// leg without a peer yet.
	DroppedSource, DroppedCrypto, DroppedMalformed, DroppedNoPeer uint64
	WriteErrors                                                   uint64
	// DTLS handshakes started on this leg (a re-offer that keeps the
	// association starts none) and those that failed.
	Handshakes, HandshakeFailures uint64
	// Packets of the box's own audio sent to this leg (Inject) and those
	// that could not go out (no peer or keys yet, socket full).
	Injected, InjectErrors uint64
	// RTCP reception reports from this leg's peer; MOS is 0 without any.
	Reports  int
	LossPct  float64
	JitterMs float64
	MOS      float64
}

// Stats is a snapshot of a call's media, for the CDR and metrics.
type Stats struct {
	Legs [2]LegStats
}

// MOS is the lower of the two legs' estimates (0 when no leg reported).
func (s Stats) MOS() float64 {
	a, b := s.Legs[0].MOS, s.Legs[1].MOS
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return math.Min(a, b)
}

// Stats returns the call's counters so far.
func (c *Call) Stats() Stats {
	var out Stats
	for i, l := range c.legs {
		s := &l.stats
		ls := LegStats{
			Received: s.received.Load(), Bytes: s.bytes.Load(), Sent: s.sent.Load(),
			DroppedSource: s.droppedSource.Load(), DroppedCrypto: s.droppedCrypto.Load(),
			DroppedMalformed: s.droppedMalformed.Load(), DroppedNoPeer: s.droppedNoPeer.Load(),
			WriteErrors: s.writeErrors.Load(),
			Handshakes:  s.handshakes.Load(), HandshakeFailures: s.handshakeFailures.Load(),
			Injected: s.injected.Load(), InjectErrors: s.injectErrors.Load(),
		}
		s.mu.Lock()
		if s.reports > 0 {
			ls.Reports = s.reports
			ls.LossPct = 100 * s.lostSum / float64(s.reports)
			ls.JitterMs = float64(s.jitterMax) / 8 // 8 kHz audio clock
			ls.MOS = EstimateMOS(ls.LossPct, ls.JitterMs)
		}
		s.mu.Unlock()
		out.Legs[i] = ls
	}
	return out
}

// EstimateMOS maps packet loss and jitter to a MOS with a simplified ITU-T
// G.107 E-model for G.711 (jitter buffer delay ≈ 2×jitter + 20 ms codec and
// network delay). It is an estimate for trends, not a measurement.
func EstimateMOS(lossPct, jitterMs float64) float64 {
	d := 2*jitterMs + 20
	id := 0.024 * d
	if d > 177.3 {
		id += 0.11 * (d - 177.3)
	}
	// G.711 with packet loss concealment: Ie = 0, Bpl = 25.1 (G.113).
	ie := 95 * lossPct / (lossPct + 25.1)
	r := 93.2 - id - ie
	switch {
	case r <= 0:
		return 1
	case r >= 100:
		return 4.5
	}
	return 1 + 0.035*r + 7e-6*r*(r-60)*(100-r)
}

// Totals are the relay's media figures since it was made, over every call
// (closed and live), for metrics.
type Totals struct {
	Calls                                                         int // live calls
	Received, Sent, Bytes                                         uint64
	DroppedSource, DroppedCrypto, DroppedMalformed, DroppedNoPeer uint64
	WriteErrors                                                   uint64
	Handshakes, HandshakeFailures                                 uint64
	// RTCP reception reports from the peers and the sum of the fraction
	// lost they reported (0..1 each): LossSum/Reports is the mean loss.
	Reports int
	LossSum float64
}

func (t *Totals) add(s Stats) {
	for _, l := range s.Legs {
		t.Received += l.Received
		t.Sent += l.Sent
		t.Bytes += l.Bytes
		t.DroppedSource += l.DroppedSource
		t.DroppedCrypto += l.DroppedCrypto
		t.DroppedMalformed += l.DroppedMalformed
		t.DroppedNoPeer += l.DroppedNoPeer
		t.WriteErrors += l.WriteErrors
		t.Handshakes += l.Handshakes
		t.HandshakeFailures += l.HandshakeFailures
		t.Reports += l.Reports
		t.LossSum += l.LossPct / 100 * float64(l.Reports)
	}
}

// Totals sums the closed calls' final figures and the live calls' figures
// so far. Its cost grows with the live calls, not with the packets.
func (r *Relay) Totals() Totals {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.done
	for c := range r.live {
		t.add(c.Stats())
	}
	t.Calls = len(r.live)
	return t
}

// retire folds a closed call's final figures into the relay's totals.
func (r *Relay) retire(c *Call) {
	s := c.Stats()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.live[c]; ok {
		delete(r.live, c)
		r.done.add(s)
	}
}
