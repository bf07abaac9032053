package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/netconf/netspec"
)

// Network and time settings belong to PID 1 (it owns netlink and the
// clock). A network change follows the firewall's "commit only when
// healthy": applied at once, reverted unless confirmed from a connection
// accepted after the change (newConnSince, which fails closed).

// Network is PID 1's network and clock configuration, over the control socket.
type Network interface {
	GetNetwork(ctx context.Context) (netspec.State, error)
	SetNetwork(ctx context.Context, n netspec.Network) (netspec.Pending, error)
	ConfirmNetwork(ctx context.Context, id string) error
	GetTime(ctx context.Context) (netspec.TimeState, error)
	SetTime(ctx context.Context, t netspec.Time) error
}

// errNetworkRefused marks a refused network or time configuration.
var errNetworkRefused = errors.New("network settings refused")

// NetworkRequest is the body of PUT /api/v1/system/network.
type NetworkRequest = netspec.Network

// TimeRequest is the body of PUT /api/v1/system/time.
type TimeRequest = netspec.Time

// NetworkView is GET /api/v1/system/network.
type NetworkView struct {
	netspec.State
	RevertIn int `json:"revert_in_seconds,omitempty"`
}

// TimeView is GET /api/v1/system/time: PID 1's state and the box's time
// now, in its zone and in UTC.
type TimeView struct {
	netspec.TimeState
	Now    string `json:"now"`     // RFC 3339 in the box's zone
	NowUTC string `json:"now_utc"` // RFC 3339 in UTC
}

// pointer turns a field path ("interfaces[0].gateway4") into the JSON
// pointer of the request body ("/interfaces/0/gateway4").
func pointer(field string) string {
	if field == "" {
		return ""
	}
	r := strings.NewReplacer("[", "/", "]", "", ".", "/")
	return "/" + r.Replace(field)
}

// refusal answers a field error of netspec (from edgepbxd's own check or
// PID 1's) as problem+json naming the field; prefix is stripped from PID
// 1's path (its request wraps the body in an object).
func refusal(w http.ResponseWriter, err error, prefix string) bool {
	var fe *netspec.FieldError
	var re *control.RemoteError
	switch {
	case errors.As(err, &fe):
		telephonyProblem(w, http.StatusUnprocessableEntity, errNetworkRefused.Error(), sentence(fe.Reason), pointer(fe.Field))
	case errors.As(err, &re) && re.Field != "":
		f := strings.TrimPrefix(re.Field, prefix)
		telephonyProblem(w, http.StatusUnprocessableEntity, errNetworkRefused.Error(), sentence(strings.TrimPrefix(re.Message, re.Field+": ")), pointer(f))
	default:
		return false
	}
	return true
}

func (s *Server) networkState(ctx context.Context) (NetworkView, error) {
	if s.netw == nil {
		return NetworkView{}, errUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, pid1Timeout)
	defer cancel()
	st, err := s.netw.GetNetwork(ctx)
	if err != nil {
		return NetworkView{}, fmt.Errorf("network via PID 1: %w", err)
	}
	v := NetworkView{State: st}
	if st.Pending != nil {
		v.RevertIn = revertIn(st.Pending.Remaining)
	}
	return v, nil
}

func (s *Server) apiNetwork(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	return answerView(w, r, s.networkState)
}

func (s *Server) apiSetNetwork(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.netw == nil {
		return errUnavailable
	}
	var req NetworkRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	before, err := s.networkState(r.Context())
	if err != nil {
		return err
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "system.network.set", Before: before.Confirmed, After: req}
	// The form's answer comes from here; PID 1 checks everything again.
	if err := req.Validate(before.NICs); err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = s.audit.Record(ev)
		refusal(w, err, "")
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), pid1Timeout)
	defer cancel()
	pend, err := s.netw.SetNetwork(ctx, req)
	if err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = s.audit.Record(ev)
		if refusal(w, err, "network.") {
			return nil
		}
		return fmt.Errorf("%w: %w", errNetworkRefused, err)
	}
	s.pendingAccepted(w, ev, pend.ID, pend.Deadline, pend.Remaining)
	return nil
}

func (s *Server) apiConfirmNetwork(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.netw == nil {
		return errUnavailable
	}
	k := pendingKind{what: "network change", action: "system.network.confirm", refused: errNetworkRefused, validID: netspec.ValidPendingID}
	return s.confirmPending(w, r, p, k, func(ctx context.Context) (pendingState, error) {
		st, err := s.networkState(ctx)
		if err != nil || st.Pending == nil {
			return pendingState{}, err
		}
		return pendingState{id: st.Pending.ID, before: st.Confirmed, after: st.Pending.Network}, nil
	}, s.netw.ConfirmNetwork)
}

func (s *Server) timeState(ctx context.Context) (TimeView, error) {
	if s.netw == nil {
		return TimeView{}, errUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, pid1Timeout)
	defer cancel()
	st, err := s.netw.GetTime(ctx)
	if err != nil {
		return TimeView{}, fmt.Errorf("time via PID 1: %w", err)
	}
	now := s.clock.Now()
	v := TimeView{TimeState: st, NowUTC: now.UTC().Format(time.RFC3339)}
	loc, err := netspec.LoadZone(st.Config.TimeZone)
	if err != nil {
		loc = time.UTC
	}
	v.Now = now.In(loc).Format(time.RFC3339)
	return v, nil
}

func (s *Server) apiTime(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	return answerView(w, r, s.timeState)
}

func (s *Server) apiSetTime(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.netw == nil {
		return errUnavailable
	}
	var req TimeRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.NTP == nil {
		req.NTP = []string{}
	}
	before, err := s.timeState(r.Context())
	if err != nil {
		return err
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "system.time.set", Before: before.Config, After: req}
	if err := req.Validate(); err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = s.audit.Record(ev)
		refusal(w, err, "")
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), pid1Timeout)
	defer cancel()
	if err := s.netw.SetTime(ctx, req); err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = s.audit.Record(ev)
		if refusal(w, err, "time.") {
			return nil
		}
		return fmt.Errorf("%w: %w", errNetworkRefused, err)
	}
	_ = s.audit.Record(ev)
	s.forgetZone() // pages show dates in the new zone at once
	writeJSON(w, http.StatusOK, map[string]string{"status": "saved"})
	return nil
}
