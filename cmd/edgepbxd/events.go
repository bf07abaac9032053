package main

import (
	"fmt"
	"net"
	"slices"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/presence"
)

// newEvents builds the event subscription server (busy-lamp fields,
// presence, MWI) on the SIP edge: SUBSCRIBEs go to it, registrations
// change presence, and the B2BUA reports dialogs to it (newCalls takes
// dialogObserver). Who may watch whom is the call features' pickup/
// visibility groups (featureVisibility); DND comes from the features'
// settings (newFeatures).
func (d *daemon) newEvents() error {
	host, _, err := net.SplitHostPort(d.sip.Contact("udp"))
	if err != nil {
		host = ""
	}
	ev, err := presence.New(presence.Config{
		Sender: d.sip.Sender(), Host: host, Phones: d.sip.EventPhones(),
		Registered: d.sip.Registered, Unsolicited: d.unsolicitedMWI, Log: d.log,
		Visibility: featureVisibility{d},
	})
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	d.sip.OnRegistration(ev.RegistrationChanged)
	d.sip.SetEvents(ev)
	d.events = ev
	return nil
}

// unsolicitedMWI reports the extensions the telephony configuration sets
// to unsolicited MWI (read live: a change applies to the next NOTIFY).
func (d *daemon) unsolicitedMWI(ext, _ string) bool {
	return d.tel != nil && slices.Contains(d.tel.Current().UnsolicitedMWI, ext)
}

// dialogObserver is what the B2BUA reports dialogs to: the event server
// (when it runs) and the queues.
func (d *daemon) dialogObserver() call.DialogObserver {
	t := dialogTee{d.queues}
	if d.events != nil {
		t = append(t, d.events)
	}
	return t
}
