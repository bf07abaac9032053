// Package presence is the event subscription server of the SIP edge (RFC
// 6665): busy-lamp fields (the dialog package, RFC 4235), presence (RFC
// 3856 with PIDF, RFC 3863) and message waiting (message-summary, RFC
// 3842), with unsolicited MWI for phones that need it.
//
// The edge authenticates a new SUBSCRIBE (digest, like REGISTER) and
// passes it with the extension's name to OnSubscribe; refreshes inside a
// subscription's dialog come without a name (the dialog identifiers the box
// generated are their credential, as for calls). The server decides what
// the subscriber may see: its own mailbox only, and dialogs and presence
// only of extensions and park slots Visibility allows; every refusal is
// the same 403, whether or not the target exists.
//
// State comes in through DialogChanged (the B2BUA's call.DialogObserver,
// or a park slot's), RegistrationChanged (the registrar), MailboxChanged
// (voicemail) and SetDND (features). Each subscription has at most one
// NOTIFY in flight (RFC 6665 §4.2.2); changes meanwhile are merged into the
// next one, which carries the state at the time it is built. NOTIFYs leave
// at a bounded rate through one dispatcher.
package presence

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/emiago/sipgo/sip"
)

// Visibility says whose dialogs and presence a subscriber may watch (the
// pickup/visibility groups of the telephony configuration). MaySee must
// not call back into the Server.
type Visibility interface {
	MaySee(subscriber, target string) bool
}

// SelfOnly is the default Visibility: an extension sees only itself.
type SelfOnly struct{}

func (SelfOnly) MaySee(subscriber, target string) bool { return subscriber == target }

// Phone is one registered contact of an extension.
type Phone struct {
	URI       sip.Uri // the registered Contact: Request-URI of the NOTIFY
	Dest      string  // host:port the REGISTER came from (NAT)
	Transport string
	UserAgent string
}

// Phones gives an extension's registered contacts (for unsolicited MWI);
// the SIP edge implements it over its location service.
type Phones interface {
	Phones(ext string) []Phone
}

// Config wires a Server. Sender is required.
type Config struct {
	Sender call.Sender
	// Host names the box in the URIs of unsolicited NOTIFYs (the edge's
	// flow code replaces the Contact's host and port).
	Host       string
	Visibility Visibility            // nil: SelfOnly
	Phones     Phones                // nil: no unsolicited MWI
	Registered func(ext string) bool // registration state for presence; nil: always closed
	// Unsolicited says whether an extension's phones get MWI NOTIFYs
	// without subscribing (per extension, or by the phone's User-Agent).
	Unsolicited func(ext, userAgent string) bool

	MinExpires     time.Duration // shorter requests get 423 (default 60 s)
	MaxExpires     time.Duration // longer ones are cut (default 3600 s)
	DefaultExpires time.Duration // when none is asked (default 3600 s, RFC 4235/3842/3856)
	// MaxPerSubscriber bounds one extension's subscriptions (default 256:
	// a phone with three expansion modules); MaxTotal the box's (default 16384).
	MaxPerSubscriber int
	MaxTotal         int
	// NotifyRate is how many NOTIFYs per second leave at most, with bursts
	// of NotifyBurst (defaults 500 and 200); MaxInFlight bounds the NOTIFY
	// transactions waiting for an answer (default 256).
	NotifyRate  int
	NotifyBurst int
	MaxInFlight int
	// NotifyTimeout bounds one NOTIFY transaction (default 32 s, Timer F).
	NotifyTimeout time.Duration
	Log           *slog.Logger

	now func() time.Time
}

// Defaults.
const (
	DefaultMinExpires       = 60 * time.Second
	DefaultMaxExpires       = 3600 * time.Second
	DefaultMaxPerSubscriber = 256
	DefaultMaxTotal         = 16384
	DefaultNotifyRate       = 500
	DefaultNotifyBurst      = 200
	DefaultMaxInFlight      = 256

	maxDialogsPerTarget = 16               // a target's dialogs kept at once
	terminatedLinger    = 64 * time.Second // a terminated dialog is shown at most this long
	maxTargets          = 65536            // targets with state at once
)

// Counters are the server's running totals.
type Counters struct {
	Subscribed, Refreshed, Unsubscribed, Expired, Refused uint64
	Notifies, NotifyFailed, Removed, Unsolicited          uint64
}

// Server is the event subscription server. It is safe for concurrent use.
type Server struct {
	cfg   Config
	log   *slog.Logger
	idKey [16]byte // hashes dialog ids into the opaque ids phones see

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}
	bucket *bucket
	slots  chan struct{} // NOTIFY transactions in flight

	mu      sync.Mutex
	subs    map[string]*sub // dialog key -> subscription
	usages  map[string]*sub // subscriber, package, id, target, contact -> newest
	per     map[string]int  // subscriber -> subscriptions
	targets map[string]*target
	queue   []*sub
	// outstanding counts NOTIFYs queued or in flight (Backlog).
	outstanding int
	closed      bool

	subscribed, refreshed, unsubscribed, expired, refused atomic.Uint64
	notifies, notifyFailed, removed, unsolicited          atomic.Uint64
}

// target is the state of one watched or reported resource.
type target struct {
	gen     uint64
	dialogs []*dlg
	dnd     bool
	mwi     *Mailbox
	subs    map[*sub]struct{}
}

type dlg struct {
	ev     call.DialogEvent
	endGen uint64 // 0: live; else the generation that ended it
	endAt  time.Time
}

// sub is one subscription (or a one-shot NOTIFY: a fetch, an unsolicited
// MWI, the final NOTIFY of a removed subscription).
type sub struct {
	key, usage          string
	pkg                 Package
	eventID             string
	subscriber, target  string
	resource            string // entity URI as the phone subscribed it
	host                string
	callID              string
	boxTag, phoneTag    string
	boxURI, phoneURI    sip.Uri
	contact             sip.Uri
	dest, transport     string
	cseq                uint32
	version             uint32
	expires             time.Time
	timer               *time.Timer
	sentGen             uint64
	queued, busy, dirty bool
	final               string // "": active; else terminated with this reason
	oneShot             bool   // not in the tables (fetch, unsolicited, final)
	unsolicited         bool   // out of dialog (no To tag)
	gone                bool   // removed: nothing more is sent
}

// New checks cfg, fills defaults and starts the dispatcher; Close stops it.
func New(cfg Config) (*Server, error) {
	if cfg.Sender == nil {
		return nil, errors.New("presence: Sender is required")
	}
	if cfg.Visibility == nil {
		cfg.Visibility = SelfOnly{}
	}
	if cfg.MinExpires <= 0 {
		cfg.MinExpires = DefaultMinExpires
	}
	if cfg.MaxExpires <= 0 {
		cfg.MaxExpires = DefaultMaxExpires
	}
	if cfg.MaxExpires < cfg.MinExpires {
		return nil, errors.New("presence: MaxExpires below MinExpires")
	}
	if cfg.DefaultExpires <= 0 || cfg.DefaultExpires > cfg.MaxExpires {
		cfg.DefaultExpires = cfg.MaxExpires
	}
	if cfg.DefaultExpires < cfg.MinExpires {
		cfg.DefaultExpires = cfg.MinExpires
	}
	if cfg.MaxPerSubscriber <= 0 {
		cfg.MaxPerSubscriber = DefaultMaxPerSubscriber
	}
	if cfg.MaxTotal <= 0 {
		cfg.MaxTotal = DefaultMaxTotal
	}
	if cfg.NotifyRate <= 0 {
		cfg.NotifyRate = DefaultNotifyRate
	}
	if cfg.NotifyBurst <= 0 {
		cfg.NotifyBurst = DefaultNotifyBurst
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.NotifyTimeout <= 0 {
		cfg.NotifyTimeout = 32 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Log, wake: make(chan struct{}, 1),
		bucket: newBucket(cfg.NotifyRate, cfg.NotifyBurst, cfg.now),
		slots:  make(chan struct{}, cfg.MaxInFlight),
		subs:   map[string]*sub{}, usages: map[string]*sub{}, per: map[string]int{}, targets: map[string]*target{}}
	_, _ = rand.Read(s.idKey[:])
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.dispatch()
	return s, nil
}

// Close stops the dispatcher and drops every subscription (phones learn it
// at their next refresh, 481, and subscribe again). It waits for the NOTIFY
// transactions in flight and is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, b := range s.subs {
		if b.timer != nil {
			b.timer.Stop()
		}
		b.gone = true
	}
	s.outstanding -= len(s.queue)
	s.subs, s.usages, s.per, s.queue = map[string]*sub{}, map[string]*sub{}, map[string]int{}, nil
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// Counters returns the running totals.
func (s *Server) Counters() Counters {
	return Counters{Subscribed: s.subscribed.Load(), Refreshed: s.refreshed.Load(), Unsubscribed: s.unsubscribed.Load(),
		Expired: s.expired.Load(), Refused: s.refused.Load(), Notifies: s.notifies.Load(),
		NotifyFailed: s.notifyFailed.Load(), Removed: s.removed.Load(), Unsolicited: s.unsolicited.Load()}
}

// Len is the number of live subscriptions.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// Backlog is how many NOTIFYs are queued or waiting for their answer.
func (s *Server) Backlog() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outstanding
}

// LenOf is the number of live subscriptions of one subscriber.
func (s *Server) LenOf(subscriber string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.per[subscriber]
}

func dialogKey(callID, boxTag string, pkg Package, id string) string {
	return callID + "\x00" + boxTag + "\x00" + pkg.String() + "\x00" + id
}

func newTag() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// respond answers req; a lost answer is the phone's retransmission problem.
func respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, hs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hs {
		res.AppendHeader(h)
	}
	_ = tx.Respond(res)
}

// OnSubscribe handles a SUBSCRIBE the edge accepted: subscriber is the
// digest-authenticated extension of a new subscription, "" for a request
// inside an existing subscription's dialog (a To tag present).
func (s *Server) OnSubscribe(req *sip.Request, tx sip.ServerTransaction, subscriber string) {
	r, err := parseSubscribe(req)
	if err != nil {
		s.refused.Add(1)
		respond(tx, req, err.code, err.reason, err.hdrs...)
		return
	}
	if r.toTag != "" {
		s.refresh(req, tx, r)
		return
	}
	if subscriber == "" {
		s.refused.Add(1)
		respond(tx, req, 403, "Forbidden")
		return
	}
	var exp time.Duration
	switch {
	case !r.hasExp:
		exp = s.cfg.DefaultExpires
	case r.expires == 0:
	default:
		exp = time.Duration(r.expires) * time.Second
		if exp < s.cfg.MinExpires {
			respond(tx, req, 423, "Interval Too Brief", sip.NewHeader("Min-Expires", secs(s.cfg.MinExpires)))
			return
		}
		exp = min(exp, s.cfg.MaxExpires)
	}
	if !s.maySubscribe(subscriber, r) {
		// Unknown, malformed and invisible targets get the same answer.
		s.refused.Add(1)
		respond(tx, req, 403, "Forbidden")
		return
	}
	b := &sub{pkg: r.pkg, eventID: r.eventID, subscriber: subscriber, target: r.target,
		resource: "sip:" + r.target + "@" + hostForURI(r.host), host: r.host, callID: r.callID,
		boxTag: newTag(), phoneTag: r.fromTag, phoneURI: r.from, contact: r.contact,
		dest: req.Source(), transport: strings.ToUpper(req.Transport()), cseq: randCSeq()}
	b.boxURI = sip.Uri{Scheme: "sip", User: r.target, Host: r.host, Port: req.Recipient.Port}
	b.key = dialogKey(b.callID, b.boxTag, b.pkg, b.eventID)
	b.usage = subscriber + "\x00" + b.pkg.String() + "\x00" + b.eventID + "\x00" + b.target + "\x00" + b.contact.String()
	now := s.cfg.now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		respond(tx, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", "30"))
		return
	}
	if exp == 0 { // a fetch: one NOTIFY, no subscription
		if len(s.queue) >= s.cfg.MaxTotal {
			// One-shot NOTIFYs are not bounded by the tables: the queue is.
			s.mu.Unlock()
			s.refused.Add(1)
			respond(tx, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", "30"))
			return
		}
		b.oneShot, b.final = true, "timeout"
		if t := s.targets[b.target]; t != nil {
			b.sentGen = t.gen
		}
	} else {
		if old := s.usages[b.usage]; old != nil {
			// The same phone subscribing the same thing again in a new
			// dialog (it rebooted): the old subscription is dead.
			s.removeLocked(old)
		}
		switch {
		case s.per[subscriber] >= s.cfg.MaxPerSubscriber:
			s.mu.Unlock()
			s.refused.Add(1)
			respond(tx, req, 403, "Forbidden")
			return
		case len(s.subs) >= s.cfg.MaxTotal:
			s.mu.Unlock()
			s.refused.Add(1)
			respond(tx, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", "300"))
			return
		}
		t := s.targetLocked(b.target)
		if t == nil {
			s.mu.Unlock()
			s.refused.Add(1)
			respond(tx, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", "300"))
			return
		}
		b.sentGen = t.gen
		b.expires = now.Add(exp)
		s.subs[b.key] = b
		s.usages[b.usage] = b
		s.per[subscriber]++
		t.subs[b] = struct{}{}
		b.timer = time.AfterFunc(exp, func() { s.expire(b) })
	}
	s.mu.Unlock()
	s.subscribed.Add(1)
	s.answerOK(tx, req, b.boxTag, exp)
	s.mu.Lock()
	s.enqueueLocked(b)
	s.mu.Unlock()
}

// refresh handles a SUBSCRIBE inside a subscription's dialog: a refresh
// or, with Expires 0, the end of the subscription.
func (s *Server) refresh(req *sip.Request, tx sip.ServerTransaction, r subscribeReq) {
	key := dialogKey(r.callID, r.toTag, r.pkg, r.eventID)
	s.mu.Lock()
	b := s.subs[key]
	if b == nil || b.phoneTag != r.fromTag {
		s.mu.Unlock()
		respond(tx, req, 481, "Subscription Does Not Exist")
		return
	}
	exp := s.cfg.DefaultExpires
	if r.hasExp {
		exp = time.Duration(r.expires) * time.Second
	}
	if exp != 0 && exp < s.cfg.MinExpires {
		s.mu.Unlock()
		respond(tx, req, 423, "Interval Too Brief", sip.NewHeader("Min-Expires", secs(s.cfg.MinExpires)))
		return
	}
	exp = min(exp, s.cfg.MaxExpires)
	if exp == 0 {
		s.removeLocked(b)
		fin := s.finalLocked(b, "timeout")
		s.mu.Unlock()
		s.unsubscribed.Add(1)
		s.answerOK(tx, req, b.boxTag, 0)
		s.mu.Lock()
		s.enqueueLocked(fin)
		s.mu.Unlock()
		return
	}
	b.expires = s.cfg.now().Add(exp)
	b.timer.Reset(exp)
	s.mu.Unlock()
	s.refreshed.Add(1)
	s.answerOK(tx, req, b.boxTag, exp)
	s.mu.Lock()
	s.enqueueLocked(b) // RFC 6665 §4.2.1.2: a refresh gets a NOTIFY
	s.mu.Unlock()
}

// answerOK sends the 200 that creates or refreshes a subscription (RFC
// 6665: 2xx with the granted Expires and the box's Contact).
func (s *Server) answerOK(tx sip.ServerTransaction, req *sip.Request, boxTag string, exp time.Duration) {
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	if to := res.To(); to != nil {
		// sipgo tags a response it builds itself; the dialog's tag is ours.
		to.Params.Remove("tag")
		to.Params.Add("tag", boxTag)
	}
	res.AppendHeader(sip.NewHeader("Expires", secs(exp)))
	res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: req.Recipient.Host, Port: req.Recipient.Port}})
	_ = tx.Respond(res)
}

// maySubscribe is the authorization: one's own mailbox, and dialogs and
// presence of oneself or what Visibility allows.
func (s *Server) maySubscribe(subscriber string, r subscribeReq) bool {
	if !validTarget(r.target) || r.host == "" {
		return false
	}
	if r.target == subscriber {
		return true
	}
	if r.pkg == PkgMWI {
		return false
	}
	return s.cfg.Visibility.MaySee(subscriber, r.target)
}

// targetLocked returns t's state, made when missing; nil when the table
// is full.
func (s *Server) targetLocked(name string) *target {
	t := s.targets[name]
	if t == nil {
		if len(s.targets) >= maxTargets {
			return nil
		}
		t = &target{subs: map[*sub]struct{}{}}
		s.targets[name] = t
	}
	return t
}

// dropTargetLocked forgets a target that holds nothing.
func (s *Server) dropTargetLocked(name string, t *target) {
	if len(t.subs) == 0 && len(t.dialogs) == 0 && !t.dnd && t.mwi == nil {
		delete(s.targets, name)
	}
}

// removeLocked takes b out of the tables; nothing more is sent on it.
func (s *Server) removeLocked(b *sub) {
	if b.oneShot || s.subs[b.key] != b {
		return
	}
	delete(s.subs, b.key)
	if s.usages[b.usage] == b {
		delete(s.usages, b.usage)
	}
	if s.per[b.subscriber]--; s.per[b.subscriber] <= 0 {
		delete(s.per, b.subscriber)
	}
	if t := s.targets[b.target]; t != nil {
		delete(t.subs, b)
		s.dropTargetLocked(b.target, t)
	}
	if b.timer != nil {
		b.timer.Stop()
	}
	b.gone = true
}

// finalLocked is the last NOTIFY of a removed subscription: its dialog,
// the next CSeq, Subscription-State terminated with reason.
func (s *Server) finalLocked(b *sub, reason string) *sub {
	f := *b
	f.timer, f.queued, f.busy, f.dirty, f.gone = nil, false, false, false, false
	f.oneShot, f.final = true, reason
	return &f
}

// expire ends a subscription whose time is up (RFC 6665 §4.2.2: a final
// NOTIFY with reason timeout).
func (s *Server) expire(b *sub) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.gone || s.subs[b.key] != b {
		return
	}
	if left := b.expires.Sub(s.cfg.now()); left > 0 { // refreshed while the timer fired
		b.timer.Reset(left)
		return
	}
	s.removeLocked(b)
	s.expired.Add(1)
	s.enqueueLocked(s.finalLocked(b, "timeout"))
}

// DialogChanged takes a dialog event of an extension or park slot (it
// implements call.DialogObserver; it never blocks).
func (s *Server) DialogChanged(ev call.DialogEvent) {
	if !validTarget(ev.Entity) || ev.ID == "" {
		return
	}
	now := s.cfg.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	t := s.targets[ev.Entity]
	if t == nil {
		if ev.State == call.DialogTerminated {
			return
		}
		if t = s.targetLocked(ev.Entity); t == nil {
			return
		}
	}
	var d *dlg
	for _, x := range t.dialogs {
		if x.ev.ID == ev.ID {
			d = x
		}
	}
	t.gen++
	switch {
	case d == nil && ev.State == call.DialogTerminated:
		t.gen--
		return
	case d == nil:
		if len(t.dialogs) >= maxDialogsPerTarget {
			t.dialogs = t.dialogs[1:]
		}
		t.dialogs = append(t.dialogs, &dlg{ev: ev})
	case d.endGen != 0:
		t.gen--
		return // ended already
	default:
		d.ev = ev
		if ev.State == call.DialogTerminated {
			d.endGen, d.endAt = t.gen, now
		}
	}
	s.purgeLocked(ev.Entity, t, now)
	for b := range t.subs {
		if b.pkg == PkgDialog || b.pkg == PkgPresence {
			s.enqueueLocked(b)
		}
	}
}

// purgeLocked drops terminated dialogs every dialog subscriber of t has
// been told about, or that ended long ago.
func (s *Server) purgeLocked(name string, t *target, now time.Time) {
	low := t.gen
	for b := range t.subs {
		if b.pkg == PkgDialog && b.sentGen < low {
			low = b.sentGen
		}
	}
	kept := t.dialogs[:0]
	for _, d := range t.dialogs {
		if d.endGen != 0 && (d.endGen <= low || now.Sub(d.endAt) > terminatedLinger) {
			continue
		}
		kept = append(kept, d)
	}
	clear(t.dialogs[len(kept):])
	t.dialogs = kept
	s.dropTargetLocked(name, t)
}

// RegistrationChanged tells presence subscribers of ext that its
// registration changed; it also sends unsolicited MWI to a phone that
// just registered when its extension needs it. It never blocks.
func (s *Server) RegistrationChanged(ext string, registered bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	t := s.targets[ext]
	if t == nil {
		return
	}
	t.gen++
	for b := range t.subs {
		if b.pkg == PkgPresence {
			s.enqueueLocked(b)
		}
	}
	if registered && t.mwi != nil {
		s.unsolicitedLocked(ext, *t.mwi)
	}
}

// SetDND sets an extension's do-not-disturb state for presence.
func (s *Server) SetDND(ext string, on bool) {
	if !validTarget(ext) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	t := s.targets[ext]
	if t == nil {
		if !on {
			return
		}
		if t = s.targetLocked(ext); t == nil {
			return
		}
	}
	if t.dnd == on {
		return
	}
	t.dnd = on
	t.gen++
	for b := range t.subs {
		if b.pkg == PkgPresence {
			s.enqueueLocked(b)
		}
	}
	s.dropTargetLocked(ext, t)
}

// MailboxChanged sets an extension's voice mailbox counts (voicemail
// calls it on every change and once per mailbox at start): subscribers of
// its message-summary are told, and its phones directly when the
// extension needs unsolicited MWI.
func (s *Server) MailboxChanged(ext string, newMsgs, oldMsgs int) {
	s.SetMailbox(ext, Mailbox{New: newMsgs, Old: oldMsgs})
}

// SetMailbox is MailboxChanged with urgent counts.
func (s *Server) SetMailbox(ext string, m Mailbox) {
	if !validTarget(ext) {
		return
	}
	m = Mailbox{New: clampCount(m.New), Old: clampCount(m.Old), UrgentNew: clampCount(m.UrgentNew), UrgentOld: clampCount(m.UrgentOld)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	t := s.targetLocked(ext)
	if t == nil {
		return
	}
	if t.mwi != nil && *t.mwi == m {
		return
	}
	t.mwi = &m
	t.gen++
	for b := range t.subs {
		if b.pkg == PkgMWI {
			s.enqueueLocked(b)
		}
	}
	s.unsolicitedLocked(ext, m)
}

// unsolicitedLocked queues an out-of-dialog MWI NOTIFY to each registered
// contact of ext whose phone needs it.
func (s *Server) unsolicitedLocked(ext string, m Mailbox) {
	if s.cfg.Phones == nil || s.cfg.Unsolicited == nil {
		return
	}
	for _, tg := range s.cfg.Phones.Phones(ext) {
		if !s.cfg.Unsolicited(ext, tg.UserAgent) || len(s.queue) >= s.cfg.MaxTotal {
			continue
		}
		host := s.cfg.Host
		if host == "" {
			host, _, _ = net.SplitHostPort(tg.Dest)
		}
		u := sip.Uri{Scheme: "sip", User: ext, Host: host}
		b := &sub{pkg: PkgMWI, subscriber: ext, target: ext, resource: "sip:" + ext + "@" + hostForURI(host), host: host,
			callID: newTag() + newTag(), boxTag: newTag(), boxURI: u, phoneURI: u, contact: tg.URI,
			dest: tg.Dest, transport: strings.ToUpper(tg.Transport), cseq: 1, oneShot: true, unsolicited: true}
		s.unsolicited.Add(1)
		s.enqueueLocked(b)
	}
}

func secs(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }

func randCSeq() uint32 {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return uint32(b[0])<<8 | uint32(b[1]) // small: room below 2^31
}

// hostForURI brackets an IPv6 literal.
func hostForURI(h string) string {
	if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
		return "[" + h + "]"
	}
	return h
}

// opaqueID is the dialog id phones see: stable per dialog, unlinkable to
// the box's SIP identifiers or CDR ids.
func (s *Server) opaqueID(id string) string {
	h := sha256.New()
	h.Write(s.idKey[:])
	h.Write([]byte(id))
	return hex.EncodeToString(h.Sum(nil)[:8])
}
