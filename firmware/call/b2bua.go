// Package call is the B2BUA of edgepbxd: every call is two independent SIP
// dialogs (the caller's leg A, answered by the box, and the callee's leg B,
// placed by the box), joined by a dial-plan decision, a media relay call
// and a CDR. Nothing of one leg's topology (Call-ID, tags, Via, Contact,
// User-Agent, addresses in SDP) is copied to the other.
//
// # Wiring (what the SIP edge must do)
//
// The edge authenticates and hands requests over; the B2BUA never parses
// credentials. In firmware/sipedge's dispatch, after the security chain:
//
//   - INVITE without a To tag from an authenticated extension:
//     b.OnInvite(req, tx, call.Identity{Extension: user}); from a source that
//     Policy.Trunk identifies: b.OnInvite(req, tx, call.Identity{Trunk: name}).
//     Over UDP such a caller gets no media until its ACK echoes the box's
//     To tag (proof.go): a source address alone may be forged.
//     Unauthenticated INVITEs are challenged by the edge as REGISTERs are.
//   - In-dialog requests (a To tag present: re-INVITE, UPDATE, BYE, ACK,
//     REFER, PRACK, INFO) and CANCEL are NOT digest-challenged (phones do not
//     expect it, and the dialog identifiers the box generated are the
//     credential): pass them to b.OnInvite (re-INVITE, identity ignored),
//     b.OnUpdate, b.OnBye, b.OnRefer, b.OnPrack, b.OnInfo, b.OnAck, b.OnCancel. They
//     still pass the read filter, validator and flood guard. Unknown
//     dialogs get 481 from the B2BUA.
//   - An INVITE with a Replaces header (RFC 3891) but no To tag is a new
//     dialog: it is digest-authenticated like any INVITE and passed to
//     b.OnInvite with the caller's identity; the B2BUA lets it replace only
//     a dialog of that same extension (else 403 and a KindReplaceDenied
//     event to Config.Events).
//   - ACK arrives without a transaction in sipgo (tx may be nil): call
//     b.OnAck(req, tx) and do not answer it.
//   - The handler must run in the request's own goroutine: OnInvite blocks
//     until the caller got a final answer (sipgo terminates the server
//     transaction when the handler returns).
//   - Outgoing legs use the edge's own *sipgo.Client (same UserAgent and
//     listening sockets, so responses and in-dialog requests come back to
//     the edge), passed as Config.Client, and Config.Contact set to the
//     edge's advertised address per transport (contactHost).
//   - The edge's UserAgent should drop stray responses quietly
//     (sip.WithTransactionLayerUnhandledResponseHandler): a 180 handled after
//     its 200, or a 2xx retransmitted after Timer M, is normal traffic.
//   - Config.Directory adapts the registrar: Contacts(ext) maps
//     Server.Location().Lookup(now, ext) bindings with TargetFromBinding
//     (newest first; all of them are rung at once, up to MaxBranches),
//     Trunk(name) maps the trunk configuration, Credentials(name) gives the
//     trunk's digest user and password. A Directory that also implements
//     CallerIDs sets what calls out through a trunk present (config
//     Telephony.CallerIDs, TelephonyTrunk.CallerID and AssertIdentity).
//   - A KindApp decision (dialplan: "<app>/<arg>") is answered by the box
//     itself through Config.Apps (app.go); its relay leg B goes to a socket
//     of the box on the media address, so the relay's Pinholes should skip
//     pinholes toward the box's own address.
//   - cmd/edgepbxd builds the media.Relay (pinholes through the init/control
//     client), dialplan.Engine (licence gate, logs), cdr.New(db), then
//     call.New, passes it to the SIP server, and calls b.Close() at shutdown
//     (hangs up every call, writes their CDRs).
package call

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Identity is who placed a call, as established by the SIP edge.
// Exactly one of Extension (digest-authenticated) and Trunk (source
// address of an IP-authenticated trunk) is set.
type Identity struct {
	Extension string
	Trunk     string
}

// Target is where the box sends one leg's INVITE.
type Target struct {
	URI       sip.Uri // Request-URI (a registered Contact, or number@trunk host)
	Dest      string  // host:port the request is sent to (the REGISTER's source behind NAT)
	Transport string  // "udp", "tcp", "tls", "ws", "wss"
}

// Directory tells the B2BUA where extensions and trunks are. The edge
// implements it over its location service and trunk configuration.
type Directory interface {
	// Contacts returns the live contacts of an extension, best first.
	Contacts(ext string) []Target
	// Trunk returns where calls over the named trunk go; the B2BUA puts
	// the routed number in the Request-URI's user part.
	Trunk(name string) (Target, bool)
	// Policy is the SRTP policy of an extension or trunk.
	Policy(id Identity) media.Policy
	// Credentials are the digest credentials the box answers a trunk's
	// 401/407 to its INVITE with (once per call); ok false: none, the
	// challenge fails the call.
	Credentials(trunk string) (user, pass string, ok bool)
}

// Sender sends the box's requests; *sipgo.Client implements it.
type Sender interface {
	TransactionRequest(ctx context.Context, req *sip.Request, options ...sipgo.ClientRequestOption) (sip.ClientTransaction, error)
	WriteRequest(req *sip.Request, options ...sipgo.ClientRequestOption) error
}

// Router is the dial plan; *dialplan.Engine implements it. edgepbxd wraps
// the engine to follow extensions created at run time.
type Router interface {
	RouteOutbound(from, dialled string) (dialplan.Decision, *dialplan.Lease, error)
	RouteInbound(trunk, called string) (dialplan.Decision, *dialplan.Lease, error)
}

// CDRWriter stores call records; *cdr.Store implements it.
type CDRWriter interface {
	Write(cdr.Record) error
}

// Config wires a B2BUA. Client, Contact, Relay, Plan, Directory and CDR are
// required.
type Config struct {
	Client Sender
	// Contact is the box's SIP address (host:port) put in Contact headers;
	// ContactTLS, when set, is used on TLS legs.
	Contact    string
	ContactTLS string
	Relay      *media.Relay
	Plan       Router
	Directory  Directory
	CDR        CDRWriter
	// MaxCalls bounds concurrent calls (default 256); beyond it INVITEs get
	// 503 with Retry-After.
	MaxCalls int
	// SessionExpires is the RFC 4028 interval (default 30 min, at least
	// 90 s). A leg not refreshed within it is hung up.
	SessionExpires time.Duration
	// RingTimeout bounds how long the callee may ring (default 120 s).
	RingTimeout time.Duration
	// CloseGrace is how long Close waits for the BYEs and CANCELs of the
	// calls it ends before abandoning them (default DefaultCloseGrace).
	CloseGrace time.Duration
	// Ended, when set, sees every call's record and media counters after
	// its CDR was written (metrics).
	Ended func(cdr.Record, media.Stats)
	// Events, when set, receives security events (a refused attempt to
	// replace somebody else's dialog).
	Events Events
	// Hunter, when set, may turn a call to an extension or a group into
	// stages (forwarding, follow-me, ring groups; hunt.go).
	Hunter Hunter
	// Apps, when set, answers KindApp decisions (voicemail, conference,
	// IVR) and callees without a registered phone that have a mailbox.
	Apps Apps
	// Recorder, when set, records answered two-party calls by policy
	// (record.go).
	Recorder Recorder
	// Hold, when set, plays music to a held party (hold.go).
	Hold HoldMusic
	Log  *slog.Logger

	// Observer, when set, is told each extension's dialog state changes
	// (busy-lamp fields; observe.go).
	Observer DialogObserver

	minSE time.Duration // MinSessionExpires unless a test of this package lowers it
	// ackWait bounds the wait for the ACK of a 2xx the box sent
	// (transactionTimeout unless a test of this package lowers it).
	ackWait time.Duration
}

// Defaults and bounds.
const (
	DefaultMaxCalls       = 256
	DefaultSessionExpires = 30 * time.Minute
	MinSessionExpires     = 90 * time.Second
	DefaultRingTimeout    = 120 * time.Second
)

// Counters are the B2BUA's running totals.
type Counters struct {
	Calls, Answered, Rejected, Overload, Cancelled, SessionTimeouts, Transfers uint64
	ReplaceDenied                                                              uint64
}

// B2BUA connects calls. It is safe for concurrent use.
type B2BUA struct {
	cfg   Config
	log   *slog.Logger
	minSE time.Duration // MinSessionExpires; lowered only by this package's tests

	active atomic.Int64

	// ctx is cancelled by Close once the grace is over: every transaction
	// and wait of the B2BUA ends with it. g counts the goroutines.
	ctx  context.Context
	stop context.CancelFunc
	g    *group

	mu      sync.Mutex
	dialogs map[string]dialogRef // Call-ID + "\x00" + box's tag -> call and side
	calls   map[*call]struct{}
	closed  bool

	calls0, answered, rejected, overload, cancelled, sessionTimeouts, transfers atomic.Uint64
	replaceDenied                                                               atomic.Uint64
}

type dialogRef struct {
	c    *call
	side media.Side
	l    *leg
}

// current reports whether r's leg is still the call's leg on its side (a
// transfer replaces the transferor's leg).
func (r dialogRef) current() bool {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return r.c.legs[r.side] == r.l
}

// New checks cfg and fills defaults.
func New(cfg Config) (*B2BUA, error) {
	if cfg.Client == nil || cfg.Relay == nil || cfg.Plan == nil || cfg.Directory == nil || cfg.CDR == nil {
		return nil, errors.New("call: client, relay, plan, directory and CDR are required")
	}
	if _, _, err := net.SplitHostPort(cfg.Contact); err != nil {
		return nil, fmt.Errorf("call: contact %q: %w", cfg.Contact, err)
	}
	if cfg.MaxCalls <= 0 {
		cfg.MaxCalls = DefaultMaxCalls
	}
	if cfg.SessionExpires == 0 {
		cfg.SessionExpires = DefaultSessionExpires
	}
	if cfg.RingTimeout <= 0 {
		cfg.RingTimeout = DefaultRingTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.CloseGrace <= 0 {
		cfg.CloseGrace = DefaultCloseGrace
	}
	if cfg.minSE <= 0 {
		cfg.minSE = MinSessionExpires
	}
	if cfg.ackWait <= 0 {
		cfg.ackWait = transactionTimeout
	}
	if cfg.SessionExpires < cfg.minSE {
		return nil, fmt.Errorf("call: session expires %v below the minimum %v", cfg.SessionExpires, cfg.minSE)
	}
	b := &B2BUA{cfg: cfg, log: cfg.Log, minSE: cfg.minSE, g: newGroup(),
		dialogs: map[string]dialogRef{}, calls: map[*call]struct{}{}}
	b.ctx, b.stop = context.WithCancel(context.Background())
	return b, nil
}

// Active is the number of calls in progress (ringing or connected).
func (b *B2BUA) Active() int { return int(b.active.Load()) }

// Counters returns the running totals.
func (b *B2BUA) Counters() Counters {
	return Counters{Calls: b.calls0.Load(), Answered: b.answered.Load(), Rejected: b.rejected.Load(),
		Overload: b.overload.Load(), Cancelled: b.cancelled.Load(), SessionTimeouts: b.sessionTimeouts.Load(),
		Transfers: b.transfers.Load(), ReplaceDenied: b.replaceDenied.Load()}
}

func dialogKey(callID, tag string) string { return callID + "\x00" + tag }

func (b *B2BUA) lookup(req *sip.Request) (dialogRef, bool) {
	cid := req.CallID()
	to := req.To()
	if cid == nil || to == nil {
		return dialogRef{}, false
	}
	tag, _ := to.Params.Get("tag")
	if tag == "" {
		return dialogRef{}, false
	}
	b.mu.Lock()
	r, ok := b.dialogs[dialogKey(cid.Value(), tag)]
	b.mu.Unlock()
	return r, ok
}

// OnInvite handles an INVITE the edge accepted. Without a To tag it starts
// a call placed by caller and blocks until the caller has a final answer
// (and, for 2xx, its ACK); with a To tag it is a re-INVITE of an existing
// dialog (caller is ignored).
func (b *B2BUA) OnInvite(req *sip.Request, tx sip.ServerTransaction, caller Identity) {
	if !b.tracked(func() { b.onInvite(req, tx, caller) }) {
		respond(tx, req, 503, "Service Unavailable")
	}
}

func (b *B2BUA) onInvite(req *sip.Request, tx sip.ServerTransaction, caller Identity) {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		r, ok := b.lookup(req)
		if !ok || !r.current() {
			respond(tx, req, 481, "Call/Transaction Does Not Exist")
			return
		}
		r.c.offerFrom(r.side, req, tx)
		return
	}
	if (caller.Extension == "") == (caller.Trunk == "") {
		respond(tx, req, 403, "Forbidden")
		return
	}
	if req.GetHeader("Replaces") != nil {
		b.inviteReplaces(req, tx, caller)
		return
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		respond(tx, req, 503, "Service Unavailable")
		return
	}
	if n := b.active.Add(1); n > int64(b.cfg.MaxCalls) {
		b.active.Add(-1)
		b.overload.Add(1)
		respond(tx, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", "5"))
		return
	}
	b.calls0.Add(1)
	c := newCall(b, req, caller)
	c.setup(req, tx)
}

// OnUpdate handles an in-dialog UPDATE (RFC 3311): a session refresh, or a
// new offer that is passed to the other leg.
func (b *B2BUA) OnUpdate(req *sip.Request, tx sip.ServerTransaction) {
	if !b.tracked(func() { b.onUpdate(req, tx) }) {
		respond(tx, req, 503, "Service Unavailable")
	}
}

func (b *B2BUA) onUpdate(req *sip.Request, tx sip.ServerTransaction) {
	r, ok := b.lookup(req)
	if !ok || !r.current() {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	r.c.offerFrom(r.side, req, tx)
}

// OnRefer handles an in-dialog REFER (RFC 3515): a blind transfer of the
// other party to an extension (Refer-To), or an attended transfer when the
// Refer-To carries Replaces naming another dialog of the same extension on
// the box (RFC 5589): the two remaining parties are bridged.
func (b *B2BUA) OnRefer(req *sip.Request, tx sip.ServerTransaction) {
	if !b.tracked(func() { b.onRefer(req, tx) }) {
		respond(tx, req, 503, "Service Unavailable")
	}
}

func (b *B2BUA) onRefer(req *sip.Request, tx sip.ServerTransaction) {
	r, ok := b.lookup(req)
	if !ok || !r.current() {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	if r.c.isApp() { // an application is not transferred anywhere (toll fraud)
		respond(tx, req, 403, "Forbidden")
		return
	}
	r.c.refer(r.l, req, tx)
}

// OnBye handles a BYE from either leg.
func (b *B2BUA) OnBye(req *sip.Request, tx sip.ServerTransaction) {
	if !b.tracked(func() { b.onBye(req, tx) }) {
		respond(tx, req, 503, "Service Unavailable")
	}
}

func (b *B2BUA) onBye(req *sip.Request, tx sip.ServerTransaction) {
	r, ok := b.lookup(req)
	if !ok {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	// Marked before the 200 leaves: a transfer finishing right after it
	// must already know this leg is gone (no BYE to a phone that left).
	if r.c.releasedByTransfer(r, req) {
		respond(tx, req, 200, "OK")
		return
	}
	cause := "caller BYE"
	if r.side == media.B {
		cause = "callee BYE"
	}
	r.c.hangup(int(r.side), cause)
	// The 200 leaves once the call's record is committed: whoever holds
	// the 200 (a phone, a test pulling the power) knows the CDR survives
	// a crash from then on. Bounded, so a stuck store cannot hold the
	// BYE past the peer's transaction timer.
	r.c.waitEnded(b.ctx, byeCommitWait)
	respond(tx, req, 200, "OK")
}

// OnAck handles an ACK (for a 2xx: sipgo passes it outside the INVITE
// transaction). tx may be nil; ACKs are never answered.
func (b *B2BUA) OnAck(req *sip.Request, _ sip.ServerTransaction) {
	b.tracked(func() {
		if r, ok := b.lookup(req); ok {
			r.c.acked(r.side, req)
		}
	})
}

// OnCancel answers a CANCEL that sipgo did not match to a pending INVITE
// transaction (matching ones reach the call through the transaction).
func (b *B2BUA) OnCancel(req *sip.Request, tx sip.ServerTransaction) {
	respond(tx, req, 481, "Call/Transaction Does Not Exist")
}

func (b *B2BUA) register(c *call, key string, l *leg) {
	b.mu.Lock()
	b.dialogs[key] = dialogRef{c: c, side: l.side, l: l}
	b.calls[c] = struct{}{}
	b.mu.Unlock()
}

// forget drops one dialog of a call that goes on (a transfer's old or
// failed leg).
func (b *B2BUA) forget(c *call, key string) {
	b.mu.Lock()
	if r, ok := b.dialogs[key]; ok && r.c == c {
		delete(b.dialogs, key)
	}
	b.mu.Unlock()
}

func (b *B2BUA) unregister(c *call, keys ...string) {
	b.mu.Lock()
	for _, k := range keys {
		if r, ok := b.dialogs[k]; ok && r.c == c {
			delete(b.dialogs, k)
		}
	}
	delete(b.calls, c)
	b.mu.Unlock()
}

// respond answers req in tx with the box's own reason phrase and headers
// only. A nil tx (stateless ACK path) is ignored.
func respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, hs ...sip.Header) error {
	if tx == nil {
		return nil
	}
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hs {
		res.AppendHeader(h)
	}
	return tx.Respond(res)
}

// TargetFromBinding turns a registrar binding into a Target: the Contact URI
// as Request-URI, sent to the address the REGISTER came from (phones behind
// NAT advertise private Contacts).
func TargetFromBinding(contact, source, transport string) (Target, error) {
	c := strings.TrimSpace(contact)
	if i := strings.IndexByte(c, '<'); i >= 0 {
		j := strings.IndexByte(c[i:], '>')
		if j < 0 {
			return Target{}, fmt.Errorf("call: contact %q: unterminated <", contact)
		}
		c = c[i+1 : i+j]
	}
	var u sip.Uri
	if err := sip.ParseUri(c, &u); err != nil {
		return Target{}, fmt.Errorf("call: contact %q: %w", contact, err)
	}
	if _, _, err := net.SplitHostPort(source); err != nil {
		return Target{}, fmt.Errorf("call: binding source %q: %w", source, err)
	}
	tp := strings.ToLower(transport)
	if tp == "" {
		tp = "udp"
	}
	return Target{URI: u, Dest: source, Transport: tp}, nil
}
