package call

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo/sip"
)

// Call states.
const (
	stSetup = iota
	stConfirmed
	stEnded
)

// transactionTimeout bounds one in-dialog transaction of the box (64×T1).
const transactionTimeout = 32 * time.Second

// leg is one of the call's two dialogs, from the box's point of view.
type leg struct {
	side                media.Side
	callID              string
	localTag, remoteTag string
	local, remote       sip.Uri // From/To addresses of the box's requests on this leg
	target              sip.Uri // the peer's Contact: Request-URI of in-dialog requests
	dest, transport     string  // where the box sends, and how
	cseq                uint32  // last CSeq the box used
	remoteCSeq          uint32  // last CSeq the peer used
	policy              media.Policy
	offerPolicy         media.Policy // what the box offers with (offerPolicyFor)
	sid, ver            uint64
	lastSDP             []byte       // the SDP the box last sent on this leg
	peer                media.Remote // the SDP the peer last sent (its offer or answer)
	offered             media.Local
	answered            media.Local // the box's answer to this leg's last offer
	boxRefreshes        bool
	expiry, refresh     *time.Timer
}

type call struct {
	b      *B2BUA
	id     string
	caller Identity
	callee Identity
	legs   [2]*leg
	m      *media.Call
	lease  *dialplan.Lease
	se     time.Duration

	mu         sync.Mutex
	state      int
	busy       bool // an offer/answer exchange is running (491 to another)
	rec        cdr.Record
	acks       [2]chan uint32
	cancel     chan struct{} // closed when the caller cancels
	cancelled  bool
	withdrawn  string // why the box cancelled it (semi-attended transfer, shutdown); "": the caller did
	keys       []string
	leases     []*dialplan.Lease // of transfer targets
	xfer       *transfer         // a blind transfer in progress
	shown      presented         // the caller as the callee's leg shows it
	rel        *reliable         // the caller's unacknowledged reliable provisional (RFC 3262)
	rseq       uint32            // last RSeq sent to the caller
	endOnce    sync.Once
	ended      chan struct{} // closed by finish once the CDR write returned
	proveMu    sync.Mutex    // orders proven's release of the caller's media
	hunt       Hunt          // stages of a forwarded or group call (hunt.go); nil: one fork
	stages     int           // stages asked of hunt so far
	huntApp    string        // the application target a hunt ended at ("voicemail/201")
	huntReason string        // why (Caller.Reason: busy, noanswer, unavailable)
	obs        observed      // what the observer was told (observe.go)
	app        *appMedia     // an application answers the caller (app.go); no B leg
	appCall    atomic.Bool
	picks      chan *pickReq // a picker handed to this ringing call (pickup.go)
	park       parking       // the slot the call waits in (park.go)
	ringing    []string      // extensions the current stage rings (pickup.go)
	recStop    func() string // ends the call's recording (record.go); nil: none
	moh        holdMusic     // music on hold per side (hold.go)
}

func newCall(b *B2BUA, req *sip.Request, caller Identity) *call {
	c := &call{b: b, id: sip.GenerateTagN(20), caller: caller, se: b.cfg.SessionExpires,
		cancel: make(chan struct{}), ended: make(chan struct{}), picks: make(chan *pickReq)}
	c.acks[0] = make(chan uint32, 4)
	c.acks[1] = make(chan uint32, 4)
	c.rec = cdr.Record{ID: c.id, Start: time.Now()}
	return c
}

func (c *call) addKey(k string, l *leg) {
	c.mu.Lock()
	c.keys = append(c.keys, k)
	c.mu.Unlock()
	c.b.register(c, k, l)
}

// offerPolicyFor is the policy the box offers a leg's peer with. When the
// other leg is encrypted (SDES or DTLS-SRTP) an extension is offered
// RTP/SAVP, not best effort: phones set to "SRTP mandatory" refuse keys on
// RTP/AVP, and a caller who encrypts should not silently lose it on the
// callee's leg. Trunks keep their policy (many answer 488 to RTP/SAVP).
func offerPolicyFor(pol media.Policy, id Identity, otherSecured bool) media.Policy {
	if pol == media.SRTPOptional && otherSecured && id.Extension != "" {
		return media.SRTPRequired
	}
	return pol
}

// isSecured reports whether the box's SDP carries keys (SDES) or a
// fingerprint (DTLS-SRTP) for its leg.
func isSecured(l media.Local) bool { return l.Crypto != nil || l.Fingerprint != nil }

// identity is who is on side s: the caller, or the callee the call was
// routed to.
func (c *call) identity(s media.Side) Identity {
	if s == media.A {
		return c.caller
	}
	return c.callee
}

func withAnswering(l media.Local, offer media.Remote) media.Local {
	l.Answering = &offer
	return l
}

// mapFailure maps the callee's final error to what the caller is told:
// redirects and authentication challenges are not passed through (they
// would leak the callee's contacts or realm).
func mapFailure(code int) (int, cdr.Result) {
	switch {
	case code == 486 || code == 600:
		return 486, cdr.Busy
	case code == 480 || code == 408:
		return code, cdr.NoAnswer
	case code == 487:
		return 487, cdr.Cancelled
	case code == 401 || code == 407 || code < 400:
		return 503, cdr.Failed
	case code == 603:
		return 603, cdr.Rejected
	case code >= 400 && code < 700:
		return code, cdr.Failed
	}
	return 500, cdr.Failed
}

func reasonPhrase(code int) string {
	switch code {
	case 100:
		return "Trying"
	case 180:
		return "Ringing"
	case 183:
		return "Session Progress"
	case 200:
		return "OK"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 422:
		return "Session Interval Too Small"
	case 480:
		return "Temporarily Unavailable"
	case 481:
		return "Call/Transaction Does Not Exist"
	case 483:
		return "Too Many Hops"
	case 486:
		return "Busy Here"
	case 487:
		return "Request Terminated"
	case 488:
		return "Not Acceptable Here"
	case 491:
		return "Request Pending"
	case 500:
		return "Server Internal Error"
	case 503:
		return "Service Unavailable"
	case 603:
		return "Decline"
	}
	return "Error"
}

// randSession is an SDP o= session id (RFC 4566: NTP-like, any 63-bit value).
func randSession() uint64 { return rand.Uint64() >> 1 }
