package dtmf

import (
	"fmt"
	"time"
)

// Packet is one telephone-event RTP packet to send: the payload, the RTP
// timestamp (the event's start for every packet), the marker bit (first
// packet only) and when to send it relative to the first.
type Packet struct {
	Payload   []byte
	Timestamp uint32
	Marker    bool
	At        time.Duration
}

// Bounds of a generated digit.
const (
	MinDuration = 40 * time.Millisecond
	MaxDuration = 5 * time.Second
)

// Packets returns the packet sequence of one digit per RFC 4733 2.5.1:
// updates every interval with growing duration, then the end packet three
// times (the redundancy the RFC recommends), all with timestamp ts.
// clockRate is the telephone-event clock (8000 for the box's codecs),
// interval the stream's packet time (usually 20 ms), volume in -dBm0.
func Packets(digit rune, ts uint32, duration time.Duration, volume uint8, clockRate int, interval time.Duration) ([]Packet, error) {
	code, ok := Code(digit)
	if !ok {
		return nil, fmt.Errorf("dtmf: %q is not a DTMF digit", digit)
	}
	if duration < MinDuration || duration > MaxDuration {
		return nil, fmt.Errorf("dtmf: duration %v outside %v..%v", duration, MinDuration, MaxDuration)
	}
	if clockRate < 8000 || clockRate > 48000 || interval < 10*time.Millisecond || interval > 100*time.Millisecond {
		return nil, fmt.Errorf("dtmf: clock rate %d or interval %v unsupported", clockRate, interval)
	}
	if int64(duration)*int64(clockRate)/int64(time.Second) > 0xffff {
		return nil, fmt.Errorf("dtmf: duration %v does not fit one event at %d Hz", duration, clockRate)
	}
	if volume > MaxVolume {
		return nil, fmt.Errorf("dtmf: volume %d above %d", volume, MaxVolume)
	}
	units := func(d time.Duration) uint16 {
		u := int64(d) * int64(clockRate) / int64(time.Second)
		return uint16(u)
	}
	var out []Packet
	for at := time.Duration(0); at < duration; at += interval {
		ev := Event{Code: code, Volume: volume, Duration: units(at + interval)}
		out = append(out, Packet{Payload: ev.Append(nil), Timestamp: ts, Marker: at == 0, At: at})
	}
	end := Event{Code: code, End: true, Volume: volume, Duration: units(duration)}
	last := out[len(out)-1].At
	for i := range 3 {
		out = append(out, Packet{Payload: end.Append(nil), Timestamp: ts, At: last + time.Duration(i+1)*interval})
	}
	return out, nil
}

// Span is the RTP timestamp units a digit sent with Packets occupies: the
// caller's next event or audio continues at ts + Span.
func Span(duration time.Duration, clockRate int) uint32 {
	return uint32(int64(duration) * int64(clockRate) / int64(time.Second))
}
