package dtmf

import (
	"bytes"
	"fmt"
	"mime"
	"strconv"
	"strings"
	"time"
)

// MaxINFOBody bounds a DTMF INFO body; real ones are under 40 bytes.
const MaxINFOBody = 512

// DefaultINFODuration is assumed when an INFO body gives no duration.
const DefaultINFODuration = 250 * time.Millisecond

// ParseINFO reads the digit of a SIP INFO request from its Content-Type and
// body. Two forms exist in the field:
//
//	application/dtmf-relay   "Signal=5\r\nDuration=160\r\n" (Cisco; ms)
//	application/dtmf         "5" (or the event code, "11" for '#')
//
// Phones add fields of their own to dtmf-relay ("Volume=10", "Event=...");
// a key that is a short token is ignored, whatever its value. Anything
// else, a repeated Signal or Duration, a value out of range, a line
// without '=', a key that is not a token or a body over MaxINFOBody is an
// error. The report has Begin and End set.
func ParseINFO(contentType string, body []byte) (Report, error) {
	if len(body) > MaxINFOBody {
		return Report{}, fmt.Errorf("%w: INFO body of %d bytes, limit %d", ErrMalformed, len(body), MaxINFOBody)
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return Report{}, fmt.Errorf("%w: content type %q: %v", ErrMalformed, contentType, err)
	}
	switch mt {
	case "application/dtmf-relay":
		return parseRelay(body)
	case "application/dtmf":
		d, err := parseSignal(string(bytes.TrimSpace(body)))
		if err != nil {
			return Report{}, err
		}
		return infoReport(d, DefaultINFODuration), nil
	}
	return Report{}, fmt.Errorf("%w: content type %q is not a DTMF body", ErrMalformed, mt)
}

func parseRelay(body []byte) (Report, error) {
	var signal rune
	dur := DefaultINFODuration
	var seenSignal, seenDuration bool
	for line := range strings.SplitSeq(string(body), "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return Report{}, fmt.Errorf("%w: dtmf-relay line without '='", ErrMalformed)
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		switch k {
		case "signal":
			if seenSignal {
				return Report{}, fmt.Errorf("%w: dtmf-relay: Signal twice", ErrMalformed)
			}
			seenSignal = true
			d, err := parseSignal(v)
			if err != nil {
				return Report{}, err
			}
			signal = d
		case "duration":
			if seenDuration {
				return Report{}, fmt.Errorf("%w: dtmf-relay: Duration twice", ErrMalformed)
			}
			seenDuration = true
			ms, err := strconv.ParseUint(v, 10, 32)
			if err != nil || ms > uint64(MaxDuration/time.Millisecond) {
				return Report{}, fmt.Errorf("%w: dtmf-relay: Duration %q not 0..%d ms", ErrMalformed, v, MaxDuration/time.Millisecond)
			}
			if ms > 0 {
				dur = time.Duration(ms) * time.Millisecond
			}
		default:
			if !token(k) {
				return Report{}, fmt.Errorf("%w: dtmf-relay: key %q is not a token", ErrMalformed, truncate(k))
			}
			// another phone's field: ignored
		}
	}
	if !seenSignal {
		return Report{}, fmt.Errorf("%w: dtmf-relay without Signal", ErrMalformed)
	}
	return infoReport(signal, dur), nil
}

// maxKey bounds the name of a dtmf-relay field.
const maxKey = 32

// token: a field name as phones write them (letters, digits, '-', '_').
func token(k string) bool {
	if k == "" || len(k) > maxKey {
		return false
	}
	for i := range len(k) {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// parseSignal accepts one DTMF character or its event code 0-15.
func parseSignal(v string) (rune, error) {
	if len(v) == 1 {
		if _, ok := Code(rune(v[0])); ok {
			return upper(rune(v[0])), nil
		}
	}
	if n, err := strconv.ParseUint(v, 10, 8); err == nil && n <= uint64(maxDigit) {
		d, _ := Digit(uint8(n))
		return d, nil
	}
	return 0, fmt.Errorf("%w: DTMF signal %q", ErrMalformed, truncate(v))
}

func upper(r rune) rune {
	if r >= 'a' && r <= 'd' {
		return r - 'a' + 'A'
	}
	return r
}

func truncate(s string) string {
	if len(s) > 16 {
		return s[:16] + "..."
	}
	return s
}

func infoReport(d rune, dur time.Duration) Report {
	code, _ := Code(d)
	return Report{Digit: d, Code: code, Begin: true, End: true, Duration: dur}
}
