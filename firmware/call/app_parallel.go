package call

// Ringing several destinations at once from an application (a queue's
// ring-all offer, a ring-all group the IVR hands over to): one INVITE per
// destination contact on the relay's B side, each with its own ring time;
// the first 2xx is bridged to the caller, every other branch is
// withdrawn (CANCEL once it rang; a 2xx that crosses it is ACKed and hung
// up), and when every branch failed the caller stays in the application.
// The single-destination hand-over (app_connect.go) is the one-branch
// case.

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// RingDest is one destination of a parallel hand-over: an extension (all
// its registered contacts, without its forwards) or a trunk number whose
// Lease the application got from routing it (class of service and
// limits already applied; the call holds it from now on). Ring is its own
// ring time.
type RingDest struct {
	Dest
	Ring time.Duration
}

// ParallelConnector is implemented by the Leg an application gets:
// ConnectAll rings every destination of ds at once and bridges the caller
// to the first that answers; the others are withdrawn. It returns the
// index in ds of the one that answered and ErrHandedOver (the application
// must then return it from Run), or -1 and an error wrapping
// ErrNotConnected when nobody answered (ErrUnreachable when no
// destination had a phone registered); the caller then stays in the
// application. At most MaxStageBranches INVITEs are placed.
type ParallelConnector interface {
	ConnectAll(ctx context.Context, ds []RingDest) (int, error)
}

// appBranch is one INVITE of a parallel hand-over.
type appBranch struct {
	tgt  Target
	id   Identity
	ring time.Duration
	dest int // index of its RingDest
}

// appRung is how a branch ended: won (its 2xx is the caller's), or failed
// with its final status (0: no final answer, e.g. its ring time passed).
type appRung struct {
	br   appBranch
	won  bool
	code int
	nl   *leg
	key  string
	off  media.Local
	tx   sip.ClientTransaction
	res  *sip.Response
	inv  *sip.Request
}

// ConnectAll implements ParallelConnector.
func (ep *appMedia) ConnectAll(ctx context.Context, ds []RingDest) (int, error) {
	c := ep.c
	// Every lease is the call's from now on, rung or not (released at
	// its end, as a hunt stage's).
	for _, d := range ds {
		c.hold(d.Lease)
	}
	if len(ds) == 0 || len(ds) > MaxStageBranches {
		return -1, ErrNotConnected
	}
	if !ep.claim() {
		return -1, ErrNotConnected
	}
	defer ep.release()
	var bs []appBranch
	for i, d := range ds {
		if d.Ring <= 0 {
			continue
		}
		one := d.Dest
		one.Lease = nil // held above
		tgts, ids, _ := c.stageTargets(Stage{Dests: []Dest{one}})
		for j := range tgts {
			if len(bs) < MaxStageBranches {
				bs = append(bs, appBranch{tgt: tgts[j], id: ids[j], ring: d.Ring, dest: i})
			}
		}
	}
	if len(bs) == 0 {
		return -1, ErrUnreachable
	}
	i, _, err := ep.ringAll(ctx, bs)
	return i, err
}

// claim marks the call busy placing B (no offer/answer with the caller
// meanwhile); false when it is not an application call that can.
func (ep *appMedia) claim() bool {
	c := ep.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stConfirmed || c.busy || c.app != ep {
		return false
	}
	c.busy = true
	return true
}

func (ep *appMedia) release() {
	c := ep.c
	c.mu.Lock()
	c.busy = false
	c.mu.Unlock()
}

// ringAll INVITEs every branch at once and switches the call to the
// first that answers. It returns the winner's RingDest index and
// ErrHandedOver, or -1, the best final status of the failed branches
// (0: none, they timed out) and ErrNotConnected once every branch ended.
// The losers are seen to their end in the background after a win.
func (ep *appMedia) ringAll(ctx context.Context, bs []appBranch) (int, int, error) {
	c := ep.c
	// lost withdraws the branches still ringing once one has won.
	bctx, lost := context.WithCancel(ctx)
	defer lost()
	var won atomic.Bool
	done := make(chan appRung, len(bs)) // buffered: losers never block
	started := 0
	best := 0
	for _, br := range bs {
		r, ok := ep.place(br)
		if !ok {
			continue // not sent: no answer from it
		}
		started++
		c.b.spawn(func() { done <- ep.follow(ctx, bctx, &won, r) })
	}
	for ; started > 0; started-- {
		var r appRung
		select {
		case r = <-done:
		case <-c.b.ctx.Done(): // shut down: the transactions end with it
			return -1, best, ErrNotConnected
		}
		if r.won {
			lost()
			if err := ep.answered(ctx, r.nl, r.key, r.br.id, r.off, r.tx, r.res); !errors.Is(err, ErrHandedOver) {
				return -1, 0, err // the switch failed: the application carries on
			}
			return r.br.dest, 0, ErrHandedOver
		}
		if r.code != 0 && better(r.code, best) {
			best = r.code
		}
	}
	return -1, best, ErrNotConnected
}

// place builds and sends br's INVITE (the caller's format, the
// destination's policy); false when it could not be sent.
func (ep *appMedia) place(br appBranch) (appRung, bool) {
	c := ep.c
	tgt, id := br.tgt, br.id
	a := c.legs[media.A]
	nl := &leg{side: media.B, callID: sip.GenerateTagN(24), localTag: newTag(),
		target: tgt.URI, dest: tgt.Dest, transport: strings.ToLower(tgt.Transport),
		policy: c.b.cfg.Directory.Policy(id), sid: randSession(), ver: 1}
	host, _, _ := net.SplitHostPort(c.b.cfg.Contact)
	nl.local = sip.Uri{Scheme: "sip", User: c.rec.From, Host: host}
	nl.remote = sip.Uri{Scheme: "sip", User: tgt.URI.User, Host: tgt.URI.Host}
	nl.offerPolicy = offerPolicyFor(nl.policy, id, c.m.Secured(media.A))
	off, err := c.m.Offer(media.B, nl.offerPolicy, nl.sid, nl.ver)
	var body []byte
	if err == nil {
		// The caller was answered with one format: offer exactly that.
		body, err = media.Rewrite(ep.format.answerFrom(a.peer), off)
	}
	if err != nil {
		return appRung{br: br}, false
	}
	nl.lastSDP, nl.offered = body, off
	key := dialogKey(nl.callID, nl.localTag)
	c.addKey(key, nl)
	inv := c.newRequest(nl, sip.INVITE, body)
	inv.AppendHeader(sip.NewHeader("Session-Expires", strconv.Itoa(int(c.se/time.Second))))
	tx, err := c.b.cfg.Client.TransactionRequest(c.b.ctx, inv)
	if err != nil {
		c.b.forget(c, key)
		return appRung{br: br}, false
	}
	return appRung{br: br, nl: nl, key: key, off: off, tx: tx, inv: inv}, true
}

// follow waits for r's branch to end: its ring time over or the branch
// withdrawn (bctx: the caller left, or another branch won), it is
// CANCELled once it rang; a 2xx wins only while the caller (ctx) is
// there and no other branch won, else it is ACKed and hung up.
func (ep *appMedia) follow(ctx, bctx context.Context, won *atomic.Bool, r appRung) appRung {
	c, nl, key, tx, inv := ep.c, r.nl, r.key, r.tx, r.inv
	fail := func(code int) appRung {
		c.b.forget(c, key)
		r.code = code
		return r
	}
	timer := time.NewTimer(r.br.ring)
	defer timer.Stop()
	// want: the INVITE is to be withdrawn (ring time over, caller gone,
	// another branch answered); a CANCEL may go only after a provisional
	// (RFC 3261 §9.1).
	early, want, cancelled, stop, expired := false, false, false, bctx.Done(), false
	withdraw := func() {
		want = true
		if early && !cancelled {
			cancelled = true
			c.b.spawn(func() { c.sendCancel(inv) })
		}
	}
	for {
		var res *sip.Response
		select {
		case res = <-tx.Responses():
		case <-tx.Done():
			select {
			case res = <-tx.Responses():
			default:
			}
			if res == nil {
				return fail(0)
			}
		case <-stop:
			stop = nil
			withdraw()
			continue
		case <-timer.C:
			if expired { // no final answer after the CANCEL: give up
				tx.Terminate()
				return fail(0)
			}
			expired = true
			withdraw()
			timer.Reset(transactionTimeout)
			continue
		}
		switch {
		case res.StatusCode < 200:
			if res.StatusCode > 100 {
				early = true
				if want {
					withdraw()
				}
			}
			continue
		case res.StatusCode >= 300:
			tx.Terminate()
			if want { // the 487 of its CANCEL: withdrawn, not refused
				return fail(0)
			}
			return fail(res.StatusCode)
		}
		// Answered (after its ring time too, if the CANCEL crossed the
		// 2xx): taken only while the caller is there and nobody else
		// was.
		if ctx.Err() != nil || !won.CompareAndSwap(false, true) {
			c.learnTarget(nl, res)
			ack := c.ackFor(nl, res)
			_ = c.b.cfg.Client.WriteRequest(ack)
			tx.OnRetransmission(func(*sip.Response) { _ = c.b.cfg.Client.WriteRequest(ack.Clone()) })
			c.b.spawn(func() { c.sendBye(nl) })
			return fail(0)
		}
		r.won, r.res = true, res
		return r
	}
}
