package presence

import (
	"errors"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Package is an event package the server serves.
type Package uint8

const (
	PkgDialog   Package = iota + 1 // RFC 4235
	PkgPresence                    // RFC 3856, PIDF (RFC 3863)
	PkgMWI                         // RFC 3842
)

// AllowEvents lists the packages for Allow-Events (489 answers, OPTIONS).
const AllowEvents = "dialog, presence, message-summary"

func (p Package) String() string {
	switch p {
	case PkgDialog:
		return "dialog"
	case PkgPresence:
		return "presence"
	case PkgMWI:
		return "message-summary"
	}
	return ""
}

// ContentType is the body type of the package's NOTIFYs.
func (p Package) ContentType() string {
	switch p {
	case PkgDialog:
		return "application/dialog-info+xml"
	case PkgPresence:
		return "application/pidf+xml"
	case PkgMWI:
		return "application/simple-message-summary"
	}
	return ""
}

// Bounds on what a SUBSCRIBE may carry; beyond them the request is bad.
const (
	maxEventLen   = 256
	maxEventID    = 64
	maxAcceptLen  = 1024
	maxAcceptOpts = 32
	maxTagLen     = 128
	maxCallIDLen  = 256
	maxContactLen = 512
	maxTargetLen  = 64
)

var (
	errBadEvent   = errors.New("bad Event header")
	errNoEvent    = errors.New("missing Event header")
	errUnknownPkg = errors.New("unknown event package")
)

// isToken reports an RFC 3261 token (the characters of event names, ids
// and parameter names).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-.!%*_+`'~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// parseEvent reads an Event header value (RFC 6665 §8.2.1): a package
// name, no template (dialog.winfo and the like are not served), and its
// id parameter. Other parameters (RFC 4235's call-id, to-tag, ...) must
// be well formed and are ignored.
func parseEvent(v string) (Package, string, error) {
	if len(v) > maxEventLen {
		return 0, "", errBadEvent
	}
	parts := strings.Split(v, ";")
	name := strings.ToLower(strings.TrimSpace(parts[0]))
	if !isToken(name) {
		return 0, "", errBadEvent
	}
	id := ""
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		k, val = strings.TrimSpace(k), strings.TrimSpace(val)
		if !isToken(k) {
			return 0, "", errBadEvent
		}
		if val != "" && !isToken(val) && !isQuoted(val) {
			return 0, "", errBadEvent
		}
		if strings.EqualFold(k, "id") {
			if val == "" || len(val) > maxEventID || !isToken(val) {
				return 0, "", errBadEvent
			}
			id = val
		}
	}
	switch name {
	case "dialog":
		return PkgDialog, id, nil
	case "presence":
		return PkgPresence, id, nil
	case "message-summary":
		return PkgMWI, id, nil
	}
	return 0, "", errUnknownPkg
}

func isQuoted(s string) bool {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c == '"' {
			return false
		}
	}
	return true
}

// accepts reports whether the Accept header values allow the package's
// body type (RFC 6665 §8.1.1: absent, the package's default is meant).
// ok is false for a malformed or oversized header.
func accepts(values []string, p Package) (acceptable, ok bool) {
	if len(values) == 0 {
		return true, true
	}
	want := p.ContentType()
	major, _, _ := strings.Cut(want, "/")
	total, n := 0, 0
	for _, v := range values {
		total += len(v)
		if total > maxAcceptLen {
			return false, false
		}
		for _, r := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(r, ";")
			mt = strings.ToLower(strings.TrimSpace(mt))
			if mt == "" {
				continue // "Accept:" with nothing: nothing acceptable
			}
			if n++; n > maxAcceptOpts {
				return false, false
			}
			t, s, found := strings.Cut(mt, "/")
			if !found || !isToken(t) || !isToken(s) {
				return false, false
			}
			if mt == want || mt == "*/*" || t == major && s == "*" {
				acceptable = true
			}
		}
	}
	return acceptable, true
}

// validTarget reports a resource name the box could hold: extension
// numbers and park slots (digits, letters and the dial characters).
func validTarget(u string) bool {
	if u == "" || len(u) > maxTargetLen {
		return false
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case strings.IndexByte("*#+._-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// subscribeReq is what the server uses of a SUBSCRIBE, checked.
type subscribeReq struct {
	pkg       Package
	eventID   string
	expires   uint32 // seconds asked (hasExp false: none asked)
	hasExp    bool
	target    string // Request-URI user: the resource
	host      string // Request-URI host: the box as the phone names it
	callID    string
	fromTag   string
	toTag     string // "": a new subscription
	from      sip.Uri
	contact   sip.Uri
	userAgent string
}

// subscribeError is an answer to a SUBSCRIBE that fails the checks.
type subscribeError struct {
	code   int
	reason string
	hdrs   []sip.Header
}

func (e *subscribeError) Error() string { return strconv.Itoa(e.code) + " " + e.reason }

func bad(code int, reason string, hs ...sip.Header) *subscribeError {
	return &subscribeError{code: code, reason: reason, hdrs: hs}
}

// headerValues returns the values of name and its compact form (ASCII
// case-insensitive).
func headerValues(req *sip.Request, name, compact string) []string {
	var out []string
	for _, h := range req.Headers() {
		if n := h.Name(); strings.EqualFold(n, name) || compact != "" && strings.EqualFold(n, compact) {
			out = append(out, h.Value())
		}
	}
	return out
}

// parseSubscribe checks a SUBSCRIBE's headers (the security chain already
// validated the message as SIP). It never looks at the body.
func parseSubscribe(req *sip.Request) (subscribeReq, *subscribeError) {
	var r subscribeReq
	evs := headerValues(req, "Event", "o")
	switch {
	case len(evs) == 0:
		return r, bad(489, "Bad Event", sip.NewHeader("Allow-Events", AllowEvents))
	case len(evs) > 1:
		return r, bad(400, "Duplicate Event")
	}
	pkg, id, err := parseEvent(evs[0])
	switch {
	case errors.Is(err, errUnknownPkg):
		return r, bad(489, "Bad Event", sip.NewHeader("Allow-Events", AllowEvents))
	case err != nil:
		return r, bad(400, "Bad Event")
	}
	r.pkg, r.eventID = pkg, id
	acc, ok := accepts(headerValues(req, "Accept", ""), pkg)
	if !ok {
		return r, bad(400, "Bad Accept")
	}
	if !acc {
		return r, bad(406, "Not Acceptable", sip.NewHeader("Accept", pkg.ContentType()))
	}
	if exps := headerValues(req, "Expires", ""); len(exps) > 0 {
		n, err := strconv.ParseUint(strings.TrimSpace(exps[0]), 10, 32)
		if err != nil {
			return r, bad(400, "Bad Expires")
		}
		r.expires, r.hasExp = uint32(n), true
	}
	cid := req.CallID()
	from, to := req.From(), req.To()
	if cid == nil || from == nil || to == nil || len(cid.Value()) == 0 || len(cid.Value()) > maxCallIDLen {
		return r, bad(400, "Bad Call-ID")
	}
	r.callID = cid.Value()
	r.fromTag, _ = from.Params.Get("tag")
	r.toTag, _ = to.Params.Get("tag")
	if r.fromTag == "" || len(r.fromTag) > maxTagLen || len(r.toTag) > maxTagLen {
		return r, bad(400, "Bad Tag")
	}
	r.from = from.Address
	if s := strings.ToLower(r.from.Scheme); s != "sip" && s != "sips" {
		return r, bad(400, "Bad From")
	}
	cts := headersNamedContact(req)
	if len(cts) != 1 {
		return r, bad(400, "One Contact Required")
	}
	ct, ok := cts[0].(*sip.ContactHeader)
	if !ok || ct.Address.Wildcard {
		return r, bad(400, "Bad Contact")
	}
	if s := strings.ToLower(ct.Address.Scheme); s != "sip" && s != "sips" {
		return r, bad(400, "Bad Contact")
	}
	r.contact = ct.Address
	r.contact.Headers = nil // never echoed into the box's requests
	if len(r.contact.String()) > maxContactLen {
		return r, bad(400, "Contact Too Long")
	}
	r.target, r.host = req.Recipient.User, req.Recipient.Host
	if ua := headerValues(req, "User-Agent", ""); len(ua) > 0 {
		r.userAgent = ua[0]
	}
	return r, nil
}

func headersNamedContact(req *sip.Request) []sip.Header {
	var out []sip.Header
	for _, h := range req.Headers() {
		if n := h.Name(); strings.EqualFold(n, "Contact") || strings.EqualFold(n, "m") {
			out = append(out, h)
		}
	}
	return out
}
