package logs

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgepbx/edgepbx/firmware/audit"
)

// severityOf maps an event kind to an RFC 5424 severity. Kinds of other
// packages (dialplan., call., certs.) are matched by name so a new kind
// still gets a sensible level.
func severityOf(k Kind) int {
	switch k {
	case KindRegister, KindUnregister, KindTrunkReg:
		return sevInfo
	case KindScanner, KindInvalid:
		return sevNotice
	case KindAuthFailure, KindNonceReplay, KindBan, KindFlood, KindTrunkRegFail:
		return sevWarning
	}
	s := string(k)
	switch {
	case strings.HasSuffix(s, ".suspended"):
		return sevCrit // toll-fraud guard stopped an extension
	case strings.Contains(s, "fail") || strings.HasSuffix(s, ".burst"):
		return sevErr
	case strings.Contains(s, "denied") || strings.Contains(s, "blocked") || strings.Contains(s, "ban"):
		return sevWarning
	}
	return sevNotice
}

func auditSeverity(outcome string) int {
	switch outcome {
	case audit.OK:
		return sevNotice
	case audit.Failed:
		return sevErr
	}
	return sevWarning // denied, warning, anything else
}

// headerField makes s a valid RFC 5424 header token: printable US-ASCII
// without spaces, at most n bytes, "-" (NILVALUE) when empty.
func headerField(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < n; i++ {
		if c := s[i]; c > 32 && c < 127 {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// paramName makes n a valid SD-NAME: printable US-ASCII without '=',
// space, ']' or '"', at most 32 bytes.
func paramName(n string) string {
	b := []byte(headerField(n, 32))
	for i, c := range b {
		if c == '=' || c == ']' || c == '"' {
			b[i] = '_'
		}
	}
	return string(b)
}

// appendParam appends ` name="value"` with the RFC 5424 escapes (", \, ])
// and control characters and invalid UTF-8 replaced, so an attacker's
// User-Agent cannot forge a line or a field in the collector's files.
func appendParam(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, '=', '"')
	return append(appendClean(b, v, true), '"')
}

func appendClean(b []byte, v string, sd bool) []byte {
	for len(v) > 0 {
		r, size := utf8.DecodeRuneInString(v)
		switch {
		case r == utf8.RuneError && size <= 1, r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0, r == 0x2028, r == 0x2029:
			b = utf8.AppendRune(b, utf8.RuneError)
		case sd && (r == '"' || r == '\\' || r == ']'):
			b = append(b, '\\', byte(r))
		default:
			b = append(b, v[:size]...)
		}
		v = v[size:]
	}
	return b
}

// appendMessage formats it as an RFC 5424 message (no framing).
func (s *Sender) appendMessage(b []byte, it *item, fac int, now time.Time) []byte {
	var sev, f int
	var ts time.Time
	var msgid string
	switch it.kind {
	case itemEvent:
		sev, f, ts, msgid = severityOf(it.ev.Kind), facAuthpriv, it.ev.Time, string(it.ev.Kind)
	case itemAudit:
		sev, f, ts, msgid = auditSeverity(it.au.Outcome), facAudit, it.au.Time, "audit"
	case itemSummary:
		sev, f, ts, msgid = sevNotice, facAuthpriv, it.sum.time, it.sum.msgid
	default:
		sev, f, ts, msgid = sevNotice, facAuthpriv, now, "test"
	}
	if fac >= 0 {
		f = fac
	}
	if ts.IsZero() {
		ts = now
	}
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(f*8+sev), 10)
	b = append(b, ">1 "...)
	b = ts.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	b = append(b, ' ')
	b = append(b, s.host...)
	b = append(b, " "+AppName+" - "...)
	b = append(b, headerField(msgid, 32)...)
	b = append(b, " ["...)
	switch it.kind {
	case itemEvent:
		e := &it.ev
		b = append(b, sdEvent...)
		b = appendParam(b, "kind", string(e.Kind))
		if e.Seq != 0 {
			b = appendParam(b, "seq", strconv.FormatUint(e.Seq, 10))
		}
		b = appendParam(b, "source", e.Source)
		b = appendParam(b, "transport", e.Transport)
		b = appendParam(b, "user", e.User)
		b = appendParam(b, "display", e.Display)
		b = appendParam(b, "user_agent", e.UserAgent)
		b = appendParam(b, "reason", e.Reason)
		b = append(b, "] "...)
		b = appendClean(b, string(e.Kind), false)
		if e.Source != "" {
			b = appendClean(append(b, " from "...), e.Source, false)
		}
		if e.User != "" {
			b = appendClean(append(b, " user "...), e.User, false)
		}
		if e.Reason != "" {
			b = appendClean(append(b, ": "...), e.Reason, false)
		}
	case itemAudit:
		a := &it.au
		b = append(b, sdAudit...)
		b = appendParam(b, "seq", strconv.FormatUint(a.Seq, 10))
		b = appendParam(b, "actor", a.Actor)
		b = appendParam(b, "source", a.Source)
		b = appendParam(b, "action", a.Action)
		b = appendParam(b, "target", a.Target)
		b = appendParam(b, "outcome", a.Outcome)
		b = appendParam(b, "detail", a.Detail)
		b = appendParam(b, "hash", a.Hash)
		b = append(b, "] "...)
		b = appendClean(b, a.Actor, false)
		b = append(b, ' ')
		b = appendClean(b, a.Action, false)
		if a.Target != "" {
			b = appendClean(append(b, ' '), a.Target, false)
		}
		b = appendClean(append(b, ": "...), a.Outcome, false)
	case itemSummary:
		b = append(b, sdReport...)
		for _, p := range it.sum.params {
			b = appendParam(b, paramName(p.Name), p.Value)
		}
		b = append(b, "] "...)
		b = appendClean(b, it.sum.text, false)
	default:
		b = append(b, sdEvent...)
		b = appendParam(b, "kind", "syslog.test")
		b = append(b, "] edgepbx remote syslog test message"...)
	}
	if len(b) > maxMessage {
		// Cut inside MSG only at a rune boundary (SD ends well before:
		// its fields are clipped).
		n := maxMessage
		for n > 0 && !utf8.RuneStart(b[n]) {
			n--
		}
		b = b[:n]
	}
	return b
}
