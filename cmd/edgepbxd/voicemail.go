package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/voicemail"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// newVoicemail builds the voicemail service: messages in the media
// engine's recording store (sealed with the media data key, inside its
// quota and free-space floor), PINs hashed with argon2id, wrong PINs
// charged to the SIP edge's guard, message counts to the phones' MWI.
func (d *daemon) newVoicemail() (*voicemail.Service, error) {
	if d.media == nil {
		return nil, fmt.Errorf("voicemail: the media engine is disabled")
	}
	exts := d.sip.Extensions()
	cfg := voicemail.Config{
		DB: d.db, Audio: voicemail.Recordings{Store: d.media.recordings},
		// One PIN hash at a time, a few waiting: PIN guessing cannot
		// take the CPU from calls.
		Hasher:  auth.NewHasher(auth.DefaultParams, 1, 8),
		Exists:  func(ext string) bool { return slices.Contains(exts.List(), ext) },
		Guard:   d.sip,
		Prompts: voicemail.LibraryPrompts{Lib: d.media.prompts, Lang: "en"},
		Events:  d.secLog, Log: d.log,
	}
	if d.mail != nil {
		cfg.Mail = d.mail // voicemail to e-mail
	}
	if d.events != nil {
		cfg.MWI = d.events // message-summary NOTIFYs (firmware/presence)
	}
	return voicemail.New(cfg)
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

// voicemailPrune is how often message records whose audio the recording
// store's retention deleted are removed (and MWI updated). A listen in
// between finds the message expired (404) and removes it as well.
const voicemailPrune = 5 * time.Minute

// runVoicemailPrune keeps the message lists consistent with the recording
// store's retention.
func (d *daemon) runVoicemailPrune(ctx context.Context) error {
	t := time.NewTicker(voicemailPrune)
	defer t.Stop()
	for {
		if n, err := d.voicemail.Prune(); err != nil {
			d.log.Error("voicemail: retention", "err", err)
		} else if n > 0 {
			d.log.Info("voicemail: expired messages removed", "messages", n)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil
		}
	}
}
