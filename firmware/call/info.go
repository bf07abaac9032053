package call

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// maxInfoBody bounds an INFO body (a DTMF body is a few bytes).
const maxInfoBody = 256

// dtmfInfoTypes are the INFO bodies the box takes or passes on: DTMF
// (application/dtmf-relay, the de-facto format, and application/dtmf).
// Nothing else crosses the B2BUA: INFO is not a tunnel between parties.
var dtmfInfoTypes = []string{"application/dtmf-relay", "application/dtmf"}

// OnInfo handles an in-dialog INFO (RFC 6086): a DTMF key for an
// application call, passed to the other leg of a bridged call.
func (b *B2BUA) OnInfo(req *sip.Request, tx sip.ServerTransaction) {
	if !b.tracked(func() { b.onInfo(req, tx) }) {
		respond(tx, req, 503, "Service Unavailable")
	}
}

func (b *B2BUA) onInfo(req *sip.Request, tx sip.ServerTransaction) {
	r, ok := b.lookup(req)
	if !ok || !r.current() {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = strings.ToLower(strings.TrimSpace(strings.SplitN(h.Value(), ";", 2)[0]))
	}
	if len(req.Body()) == 0 {
		respond(tx, req, 200, "OK") // a keep-alive INFO
		return
	}
	known := false
	for _, t := range dtmfInfoTypes {
		known = known || ct == t
	}
	if !known {
		respond(tx, req, 415, "Unsupported Media Type", sip.NewHeader("Accept", strings.Join(dtmfInfoTypes, ", ")))
		return
	}
	if len(req.Body()) > maxInfoBody {
		respond(tx, req, 413, "Request Entity Too Large")
		return
	}
	key, err := parseInfoDTMF(ct, req.Body())
	if err != nil {
		respond(tx, req, 400, "Bad Request")
		return
	}
	c := r.c
	c.mu.Lock()
	up, ep := c.state == stConfirmed, c.app
	var o *leg
	if ep == nil {
		o = c.legs[1-r.side]
	}
	c.mu.Unlock()
	if !up {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	if ep != nil {
		// Answer first: the key may end the application, and its BYE
		// must not overtake this INFO's 200.
		ep.infoMu.Lock()
		respond(tx, req, 200, "OK")
		ep.digit(Digit{Key: key, Via: "info"})
		ep.infoMu.Unlock()
		return
	}
	if o == nil {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	// Passed on as the box's own INFO: the key and duration only,
	// re-encoded, so nothing else of the sender's body crosses.
	fwd := c.newRequest(o, sip.INFO, nil)
	body := []byte("Signal=" + string(key) + "\r\nDuration=160\r\n")
	fwd.AppendHeader(sip.NewHeader("Content-Type", "application/dtmf-relay"))
	fwd.SetBody(body)
	res, err := c.transact(o, fwd)
	switch {
	case err != nil:
		respond(tx, req, 408, "Request Timeout")
	case res.StatusCode < 300:
		respond(tx, req, 200, "OK")
	default:
		code, _ := mapFailure(res.StatusCode)
		respond(tx, req, code, reasonPhrase(code))
	}
}
