package main

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/firmware/voicemail"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// newVoicemail builds the voicemail service: messages in the recording
// store (sealed with the media data key, inside its quota), PINs hashed
// with argon2id, wrong PINs charged to the SIP edge's guard.
func (d *daemon) newVoicemail() (*voicemail.Service, error) {
	key, err := d.mediaKey()
	if err != nil {
		return nil, err
	}
	keys, err := recording.StaticKey(key)
	if err != nil {
		return nil, err
	}
	if d.recordings, err = recording.OpenStore(recording.Config{Dir: filepath.Join(d.cfg.dataDir, "recordings"),
		Keys: keys, Quota: recordingQuota, Logger: d.log}); err != nil {
		return nil, err
	}
	exts := d.sip.Extensions()
	return voicemail.New(voicemail.Config{
		DB: d.db, Audio: voicemail.Recordings{Store: d.recordings},
		// One PIN hash at a time, a few waiting: PIN guessing cannot
		// take the CPU from calls.
		Hasher: auth.NewHasher(auth.DefaultParams, 1, 8),
		Exists: func(ext string) bool { return slices.Contains(exts.List(), ext) },
		Guard:  d.sip,
		// MWI: the SIP edge's message-summary notifier is wired here once
		// it exists (voicemail.MWI).
		Prompts: voicemail.LibraryPrompts{Lib: &prompts.Library{Dir: filepath.Join(d.cfg.dataDir, "prompts")}, Lang: "en"},
		Events:  d.secLog, Log: d.log,
	})
}

// recordingQuota bounds voicemail and recordings together; the store also
// keeps its free-space floor on /data whatever the quota says.
const recordingQuota = 4 << 30

// runRecordings sweeps recordings past their category's retention.
func (d *daemon) runRecordings(ctx context.Context) error {
	if d.recordings != nil {
		d.recordings.Run(ctx, time.Hour)
		return nil
	}
	<-ctx.Done()
	return nil
}

// mediaKey is the media data key PID 1 hands over (init/keys). In --dev
// mode there is none: one is derived from the dev store key, so dev
// recordings are still sealed.
func (d *daemon) mediaKey() ([]byte, error) {
	if len(d.id.MediaKey) == 32 {
		return d.id.MediaKey, nil
	}
	if d.cfg.devDir == "" {
		return nil, fmt.Errorf("voicemail: no media data key from PID 1")
	}
	return hkdf.Key(sha256.New, d.id.DeviceKey, nil, "edgepbx dev media key", 32)
}

// selfPinholes skips pinholes toward the box's own media address: an
// application call's relay leg talks to a socket of the box itself, over
// the loopback route the firewall always accepts.
type selfPinholes struct {
	media.Pinholes
	self netip.Addr
}

func (p selfPinholes) OpenPinhole(ctx context.Context, ph fwspec.Pinhole) error {
	if ph.Remote.Unmap() == p.self {
		return nil
	}
	return p.Pinholes.OpenPinhole(ctx, ph)
}

func (p selfPinholes) ClosePinhole(ctx context.Context, ph fwspec.Pinhole) error {
	if ph.Remote.Unmap() == p.self {
		return nil
	}
	return p.Pinholes.ClosePinhole(ctx, ph)
}
