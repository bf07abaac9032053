package main

import (
	"fmt"
	"path/filepath"
	"slices"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/conference"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/moh"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
)

// newConference builds the music-on-hold library (/data/moh) and the
// conference rooms (rooms in the store, PINs hashed with argon2id, wrong
// PINs charged to the SIP edge's guard like voicemail's).
func (d *daemon) newConference() (*conference.Service, *moh.Library, error) {
	if d.media == nil {
		return nil, nil, fmt.Errorf("conference: the media engine is disabled")
	}
	lib, err := moh.New(filepath.Join(d.cfg.dataDir, "moh"))
	if err != nil {
		return nil, nil, err
	}
	exts := d.sip.Extensions()
	svc, err := conference.New(conference.Config{
		DB:      d.db,
		Hasher:  auth.NewHasher(auth.DefaultParams, 1, 8),
		Taken:   func(n string) bool { return slices.Contains(exts.List(), n) },
		Guard:   d.sip,
		Prompts: libraryPrompts{d.media.prompts},
		Music:   lib,
		Log:     d.log.With("svc", "conference"),
	})
	return svc, lib, err
}

// libraryPrompts plays the prompt library's English prompts.
type libraryPrompts struct{ lib *prompts.Library }

func (p libraryPrompts) Prompt(name string, rate int) []int16 {
	pcm, err := p.lib.Get("en", name, rate)
	if err != nil {
		return nil
	}
	return pcm
}

// appMux hands each KindApp target to the application of its name.
type appMux map[string]call.Apps

func (m appMux) Open(app, arg string, caller call.Caller) (call.App, error) {
	a, ok := m[app]
	if !ok || a == nil {
		return nil, fmt.Errorf("%w: %q", call.ErrNoApp, app)
	}
	return a.Open(app, arg, caller)
}

// roomRouter sends a dialled conference room number to the room (it
// holds the caller's concurrency slot like any call); everything else
// goes to the features and the dial plan.
type roomRouter struct {
	*features.Engine
	plan  features.Base
	rooms *conference.Service
}

func (r roomRouter) RouteOutbound(from, dialled string) (dialplan.Decision, *dialplan.Lease, error) {
	if n, err := dialplan.Normalize(dialled); err == nil && r.rooms.Has(n) {
		lease, err := r.plan.AdmitApp(from)
		return dialplan.Decision{Kind: dialplan.KindApp, Class: dialplan.Internal, Target: conference.Target(n), Dialled: n}, lease, err
	}
	return r.Engine.RouteOutbound(from, dialled)
}
