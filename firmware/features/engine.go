package features

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/queue"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Base is the dial plan the features sit in front of
// (*telephony.Plan).
type Base interface {
	RouteOutbound(from, dialled string) (dialplan.Decision, *dialplan.Lease, error)
	RouteInbound(trunk, called string) (dialplan.Decision, *dialplan.Lease, error)
	Check(from, number string) (dialplan.Decision, error)
	// AdmitApp takes from's concurrency slot for a call the box answers
	// (voicemail by code): it counts like any other call.
	AdmitApp(from string) (*dialplan.Lease, error)
}

// Refusals of feature codes and settings (each also wraps the dial
// plan's error that says why, so the phone gets the dial plan's status).
var (
	ErrDestination  = errors.New("features: destination not allowed")
	ErrNotAvailable = errors.New("features: feature not available")
)

// Engine applies the features to calls. It is the B2BUA's Router (in
// front of Base) and its Hunter. Safe for concurrent use.
type Engine struct {
	base  Base
	conf  func() Config
	users *Store
	log   *slog.Logger

	queues *queue.Manager
	qapp   atomic.Pointer[queueApps] // nil: queue callers hear ringing

	mu sync.Mutex
	rr map[string]int // ring group number -> member the next call starts with
}

// New builds an engine over base; conf returns the admin configuration in
// force (it is read per call).
func New(base Base, conf func() Config, users *Store, log *slog.Logger, opts ...Option) *Engine {
	if log == nil {
		log = slog.Default()
	}
	e := &Engine{base: base, conf: conf, users: users, log: log, rr: map[string]int{}}
	for _, o := range opts {
		o(e)
	}
	if e.queues == nil {
		e.queues = queue.NewManager(nil)
	}
	return e
}

// MaySee is Config.MaySee over the configuration in force (for the BLF
// and presence subscriptions of firmware/sipedge).
func (e *Engine) MaySee(subscriber, target string) bool { return e.conf().MaySee(subscriber, target) }

// RouteOutbound acts on the feature codes of the table (they never reach
// the dial plan, so never a trunk) and routes everything else by Base.
func (e *Engine) RouteOutbound(from, dialled string) (dialplan.Decision, *dialplan.Lease, error) {
	if n, err := dialplan.Normalize(dialled); err == nil && strings.HasPrefix(n, "*") {
		if a, arg, ok := match(e.conf().Table(), n); ok {
			d, err := e.feature(from, a, arg)
			d.Dialled = n
			if err != nil || d.Kind != dialplan.KindApp {
				return d, nil, err
			}
			lease, err := e.base.AdmitApp(from)
			return d, lease, err
		}
	}
	if n, err := dialplan.Normalize(dialled); err == nil && e.conf().Park.IsSlot(n) {
		// A slot is the box's: never the dial plan's (never a trunk).
		lease, err := e.base.AdmitApp(from)
		return e.slot(from, n), lease, err
	}
	d, lease, err := e.base.RouteOutbound(from, dialled)
	if err == nil && d.Kind == dialplan.KindInternal {
		if s := e.users.Get(d.Target); s.Always == Voicemail {
			d.Kind, d.Target = dialplan.KindApp, "voicemail/"+d.Target
		}
	}
	return d, lease, err
}

// RouteInbound routes a DID by Base; a DID to an extension forwarded to
// voicemail goes there directly.
func (e *Engine) RouteInbound(trunk, called string) (dialplan.Decision, *dialplan.Lease, error) {
	d, lease, err := e.base.RouteInbound(trunk, called)
	if err == nil {
		if s := e.users.Get(d.Target); s.Always == Voicemail {
			d.Kind, d.Target = dialplan.KindApp, "voicemail/"+d.Target
		}
	}
	return d, lease, err
}

// feature carries out a code dialled by from.
func (e *Engine) feature(from string, a Action, arg string) (dialplan.Decision, error) {
	done := dialplan.Decision{Kind: dialplan.KindFeature, Class: dialplan.Internal, Target: string(a)}
	var set func(*Settings, string)
	switch a {
	case ForwardOn, BusyOn, NoAnswerOn, UnreachableOn:
		if arg == "" {
			return dialplan.Decision{}, fmt.Errorf("%w: no destination after the code", ErrDestination)
		}
		if vm, ok := e.codeFor(VoicemailOwn); ok && arg == vm {
			arg = Voicemail
		}
	}
	switch a {
	case ForwardOn, ForwardOff:
		set = func(s *Settings, d string) { s.Always = d }
	case BusyOn, BusyOff:
		set = func(s *Settings, d string) { s.Busy = d }
	case NoAnswerOn, NoAnswerOff:
		set = func(s *Settings, d string) { s.NoAnswer = d }
	case UnreachableOn, UnreachableOff:
		set = func(s *Settings, d string) { s.Unreachable = d }
	case DNDOn, DNDOff:
		_, err := e.users.Update(from, func(s *Settings) error { s.DND = a == DNDOn; return nil }, nil)
		return done, err
	case FollowMeOn, FollowMeOff:
		_, err := e.users.Update(from, func(s *Settings) error {
			if a == FollowMeOn && len(s.FollowMe.Numbers) == 0 {
				return fmt.Errorf("%w: no follow-me numbers set", ErrNotAvailable)
			}
			s.FollowMe.On = a == FollowMeOn
			return nil
		}, nil)
		return done, err
	case QueueLogin, QueueLogout:
		return done, e.queueCode(from, arg, a == QueueLogin)
	case VoicemailOwn:
		return dialplan.Decision{Kind: dialplan.KindApp, Class: dialplan.Internal, Target: AppVoicemailAccess + "/" + from}, nil
	case VoicemailOther:
		if arg != "" && !digits(arg) {
			return dialplan.Decision{}, fmt.Errorf("%w: mailbox %q", ErrDestination, arg)
		}
		return dialplan.Decision{Kind: dialplan.KindApp, Class: dialplan.Internal, Target: AppVoicemailAccess + "/" + arg}, nil
	case GroupPickup, DirectedPickup:
		return e.pickup(from, a, arg), nil
	case Park:
		return e.park(from)
	default:
		return dialplan.Decision{}, fmt.Errorf("%w: %s: %w", ErrNotAvailable, a, dialplan.ErrNoRoute)
	}
	on := strings.HasSuffix(string(a), "-on")
	if !on {
		arg = ""
	}
	_, err := e.users.Update(from, func(s *Settings) error {
		if on {
			if err := e.CheckDestination(from, arg); err != nil {
				return err
			}
		}
		set(s, arg)
		return nil
	}, nil)
	if err != nil {
		e.log.Info("features: refused", "ext", from, "action", a, "err", err)
	}
	return done, err
}

func (e *Engine) codeFor(a Action) (string, bool) {
	for _, c := range e.conf().Table() {
		if c.Action == a {
			return c.Code, true
		}
	}
	return "", false
}

// CheckDestination decides whether ext may forward (or follow-me) to dest
// now: Voicemail, another extension, a ring group, or an external number
// ext's class of service, limits and fraud guards allow it to call. Its
// refusals wrap ErrDestination and the dial plan's reason.
func (e *Engine) CheckDestination(ext, dest string) error {
	if dest == Voicemail {
		return nil
	}
	n, err := dialplan.Normalize(dest)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDestination, err)
	}
	if n == ext {
		return fmt.Errorf("%w: %s forwarded to itself: %w", ErrDestination, ext, dialplan.ErrBlocked)
	}
	if _, ok := e.conf().Group(n); ok {
		return nil
	}
	if _, err := e.base.Check(ext, n); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrDestination, n, err)
	}
	return nil
}

// SetSettings validates and stores ext's settings as the UI and API set
// them (every destination checked as CheckDestination does); also runs in
// the same transaction (the audit entry).
func (e *Engine) SetSettings(ext string, s Settings, also func(tx *store.Tx, saved Settings) error) (Settings, error) {
	if err := s.validShape(); err != nil {
		return Settings{}, fmt.Errorf("%w: %w", ErrDestination, err)
	}
	for _, d := range s.destinations() {
		if err := e.CheckDestination(ext, d); err != nil {
			return Settings{}, err
		}
	}
	return e.users.Update(ext, func(cur *Settings) error { *cur = s.clone(); return nil }, also)
}

// Settings returns ext's settings.
func (e *Engine) Settings(ext string) Settings { return e.users.Get(ext) }

// Forgot drops a deleted extension's settings from memory (features.ForgetTx
// erased them in the deleting transaction).
func (e *Engine) Forgot(ext string) { e.users.Forgot(ext) }

// Hunt makes the stages of a call routed to an extension or a ring group
// (call.Hunter); nil: ring the target as usual.
func (e *Engine) Hunt(callerExt string, dec dialplan.Decision) call.Hunt {
	if dec.Kind != dialplan.KindInternal && dec.Kind != dialplan.KindInbound {
		return nil
	}
	conf := e.conf()
	h := &hunt{e: e, conf: conf, visited: map[string]bool{}}
	if q, ok := conf.Queue(dec.Target); ok {
		h.cur = h.newQueue(q)
		return h
	}
	if g, ok := conf.Group(dec.Target); ok {
		h.cur = h.newGroup(g)
		return h
	}
	if !e.users.Get(dec.Target).active() {
		return nil
	}
	h.cur = h.newExt(dec.Target)
	return h
}

// seconds turns a configured ring time into a duration.
func seconds(s, def int) time.Duration { return time.Duration(ringOr(s, def)) * time.Second }
