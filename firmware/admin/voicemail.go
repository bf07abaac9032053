package admin

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/firmware/voicemail"
)

// Voicemail is the voicemail service as the admin side uses it;
// *voicemail.Service implements it. Changes take an audit entry that is
// written in the same transaction.
type Voicemail interface {
	Mailbox(ext string) (voicemail.Mailbox, error)
	Messages(ext string) ([]voicemail.Message, error)
	Audio(ext, id string) (int, []int16, error)
	Delete(ext, id string, also ...func(*store.Tx) error) error
	ResetPIN(ctx context.Context, ext string, also ...func(*store.Tx) error) (string, error)
	Unlock(ext string, also ...func(*store.Tx) error) error
	SetOptions(ext string, o voicemail.Options, also ...func(*store.Tx) error) error
}

// MailboxView is one mailbox as the API shows it: never the PIN or its
// hash.
type MailboxView struct {
	Ext         string              `json:"ext"`
	PINSet      bool                `json:"pin_set"`
	LockedUntil *time.Time          `json:"locked_until,omitempty"`
	Options     voicemail.Options   `json:"options"`
	Greetings   []string            `json:"greetings"`
	New         int                 `json:"new"`
	Old         int                 `json:"old"`
	Messages    []voicemail.Message `json:"messages"`
}

// vmError maps the voicemail service's refusals to API answers.
func vmError(err error) error {
	switch {
	case errors.Is(err, voicemail.ErrNoMailbox), errors.Is(err, voicemail.ErrNoMessage):
		return fmt.Errorf("%w: %v", errNotFound, err)
	case errors.Is(err, voicemail.ErrOptions):
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return err
}

func (s *Server) apiMailbox(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.vm == nil {
		return errUnavailable
	}
	v, err := s.mailboxView(r.PathValue("ext"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// mailboxView is one mailbox as the API and the page show it.
func (s *Server) mailboxView(ext string) (MailboxView, error) {
	b, err := s.vm.Mailbox(ext)
	if err != nil {
		return MailboxView{}, vmError(err)
	}
	ms, err := s.vm.Messages(ext)
	if err != nil {
		return MailboxView{}, vmError(err)
	}
	v := MailboxView{Ext: ext, PINSet: b.PINHash != "", Greetings: slices.Sorted(maps.Keys(b.Greetings)), Messages: ms,
		Options: voicemail.Options{SkipPINOwnPhone: b.SkipPINOwnPhone, Email: b.Email, AttachAudio: b.AttachAudio}}
	if b.LockedUntil.After(s.clock.Now()) {
		v.LockedUntil = &b.LockedUntil
	}
	if v.Greetings == nil {
		v.Greetings = []string{}
	}
	if v.Messages == nil {
		v.Messages = []voicemail.Message{}
	}
	for _, m := range ms {
		if m.New {
			v.New++
		} else {
			v.Old++
		}
	}
	return v, nil
}

// apiMessageAudio answers a message decrypted as a WAV file (16-bit PCM):
// for the browser's player, or as a download with ?download=1. Every
// access is audited before the audio leaves.
func (s *Server) apiMessageAudio(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.vm == nil {
		return errUnavailable
	}
	ext, id := r.PathValue("ext"), r.PathValue("id")
	rate, pcm, err := s.vm.Audio(ext, id)
	if err != nil {
		return vmError(err)
	}
	action := "voicemail.message.listen"
	if r.URL.Query().Get("download") == "1" {
		action = "voicemail.message.download"
		w.Header().Set("Content-Disposition", `attachment; filename="voicemail-`+ext+"-"+id+`.wav"`)
	}
	if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: action, Target: ext + "/" + id}); err != nil {
		return err
	}
	wav := wavPCM16(rate, pcm)
	w.Header().Set("Content-Type", "audio/wav")
	w.Header().Set("Content-Length", strconv.Itoa(len(wav)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(wav)
	return nil
}

func (s *Server) apiDeleteMessage(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.vm == nil {
		return errUnavailable
	}
	ext, id := r.PathValue("ext"), r.PathValue("id")
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "voicemail.message.delete", Target: ext + "/" + id}
	if err := s.vm.Delete(ext, id, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return vmError(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}

// apiMailboxPIN sets a new random PIN, shown once in the answer (the
// store keeps only its argon2id hash), and lifts a lockout.
func (s *Server) apiMailboxPIN(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.vm == nil {
		return errUnavailable
	}
	ext := r.PathValue("ext")
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "voicemail.pin.reset", Target: ext}
	pin, err := s.vm.ResetPIN(r.Context(), ext, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) })
	if err != nil {
		return vmError(err)
	}
	s.owners.end(ext, "", true) // the owner signs in again with the new PIN
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]string{"status": "new PIN", "ext": ext, "pin": pin})
	return nil
}

func (s *Server) apiMailboxUnlock(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.vm == nil {
		return errUnavailable
	}
	ext := r.PathValue("ext")
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "voicemail.unlock", Target: ext}
	if err := s.vm.Unlock(ext, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return vmError(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "unlocked"})
	return nil
}

func (s *Server) apiMailboxOptions(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.vm == nil {
		return errUnavailable
	}
	var o voicemail.Options
	if err := decodeJSON(r, &o); err != nil {
		return err
	}
	ext := r.PathValue("ext")
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "voicemail.options", Target: ext,
		Detail: fmt.Sprintf("skip_pin_own_phone=%t email_set=%t attach_audio=%t", o.SkipPINOwnPhone, o.Email != "", o.AttachAudio)}
	if err := s.vm.SetOptions(ext, o, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return vmError(err)
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}

// wavPCM16 is a mono 16-bit PCM WAV file.
func wavPCM16(rate int, pcm []int16) []byte {
	n := 2 * len(pcm)
	b := make([]byte, 0, 44+n)
	le := binary.LittleEndian
	b = append(b, "RIFF"...)
	b = le.AppendUint32(b, uint32(36+n))
	b = append(b, "WAVEfmt "...)
	b = le.AppendUint32(b, 16)
	b = le.AppendUint16(b, 1) // PCM
	b = le.AppendUint16(b, 1) // mono
	b = le.AppendUint32(b, uint32(rate))
	b = le.AppendUint32(b, uint32(2*rate))
	b = le.AppendUint16(b, 2)
	b = le.AppendUint16(b, 16)
	b = append(b, "data"...)
	b = le.AppendUint32(b, uint32(n))
	for _, v := range pcm {
		b = le.AppendUint16(b, uint16(v))
	}
	return b
}
