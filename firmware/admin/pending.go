package admin

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
)

// A pending change (the firewall policy, the network) is applied by PID 1
// at once and reverted at its deadline unless confirmed over a connection
// opened after it: proof that the admin can still reach the box.

// pendingKind is what tells one kind of pending change from another.
type pendingKind struct {
	what    string            // in the conflict message: "change", "network change"
	action  string            // audit action of the confirmation
	refused error             // wraps PID 1's refusal
	validID func(string) bool // the id's syntax, checked before anything else
}

// pendingState is a kind's state for its confirmation: the pending
// change's id ("" when none) and the confirmed and pending values.
type pendingState struct {
	id            string
	before, after any
}

// revertIn is the seconds left of remaining, for the API's
// revert_in_seconds.
func revertIn(remaining time.Duration) int {
	return int(remaining.Round(time.Second) / time.Second)
}

// pendingAccepted records ev, the change that PID 1 accepted as pending id,
// and answers 202 on a connection closed after the answer: the
// confirmation must come on a new one.
func (s *Server) pendingAccepted(w http.ResponseWriter, ev audit.Event, id string, deadline time.Time, remaining time.Duration) {
	s.markPending(id)
	ev.Target, ev.Detail = id, "pending until "+deadline.UTC().Format(time.RFC3339)
	_ = s.audit.Record(ev)
	w.Header().Set("Connection", "close")
	writeJSON(w, http.StatusAccepted, PendingAnswer{Status: "pending", ID: id, Deadline: deadline, RevertIn: revertIn(remaining)})
}

// confirmPending answers POST …/confirm for a change of kind k: state
// reads the change pending now and confirm asks PID 1 to keep it.
func (s *Server) confirmPending(w http.ResponseWriter, r *http.Request, p auth.Principal, k pendingKind,
	state func(context.Context) (pendingState, error), confirm func(context.Context, string) error) error {
	var req ConfirmRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if !k.validID(req.ID) {
		return fmt.Errorf("%w: id must be 32 hex digits", errBadRequest)
	}
	if err := s.newConnSince(r, req.ID); err != nil {
		// Closed (HTTP/1.1 close, HTTP/2 GOAWAY), so the page's retry
		// comes on a new connection: browsers keep spare ones opened
		// before the change.
		w.Header().Set("Connection", "close")
		return fmt.Errorf("%w: %w", errConflict, err)
	}
	st, err := state(r.Context())
	if err != nil {
		return err
	}
	if st.id != req.ID { // a valid id is never ""
		return fmt.Errorf("%w: no pending %s %s (it may have been reverted)", errConflict, k.what, req.ID)
	}
	ctx, cancel := context.WithTimeout(r.Context(), pid1Timeout)
	defer cancel()
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: k.action, Target: req.ID, Before: st.before, After: st.after}
	if err := confirm(ctx, req.ID); err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = s.audit.Record(ev)
		return fmt.Errorf("%w: %w", k.refused, err)
	}
	_ = s.audit.Record(ev)
	writeJSON(w, http.StatusOK, map[string]string{"status": "confirmed"})
	return nil
}

// answerView answers a GET with what state reads.
func answerView[V any](w http.ResponseWriter, r *http.Request, state func(context.Context) (V, error)) error {
	v, err := state(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}
