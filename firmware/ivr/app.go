package ivr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
)

// Prompts gives a prompt's audio (*prompts.Library: the admin's upload
// for the language, else the generated default).
type Prompts interface {
	Get(lang, name string, rate int) ([]int16, error)
}

// Service is the IVR application of the box's application endpoint
// (call.Apps for "ivr/<menu>"); other applications (voicemail) are opened
// through Next.
type Service struct {
	Conf    func() Config
	Router  *Router // time conditions: zone and clock
	Prompts Prompts
	// Route routes an external destination as a call of extension as
	// (the features' RouteOutbound: class of service, limits, guards).
	Route func(as, number string) (dialplan.Decision, *dialplan.Lease, error)
	// Next opens every other application (voicemail); nil: none.
	Next call.Apps
	// Ring is how long a destination rings before the menu takes the
	// caller back (0: DefaultRing).
	Ring time.Duration
	Log  *slog.Logger
}

// DefaultRing bounds the ringing of a destination chosen in a menu.
const DefaultRing = 30 * time.Second

// Open implements call.Apps.
func (s *Service) Open(app, arg string, caller call.Caller) (call.App, error) {
	if app != dialplan.AppIVR {
		if s.Next == nil {
			return nil, fmt.Errorf("%w: %q", call.ErrNoApp, app)
		}
		return s.Next.Open(app, arg, caller)
	}
	if _, ok := s.Conf().Menu(arg); !ok {
		return nil, fmt.Errorf("%w: menu %q", call.ErrNoApp, clip(arg))
	}
	return &session{s: s, start: arg, caller: caller}, nil
}

// session is one caller in the menus.
type session struct {
	s      *Service
	start  string
	caller call.Caller
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Service) prompt(lang, name string, rate int) []int16 {
	if s.Prompts != nil {
		if lang == "" {
			lang = "en"
		}
		if pcm, err := s.Prompts.Get(lang, name, rate); err == nil {
			return pcm
		}
		if pcm, err := s.Prompts.Get("en", name, rate); err == nil {
			return pcm
		}
	}
	pcm, err := prompts.Default(name)
	if err != nil {
		return make([]int16, rate/5)
	}
	if rate == prompts.Rate {
		return pcm
	}
	out := make([]int16, len(pcm)*rate/prompts.Rate)
	for i := range out {
		out[i] = pcm[i*prompts.Rate/rate]
	}
	return out
}

// errHangup ends the session with goodbye.
var errHangup = errors.New("ivr: goodbye")

// Run implements call.App: the menus until the caller is connected,
// reaches another application, or hears goodbye.
func (a *session) Run(ctx context.Context, leg call.Leg) error {
	s := a.s
	menu, hops := a.start, 0
	for {
		hops++
		if hops > MaxHops {
			return s.goodbye(ctx, leg, "")
		}
		conf := s.Conf()
		m, ok := conf.Menu(menu)
		if !ok {
			return s.goodbye(ctx, leg, "")
		}
		next, err := a.menu(ctx, leg, m)
		if err != nil {
			if errors.Is(err, errHangup) {
				return s.goodbye(ctx, leg, m.Lang)
			}
			return err
		}
		// next is a configured destination: go there.
		menu, err = a.go_(ctx, leg, conf, m, next)
		if err != nil {
			if errors.Is(err, errHangup) {
				return s.goodbye(ctx, leg, m.Lang)
			}
			return err
		}
		if menu == "" { // another application had the caller and is done
			return nil
		}
	}
}

func (s *Service) goodbye(ctx context.Context, leg call.Leg, lang string) error {
	err := leg.Play(ctx, s.prompt(lang, prompts.Goodbye, leg.Rate()))
	if ctx.Err() != nil {
		return nil // the caller hung up
	}
	return err
}

// menu plays m until a key chooses an option (its destination is
// returned) or the repeats are used up (Fallback; errHangup when none).
func (a *session) menu(ctx context.Context, leg call.Leg, m Menu) (string, error) {
	s := a.s
	rate := leg.Rate()
	name := m.Prompt
	if name == "" {
		name = prompts.MenuDefault
	}
	timeout := time.Duration(or(m.Timeout, DefaultTimeout)) * time.Second
	for try := 0; try < or(m.Repeats, DefaultRepeats); try++ {
		key, ok, err := a.listen(ctx, leg, s.prompt(m.Lang, name, rate), timeout)
		if err != nil {
			return "", err
		}
		if !ok {
			if m.OnTimeout != "" {
				return m.OnTimeout, nil
			}
			continue
		}
		s.log().Debug("ivr: key", "menu", m.Number, "key", string(key))
		for _, o := range m.Options {
			if o.Key == string(key) {
				return o.Dest, nil
			}
		}
		if m.OnInvalid != "" {
			return m.OnInvalid, nil
		}
		if err := leg.Play(ctx, s.prompt(m.Lang, prompts.Invalid, rate)); err != nil {
			return "", err
		}
	}
	if m.Fallback != "" {
		return m.Fallback, nil
	}
	return "", errHangup
}

// listen plays pcm (a key interrupts it) and waits up to timeout after
// it for a key.
func (a *session) listen(ctx context.Context, leg call.Leg, pcm []int16, timeout time.Duration) (byte, bool, error) {
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- leg.Play(pctx, pcm) }()
	var timer <-chan time.Time
	for {
		select {
		case d := <-leg.DTMF():
			stop()
			if done != nil { // the prompt was still playing
				<-done
			}
			return d.Key, true, nil
		case err := <-done:
			if ctx.Err() != nil {
				return 0, false, ctx.Err()
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				return 0, false, err
			}
			done = nil
			t := time.NewTimer(timeout)
			defer t.Stop()
			timer = t.C
		case <-timer:
			return 0, false, nil
		case <-ctx.Done():
			if done != nil {
				<-done
			}
			return 0, false, ctx.Err()
		case <-leg.Frames(): // audio is not needed here; keep the queue empty
		}
	}
}

// go_ takes the caller to dest: another menu (returned), a time
// condition's choice, voicemail, or a connected destination
// (call.ErrHandedOver). A destination that does not answer takes the
// caller back to menu m.
func (a *session) go_(ctx context.Context, leg call.Leg, conf Config, m Menu, dest string) (string, error) {
	s := a.s
	for hop := 0; hop < MaxHops; hop++ {
		d, err := ParseDest(dest)
		if err != nil {
			s.log().Warn("ivr: destination", "menu", m.Number, "dest", clip(dest), "err", err)
			return "", errHangup
		}
		switch {
		case d.Voicemail:
			if s.Next == nil {
				return "", errHangup
			}
			app, err := s.Next.Open(dialplan.AppVoicemail, d.Number, a.caller)
			if err != nil {
				s.log().Info("ivr: voicemail", "menu", m.Number, "box", d.Number, "err", err)
				return "", errHangup
			}
			return "", app.Run(ctx, leg)
		case d.External != "":
			if s.Route == nil {
				return "", errHangup
			}
			// Only the number the admin configured (checked against the
			// class of service of d.As when saved, and again now).
			dec, lease, err := s.Route(d.As, d.External)
			if err != nil || dec.Kind != dialplan.KindOutbound {
				lease.Release()
				s.log().Info("ivr: external destination refused", "menu", m.Number, "as", d.As, "err", err)
				return "", errHangup
			}
			return a.connect(ctx, leg, m, dec, lease)
		}
		if _, ok := conf.Menu(d.Number); ok {
			return d.Number, nil
		}
		if t, ok := conf.TimeCondition(d.Number); ok {
			var now time.Time
			var box *time.Location
			if s.Router != nil {
				now, box = s.Router.now(), s.Router.box()
			} else {
				now = time.Now()
			}
			dest = conf.Resolve(t, now, box)
			continue
		}
		dec := dialplan.Decision{Kind: dialplan.KindInternal, Class: dialplan.Internal, Target: d.Number, Dialled: d.Number}
		return a.connect(ctx, leg, m, dec, nil)
	}
	return "", errHangup
}

// connect hands the caller to dec; when nobody answers, back to m.
func (a *session) connect(ctx context.Context, leg call.Leg, m Menu, dec dialplan.Decision, lease *dialplan.Lease) (string, error) {
	s := a.s
	c, ok := leg.(call.Connector)
	if !ok {
		lease.Release()
		return "", errHangup
	}
	_ = leg.Play(ctx, s.prompt(m.Lang, prompts.Transfer, leg.Rate()))
	ring := s.Ring
	if ring <= 0 {
		ring = DefaultRing
	}
	s.log().Info("ivr: connecting", "menu", m.Number, "kind", dec.Kind, "target", dec.Target)
	err := c.Connect(ctx, dec, lease, ring)
	switch {
	case errors.Is(err, call.ErrHandedOver):
		return "", err
	case ctx.Err() != nil:
		return "", ctx.Err()
	}
	s.log().Info("ivr: destination did not answer", "menu", m.Number, "target", dec.Target)
	return m.Number, nil
}

func or(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
