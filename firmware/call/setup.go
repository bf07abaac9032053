package call

// The setup phase of a call: the caller's INVITE routed, its offer
// answered by the relay, the callee's legs placed (fork.go), the caller
// answered with an error, or withdrawn.

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// setup runs the initial INVITE: route, media, B leg, answer to A.
func (c *call) setup(reqA *sip.Request, txA sip.ServerTransaction) {
	_ = respond(txA, reqA, 100, "Trying")
	from, to, cid, cseq := reqA.From(), reqA.To(), reqA.CallID(), reqA.CSeq()
	a := &leg{side: media.A, callID: cid.Value(), localTag: newTag(),
		local: to.Address, remote: from.Address, target: from.Address,
		dest: reqA.Source(), transport: strings.ToLower(reqA.Transport()),
		remoteCSeq: cseq.SeqNo, policy: c.b.cfg.Directory.Policy(c.caller), sid: randSession()}
	a.remoteTag, _ = from.Params.Get("tag")
	if ct := reqA.Contact(); ct != nil {
		a.target = ct.Address
	}
	c.legs[media.A] = a
	c.addKey(dialogKey(a.callID, a.localTag), a)
	txA.OnCancel(func(*sip.Request) { c.cancelByCaller() })

	if c.caller.Extension != "" {
		c.rec.From = c.caller.Extension
	} else {
		c.rec.From = callerNumber(from.Address.User)
		c.rec.Trunk = c.caller.Trunk
	}
	var (
		dec   dialplan.Decision
		lease *dialplan.Lease
		err   error
	)
	dialled := reqA.Recipient.User
	if c.caller.Extension != "" {
		dec, lease, err = c.b.cfg.Plan.RouteOutbound(c.caller.Extension, dialled)
	} else {
		dec, lease, err = c.b.cfg.Plan.RouteInbound(c.caller.Trunk, dialled)
	}
	c.rec.Dialled = dec.Dialled
	if err != nil {
		c.b.rejected.Add(1)
		c.failA(txA, reqA, dialplan.SIPStatus(err), cdr.Rejected, err.Error())
		return
	}
	c.lease = lease
	c.rec.To, c.rec.Direction = dec.Target, string(dec.Kind)
	if dec.Trunk != "" {
		c.rec.Trunk = dec.Trunk
	}
	if dec.Kind == dialplan.KindApp && strings.HasPrefix(dec.Target, PickupApp) {
		c.pickup(reqA, txA, strings.TrimPrefix(dec.Target, PickupApp))
		return
	}
	if dec.Kind == dialplan.KindApp && strings.HasPrefix(dec.Target, RetrieveApp) {
		c.retrieve(reqA, txA, strings.TrimPrefix(dec.Target, RetrieveApp))
		return
	}
	if dec.Kind == dialplan.KindApp && strings.HasPrefix(dec.Target, ParkApp) { // park is a transfer to the code
		c.failA(txA, reqA, 404, cdr.Rejected, "park: transfer a call to the park code")
		return
	}
	if dec.Kind == dialplan.KindApp {
		c.answerApp(reqA, txA, dec.Target, "")
		return
	}

	if dec.Kind == dialplan.KindFeature {
		c.confirmFeature(reqA, txA, dec.Target)
		return
	}

	// Where the B leg goes: every live contact of an extension at once
	// (forking), or the trunk.
	var tgts []Target
	var calleeID Identity
	var ids []Identity
	var as []string
	var ring time.Duration
	if h := c.b.cfg.Hunter; h != nil {
		c.hunt = h.Hunt(c.caller.Extension, dec)
	}
	switch {
	case c.hunt != nil: // hunt.go: forwarding, follow-me, groups
		var ok bool
		var code int
		if tgts, ids, as, ring, code, ok = c.nextStage(Outcome{First: true}); !ok {
			if c.huntApp != "" && c.b.cfg.Apps != nil {
				// Nothing rang yet (DND or unreachable forwarded to
				// voicemail): the application answers the caller.
				c.rec.To, c.rec.Direction = c.huntApp, string(dialplan.KindApp)
				c.answerApp(reqA, txA, c.huntApp, c.huntReason)
				return
			}
			if code == 0 {
				code = 480
			}
			code, result := mapFailure(code)
			c.failA(txA, reqA, code, result, "hunt: no destination rung")
			return
		}
		calleeID = ids[0]
	case dec.Kind == dialplan.KindInternal, dec.Kind == dialplan.KindInbound:
		tgts = c.b.cfg.Directory.Contacts(dec.Target)
		if len(tgts) == 0 && c.appFallback(reqA, txA, dec.Target) {
			return
		}
		if len(tgts) == 0 {
			c.failA(txA, reqA, 480, cdr.Failed, "callee not registered")
			return
		}
		if len(tgts) > MaxBranches {
			tgts = tgts[:MaxBranches]
		}
		calleeID = Identity{Extension: dec.Target}
	default:
		t, ok := c.b.cfg.Directory.Trunk(dec.Trunk)
		if !ok {
			c.failA(txA, reqA, 503, cdr.Failed, "trunk "+dec.Trunk+" unknown")
			return
		}
		// '#' is not allowed unescaped in a SIP URI user part
		// (RFC 3261 §25.1); '*' is. Dial plan targets hold only
		// digits, '+', and the '*'/'#' codes a route allows.
		t.URI.User = strings.ReplaceAll(dec.Target, "#", "%23")
		tgts, calleeID = []Target{t}, Identity{Trunk: dec.Trunk}
	}

	if !c.sessionInterval(reqA, txA) {
		return
	}

	// Media: the box answers A's offer and offers to B.
	_, remA, err := media.ParseSDP(reqA.Body())
	if err != nil {
		c.failA(txA, reqA, 488, cdr.Failed, "caller SDP: "+err.Error())
		return
	}
	a.peer = remA
	if c.m, err = c.b.cfg.Relay.NewCall(c.id); err != nil {
		c.failA(txA, reqA, 503, cdr.Failed, "media: "+err.Error())
		return
	}
	c.m.OnDTLSFailure(c.dtlsFailed)
	ctx := c.b.ctx
	if unproven(c.caller, reqA.Transport()) {
		c.m.Withhold(media.A) // until the caller echoes the box's To tag
	}
	a.ver = 1
	if a.answered, err = c.m.Answer(ctx, media.A, remA, a.policy, a.sid, a.ver); err != nil {
		c.failA(txA, reqA, 488, cdr.Failed, "caller media: "+err.Error())
		return
	}
	c.callee = calleeID
	c.observeSetup(reqA)
	if mf := reqA.MaxForwards(); mf != nil && mf.Val() <= 1 {
		c.failA(txA, reqA, 483, cdr.Failed, "too many hops")
		return
	}
	f := &fork{c: c, reqA: reqA, remA: remA, ch: make(chan branchEvent, 16), quit: make(chan struct{}), ring: ring}
	host, _, _ := net.SplitHostPort(c.b.cfg.Contact)
	c.shown = c.presentation(reqA, host)
	for len(ids) < len(tgts) {
		ids, as = append(ids, calleeID), append(as, "")
	}
	if err := f.addBranches(tgts, ids, as); err != nil {
		c.failA(txA, reqA, 500, cdr.Failed, "offer: "+err.Error())
		f.stop()
		return
	}
	for _, br := range f.branches {
		if err := f.send(br, f.newInvite(br)); err != nil {
			br.done, br.final = true, 503
		}
	}
	f.run(txA)
}

// sessionInterval takes the session timer the caller asked for (RFC 4028
// §9); false: it was too small and the caller got 422.
func (c *call) sessionInterval(reqA *sip.Request, txA sip.ServerTransaction) bool {
	h := reqA.GetHeader("Session-Expires")
	if h == nil {
		return true
	}
	v, ok := parseDelta(h.Value())
	if !ok {
		return true
	}
	if v < c.b.minSE {
		c.failA(txA, reqA, 422, cdr.Failed, "session interval too small",
			sip.NewHeader("Min-SE", strconv.Itoa(int(c.b.minSE/time.Second))))
		return false
	}
	if v < c.se {
		c.se = v
	}
	return true
}

func (c *call) cancelByCaller() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancelled || c.state != stSetup {
		return
	}
	c.cancelled = true
	close(c.cancel)
}

func (c *call) isCancelled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cancelled
}

// negotiated records the codec an offer/answer exchange chose: the CDR
// names what the call sent, not the offer's first choice. An exchange
// without a voice format (a stream refused) changes nothing.
func (c *call) negotiated(offer, answer media.Remote) {
	codec := media.Negotiated(offer, answer)
	if codec == "" {
		return
	}
	c.mu.Lock()
	if c.state != stEnded {
		c.rec.Codec = codec
	}
	c.mu.Unlock()
}

// failA gives the caller a final error answer and ends the call.
func (c *call) failA(txA sip.ServerTransaction, reqA *sip.Request, code int, result cdr.Result, cause string, hs ...sip.Header) {
	if !c.isCancelled() {
		res := c.responseToA(reqA, code, nil)
		for _, h := range hs {
			res.AppendHeader(h)
		}
		_ = txA.Respond(res)
	} else {
		result, cause = cdr.Cancelled, c.cancelCause(txA, reqA)
	}
	c.finish(result, code, cause)
}

// withdraw ends a ringing call on the box's own initiative (the caller
// turned it into a transfer, the box shuts down): CANCEL to the callee,
// 487 to the caller, cause in the record.
func (c *call) withdraw(cause string) {
	c.mu.Lock()
	if !c.cancelled && c.state == stSetup {
		c.withdrawn = cause
	}
	c.mu.Unlock()
	c.cancelByCaller()
}

// cancelCause answers a withdrawn caller (a caller that sent CANCEL got
// its 487 from the transaction layer) and names the cause.
func (c *call) cancelCause(txA sip.ServerTransaction, reqA *sip.Request) string {
	c.mu.Lock()
	w := c.withdrawn
	c.mu.Unlock()
	if w == "" {
		return "caller CANCEL"
	}
	_ = txA.Respond(c.responseToA(reqA, 487, nil))
	return w
}

// authorize answers the trunk's digest challenge in res on inv with the
// trunk's credentials (RFC 3261 §22.2, §22.3). The password is never
// logged or put in an error.
func (c *call) authorize(inv *sip.Request, res *sip.Response, trunk string) error {
	user, pass, ok := c.b.cfg.Directory.Credentials(trunk)
	if !ok {
		return errors.New("no credentials for trunk " + trunk)
	}
	chName, authName := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		chName, authName = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := res.GetHeader(chName)
	if h == nil {
		return errors.New(strconv.Itoa(res.StatusCode) + " without " + chName)
	}
	if len(h.Value()) > maxChallenge {
		return errors.New(chName + " too long")
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return fmt.Errorf("%s: %w", chName, err)
	}
	chal.Algorithm = strings.ToUpper(chal.Algorithm)
	cred, err := digest.Digest(chal, digest.Options{Method: string(sip.INVITE), URI: inv.Recipient.Addr(), Username: user, Password: pass})
	if err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	inv.AppendHeader(sip.NewHeader(authName, cred.String()))
	return nil
}

// maxChallenge bounds a trunk's challenge header (untrusted input).
const maxChallenge = 2048

// callerNumber keeps a caller number from a trunk only if it is a number.
func callerNumber(u string) string {
	if n, ok := dialplan.CallerID(u); ok {
		return n
	}
	return "anonymous"
}
