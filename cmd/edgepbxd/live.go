package main

import (
	"net"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
)

// liveView is the SIP edge's registrations and the B2BUA's calls for the
// admin pages (admin.Live). calls is nil when calls are disabled.
type liveView struct {
	sip   *sipedge.Server
	calls *call.B2BUA
}

func (v liveView) Registrations() []admin.Registration {
	now := time.Now()
	var out []admin.Registration
	for _, u := range v.sip.Extensions().List() {
		for _, b := range v.sip.Location().Lookup(now, u) {
			out = append(out, admin.Registration{User: u, Contact: b.Contact, Source: b.Source, Transport: b.Transport,
				UserAgent: b.UserAgent, Expires: b.Expires})
		}
	}
	return out
}

func (v liveView) Calls() []admin.LiveCall {
	if v.calls == nil {
		return nil
	}
	var out []admin.LiveCall
	for _, c := range v.calls.Live() {
		out = append(out, admin.LiveCall{ID: c.ID, From: c.From, To: c.To, Direction: c.Direction, Trunk: c.Trunk,
			Start: c.Start, Answer: c.Answer, Codec: c.Codec, SRTPCaller: c.SRTPCaller, SRTPCallee: c.SRTPCallee, MOS: c.MOS})
	}
	return out
}

func (v liveView) Hangup(id string) bool {
	return v.calls != nil && v.calls.Hangup(id, "hung up by admin")
}

func (v liveView) Endpoint() admin.SIPEndpoint {
	port := func(t string) int {
		switch a := v.sip.Addr(t).(type) {
		case *net.UDPAddr:
			return a.Port
		case *net.TCPAddr:
			return a.Port
		}
		return 0
	}
	return admin.SIPEndpoint{UDP: port("udp"), TCP: port("tcp"), TLS: port("tls"), Realm: v.sip.Settings().Realm}
}
