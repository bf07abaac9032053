package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Firewall policy changes follow "commit only when healthy": PID 1 applies
// a change at once but reverts it unless the admin confirms it in time.
// The confirmation must prove the admin still reaches the box under the
// new ruleset, and a request on a connection that was open before the
// change proves nothing (conntrack keeps established flows alive). So the
// change's answer closes its connection (HTTP/1.1 close, HTTP/2 GOAWAY),
// every connection gets a sequence number when accepted (ConnContext), and
// a confirmation is accepted only on a connection accepted after the change.

// errPolicyRefused marks PID 1's refusal of a policy (validation, lockout).
var errPolicyRefused = errors.New("firewall policy refused")

// errStaleConn refuses a confirmation sent on a connection older than the change.
var errStaleConn = errors.New("confirm on a new connection: this one was open before the change")

// errUnknownChange refuses a confirmation of a change this process has no
// record of (made before edgepbxd restarted, or forgotten among more than
// maxPendingMarks newer ones): without the record no connection can prove
// it is newer, so the change is left to revert.
var errUnknownChange = errors.New("this change was not made through this admin service since it started; it will revert: apply it again")

type connSeqKey struct{}

// maxPendingMarks bounds the pending-change records; the oldest go first.
const maxPendingMarks = 64

// connSeq numbers accepted connections; pending remembers the number
// current when each change was applied.
type connSeq struct {
	next    atomic.Uint64
	mu      sync.Mutex
	pending map[string]uint64 // pending id → last connection number before it
}

// ConnContext is the http.Server's ConnContext: it numbers each accepted
// connection so a firewall confirmation can prove it is a new one.
func (s *Server) ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connSeqKey{}, s.conns.next.Add(1))
}

func (s *Server) markPending(id string) {
	s.conns.mu.Lock()
	defer s.conns.mu.Unlock()
	if s.conns.pending == nil {
		s.conns.pending = map[string]uint64{}
	}
	for len(s.conns.pending) >= maxPendingMarks {
		oldest, first := "", true
		for k, v := range s.conns.pending {
			if first || v < s.conns.pending[oldest] {
				oldest, first = k, false
			}
		}
		delete(s.conns.pending, oldest)
	}
	s.conns.pending[id] = s.conns.next.Load()
}

// newConnSince checks that r arrived on a connection accepted after the
// change with this id was applied. It fails closed: without a connection
// number (ConnContext not installed) or a record of the change, nothing
// counts as new.
func (s *Server) newConnSince(r *http.Request, id string) error {
	seq, ok := r.Context().Value(connSeqKey{}).(uint64)
	if !ok {
		return errStaleConn
	}
	s.conns.mu.Lock()
	defer s.conns.mu.Unlock()
	before, known := s.conns.pending[id]
	switch {
	case !known:
		return errUnknownChange
	case seq <= before:
		return errStaleConn
	}
	return nil
}

// PolicyView is GET /api/v1/firewall/policy: PID 1's state plus the
// seconds left before a pending change reverts.
type PolicyView struct {
	fwspec.PolicyState
	RevertIn int `json:"revert_in_seconds,omitempty"`
}

func (s *Server) policyState(ctx context.Context) (PolicyView, error) {
	if s.fw == nil {
		return PolicyView{}, errUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, pid1Timeout)
	defer cancel()
	st, err := s.fw.GetPolicy(ctx)
	if err != nil {
		return PolicyView{}, fmt.Errorf("firewall policy via PID 1: %w", err)
	}
	v := PolicyView{PolicyState: st}
	if st.Pending != nil {
		v.RevertIn = revertIn(st.Pending.Remaining)
	}
	return v, nil
}

func (s *Server) apiFirewallPolicy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	return answerView(w, r, s.policyState)
}

// PolicyRequest is the body of PUT /api/v1/firewall/policy: the zones and
// which service is open to which zones.
type PolicyRequest = fwspec.Access

// PendingAnswer is the answer to a policy change.
type PendingAnswer struct {
	Status   string    `json:"status"` // "pending"
	ID       string    `json:"id"`
	Deadline time.Time `json:"deadline"`
	RevertIn int       `json:"revert_in_seconds"`
}

func (s *Server) apiSetFirewallPolicy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.fw == nil {
		return errUnavailable
	}
	var req PolicyRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	before, err := s.policyState(r.Context())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), pid1Timeout)
	defer cancel()
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "firewall.policy.set", Before: before.Confirmed, After: req}
	pend, err := s.fw.SetPolicy(ctx, req, clientOf(r).Addr)
	if err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = s.audit.Record(ev)
		return policyField(req, fmt.Errorf("%w: %w", errPolicyRefused, err))
	}
	s.pendingAccepted(w, ev, pend.ID, pend.Deadline, pend.Remaining)
	return nil
}

// ConfirmRequest is the body of POST /api/v1/firewall/policy/confirm.
type ConfirmRequest struct {
	ID string `json:"id"`
}

func (s *Server) apiConfirmFirewallPolicy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.fw == nil {
		return errUnavailable
	}
	k := pendingKind{what: "change", action: "firewall.policy.confirm", refused: errPolicyRefused, validID: fwspec.ValidPendingID}
	return s.confirmPending(w, r, p, k, func(ctx context.Context) (pendingState, error) {
		st, err := s.policyState(ctx)
		if err != nil || st.Pending == nil {
			return pendingState{}, err
		}
		return pendingState{id: st.Pending.ID, before: st.Confirmed, after: st.Pending.Access}, nil
	}, s.fw.ConfirmPolicy)
}

// policyEditor is what the firewall page's editor shows: the pending
// change if there is one, else the confirmed policy, as editable text.
type policyEditor struct {
	Zones     string // one zone per line: "name cidr cidr ..."
	Rules     []editorRule
	Allowlist string
	AllowAny  bool
}

type editorRule struct {
	Service, Proto, Ports, Zones string
	Admin                        bool
}

func newPolicyEditor(st fwspec.PolicyState) policyEditor {
	a := st.Confirmed
	if st.Pending != nil {
		a = st.Pending.Access
	}
	var ed policyEditor
	var zl []string
	for _, z := range a.Zones {
		line := z.Name
		for _, p := range z.Prefixes {
			line += " " + p.String()
		}
		zl = append(zl, line)
	}
	ed.Zones = strings.Join(zl, "\n")
	for _, svc := range st.Services {
		var zones []string
		for _, r := range a.Rules {
			if r.Service == svc.Name {
				zones = append(zones, r.Zones...)
			}
		}
		ed.Rules = append(ed.Rules, editorRule{Service: svc.Name, Proto: string(svc.Proto), Ports: svc.Ports.String(),
			Zones: strings.Join(zones, " "), Admin: svc.Admin})
	}
	ed.Allowlist = strings.Join(a.Allowlist, " ")
	ed.AllowAny = a.AllowAdminFromAny
	return ed
}
