package call

// Application calls: the box answers the caller itself (voicemail,
// conference, IVR) when the dial plan says KindApp. The caller's leg is
// anchored by the relay exactly as for a bridged call (SDES or DTLS-SRTP,
// pinholes, source checks, UDP proof); the relay's other leg goes to a
// plain RTP socket of the box on the media address (appmedia.go), where
// the application hears and speaks decoded audio. There is no B leg.

import (
	"context"
	"errors"
	"net/netip"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// App is an application of the box that talks to a caller. Run returns
// when it is done (the box then hangs up) or when ctx ends (the caller
// hung up, the session timer expired, the box shuts down).
type App interface {
	Run(ctx context.Context, leg Leg) error
}

// Apps opens the application a KindApp decision names ("<app>/<arg>").
type Apps interface {
	// Open returns the application app with argument arg for caller. An
	// error wrapping ErrNoApp is answered 404, any other error 403 or 500
	// (ErrAppRefused: 403).
	Open(app, arg string, caller Caller) (App, error)
}

// Errors Apps.Open may wrap.
var (
	ErrNoApp      = errors.New("call: no such application")
	ErrAppRefused = errors.New("call: application refused the caller")
)

// Caller is who called an application, as the edge established it.
type Caller struct {
	Identity
	// Source is the address the INVITE came from: the one a guard
	// charges for wrong PINs (a digest-authenticated extension, a trunk
	// proven by the ACK, or TCP/TLS; never a forged UDP source that
	// gets no media).
	Source netip.Addr
	// Number is the caller's number for the application (extension, or
	// the trunk caller's number, "anonymous" if it is not one).
	Number string
	// Reason is why the call reached the application: "" (dialled),
	// "unavailable" (the callee has no phone registered), or what the
	// dial plan put in the target.
	Reason string
}

// Digit is one DTMF key an application received.
type Digit struct {
	Key byte // '0'-'9', '*', '#', 'A'-'D'
	// Via says how it came: "rfc4733", "info" or "inband".
	Via string
}

// Leg is the caller as an application sees it.
type Leg interface {
	Caller() Caller
	// Rate is the sample rate of the PCM in Frames and Play (8000 for
	// G.711, 16000 for G.722).
	Rate() int
	// Frames delivers the caller's audio, decoded, 20 ms per frame. Frames
	// are dropped (and counted) while the application does not read.
	Frames() <-chan []int16
	// DTMF delivers the keys the caller pressed, once each.
	DTMF() <-chan Digit
	// Play sends pcm to the caller in real time and returns once it is
	// sent, or at once with ctx's error.
	Play(ctx context.Context, pcm []int16) error
}

// appReason is the Caller.Reason for a callee without a phone.
const appReasonUnavailable = "unavailable"

// answerApp answers the caller with the application target names.
func (c *call) answerApp(reqA *sip.Request, txA sip.ServerTransaction, target, reason string) {
	name, arg := dialplan.SplitAppTarget(target)
	c.appCall.Store(true)
	if c.b.cfg.Apps == nil {
		c.failA(txA, reqA, 404, cdr.Failed, "no applications")
		return
	}
	caller := c.appCaller(reqA, reason)
	app, err := c.b.cfg.Apps.Open(name, arg, caller)
	if err != nil {
		code := 500
		switch {
		case errors.Is(err, ErrNoApp):
			code = 404
		case errors.Is(err, ErrAppRefused):
			code = 403
		}
		c.failA(txA, reqA, code, cdr.Failed, "application: "+err.Error())
		return
	}
	if !c.sessionInterval(reqA, txA) {
		return
	}
	a := c.legs[media.A]
	_, remA, err := media.ParseSDP(reqA.Body())
	if err != nil {
		c.failA(txA, reqA, 488, cdr.Failed, "caller SDP: "+err.Error())
		return
	}
	fmtA, err := chooseAppFormat(remA)
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
	if unproven(c.caller, reqA.Transport()) {
		c.m.Withhold(media.A)
	}
	ctx := c.b.ctx
	a.ver = 1
	if a.answered, err = c.m.Answer(ctx, media.A, remA, a.policy, a.sid, a.ver); err != nil {
		c.failA(txA, reqA, 488, cdr.Failed, "caller media: "+err.Error())
		return
	}
	ep, err := newAppMedia(c, a.answered.Addr, fmtA)
	if err != nil {
		c.failA(txA, reqA, 503, cdr.Failed, "application media: "+err.Error())
		return
	}
	c.mu.Lock()
	c.app = ep
	c.rec.Codec = fmtA.codec.name
	c.mu.Unlock()
	if err := ep.connect(ctx); err != nil {
		c.failA(txA, reqA, 503, cdr.Failed, "application media: "+err.Error())
		return
	}
	body, err := media.Rewrite(fmtA.answerFrom(remA), withAnswering(a.answered, remA))
	if err != nil {
		c.failA(txA, reqA, 500, cdr.Failed, "answer: "+err.Error())
		return
	}
	a.lastSDP = body
	a.boxRefreshes = !supportsTimer(reqA)
	c.callee = Identity{}
	if mf := reqA.MaxForwards(); mf != nil && mf.Val() <= 1 {
		c.failA(txA, reqA, 483, cdr.Failed, "too many hops")
		return
	}
	if !c.answerA(reqA, txA, body) {
		c.hangup(-1, "no ACK from caller")
		return
	}
	c.runApp(app, ep, name, caller)
}

// runApp starts the application on the answered caller; the box hangs up
// when it returns. The CDR cause names why the call reached it (busy,
// noanswer, unavailable) when it was not dialled.
func (c *call) runApp(app App, ep *appMedia, name string, caller Caller) {
	ep.keys, _ = c.m.DTLSDone(media.A)
	ep.start(caller)
	why := ""
	if caller.Reason != "" {
		why = " (" + caller.Reason + ")"
	}
	c.b.spawn(func() {
		err := app.Run(ep.ctx, ep)
		if errors.Is(err, ErrHandedOver) { // app_connect.go: the call goes on bridged
			ep.close()
			return
		}
		cause := "application ended" + why
		if err != nil && ep.ctx.Err() == nil {
			c.b.log.Warn("call: application", "call", c.id, "app", name, "err", err)
			cause = "application failed" + why
		}
		c.hangup(-1, cause)
	})
}

// appCaller is the caller as an application sees it.
func (c *call) appCaller(reqA *sip.Request, reason string) Caller {
	caller := Caller{Identity: c.caller, Number: c.rec.From, Reason: reason}
	if ap, err := netip.ParseAddrPort(reqA.Source()); err == nil {
		caller.Source = ap.Addr().Unmap()
	}
	return caller
}

// appOffer answers a re-INVITE or UPDATE offer of an application call's
// caller (hold, resume, new keys): the relay's leg is reconfigured, the
// application keeps its format.
func (x *offerExchange) appOffer() {
	c, l, req := x.c, x.l, x.req
	_, rem, err := media.ParseSDP(req.Body())
	if err != nil {
		x.reply(488, nil)
		return
	}
	c.mu.Lock()
	ep := c.app
	c.mu.Unlock()
	f, err := ep.format.keep(rem)
	if err != nil {
		x.reply(488, nil)
		return
	}
	loc, err := c.m.Answer(c.b.ctx, media.A, rem, l.policy, l.sid, l.ver+1)
	if err != nil {
		x.reply(488, nil)
		return
	}
	body, err := media.Rewrite(f.answerFrom(rem), withAnswering(loc, rem))
	if err != nil {
		x.reply(500, nil)
		return
	}
	l.ver, l.answered, l.lastSDP, l.peer = l.ver+1, loc, body, rem
	final := x.reply(200, body)
	c.m.AnswerSent(media.A)
	x.awaitAck(final)
}

// appFallback sends a caller whose callee has no phone registered to the
// callee's voicemail when the callee has a mailbox; false: it has none.
func (c *call) appFallback(reqA *sip.Request, txA sip.ServerTransaction, ext string) bool {
	if c.b.cfg.Apps == nil {
		return false
	}
	if _, err := c.b.cfg.Apps.Open(dialplan.AppVoicemail, ext, Caller{Identity: c.caller, Reason: appReasonUnavailable}); err != nil {
		return false
	}
	target := dialplan.AppTarget(dialplan.AppVoicemail, ext)
	c.rec.To, c.rec.Direction = target, string(dialplan.KindApp)
	c.answerApp(reqA, txA, target, appReasonUnavailable)
	return true
}

// isApp reports whether the call is answered by an application.
func (c *call) isApp() bool { return c.appCall.Load() }

// closeApp stops the application and its socket (finish).
func (c *call) closeApp() {
	c.mu.Lock()
	ep := c.app
	c.mu.Unlock()
	if ep != nil {
		ep.close()
	}
}

// validDigit reports whether k is a DTMF key.
func validDigit(k byte) bool {
	return k >= '0' && k <= '9' || k == '*' || k == '#' || k >= 'A' && k <= 'D'
}
