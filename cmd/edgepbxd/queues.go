package main

import "github.com/edgepbx/edgepbx/firmware/call"

// dialogTee tells every observer of it each dialog change: the event
// server (busy lamps, presence) and the queues (an agent on a call is not
// offered queue calls). Each observer must not block, as the B2BUA
// requires of one.
type dialogTee []call.DialogObserver

func (t dialogTee) DialogChanged(ev call.DialogEvent) {
	for _, o := range t {
		o.DialogChanged(ev)
	}
}
