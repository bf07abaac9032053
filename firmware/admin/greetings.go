package admin

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/firmware/voicemail"
)

// Greetings is the part of the voicemail service greeting uploads need
// (voicemail.Service).
type Greetings interface {
	SetGreetingWAV(ext, name string, upload []byte, also ...func(*store.Tx) error) (time.Duration, error)
	DeleteGreeting(ext, name string, also ...func(*store.Tx) error) error
}

func (s *Server) greetings() (Greetings, error) {
	g, ok := s.vm.(Greetings)
	if !ok || s.vm == nil {
		return nil, errUnavailable
	}
	return g, nil
}

// apiPutGreeting replaces a mailbox greeting (unavailable, busy, name)
// with the uploaded WAV (body, audio/wav): the strict WAV parser bounds
// size, chunks and duration and names the reason it refuses; the audio is
// stored sealed like messages. Audited in the mailbox's transaction.
func (s *Server) apiPutGreeting(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	g, err := s.greetings()
	if err != nil {
		return err
	}
	ext, name := r.PathValue("ext"), r.PathValue("name")
	body, err := io.ReadAll(io.LimitReader(r.Body, voicemail.MaxGreetingUpload+1))
	if err != nil {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	if len(body) > voicemail.MaxGreetingUpload {
		return fmt.Errorf("%w: greeting larger than %d bytes", errBadRequest, voicemail.MaxGreetingUpload)
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "voicemail.greeting.upload", Target: ext + "/" + name}
	dur, err := g.SetGreetingWAV(ext, name, body, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) })
	if err != nil {
		return greetingError(err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "stored", "greeting": name, "seconds": dur.Seconds()})
	return nil
}

func (s *Server) apiDeleteGreeting(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	g, err := s.greetings()
	if err != nil {
		return err
	}
	ext, name := r.PathValue("ext"), r.PathValue("name")
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "voicemail.greeting.delete", Target: ext + "/" + name}
	if err := g.DeleteGreeting(ext, name, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return greetingError(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}

func greetingError(err error) error {
	if errors.Is(err, voicemail.ErrGreeting) {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return vmError(err)
}
