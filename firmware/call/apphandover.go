package call

// Voicemail after a ringing stage: a hunt whose stages rang (busy, no
// answer) and then ends at an application hands the caller over to the
// application endpoint. By then every branch has ended (run waits for
// them: CANCELled on the ring time, or failed), so no early dialog of a
// callee is left; the caller's relay leg (SDES or DTLS-SRTP, possibly
// already carrying a branch's early media) is kept as it is and only the
// relay's B leg is pointed at the box's own RTP socket. The caller gets a
// new SDP answer (the application's format, a new session version) in
// the 200.

import (
	"strings"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
)

// Reasons a hunt hands a caller to an application with (Caller.Reason):
// the voicemail application greets "busy" callers with the busy greeting,
// the others with the unavailable one.
const (
	ReasonBusy        = "busy"
	ReasonNoAnswer    = "noanswer"
	ReasonUnavailable = appReasonUnavailable
)

// huntReason is why a hunt reached an application stage after outcome o
// (the stage's own reason first).
func huntReason(st Stage, o Outcome) string {
	switch {
	case st.Reason != "":
		return st.Reason
	case o.Code == 486 || o.Code == 600:
		return ReasonBusy
	case o.TimedOut:
		return ReasonNoAnswer
	}
	return ReasonUnavailable
}

// handOver answers the caller of f (all its branches ended) with the
// application the hunt ended at; false: it cannot (no such application,
// the caller's format is not one the box speaks) and the caller is
// answered the failure as before.
func (f *fork) handOver() bool {
	c, reqA, txA := f.c, f.reqA, f.txA
	if c.huntApp == "" || c.b.cfg.Apps == nil || c.m == nil {
		return false
	}
	name, arg := dialplan.SplitAppTarget(c.huntApp)
	caller := c.appCaller(reqA, c.huntReason)
	app, err := c.b.cfg.Apps.Open(name, arg, caller)
	if err != nil {
		c.b.log.Info("call: hunt application refused", "call", c.id, "app", c.huntApp, "err", err)
		return false
	}
	a := c.legs[media.A]
	// The codec a branch's early media already used, when the box speaks
	// it: a caller that took a reliable early answer keeps its codec.
	c.mu.Lock()
	prefer := c.rec.Codec
	c.mu.Unlock()
	fmtA, err := chooseAppFormatPreferring(f.remA, prefer)
	if err != nil {
		c.b.log.Info("call: hunt application", "call", c.id, "app", c.huntApp, "err", err)
		return false
	}
	// The branches are over: their dialogs are no longer the call's.
	for _, br := range f.branches {
		c.b.forget(c, dialogKey(br.l.callID, br.l.localTag))
	}
	c.appCall.Store(true)
	c.mu.Lock()
	c.legs[media.B] = nil
	c.callee = Identity{}
	c.rec.To, c.rec.Direction = c.huntApp, string(dialplan.KindApp)
	c.rec.Codec = fmtA.codec.name
	c.mu.Unlock()
	ep, err := newAppMedia(c, a.answered.Addr, fmtA)
	if err != nil {
		c.failA(txA, reqA, 503, cdr.Failed, "application media: "+err.Error())
		return true
	}
	c.mu.Lock()
	c.app = ep
	c.mu.Unlock()
	if err := ep.connect(c.b.ctx); err != nil {
		c.failA(txA, reqA, 503, cdr.Failed, "application media: "+err.Error())
		return true
	}
	// The same relay address and keys; a new version of the session, as
	// the formats differ from any early answer.
	a.ver++
	a.answered.SessionVersion = a.ver
	body, err := media.Rewrite(fmtA.answerFrom(f.remA), withAnswering(a.answered, f.remA))
	if err != nil {
		c.failA(txA, reqA, 500, cdr.Failed, "answer: "+err.Error())
		return true
	}
	a.lastSDP = body
	a.boxRefreshes = !supportsTimer(reqA)
	c.b.log.Info("call: handed over to an application after ringing", "call", c.id, "app", c.huntApp, "reason", caller.Reason)
	if !c.answerA(reqA, txA, body) {
		c.hangup(-1, "no ACK from caller")
		return true
	}
	c.runApp(app, ep, name, caller)
	return true
}

// chooseAppFormatPreferring is chooseAppFormat with codec prefer first
// when the caller offered it and the box speaks it.
func chooseAppFormatPreferring(r media.Remote, prefer string) (appFormat, error) {
	f, err := chooseAppFormat(r)
	if err != nil || prefer == "" || strings.EqualFold(f.codec.name, prefer) {
		return f, err
	}
	for _, pt := range r.Formats {
		name, ok := r.Rtpmap[pt]
		if !ok {
			name, ok = staticNames[pt]
		}
		if !ok || !strings.EqualFold(name, prefer) {
			continue
		}
		one := r
		one.Formats = []string{pt}
		for _, q := range r.Formats {
			n := r.Rtpmap[q]
			if en, _, _ := strings.Cut(n, "/"); strings.EqualFold(en, "telephone-event") {
				one.Formats = append(one.Formats, q)
			}
		}
		if g, err := chooseAppFormat(one); err == nil {
			return g, nil
		}
	}
	return f, nil
}
