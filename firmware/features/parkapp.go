package features

// The parked/<slot>/<parker> application: a call transferred to the park
// code waits here, answered by the box, hearing music on hold, until a
// phone dials its slot (the B2BUA hands it over: call.ParkedLeg) or the
// slot's timeout. Then it rings its parker back (call.DestConnector); a
// parker that does not answer sends it where the parker's no-answer
// forward says (checked against the parker's class of service, like any
// forward), else to the park fallback, else to the parker's voicemail;
// with none of them it is parked again, at most parkRounds times, and
// the box then hangs up with the reason in the CDR.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
)

// parkRounds bounds how often a call nobody takes is parked again.
const parkRounds = 3

type parkApps struct {
	e     *Engine
	media QueueMedia
	next  call.Apps // voicemail (may be nil)
}

// ParkApp returns the application parked calls wait in (served under
// call.AppParked): media's music, next's voicemail for fallbacks.
func (e *Engine) ParkApp(media QueueMedia, next call.Apps) call.Apps {
	return &parkApps{e: e, media: media, next: next}
}

// Open implements call.Apps: arg is "<slot>/<parker>" as the B2BUA parks.
func (a *parkApps) Open(app, arg string, _ call.Caller) (call.App, error) {
	slot, parker, ok := strings.Cut(arg, "/")
	conf := a.e.conf()
	if app != call.AppParked || !ok || !conf.Park.IsSlot(slot) || !digits(parker) {
		return nil, fmt.Errorf("%w: %.40q", call.ErrNoApp, app+"/"+arg)
	}
	return &parkedCall{a: a, slot: slot, parker: parker, park: conf.Park}, nil
}

type parkedCall struct {
	a            *parkApps
	slot, parker string
	park         ParkSlots
}

// Run implements call.App.
func (p *parkedCall) Run(ctx context.Context, leg call.Leg) error {
	e := p.a.e
	pl, ok1 := leg.(call.ParkedLeg)
	dc, ok2 := leg.(call.DestConnector)
	if !ok1 || !ok2 {
		return errors.New("features: park: the leg cannot be handed over")
	}
	playCtx, stop := context.WithCancel(ctx)
	played := make(chan struct{})
	go func() { defer close(played); p.play(playCtx, leg) }()
	halt := func() { stop(); <-played }
	defer halt()
	wait := time.Duration(p.park.TimeoutSeconds()) * time.Second
	for round := 1; ; round++ {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-pl.Retrieved():
			t.Stop()
			e.log.Info("features: parked call retrieved", "slot", p.slot, "parker", p.parker)
			return call.ErrHandedOver
		case <-t.C:
		}
		e.log.Info("features: parked call timed out, ringing the parker back", "slot", p.slot, "parker", p.parker, "round", round)
		err := dc.ConnectDest(ctx, call.Dest{Extension: p.parker}, ParkRing*time.Second)
		if errors.Is(err, call.ErrHandedOver) {
			pl.Note(fmt.Sprintf("park %s: timed out, rung back to %s", p.slot, p.parker))
			return err
		}
		select {
		case <-pl.Retrieved(): // taken while the parker rang
			return call.ErrHandedOver
		default:
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err, done := p.fallback(ctx, leg, pl, halt); done {
			return err
		}
		if round >= parkRounds {
			pl.Note(fmt.Sprintf("park %s: timed out %d times, %s did not answer and has no fallback", p.slot, round, p.parker))
			return nil
		}
	}
}

// fallback sends the call on after the parker did not answer; done false:
// there is nowhere to send it (it is parked again).
func (p *parkedCall) fallback(ctx context.Context, leg call.Leg, pl call.ParkedLeg, halt func()) (error, bool) {
	e := p.a.e
	dests := []string{}
	if s := e.users.Get(p.parker); s.NoAnswer != "" {
		dests = append(dests, s.NoAnswer)
	}
	if p.park.Fallback != "" {
		dests = append(dests, p.park.Fallback)
	}
	dests = append(dests, "voicemail/"+p.parker)
	for _, d := range dests {
		if d == Voicemail {
			d = "voicemail/" + p.parker
		}
		if vm, ok := strings.CutPrefix(d, "voicemail/"); ok {
			if p.a.next == nil {
				continue
			}
			app, err := p.a.next.Open(dialplan.AppVoicemail, vm, leg.Caller())
			if err != nil {
				continue
			}
			e.log.Info("features: parked call to voicemail", "slot", p.slot, "parker", p.parker, "box", vm)
			halt()
			pl.Leave() // nobody takes a call out of a mailbox
			pl.Note(fmt.Sprintf("park %s: timed out, %s did not answer: voicemail %s", p.slot, p.parker, vm))
			return app.Run(ctx, leg), true
		}
		conn, ok := leg.(call.Connector)
		if !ok {
			continue
		}
		// The parker's call: its class of service and limits decide
		// (the forward was checked when set, the route is taken now).
		if err := e.CheckDestination(p.parker, d); err != nil {
			e.log.Info("features: park fallback refused", "slot", p.slot, "parker", p.parker, "to", d, "err", err)
			continue
		}
		dec, lease, err := e.RouteOutbound(p.parker, d)
		if err != nil || (dec.Kind != dialplan.KindInternal && dec.Kind != dialplan.KindOutbound) {
			lease.Release()
			continue
		}
		err = conn.Connect(ctx, dec, lease, ParkRing*time.Second)
		if errors.Is(err, call.ErrHandedOver) {
			pl.Note(fmt.Sprintf("park %s: timed out, %s did not answer: forwarded to %s", p.slot, p.parker, d))
			return err, true
		}
		lease.Release()
		if ctx.Err() != nil {
			return ctx.Err(), true
		}
	}
	return nil, false
}

// play sends music on hold until ctx ends.
func (p *parkedCall) play(ctx context.Context, leg call.Leg) {
	if p.a.media == nil {
		return
	}
	next, err := p.a.media.Music(p.park.Music, leg.Rate())
	if err != nil {
		p.a.e.log.Warn("features: park music", "slot", p.slot, "err", err)
		return
	}
	for ctx.Err() == nil {
		if leg.Play(ctx, next()) != nil {
			return
		}
	}
}
