package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/init/control"
)

// Resetter is PID 1's factory reset over the control socket
// (*control.Client): edgepbxd re-authenticates the admin, PID 1 issues a
// single-use token and erases only when it comes back.
type Resetter interface {
	BeginFactoryReset(ctx context.Context, r control.FactoryResetRequest) (control.FactoryResetTicket, error)
	ConfirmFactoryReset(ctx context.Context, token string) error
}

// FactoryResetWord must be typed into the request's confirm field: the
// password alone is what an admin types many times a day.
const FactoryResetWord = "ERASE"

// FactoryResetRequest is the body of POST /api/v1/system/factory-reset.
type FactoryResetRequest struct {
	Confirm string `json:"confirm"`
	auth.Proof
}

// syslogWait bounds how long a reset waits for the remote syslog collector
// to acknowledge the audit entry: the entry on the box is about to be
// wiped, the collector's copy is the one that lasts.
const syslogWait = 15 * time.Second

func (s *Server) apiFactoryReset(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.reset == nil {
		return errUnavailable
	}
	var req FactoryResetRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Confirm != FactoryResetWord {
		problem(w, http.StatusUnprocessableEntity, "factory reset refused", fmt.Sprintf("field confirm: type %s to erase every setting, account, call record and key on this box", FactoryResetWord))
		return nil
	}
	if err := s.auth.Reauth(r.Context(), p, clientOf(r), req.Proof, "system.factory_reset"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), pid1Timeout)
	tk, err := s.reset.BeginFactoryReset(ctx, control.FactoryResetRequest{Actor: p.Actor(), Source: src(r)})
	cancel()
	if err != nil {
		var re *control.RemoteError
		if errors.As(err, &re) {
			problem(w, http.StatusTooManyRequests, "factory reset refused by the system", re.Message)
			return nil
		}
		return fmt.Errorf("factory reset via PID 1: %w", err)
	}
	// Who asked is recorded before anything is erased, and sent to the
	// remote syslog collector if one is configured.
	var before uint64
	if s.syslog != nil {
		before = s.syslog.Status().Confirmed
	}
	if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "system.factory_reset",
		Detail: "factory reset confirmed with password and second factor; keys and data are erased next"}); err != nil {
		return err
	}
	logged := s.waitSyslog(r.Context(), before)
	ctx, cancel = context.WithTimeout(r.Context(), pid1Timeout)
	defer cancel()
	if err := s.reset.ConfirmFactoryReset(ctx, tk.Token); err != nil {
		return fmt.Errorf("factory reset via PID 1: %w", err)
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "factory reset under way: the box erases its keys and data, then restarts unclaimed with a new setup code on its console",
		"remote_syslog": logged})
	return nil
}

// waitSyslog waits until the collector acknowledged a message sent after
// before with nothing left queued; it says what happened.
func (s *Server) waitSyslog(ctx context.Context, before uint64) string {
	if s.syslog == nil || !s.syslog.Status().Enabled {
		return "off"
	}
	ctx, cancel := context.WithTimeout(ctx, syslogWait)
	defer cancel()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		st := s.syslog.Status()
		if st.Confirmed > before && st.Queued == 0 {
			return "confirmed"
		}
		select {
		case <-ctx.Done():
			return "not confirmed by the collector in time"
		case <-t.C:
		}
	}
}
