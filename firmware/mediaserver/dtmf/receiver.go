package dtmf

import "time"

// Report is what a Receiver or Detector tells the application about one
// digit. A digit is reported once at its start (Begin) and once when it is
// known to be over (End, with its duration); a single packet can carry
// both.
type Report struct {
	Digit     rune
	Code      uint8
	Begin     bool
	End       bool
	Duration  time.Duration // known at End; at Begin what has been seen so far
	Volume    uint8         // -dBm0 (RFC 4733 only)
	Timestamp uint32        // RTP timestamp of the event's start (RFC 4733 only)
}

// ReceiverStats counts what a Receiver dropped, for the leg's counters.
type ReceiverStats struct {
	Packets    uint64
	Malformed  uint64 // not 4 bytes
	Duplicates uint64 // redundant end packets and retransmissions
	Stale      uint64 // for an event older than the current one
	NotDigit   uint64 // event codes above 15 (flash, tones)
	Conflicts  uint64 // same timestamp, different code
}

// Receiver turns the telephone-event packets of one RTP stream into
// digits. RFC 4733 senders repeat packets: every packet of one event has
// the event's start timestamp, the end packet is sent three times, and
// lost packets may be retransmitted. The Receiver reports each event once,
// keyed by its timestamp, and ignores packets of events older than the
// current one (serial-number order, so timestamp wrap is handled).
// Not safe for concurrent use: one per leg.
type Receiver struct {
	clockRate int
	have      bool
	ts        uint32 // current event's timestamp
	code      uint8
	ended     bool
	duration  uint32 // longest duration seen, in timestamp units
	// Long events (RFC 4733 2.5.1.3) continue with a new timestamp after
	// 0xFFFF units; segBase accumulates the earlier segments.
	segBase uint32
	stats   ReceiverStats
}

// NewReceiver returns a Receiver for a stream with the given RTP clock rate
// (the rate of the telephone-event rtpmap, 8000 for the box's codecs).
func NewReceiver(clockRate int) *Receiver {
	if clockRate <= 0 {
		clockRate = 8000
	}
	return &Receiver{clockRate: clockRate}
}

// Stats returns the counters.
func (r *Receiver) Stats() ReceiverStats { return r.stats }

// before reports whether a precedes b in RTP serial-number order.
func before(a, b uint32) bool { return a != b && b-a < 1<<31 }

func (r *Receiver) dur(units uint32) time.Duration {
	return time.Duration(units) * time.Second / time.Duration(r.clockRate)
}

// Packet takes the RTP timestamp and payload of one telephone-event packet
// and returns a report when it starts or ends a digit. Errors are for
// malformed payloads and change no state.
func (r *Receiver) Packet(ts uint32, payload []byte) (Report, bool, error) {
	r.stats.Packets++
	ev, err := ParseEvent(payload)
	if err != nil {
		r.stats.Malformed++
		return Report{}, false, err
	}
	digit, ok := Digit(ev.Code)
	if !ok {
		r.stats.NotDigit++
		return Report{}, false, nil
	}
	switch {
	case r.have && ts == r.ts:
		if ev.Code != r.code {
			r.stats.Conflicts++
			return Report{}, false, nil
		}
		if r.ended {
			r.stats.Duplicates++
			return Report{}, false, nil
		}
		if d := uint32(ev.Duration); d > r.duration {
			r.duration = d
		} else if !ev.End {
			r.stats.Duplicates++ // a retransmission or reordered update
			return Report{}, false, nil
		}
		if !ev.End {
			return Report{}, false, nil
		}
		r.ended = true
		return r.report(digit, ev, false, true), true, nil
	case r.have && before(ts, r.ts):
		r.stats.Stale++
		return Report{}, false, nil
	}
	// A new timestamp. If the current event was not ended and this is its
	// next segment (same code, starting where a full segment stopped), it
	// continues the same digit.
	if r.have && !r.ended && ev.Code == r.code && ts-r.ts == r.duration && r.duration >= 0xffff-uint32(r.clockRate)/10 {
		r.segBase += r.duration
		r.ts, r.duration = ts, uint32(ev.Duration)
		if ev.End {
			r.ended = true
			return r.report(digit, ev, false, true), true, nil
		}
		return Report{}, false, nil
	}
	r.have, r.ts, r.code, r.ended, r.duration, r.segBase = true, ts, ev.Code, ev.End, uint32(ev.Duration), 0
	return r.report(digit, ev, true, ev.End), true, nil
}

func (r *Receiver) report(digit rune, ev Event, begin, end bool) Report {
	return Report{
		Digit: digit, Code: ev.Code, Begin: begin, End: end,
		Duration: r.dur(r.segBase + r.duration), Volume: ev.Volume, Timestamp: r.ts,
	}
}
