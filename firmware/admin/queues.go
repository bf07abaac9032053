package admin

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/queue"
)

// Queues is the call queues' live state and statistics, and their agents'
// login (*features.Engine; the queues themselves are configured in the
// telephony configuration, features.queues).
type Queues interface {
	Queues() []queue.Stats
	QueueLogin(ext, number string, in bool) error
}

// QueueAgentRequest is the body of PUT /api/v1/queues/{id}/agents/{name}.
type QueueAgentRequest struct {
	LoggedIn *bool `json:"logged_in"`
}

// queueStats is every queue's state, or none.
func (s *Server) queueStats() []queue.Stats {
	if s.queues == nil {
		return nil
	}
	return s.queues.Queues()
}

func (s *Server) apiQueues(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.queues == nil {
		return errUnavailable
	}
	writeJSON(w, http.StatusOK, s.queues.Queues())
	return nil
}

// apiQueueAgent logs a dynamic agent in to or out of a queue; audited.
func (s *Server) apiQueueAgent(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.queues == nil {
		return errUnavailable
	}
	number, ext := r.PathValue("id"), r.PathValue("name")
	var req QueueAgentRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.LoggedIn == nil {
		return withField("/logged_in", fmt.Errorf("%w: logged_in: true or false", errBadRequest))
	}
	found := false
	for _, q := range s.queues.Queues() {
		found = found || q.Number == number
	}
	if !found {
		return fmt.Errorf("%w: queue %.32q", errNotFound, number)
	}
	err := s.queues.QueueLogin(ext, number, *req.LoggedIn)
	switch {
	case errors.Is(err, queue.ErrNotAgent), errors.Is(err, features.ErrNoQueue):
		return fmt.Errorf("%w: %.32q is not an agent of queue %s", errNotFound, ext, number)
	case errors.Is(err, queue.ErrStatic):
		return withField("/logged_in", fmt.Errorf("%w: %s is a static agent of queue %s: always logged in", errConflict, ext, number))
	case err != nil:
		return err
	}
	detail := "logged out"
	if *req.LoggedIn {
		detail = "logged in"
	}
	_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "telephony.queue.agent", Target: number + "/" + ext, Detail: detail})
	writeJSON(w, http.StatusOK, map[string]any{"queue": number, "extension": ext, "logged_in": *req.LoggedIn})
	return nil
}
