package call

// Hunting: a call to an extension or a group rung in stages instead of one
// fork (forwarding on busy / no answer / unreachable, follow-me, ring
// groups in order or round robin). The stages come from a Hunter
// (firmware/features); this file only runs them: each stage is one fork
// with its own ring time, and the caller keeps ringing until a stage
// answers or none is left.

import (
	"net"
	"slices"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// MaxStages bounds the stages of one call (a hunt that loops through
// forwards is cut here whatever its Hunter says).
const MaxStages = 32

// MaxStageBranches bounds the INVITEs of one stage: a ring-all group of
// up to 32 members, each with its contacts (MaxBranches bounds one
// extension's).
const MaxStageBranches = 64

// Dest is one destination of a stage: every live contact of Extension,
// or Number over Trunk (a forward outwards, placed as a call of the
// extension As and admitted by the dial plan under Lease).
type Dest struct {
	Extension string
	Trunk     string
	Number    string
	As        string          // the extension an outward forward is charged to
	Lease     *dialplan.Lease // held by the call from now on; released at its end
}

// Stage is what rings at once, and for how long. A Stage without Dests
// ends the hunt: with App set the call goes to that application
// ("voicemail/201"; the local application endpoint answers it), else the
// caller is answered Code (486 for do-not-disturb, 482 for a forwarding
// loop).
type Stage struct {
	Dests []Dest
	// Ring is this stage's ring time; 0: the B2BUA's RingTimeout.
	Ring time.Duration
	App  string
	Code int
	// Reason is the Caller.Reason an App stage hands the caller over
	// with ("busy" for do-not-disturb or forward on busy); "": from how
	// the previous stage ended.
	Reason string
	// Wait rings nobody for this long, then asks the hunt again (a queue
	// with no free agent: the caller keeps waiting). A CANCEL ends it.
	Wait time.Duration
	// Uncounted stages are not counted in MaxStages: the hunt bounds
	// itself (a queue by its longest wait).
	Uncounted bool
}

// HuntReporter is implemented by a Hunt that wants to know how its call
// went (a queue counts answered and abandoned callers and starts its
// agent's wrap-up). Both are called from the call's goroutines, Answered
// at most once and before Ended.
type HuntReporter interface {
	// Answered: ext's phone answered a stage (ext "" for a trunk).
	Answered(ext string)
	// Ended: the call is over, answered or not.
	Ended()
}

// Outcome is how the previous stage ended: its best final status, or
// TimedOut when its ring time passed. Code is 480 for a stage nobody in
// could be rung (no contact registered). First marks the call to Next
// that asks for the first stage.
type Outcome struct {
	First       bool
	Code        int
	TimedOut    bool
	Unreachable bool // the stage had nothing to ring (no contact registered)
}

// Hunt yields a call's stages. Next is called from the call's own
// goroutine only.
type Hunt interface {
	// Next is the stage to ring after o; false: none, the caller gets
	// the last failure. A Stage without Dests counts as not reachable
	// (Outcome Code 480) and Next is asked again.
	Next(o Outcome) (Stage, bool)
}

// Hunter makes the Hunt of a routed call (features.Engine). It returns nil
// when the call is rung as usual (the decision's target alone). callerExt
// is "" for calls from trunks.
type Hunter interface {
	Hunt(callerExt string, dec dialplan.Decision) Hunt
}

// stageTargets resolves a stage to targets; unreachable extensions are
// skipped.
func (c *call) stageTargets(st Stage) (tgts []Target, ids []Identity, as []string) {
	for _, d := range st.Dests {
		c.hold(d.Lease)
		switch {
		case d.Extension != "":
			cs := c.b.cfg.Directory.Contacts(d.Extension)
			if len(cs) > MaxBranches {
				cs = cs[:MaxBranches]
			}
			for _, t := range cs {
				tgts, ids, as = append(tgts, t), append(ids, Identity{Extension: d.Extension}), append(as, "")
			}
		case d.Trunk != "":
			t, ok := c.b.cfg.Directory.Trunk(d.Trunk)
			if !ok {
				continue
			}
			t.URI.User = strings.ReplaceAll(d.Number, "#", "%23")
			tgts, ids, as = append(tgts, t), append(ids, Identity{Trunk: d.Trunk}), append(as, d.As)
		}
		if len(tgts) >= MaxStageBranches {
			return tgts[:MaxStageBranches], ids[:MaxStageBranches], as[:MaxStageBranches]
		}
	}
	return tgts, ids, as
}

// hold keeps a lease until the call ends.
func (c *call) hold(l *dialplan.Lease) {
	if l == nil {
		return
	}
	c.mu.Lock()
	c.leases = append(c.leases, l)
	c.mu.Unlock()
}

// nextStage asks the hunt for stages until one has a target to ring.
// Without one, code is what the caller should be answered (0: the last
// failure).
func (c *call) nextStage(o Outcome) (tgts []Target, ids []Identity, as []string, ring time.Duration, code int, ok bool) {
	for c.stages < MaxStages {
		c.stages++
		st, more := c.hunt.Next(o)
		if st.Uncounted {
			c.stages--
		}
		switch {
		case !more:
			return nil, nil, nil, 0, 0, false
		case len(st.Dests) == 0 && st.App != "":
			// The hunt ends at an application (voicemail). Before
			// anything rang, setup answers the caller with it; after a
			// stage rang (busy, no answer) the fork hands the caller
			// over (apphandover.go). 480 if neither can.
			c.b.log.Info("call: hunt ends at an application", "call", c.id, "app", st.App)
			c.huntApp, c.huntReason = st.App, huntReason(st, o)
			return nil, nil, nil, 0, 480, false
		case len(st.Dests) == 0 && st.Code != 0:
			return nil, nil, nil, 0, st.Code, false
		case len(st.Dests) == 0 && st.Wait > 0:
			if code := c.huntWait(st.Wait); code != 0 {
				return nil, nil, nil, 0, code, false
			}
			o = Outcome{Code: 480, TimedOut: true}
			continue
		}
		tgts, ids, as = c.stageTargets(st)
		if len(tgts) > 0 {
			return tgts, ids, as, st.Ring, 0, true
		}
		o = Outcome{Code: 480, Unreachable: true}
	}
	return nil, nil, nil, 0, 482, false
}

// huntWait waits d for a hunt's Wait stage; else the code to answer the
// caller: 487 when it cancelled, 503 when the box shuts down.
func (c *call) huntWait(d time.Duration) int {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return 0
	case <-c.cancel:
		return 487
	case <-c.b.ctx.Done():
		return 503
	}
}

// reportAnswered tells a reporting hunt who answered.
func (c *call) reportAnswered(who Identity) {
	if r, ok := c.hunt.(HuntReporter); ok {
		r.Answered(who.Extension)
	}
}

// reportEnded tells a reporting hunt that the call is over.
func (c *call) reportEnded() {
	if r, ok := c.hunt.(HuntReporter); ok {
		r.Ended()
	}
}

// addBranches places the branches of one stage on f (offers made, INVITEs
// not yet sent).
func (f *fork) addBranches(tgts []Target, ids []Identity, as []string) error {
	c := f.c
	host, _, _ := net.SplitHostPort(c.b.cfg.Contact)
	a := c.legs[media.A]
	for i, tgt := range tgts {
		pol := c.b.cfg.Directory.Policy(ids[i])
		l := &leg{side: media.B, callID: sip.GenerateTagN(24), localTag: newTag(),
			target: tgt.URI, dest: tgt.Dest, transport: strings.ToLower(tgt.Transport),
			policy: pol, sid: randSession(), ver: 1}
		user, h := c.shown.user, c.shown.host
		if as[i] != "" && ids[i].Trunk != "" {
			// A forward outwards shows the forwarding extension's
			// outbound number, as any call it places would.
			user, h = as[i], host
			if src, ok := c.b.cfg.Directory.(CallerIDs); ok {
				if n, _ := src.OutboundCallerID(as[i], ids[i].Trunk); n != "" {
					user = n
				}
			}
		}
		l.local = sip.Uri{Scheme: "sip", User: user, Host: h}
		l.remote = sip.Uri{Scheme: "sip", User: tgt.URI.User, Host: tgt.URI.Host}
		br := &branch{l: l, who: ids[i]}
		if err := f.offer(br, firstOffer(pol, ids[i], a.answered)); err != nil {
			return err
		}
		c.addKey(dialogKey(l.callID, l.localTag), l)
		f.branches = append(f.branches, br)
	}
	c.mu.Lock()
	c.legs[media.B] = f.branches[0].l
	c.callee = f.branches[0].who
	c.ringing = c.ringing[:0]
	for _, br := range f.branches {
		if e := br.who.Extension; e != "" && !slices.Contains(c.ringing, e) {
			c.ringing = append(c.ringing, e)
		}
	}
	c.mu.Unlock()
	return nil
}

// continueHunt rings the next stage after f failed; false: there is none
// and f answers the caller.
func (f *fork) continueHunt() bool {
	c := f.c
	if c.hunt == nil || c.isCancelled() {
		return false
	}
	tgts, ids, as, ring, code, ok := c.nextStage(Outcome{Code: f.best, TimedOut: f.timedOut})
	if !ok {
		if code != 0 {
			f.best, f.timedOut = code, false
		}
		return false
	}
	f.stop()
	n := &fork{c: c, reqA: f.reqA, remA: f.remA, ch: make(chan branchEvent, 16), quit: make(chan struct{}), ring: ring}
	if err := n.addBranches(tgts, ids, as); err != nil {
		c.b.log.Warn("call: hunt stage", "call", c.id, "err", err)
		return false
	}
	for _, br := range n.branches {
		if err := n.send(br, n.newInvite(br)); err != nil {
			br.done, br.final = true, 503
		}
	}
	n.run(f.txA)
	return true
}
