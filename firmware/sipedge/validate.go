package sipedge

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Verdict is the outcome of a stage: Status 0 passes the request on;
// Status > 0 answers with that code; Drop ignores the request silently.
type Verdict struct {
	Status  int
	Reason  string
	Drop    bool
	Headers []sip.Header
}

var pass = Verdict{}

func reject(code int, reason string, h ...sip.Header) Verdict {
	return Verdict{Status: code, Reason: reason, Headers: h}
}

// ValidatorCounters count stage-2 outcomes.
type ValidatorCounters struct {
	Passed, Rejected atomic.Uint64
}

// Validator is stage 2: RFC 3261 / RFC 4475 semantics the sipgo parser does
// not enforce. It works on the parsed request; the few checks that need raw
// header text run inside the parser via NewParser's header hooks.
type Validator struct {
	contentTypes map[string]bool
	Counters     ValidatorCounters
}

// acceptTypes are the bodies the edge handles; others get 415.
var acceptTypes = []string{
	"application/sdp", "multipart/mixed", "text/plain", "message/sipfrag",
	"application/dtmf-relay", "application/pidf+xml", "application/simple-message-summary",
}

func newValidator() *Validator {
	v := &Validator{contentTypes: map[string]bool{}}
	for _, t := range acceptTypes {
		v.contentTypes[t] = true
	}
	return v
}

// duplicateSingle returns the name of a header that must appear at most
// once (RFC 3261 §7.3.1) but appears twice, in one pass without allocating.
func duplicateSingle(req *sip.Request) string {
	var seen uint8
	for _, h := range req.Headers() {
		var bit uint8
		switch n := h.Name(); {
		case strings.EqualFold(n, "From"):
			bit = 1
		case strings.EqualFold(n, "To"):
			bit = 2
		case strings.EqualFold(n, "Call-ID"):
			bit = 4
		case strings.EqualFold(n, "CSeq"):
			bit = 8
		case strings.EqualFold(n, "Max-Forwards"):
			bit = 16
		case strings.EqualFold(n, "Content-Length"):
			bit = 32
		case strings.EqualFold(n, "Content-Type"):
			bit = 64
		case strings.EqualFold(n, "Expires"):
			bit = 128
		default:
			continue
		}
		if seen&bit != 0 {
			return h.Name()
		}
		seen |= bit
	}
	return ""
}

// Check validates a parsed request.
func (v *Validator) Check(req *sip.Request) Verdict {
	vd := v.check(req)
	if vd.Status != 0 || vd.Drop {
		v.Counters.Rejected.Add(1)
	} else {
		v.Counters.Passed.Add(1)
	}
	return vd
}

func (v *Validator) check(req *sip.Request) Verdict {
	if req.SipVersion != "SIP/2.0" {
		return reject(505, "Version Not Supported")
	}
	if req.Via() == nil || req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil {
		return reject(400, "Missing Required Header")
	}
	if name := duplicateSingle(req); name != "" {
		return reject(400, "Duplicate "+name)
	}
	// sipgo upper-cases the request-line method, so compare without case.
	if !strings.EqualFold(string(req.CSeq().MethodName), string(req.Method)) {
		return reject(400, "CSeq Method Mismatch")
	}
	// A bare magic cookie claims RFC 3261 matching without an identifier
	// (RFC 4475 §3.2.1); RFC 2543 branches fall back to sipgo's old matching.
	if branch, _ := req.Via().Params.Get("branch"); branch == sip.RFC3261BranchMagicCookie {
		return reject(400, "Bad Via Branch")
	}
	if mf := req.MaxForwards(); mf != nil && *mf == 0 && req.Method != sip.ACK {
		return reject(483, "Too Many Hops")
	}
	switch strings.ToLower(req.Recipient.Scheme) {
	case "sip", "sips":
	default:
		return reject(416, "Unsupported URI Scheme")
	}
	if len(req.Recipient.Headers) > 0 {
		return reject(400, "Headers In Request-URI")
	}
	if h := firstHeader(req, "Date"); h != nil {
		if _, err := time.Parse(time.RFC1123, h.Value()); err != nil || !strings.HasSuffix(h.Value(), "GMT") {
			return reject(400, "Bad Date")
		}
	}
	if req.Method == sip.REGISTER {
		for _, u := range []*sip.Uri{&req.From().Address, &req.To().Address} {
			if s := strings.ToLower(u.Scheme); s != "sip" && s != "sips" {
				return reject(400, "AOR Must Be SIP URI")
			}
		}
	}
	var unsupported []string
	for _, h := range headersNamed(req, "Require") {
		for _, opt := range strings.Split(h.Value(), ",") {
			if opt = strings.TrimSpace(opt); opt != "" {
				unsupported = append(unsupported, opt)
			}
		}
	}
	if len(unsupported) > 0 && req.Method != sip.ACK && req.Method != sip.CANCEL {
		return reject(420, "Bad Extension", sip.NewHeader("Unsupported", strings.Join(unsupported, ", ")))
	}
	if len(req.Body()) > 0 {
		ct := req.ContentType()
		if ct == nil {
			return reject(400, "Body Without Content-Type")
		}
		mt := strings.ToLower(strings.TrimSpace(strings.SplitN(ct.Value(), ";", 2)[0]))
		if !v.contentTypes[mt] {
			return reject(415, "Unsupported Media Type", sip.NewHeader("Accept", strings.Join(acceptTypes, ", ")))
		}
	}
	return pass
}

// CheckResponse reports whether a response may be processed: a sane status
// code and no broadcast or multicast Via sent-by (RFC 4475 §3.3.? bcast).
func CheckResponse(res *sip.Response) bool {
	if res.StatusCode < 100 || res.StatusCode > 699 || res.SipVersion != "SIP/2.0" {
		return false
	}
	for _, h := range res.GetHeaders("Via") {
		via, ok := h.(*sip.ViaHeader)
		if !ok {
			return false
		}
		if ip := net.ParseIP(via.Host); ip != nil && (ip.IsMulticast() || ip.Equal(net.IPv4bcast) || ip.IsUnspecified()) {
			return false
		}
	}
	return true
}

var errContactForm = errors.New("contact with URI headers or parameters must use <>")

// NewParser returns a sipgo parser with the edge's message size limit and
// header hooks for checks that need the raw header text: a Contact
// addr-spec without <> must not carry '?' headers (RFC 4475 regbadct).
func NewParser(maxBytes int) *sip.Parser {
	// DefaultHeadersParser returns sipgo's shared map: copy it, never mutate it.
	hp := map[string]sip.HeaderParser{}
	for k, v := range sip.DefaultHeadersParser() {
		hp[k] = v
	}
	contact := hp["contact"]
	strict := func(name []byte, value string) (sip.Header, error) {
		if !strings.Contains(value, "<") && strings.Contains(value, "?") {
			return nil, errContactForm
		}
		return contact(name, value)
	}
	hp["contact"], hp["m"] = strict, strict
	p := sip.NewParser(sip.WithHeadersParsers(hp))
	p.MaxMessageLength = maxBytes
	return p
}

func parseUint32(s string) (uint32, bool) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	return uint32(n), err == nil
}
