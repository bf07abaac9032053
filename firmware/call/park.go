package call

// Call park. A phone in a call with a caller transfers it (blind REFER)
// to the park code: the dial plan (features) routes the code to ParkApp +
// the slots ("park/71,72,…"), or a slot number to RetrieveApp (directed
// park into that slot). The box claims the first free slot, releases the
// parker's leg as a completed transfer (NOTIFY 200, BYE) and turns the
// call into an application call: the caller's relay leg stays as it is,
// the relay's other side points at the box's own RTP socket and the park
// application (AppParked) plays music until the slot is retrieved or
// times out (then it rings the parker back through DestConnector).
//
// Retrieval: a phone dials the slot number; the dial plan routes it to
// RetrieveApp + "<slot>/<extensions the retriever may see>". If the
// parker is one of them, the retriever's INVITE is answered by the parked
// call itself as its new callee leg, like a pickup (pickup.go); any
// refusal (empty slot, a parker the retriever may not see, a ring-back in
// progress) is the same 404.
//
// Only the called party parks its caller: the application endpoint is
// always on the relay's callee side (app.go), so a caller cannot park the
// party it called (403 to its REFER).

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// Decision targets and the application of park.
const (
	ParkApp     = "park/"     // + the slots to park in, comma-separated
	RetrieveApp = "retrieve/" // + "<slot>/<extensions the dialler may see>"
	// AppParked is the application a parked call waits in; Apps.Open
	// gets "<slot>/<parker>" as its argument.
	AppParked = "parked"
)

// maxNotes bounds what a parked call adds to its CDR cause.
const maxNotes = 4

// ParkedLeg is implemented by the Leg of a parked call.
type ParkedLeg interface {
	// Retrieved is closed when a phone took the call out of its slot:
	// the application must then return ErrHandedOver.
	Retrieved() <-chan struct{}
	// Leave frees the slot (the call goes on elsewhere: voicemail, a
	// fallback); nobody can retrieve it from then on.
	Leave()
	// Note adds what happened to the call's CDR cause.
	Note(string)
}

// parking is a call's park state.
type parking struct {
	slot      atomic.Pointer[string] // nil: not in a slot
	parker    string
	retrieved chan struct{} // made before the application runs
	closeOnce sync.Once
	notes     []string // c.mu
}

func (ep *appMedia) Retrieved() <-chan struct{} { return ep.c.park.retrieved }
func (ep *appMedia) Leave()                     { ep.c.unpark() }

func (ep *appMedia) Note(s string) { ep.c.note(s) }

// note appends s to the CDR cause.
func (c *call) note(s string) {
	c.mu.Lock()
	if len(c.park.notes) < maxNotes {
		c.park.notes = append(c.park.notes, s)
	}
	c.mu.Unlock()
}

// parkNotes is what the cause of the CDR starts with ("": nothing).
func (c *call) parkNotes() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.park.notes, "; ")
}

// parkSlot is the slot c waits in ("": none).
func (c *call) parkSlot() string {
	if s := c.park.slot.Load(); s != nil {
		return *s
	}
	return ""
}

// claimSlot puts c in the first of slots no other call holds; "": all
// are taken.
func (b *B2BUA) claimSlot(c *call, slots []string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	taken := map[string]bool{}
	for y := range b.calls {
		if s := y.parkSlot(); s != "" {
			taken[s] = true
		}
	}
	for _, s := range slots {
		if !taken[s] {
			c.park.slot.Store(&s)
			return s
		}
	}
	return ""
}

// parkedIn is the call waiting in slot, or nil.
func (b *B2BUA) parkedIn(slot string) *call {
	b.mu.Lock()
	defer b.mu.Unlock()
	for y := range b.calls {
		if y.parkSlot() == slot {
			return y
		}
	}
	return nil
}

// unpark frees c's slot and takes its lamp off.
func (c *call) unpark() {
	if c.park.slot.Swap(nil) != nil {
		c.mu.Lock()
		st := c.state
		c.mu.Unlock()
		if st == stConfirmed {
			c.observe(DialogConfirmed)
		}
	}
}

// parkTargets are the slots of a park decision target (digits only).
func parkTargets(target string) []string {
	var slots []string
	if list, ok := strings.CutPrefix(target, ParkApp); ok {
		slots = pickupTargets(list)
	} else {
		slot, _, _ := strings.Cut(strings.TrimPrefix(target, RetrieveApp), "/")
		slots = []string{slot}
	}
	return slices.DeleteFunc(slots, func(s string) bool { return !slotNumber(s) })
}

// slotNumber reports whether s can be a slot's number.
func slotNumber(s string) bool {
	if s == "" || len(s) > 9 {
		return false
	}
	return strings.Trim(s, "0123456789") == ""
}

// parkRefer parks the caller of c, whose callee who REFERred it (on l) to
// a park target.
func (c *call) parkRefer(l *leg, who Identity, req *sip.Request, tx sip.ServerTransaction, target string) {
	slots := parkTargets(target)
	c.mu.Lock()
	a := c.legs[media.A]
	calleeParks := l.side == media.B && a != nil && c.callee.Extension == who.Extension && c.app == nil
	c.mu.Unlock()
	if !calleeParks || c.b.cfg.Apps == nil || len(slots) == 0 {
		c.b.log.Info("call: park refused", "call", c.id, "parker", who.Extension)
		_ = respond(tx, req, 403, "Forbidden")
		return
	}
	c.mu.Lock()
	codec := c.rec.Codec
	c.mu.Unlock()
	fmtA, err := chooseAppFormatPreferring(a.peer, codec)
	if err != nil {
		_ = respond(tx, req, 488, "Not Acceptable Here")
		return
	}
	slot := c.b.claimSlot(c, slots)
	if slot == "" {
		_ = respond(tx, req, 486, "Busy Here")
		return
	}
	caller := Caller{Identity: c.caller, Number: c.rec.From, Reason: "park"}
	app, err := c.b.cfg.Apps.Open(AppParked, slot+"/"+who.Extension, caller)
	var ep *appMedia
	if err == nil {
		ep, err = newAppMedia(c, a.answered.Addr, fmtA)
	}
	if err != nil {
		c.park.slot.Store(nil)
		c.b.log.Info("call: park", "call", c.id, "slot", slot, "err", err)
		_ = respond(tx, req, 503, "Service Unavailable")
		return
	}
	c.mu.Lock()
	switch {
	case c.state != stConfirmed || c.busy || c.xfer != nil:
		c.mu.Unlock()
		c.park.slot.Store(nil)
		ep.close()
		_ = respond(tx, req, 491, "Request Pending")
		return
	case req.CSeq().SeqNo <= l.remoteCSeq:
		c.mu.Unlock()
		c.park.slot.Store(nil)
		ep.close()
		_ = respond(tx, req, 500, "Server Internal Error")
		return
	}
	l.remoteCSeq = req.CSeq().SeqNo
	c.busy = true
	x := &transfer{old: l, stop: make(chan struct{})}
	c.xfer = x // the parker's BYE only releases its leg from here on
	c.mu.Unlock()
	_ = respond(tx, req, 202, "Accepted")
	if err := ep.connect(c.b.ctx); err != nil {
		c.park.slot.Store(nil)
		ep.close()
		c.mu.Lock()
		c.xfer, c.busy = nil, false
		released := x.released
		c.mu.Unlock()
		if released {
			c.hangup(int(media.B), "park failed")
			return
		}
		c.notify(x, 503, true)
		return
	}
	c.mu.Lock()
	stopTimers(l)
	c.legs[media.B] = nil
	c.callee = Identity{}
	c.app = ep
	c.appCall.Store(true)
	c.park.parker = who.Extension
	c.park.retrieved = make(chan struct{})
	c.rec.Codec = fmtA.codec.name
	c.xfer, c.busy = nil, false
	released := x.released
	c.mu.Unlock()
	// The parker's hold is over with its leg: the parked application's
	// music replaces the hold music (hold.go), which would otherwise keep
	// the relay dropping the application's audio to the caller.
	c.stopAllMusic()
	c.note("parked in " + slot + " by " + who.Extension)
	c.b.log.Info("call: parked", "call", c.id, "slot", slot, "parker", who.Extension)
	c.observe(DialogConfirmed) // the parker's lamp off, the slot's on
	c.notify(x, 200, true)
	if !released {
		c.b.spawn(func() { c.sendBye(l) })
	}
	c.b.forget(c, dialogKey(l.callID, l.localTag))
	c.resumeParked(a, fmtA)
	c.runApp(parkedApp{app: app, c: c}, ep, AppParked, caller)
}

// resumeParked takes a caller the parker had put on hold off hold (a
// re-INVITE, sendrecv, in the application's format): most phones hold a
// call before they transfer it, and the parked party must hear the music
// and later speak to whoever retrieves it.
func (c *call) resumeParked(a *leg, f appFormat) {
	if d := a.peer.Direction; d == "" || d == "sendrecv" {
		return
	}
	c.mu.Lock()
	if c.busy || c.state != stConfirmed {
		c.mu.Unlock()
		return
	}
	c.busy = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.busy = false
		c.mu.Unlock()
	}()
	off, err := c.reoffer(a, a.offerPolicy, a.ver+1)
	var body []byte
	if err == nil {
		body, err = media.Rewrite(f.answerFrom(media.Remote{}), off)
	}
	var res *sip.Response
	if err == nil {
		res, err = c.transact(a, c.newRequest(a, sip.INVITE, body))
	}
	if err == nil && res.StatusCode >= 300 {
		err = fmt.Errorf("re-INVITE answered %d", res.StatusCode)
	}
	var rem media.Remote
	if err == nil {
		_, rem, err = media.ParseSDP(res.Body())
	}
	if err == nil {
		err = c.m.Answered(c.b.ctx, media.A, off, rem, a.policy)
	}
	if err != nil {
		c.b.log.Info("call: parked caller stays on hold", "call", c.id, "err", err)
		return
	}
	a.ver, a.offered, a.lastSDP, a.peer = a.ver+1, off, body, rem
}

// parkedApp frees the slot when the application ends, whatever the way.
type parkedApp struct {
	app App
	c   *call
}

func (p parkedApp) Run(ctx context.Context, leg Leg) error {
	defer p.c.unpark()
	return p.app.Run(ctx, leg)
}

// retrieve runs a slot number dialled by c's caller: rest is
// "<slot>/<extensions the caller may see>".
func (c *call) retrieve(reqA *sip.Request, txA sip.ServerTransaction, rest string) {
	slot, list, _ := strings.Cut(rest, "/")
	c.rec.To = slot
	_, rem, err := media.ParseSDP(reqA.Body())
	if err != nil {
		c.failA(txA, reqA, 488, cdr.Failed, "retriever SDP: "+err.Error())
		return
	}
	if !c.sessionInterval(reqA, txA) {
		return
	}
	y := c.b.parkedIn(slot)
	if y != nil && y != c && c.caller.Extension != "" {
		y.mu.Lock()
		parker := y.park.parker
		y.mu.Unlock()
		if slices.Contains(pickupTargets(list), parker) {
			p := &pickReq{req: reqA, tx: txA, who: c.caller, rem: rem, from: c}
			switch code := y.takeRetriever(p, slot); code {
			case 0:
				c.b.log.Info("call: retrieved", "retriever", c.caller.Extension, "slot", slot, "call", y.id)
				c.handOver(y)
				return
			case 404:
			case 487:
				c.b.cancelled.Add(1)
				c.finish(cdr.Cancelled, 487, "caller CANCEL")
				return
			default:
				c.failA(txA, reqA, code, cdr.Failed, "retrieve refused")
				return
			}
		}
	}
	c.failA(txA, reqA, 404, cdr.Rejected, "park: nothing to retrieve")
}

// offersCodec reports whether r offers the codec named (rtpmap value).
func offersCodec(r media.Remote, name string) bool {
	for _, pt := range r.Formats {
		n, ok := r.Rtpmap[pt]
		if !ok {
			n, ok = staticNames[pt]
		}
		if ok && strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// takeRetriever answers the retriever p as the parked call's new callee
// leg; 0: done (the call is an ordinary bridged call again), else the
// status for the retriever (404: the slot is not to be had).
func (c *call) takeRetriever(p *pickReq, slot string) int {
	c.mu.Lock()
	ep, a := c.app, c.legs[media.A]
	if c.state != stConfirmed || c.busy || ep == nil || a == nil || c.parkSlot() != slot {
		c.mu.Unlock()
		return 404
	}
	c.busy = true // no hand-over, no offer/answer meanwhile
	c.mu.Unlock()
	idle := func() {
		c.mu.Lock()
		c.busy = false
		c.mu.Unlock()
	}
	// The caller was answered with one codec: the retriever gets it.
	if !offersCodec(p.rem, ep.format.codec.name) {
		idle()
		return 488
	}
	req := p.req
	from, to := req.From(), req.To()
	l := &leg{side: media.B, callID: req.CallID().Value(), localTag: newTag(),
		local: to.Address, remote: from.Address, target: from.Address,
		dest: req.Source(), transport: strings.ToLower(req.Transport()),
		remoteCSeq: req.CSeq().SeqNo, policy: c.b.cfg.Directory.Policy(p.who), sid: randSession(), ver: 1}
	l.remoteTag, _ = from.Params.Get("tag")
	if ct := req.Contact(); ct != nil {
		l.target = ct.Address
	}
	restore := func() {
		_ = ep.connect(c.b.ctx)
		ep.muted.Store(false)
		idle()
	}
	ep.mute()
	ans, err := c.m.Answer(c.b.ctx, media.B, p.rem, l.policy, l.sid, l.ver)
	var body []byte
	if err == nil {
		body, err = media.Rewrite(ep.format.answerFrom(p.rem), withAnswering(ans, p.rem))
	}
	if err != nil {
		c.b.log.Info("call: retrieve media", "call", c.id, "err", err)
		restore()
		return 488
	}
	res := c.answerTaker(req, l, body)
	l.answered, l.peer, l.lastSDP = ans, p.rem, body
	key := dialogKey(l.callID, l.localTag)
	// The retriever's leg is the call's before its 2xx leaves (its ACK or
	// BYE may come at once).
	c.mu.Lock()
	c.legs[media.B], c.callee = l, p.who
	c.mu.Unlock()
	c.addKey(key, l)
	if p.from.isCancelled() || p.tx.Respond(res) != nil {
		c.b.forget(c, key)
		c.mu.Lock()
		c.legs[media.B], c.callee = nil, Identity{}
		c.mu.Unlock()
		restore()
		return 487
	}
	c.m.AnswerSent(media.B)
	c.park.slot.Store(nil)
	c.mu.Lock()
	c.app = nil
	c.appCall.Store(false)
	c.rec.To = p.who.Extension
	if c.state == stConfirmed { // not ended by a BYE meanwhile
		c.armLeg(l)
	}
	c.busy = false
	c.mu.Unlock()
	c.negotiated(a.peer, p.rem)
	c.note("retrieved from " + slot + " by " + p.who.Extension)
	c.park.closeOnce.Do(func() { close(c.park.retrieved) })
	c.observe(DialogConfirmed) // the slot's lamp off, the retriever's on
	if !c.waitAck(media.B, req.CSeq().SeqNo, p.tx, func() { _ = p.tx.Respond(res) }, sip.IsReliable(req.Transport())) {
		c.hangup(-1, "no ACK from retriever")
	}
	return 0
}
