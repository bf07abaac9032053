package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/conference"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/moh"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Conference is the conference rooms as the admin side uses them;
// *conference.Service implements it.
type Conference interface {
	Rooms() ([]conference.Room, error)
	Room(number string) (conference.Room, error)
	Put(ctx context.Context, number string, req conference.RoomRequest, also ...func(*store.Tx) error) (conference.Room, error)
	Delete(number string, also ...func(*store.Tx) error) error
	Participants(number string) ([]conference.Participant, error)
	Kick(number, id string, also ...func(*store.Tx) error) error
}

// MusicOnHold is the music library; *moh.Library implements it.
type MusicOnHold interface {
	Classes() ([]moh.Class, error)
	Put(class string, upload []byte) (wav.Info, error)
	Delete(class string) error
}

// RoomView is a room as the API shows it: whether PINs are set, never
// the PINs or their hashes.
type RoomView struct {
	Number          string                   `json:"number"`
	Name            string                   `json:"name,omitempty"`
	PINSet          bool                     `json:"pin_set"`
	ModeratorPINSet bool                     `json:"moderator_pin_set"`
	MaxParticipants int                      `json:"max_participants"`
	WaitModerator   bool                     `json:"wait_moderator"`
	Tones           bool                     `json:"tones"`
	Wideband        bool                     `json:"wideband"`
	Participants    []conference.Participant `json:"participants"`
}

func roomView(r conference.Room, ps []conference.Participant) RoomView {
	if ps == nil {
		ps = []conference.Participant{}
	}
	return RoomView{Number: r.Number, Name: r.Name, PINSet: r.PINHash != "", ModeratorPINSet: r.ModeratorHash != "",
		MaxParticipants: r.MaxParticipants, WaitModerator: r.WaitModerator, Tones: r.Tones, Wideband: r.Wideband, Participants: ps}
}

func confError(err error) error {
	switch {
	case errors.Is(err, conference.ErrNoRoom), errors.Is(err, conference.ErrNoParticipant), errors.Is(err, moh.ErrNoClass):
		return fmt.Errorf("%w: %v", errNotFound, err)
	case errors.Is(err, conference.ErrInvalid), errors.Is(err, moh.ErrClass), errors.Is(err, moh.ErrTooMany), errors.Is(err, wav.ErrRefused):
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return err
}

func (s *Server) apiRooms(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.conf == nil {
		return errUnavailable
	}
	rooms, err := s.conf.Rooms()
	if err != nil {
		return err
	}
	out := make([]RoomView, 0, len(rooms))
	for _, rm := range rooms {
		ps, _ := s.conf.Participants(rm.Number)
		out = append(out, roomView(rm, ps))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) apiRoom(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.conf == nil {
		return errUnavailable
	}
	rm, err := s.conf.Room(r.PathValue("number"))
	if err != nil {
		return confError(err)
	}
	ps, err := s.conf.Participants(rm.Number)
	if err != nil {
		return confError(err)
	}
	writeJSON(w, http.StatusOK, roomView(rm, ps))
	return nil
}

// apiPutRoom creates or changes a room; PINs are hashed, the audit entry
// says whether they changed, never what they are.
func (s *Server) apiPutRoom(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.conf == nil {
		return errUnavailable
	}
	var req conference.RoomRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	number := r.PathValue("number")
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "conference.room.put", Target: number,
		Detail: fmt.Sprintf("max=%d wait_moderator=%t tones=%t wideband=%t pin_changed=%t moderator_pin_changed=%t",
			req.MaxParticipants, req.WaitModerator, req.Tones, req.Wideband, req.PIN != nil, req.ModeratorPIN != nil)}
	rm, err := s.conf.Put(r.Context(), number, req, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) })
	if err != nil {
		return confError(err)
	}
	writeJSON(w, http.StatusOK, roomView(rm, nil))
	return nil
}

func (s *Server) apiDeleteRoom(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.conf == nil {
		return errUnavailable
	}
	number := r.PathValue("number")
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "conference.room.delete", Target: number}
	if err := s.conf.Delete(number, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return confError(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}

func (s *Server) apiKick(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.conf == nil {
		return errUnavailable
	}
	number, id := r.PathValue("number"), r.PathValue("id")
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "conference.kick", Target: number + "/" + id}
	if err := s.conf.Kick(number, id, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return confError(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "kicked"})
	return nil
}

func (s *Server) apiMusicClasses(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.moh == nil {
		return errUnavailable
	}
	cs, err := s.moh.Classes()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, cs)
	return nil
}

// apiPutMusic stores an uploaded WAV (audio/wav body, at most
// moh.MaxBytes) as a music class after the strict parser converted it;
// a refused file changes nothing and says why. Audited with what was
// uploaded.
func (s *Server) apiPutMusic(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.moh == nil {
		return errUnavailable
	}
	if ct := r.Header.Get("Content-Type"); ct != "audio/wav" && ct != "audio/x-wav" && ct != "application/octet-stream" {
		return fmt.Errorf("%w: Content-Type must be audio/wav", errBadRequest)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, moh.MaxBytes+1))
	if err != nil {
		return fmt.Errorf("%w: read body: %v", errBadRequest, err)
	}
	if len(body) > moh.MaxBytes {
		return fmt.Errorf("%w: file larger than %d bytes", errBadRequest, moh.MaxBytes)
	}
	class := r.PathValue("class")
	info, err := s.moh.Put(class, body)
	if err != nil {
		return confError(err)
	}
	if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "moh.upload", Target: class,
		Detail: fmt.Sprintf("%s %d ch %d Hz %d bit, %s, %d bytes", info.Format, info.Channels, info.SampleRate, info.BitsPerSample, info.Duration, len(body))}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *Server) apiDeleteMusic(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.moh == nil {
		return errUnavailable
	}
	class := r.PathValue("class")
	if err := s.moh.Delete(class); err != nil {
		return confError(err)
	}
	if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "moh.delete", Target: class}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}

// conferencePage is the conference page's data.
type conferencePage struct {
	Available bool
	Rooms     []RoomView
	Music     []moh.Class
}

func (s *Server) conferenceData(r *http.Request, p auth.Principal) (any, error) {
	d := conferencePage{Available: s.conf != nil}
	if s.conf == nil {
		return d, nil
	}
	rooms, err := s.conf.Rooms()
	if err != nil {
		return nil, err
	}
	for _, rm := range rooms {
		ps, _ := s.conf.Participants(rm.Number)
		d.Rooms = append(d.Rooms, roomView(rm, ps))
	}
	if s.moh != nil {
		if d.Music, err = s.moh.Classes(); err != nil {
			return nil, err
		}
	}
	return d, nil
}
