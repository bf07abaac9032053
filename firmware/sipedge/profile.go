package sipedge

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/emiago/sipgo/sip"
)

// Unicast SIP plug and play: besides the multicast SUBSCRIBE to 224.0.1.75
// (answered by provisioning's own socket), Yealink and Snom phones send the
// same "Event: ua-profile" SUBSCRIBE straight to the SIP server they were
// given. Such a request carries no credentials and names no domain the box
// serves (the phone knows only an address), so it takes its own branch
// before the domain policy and authentication: stage 2 (validation) and
// stage 4 (zones) run, then Profiles decides with the rules of the
// multicast path. Every refusal, whatever its reason, is silence; the
// answer (200, then a NOTIFY whose body is the bootstrap URL, never a
// secret) goes to the request's source over its own flow, never to an
// address the request names.

// Profiles decides unicast ua-profile SUBSCRIBEs; provision.UnicastPnP
// implements it.
type Profiles interface {
	// ProfileURL returns the phone's MAC and the URL to send it, or ok
	// false: say nothing. msg is the request as parsed (re-serialised).
	ProfileURL(msg []byte, src netip.Addr) (mac, url string, ok bool)
}

type profilesBox struct{ p Profiles }

// SetProfiles hands unicast ua-profile SUBSCRIBEs to p from now on; nil
// (the default) leaves them to the ordinary SUBSCRIBE path.
func (s *Server) SetProfiles(p Profiles) {
	if p == nil {
		s.profiles.Store(nil)
		return
	}
	s.profiles.Store(&profilesBox{p: p})
}

// profileSubscribe handles req when it is a ua-profile SUBSCRIBE and a
// Profiles is set; it reports false otherwise (the request goes on).
func (s *Server) profileSubscribe(src netip.Addr, req *sip.Request, tx sip.ServerTransaction) bool {
	b := s.profiles.Load()
	if b == nil || req.Method != sip.SUBSCRIBE {
		return false
	}
	event, ok := profileEvent(req)
	if !ok {
		return false
	}
	if v := s.validator.Check(req); v.Drop || v.Status != 0 {
		s.event(logs.KindInvalid, req, "", v.Reason)
		return true
	}
	if v := s.policy.Zone(src); v.Drop {
		return true
	}
	mac, url, ok := b.p.ProfileURL([]byte(req.String()), src)
	if !ok {
		return true
	}
	tag := sip.GenerateTagN(16)
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	if to := res.To(); to != nil && !to.Params.Has("tag") {
		to.Params.Add("tag", tag)
	} else if to != nil {
		tag, _ = to.Params.Get("tag")
	}
	res.AppendHeader(sip.NewHeader("Expires", "0"))
	if err := tx.Respond(res); err != nil {
		s.logger.Debug("sip: ua-profile 200 not sent", "src", req.Source(), "err", err)
		return true
	}
	notify, err := profileNotify(req, res, event, mac, url)
	if err != nil {
		s.logger.Debug("sip: ua-profile NOTIFY", "src", req.Source(), "err", err)
		return true
	}
	// A client transaction retransmits over UDP until the phone's 200;
	// the global PnP rate bounds how many run at once.
	s.goBackground(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 32*time.Second) // Timer F
		defer cancel()
		ntx, err := s.Sender().TransactionRequest(ctx, notify)
		if err != nil {
			s.logger.Debug("sip: ua-profile NOTIFY not sent", "dst", notify.Destination(), "err", err)
			return
		}
		defer ntx.Terminate()
		select {
		case <-ntx.Responses():
		case <-ntx.Done():
		case <-ctx.Done():
		}
	})
	return true
}

// profileEvent returns the first Event (or compact "o") header's value
// when its package is ua-profile.
func profileEvent(req *sip.Request) (string, bool) {
	for _, h := range req.Headers() {
		if n := h.Name(); strings.EqualFold(n, "Event") || strings.EqualFold(n, "o") {
			ev, _, _ := strings.Cut(h.Value(), ";")
			return h.Value(), strings.EqualFold(strings.TrimSpace(ev), "ua-profile")
		}
	}
	return "", false
}

// profileNotify is the NOTIFY carrying url (application/url) in the
// dialog the 200 res created, addressed to the request's source.
func profileNotify(req *sip.Request, res *sip.Response, event, mac, url string) (*sip.Request, error) {
	src, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return nil, err
	}
	n := sip.NewRequest(sip.NOTIFY, sip.Uri{Scheme: "sip", User: mac, Host: src.Addr().Unmap().String(), Port: int(src.Port())})
	n.SetTransport(req.Transport())
	n.SetDestination(req.Source())
	from := &sip.FromHeader{Address: *res.To().Address.Clone(), Params: res.To().Params.Clone()}
	to := &sip.ToHeader{Address: *req.From().Address.Clone(), Params: req.From().Params.Clone()}
	n.AppendHeader(from)
	n.AppendHeader(to)
	n.AppendHeader(sip.NewHeader("Call-ID", req.CallID().Value()))
	n.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.NOTIFY})
	n.AppendHeader(sip.NewHeader("Max-Forwards", "70"))
	// The flow (onFlow) puts the box's address and port in the Contact.
	n.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: src.Addr().Unmap().String()}})
	n.AppendHeader(sip.NewHeader("Event", event))
	n.AppendHeader(sip.NewHeader("Subscription-State", "terminated;reason=timeout"))
	n.AppendHeader(sip.NewHeader("Content-Type", "application/url"))
	n.SetBody([]byte(url))
	return n, nil
}
