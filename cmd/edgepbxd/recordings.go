package main

import (
	"fmt"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/callrec"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// recordings is call recording: the policy (stored), the sessions that tap
// answered calls (call.Recorder) and the admin's view of the store
// (admin.Recordings).
type recordings struct {
	store  *recording.Store
	policy *callrec.PolicyStore
	mgr    *callrec.Manager
}

// newRecordings needs the media engine's store; feat gives the toggle code
// of on-demand recording from the one feature-code table.
func (d *daemon) newRecordings(feat *features.Engine) (*recordings, error) {
	if d.media == nil {
		return nil, fmt.Errorf("no recording store (see the media log)")
	}
	ps, err := callrec.OpenPolicy(d.db)
	if err != nil {
		return nil, err
	}
	if err := d.media.recordings.SetRetention(ps.Get().Retention()); err != nil {
		return nil, err
	}
	mgr, err := callrec.New(callrec.Config{Store: d.media.recordings, Policy: ps.Get,
		Code: func() (string, bool) { return feat.Code(features.RecordToggle) }, Log: d.log.With("svc", "callrec"),
		Announce: recordingNotice(d.media.prompts, d.log.With("svc", "callrec"))}) // holdmusic.go
	if err != nil {
		return nil, err
	}
	return &recordings{store: d.media.recordings, policy: ps, mgr: mgr}, nil
}

// Record implements call.Recorder.
func (r *recordings) Record(c call.RecordCall) (func() string, string) {
	out := c.Direction == string(dialplan.KindOutbound) || c.Direction == string(dialplan.KindEmergency)
	trunk := c.Trunk
	if trunk == "" {
		trunk = c.Caller.Trunk + c.Callee.Trunk
	}
	s, note := r.mgr.Start(callrec.Call{ID: c.ID, From: c.From, To: c.To, Codec: c.Codec, Formats: c.Formats, Media: c.Media,
		Parties: callrec.Parties{CallerExt: c.Caller.Extension, CalleeExt: c.Callee.Extension, Trunk: trunk, Outbound: out,
			Dialled: strings.TrimPrefix(c.Dialled, "+")}})
	if s == nil {
		return nil, note
	}
	return s.Stop, note
}

// The admin side (admin.Recordings).

func (r *recordings) List(category string, limit int) []callrec.Item {
	return callrec.List(r.store, category, limit)
}
func (r *recordings) Usage() recording.Usage { return r.store.Usage() }
func (r *recordings) ExportWAV(id string) ([]byte, recording.Meta, error) {
	return r.store.ExportWAV(id)
}
func (r *recordings) Delete(id string) error { return r.store.Delete(id) }
func (r *recordings) Policy() callrec.Policy { return r.policy.Get() }
func (r *recordings) SetPolicy(p callrec.Policy, also func(*store.Tx) error) error {
	if err := r.policy.Set(p, also); err != nil {
		return err
	}
	return r.store.SetRetention(p.Retention())
}
