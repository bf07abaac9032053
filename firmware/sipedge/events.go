package sipedge

import (
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/edgepbx/edgepbx/firmware/presence"
	"github.com/emiago/sipgo/sip"
)

// Events is the event subscription server (firmware/presence) as the edge
// sees it: busy-lamp fields, presence and message waiting.
type Events interface {
	// OnSubscribe handles a SUBSCRIBE: subscriber is the digest-
	// authenticated extension of a new subscription, "" for one inside a
	// subscription's dialog (its identifiers are the credential).
	OnSubscribe(req *sip.Request, tx sip.ServerTransaction, subscriber string)
}

// eventsBox lets atomic.Pointer hold an interface.
type eventsBox struct{ e Events }

// SetEvents hands SUBSCRIBE requests to e from now on (call it before
// Serve); without it they get 501. Serve closes e (when it is an
// io.Closer) before the sockets close, with the calls.
func (s *Server) SetEvents(e Events) {
	if e == nil {
		s.events.Store(nil)
		return
	}
	s.events.Store(&eventsBox{e: e})
}

func (s *Server) eventHandler() Events {
	if b := s.events.Load(); b != nil {
		return b.e
	}
	return nil
}

// closeEvents stops the subscription server while the sockets still work.
func (s *Server) closeEvents() {
	if c, ok := s.eventHandler().(io.Closer); ok {
		_ = c.Close()
	}
}

// OnRegistration calls f with an extension whenever it gains its first
// live binding or loses its last one (presence). f runs in the
// registering request's goroutine, outside the location service's lock:
// it must not block for long.
func (s *Server) OnRegistration(f func(ext string, registered bool)) {
	s.location.onChange.Store(&f)
}

// dispatchSubscribe is stage 7 for SUBSCRIBE. A new subscription is
// digest-authenticated like a REGISTER (same answers for unknown users and
// wrong passwords); a refresh inside a subscription's dialog is not
// challenged: the server answers 481 to dialogs it did not make.
func (s *Server) dispatchSubscribe(now time.Time, src netip.Addr, req *sip.Request, tx sip.ServerTransaction, answer answerFunc, h Events) {
	tx = s.onFlowTx(req, tx)
	if to := req.To(); to != nil && to.Params.Has("tag") {
		h.OnSubscribe(req, tx, "")
		return
	}
	user, _, ok := s.authenticate(now, src, req, answer, 0)
	if !ok {
		return
	}
	h.OnSubscribe(req, tx, user)
}

// EventPhones adapts the location service to presence.Phones (where
// unsolicited MWI goes).
func (s *Server) EventPhones() presence.Phones { return eventPhones{s: s} }

type eventPhones struct{ s *Server }

func (p eventPhones) Phones(ext string) []presence.Phone {
	bs := p.s.location.Lookup(p.s.now(), ext)
	slices.SortStableFunc(bs, func(a, b Binding) int { return b.Expires.Compare(a.Expires) })
	out := make([]presence.Phone, 0, len(bs))
	for _, b := range bs {
		var u sip.Uri
		if err := sip.ParseUri(stripAngle(b.Contact), &u); err != nil {
			continue // checked at REGISTER
		}
		u.Headers = nil
		out = append(out, presence.Phone{URI: u, Dest: b.Source, Transport: b.Transport, UserAgent: b.UserAgent})
	}
	return out
}

func stripAngle(c string) string {
	if len(c) > 1 && c[0] == '<' && c[len(c)-1] == '>' {
		return c[1 : len(c)-1]
	}
	return c
}

// Registered reports whether ext has a live binding (presence).
func (s *Server) Registered(ext string) bool {
	return len(s.location.Lookup(s.now(), ext)) > 0
}
