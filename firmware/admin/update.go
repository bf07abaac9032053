package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	fwupdate "github.com/edgepbx/edgepbx/firmware/update"
	"github.com/edgepbx/edgepbx/init/control"
)

// Updates is PID 1's firmware installer (the control client). edgepbxd
// only forwards the upload: PID 1 verifies the bundle's signature, board,
// version floor and hashes itself, and writes the inactive slot.
type Updates interface {
	InstallUpdate(ctx context.Context, r io.Reader, size int64) (control.UpdateResult, error)
	UpdateStatus(ctx context.Context) (control.UpdateStatus, error)
}

// UpdatePolicy is the pulled-update service (*update.Service).
type UpdatePolicy interface {
	Policy() (fwupdate.Policy, error)
	SetPolicy(p fwupdate.Policy, actor, source string) error
	Last() fwupdate.Report
	PullNow(ctx context.Context, actor, source string) (fwupdate.Report, error)
}

func (s *Server) updateRoutes() []route {
	return []route{
		{method: "GET", path: "/api/v1/update/policy", summary: "Update policy (off, notify, security-only, all), maintenance window and the last look at the vendor's repository", perm: auth.PermSystemWrite, h: s.apiUpdatePolicy},
		{method: "PUT", path: "/api/v1/update/policy", summary: "Change the update policy and maintenance window", req: fwupdate.Policy{}, perm: auth.PermSystemWrite, h: s.apiUpdateSetPolicy},
		{method: "POST", path: "/api/v1/update/pull", summary: "Look at the vendor's repository now and install the newest bundle for this board, whatever the policy and window", perm: auth.PermSystemWrite, h: s.apiUpdatePull},
		{method: "GET", path: "/api/v1/update", summary: "Running version, anti-rollback floor, the install under way (bytes written of total) and this boot's trial", perm: auth.PermSystemWrite, h: s.apiUpdateStatus},
		{method: "POST", path: "/api/v1/update", summary: "Install a signed update bundle (raw body with Content-Length, streamed to PID 1 which verifies and writes the inactive slot); the next boot is a trial that commits when healthy", perm: auth.PermSystemWrite, h: s.apiUpdateInstall},
	}
}

func (s *Server) needUpdates() error {
	if s.updates == nil {
		return fmt.Errorf("%w: updates are installed by PID 1, which this edgepbxd does not reach", errUnavailable)
	}
	return nil
}

func (s *Server) apiUpdateStatus(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needUpdates(); err != nil {
		return err
	}
	st, err := s.updates.UpdateStatus(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// Upload bounds: a stall longer than updateStall ends the upload; the
// whole install must answer within updateAnswerWithin.
const (
	updateStall        = 30 * time.Second
	updateAnswerWithin = 30 * time.Minute
)

// stallReader renews the request's read deadline before every read.
type stallReader struct {
	rc *http.ResponseController
	r  io.Reader
}

func (s *stallReader) Read(p []byte) (int, error) {
	_ = s.rc.SetReadDeadline(time.Now().Add(updateStall))
	return s.r.Read(p)
}

// updateProblem is a refused update: problem+json naming what is wrong
// (reason: signature, key, version-floor, board, hash, size, space, busy)
// and the manifest field.
type updateProblem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Reason string `json:"reason,omitempty"`
	Field  string `json:"field,omitempty"`
}

func (s *Server) apiUpdateInstall(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needUpdates(); err != nil {
		return err
	}
	// PID 1 is told the size first: it bounds what it reads and knows a
	// stream that stops short.
	if r.ContentLength <= 0 {
		problem(w, http.StatusLengthRequired, "length required", "send the bundle as the raw body with a Content-Length")
		return nil
	}
	if r.ContentLength > control.MaxUpdateSize {
		problem(w, http.StatusRequestEntityTooLarge, "too large", fmt.Sprintf("a bundle is at most %d bytes", control.MaxUpdateSize))
		return nil
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "update.install", Target: fmt.Sprintf("%d bytes", r.ContentLength)}
	// A bundle takes longer than the server's whole-request timeouts on a
	// slow link, and PID 1 writes and reads back the slot before it
	// answers: the read deadline moves with each chunk instead (a stalled
	// upload still ends), the answer gets a bound of its own.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(updateAnswerWithin))
	body := &stallReader{rc: rc, r: http.MaxBytesReader(w, r.Body, r.ContentLength)}
	res, err := s.updates.InstallUpdate(r.Context(), body, r.ContentLength)
	if err != nil {
		ev.Outcome, ev.Detail = audit.Denied, err.Error()
		_ = s.audit.Record(ev)
		var re *control.RemoteError
		if !errors.As(err, &re) {
			return err
		}
		status, title := http.StatusUnprocessableEntity, "update refused"
		if re.Reason == "busy" {
			status, title = http.StatusConflict, "update in progress"
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(updateProblem{Type: "about:blank", Title: title, Status: status, Detail: re.Message,
			Reason: re.Reason, Field: re.Field})
		return nil
	}
	ev.Outcome = audit.OK
	ev.Detail = fmt.Sprintf("version %s (%d) written to slot %s; the next boot is a trial", res.Version, res.VersionNumber, res.Slot)
	if res.Downgrade {
		ev.Detail += "; DOWNGRADE below the version floor, signed by an emergency key"
	}
	_ = s.audit.Record(ev)
	writeJSON(w, http.StatusOK, map[string]any{"result": res,
		"status": fmt.Sprintf("installed %s in slot %s: reboot to try it; it commits after the box stays healthy, else the box returns to the running version", res.Version, res.Slot)})
	return nil
}

func (s *Server) needPull() error {
	if s.pull == nil {
		return fmt.Errorf("%w: pulled updates are not set up on this box", errUnavailable)
	}
	return nil
}

func (s *Server) apiUpdatePolicy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needPull(); err != nil {
		return err
	}
	pol, err := s.pull.Policy()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"policy": pol, "last": s.pull.Last()})
	return nil
}

func (s *Server) apiUpdateSetPolicy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needPull(); err != nil {
		return err
	}
	var pol fwupdate.Policy
	if err := decodeJSON(r, &pol); err != nil {
		return err
	}
	if err := s.pull.SetPolicy(pol, p.Actor(), src(r)); err != nil {
		if errors.Is(err, fwupdate.ErrPolicy) {
			return fmt.Errorf("%w: %v", errBadRequest, err)
		}
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"policy": pol})
	return nil
}

func (s *Server) apiUpdatePull(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needPull(); err != nil {
		return err
	}
	rep, err := s.pull.PullNow(r.Context(), p.Actor(), src(r))
	if err != nil {
		return fmt.Errorf("%w: %v", errUnavailable, err)
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// firmwareData adds the Firmware section's data to the System page's.
func (s *Server) firmwareData(ctx context.Context, out map[string]any) {
	if s.updates == nil && s.pull == nil {
		return
	}
	d := map[string]any{"Modes": []fwupdate.Mode{fwupdate.ModeOff, fwupdate.ModeNotify, fwupdate.ModeSecurity, fwupdate.ModeAll}}
	if s.updates == nil {
		d["Error"] = "Updates are installed by the box's init (PID 1), which this edgepbxd does not reach."
	} else if st, err := s.updates.UpdateStatus(ctx); err != nil {
		d["Error"] = "The box's init did not answer: " + err.Error()
	} else {
		d["Status"] = st
	}
	if s.pull != nil {
		if pol, err := s.pull.Policy(); err == nil {
			d["Pull"] = map[string]any{"Policy": pol, "Last": s.pull.Last()}
		}
	}
	out["Firmware"] = d
}
