package control

import (
	"context"
	"errors"

	"github.com/edgepbx/edgepbx/init/netconf/netspec"
)

// Network and clock requests. PID 1's committer validates a network
// against the board's interfaces (netspec.Network.Validate) before it
// touches anything; the cheap list bounds are checked here first so a
// long list is refused before any work.

// SetNetworkRequest asks PID 1 to apply a network as a pending change.
type SetNetworkRequest struct {
	Network netspec.Network `json:"network"`
}

// ConfirmNetworkRequest makes the pending change with this id permanent.
type ConfirmNetworkRequest struct {
	ID string `json:"id"`
}

// SetTimeRequest replaces the NTP servers and the time zone.
type SetTimeRequest struct {
	Time netspec.Time `json:"time"`
}

func (r SetNetworkRequest) validate() error {
	n := r.Network
	switch {
	case len(n.Interfaces) > netspec.MaxInterfaces:
		return &netspec.FieldError{Field: "network.interfaces", Reason: "too many"}
	case len(n.VLANs) > netspec.MaxVLANs:
		return &netspec.FieldError{Field: "network.vlans", Reason: "too many"}
	case len(n.DNS) > netspec.MaxDNS:
		return &netspec.FieldError{Field: "network.dns", Reason: "too many"}
	}
	return nil
}

func (r ConfirmNetworkRequest) validate() error {
	if !netspec.ValidPendingID(r.ID) {
		return &netspec.FieldError{Field: "id", Reason: "must be 32 lowercase hex digits"}
	}
	return nil
}

// prefixed names a field inside the request's wrapper object.
func prefixed(prefix string, err error) error {
	var fe *netspec.FieldError
	if errors.As(err, &fe) {
		return &netspec.FieldError{Field: prefix + fe.Field, Reason: fe.Reason}
	}
	return err
}

var (
	errNoNetwork   = errors.New("control: network configuration not available")
	errNoClock     = errors.New("control: time configuration not available")
	errNetworkRate = errors.New("control: network changes rate limited")
)

func (s *Server) dispatchNetwork(t Type, p []byte) Reply {
	nw, clk := s.cfg.Network, s.cfg.Clock
	switch t {
	case TypeGetNetwork, TypeGetTime:
		var empty struct{}
		if err := decodeStrict(p, &empty); err != nil {
			return fail(err)
		}
		if t == TypeGetNetwork {
			if nw == nil {
				return fail(errNoNetwork)
			}
			return ok(nw.State())
		}
		if clk == nil {
			return fail(errNoClock)
		}
		return ok(clk.State())
	case TypeSetNetwork:
		var r SetNetworkRequest
		if err := decodeStrict(p, &r); err != nil {
			return fail(err)
		}
		if err := r.validate(); err != nil {
			return fail(err)
		}
		if nw == nil {
			return fail(errNoNetwork)
		}
		// Network changes share the policy bucket: each rebuilds interfaces.
		if s.policy != nil && !s.policy.allow() {
			return fail(errNetworkRate)
		}
		pend, err := nw.Set(r.Network)
		if err != nil {
			return fail(prefixed("network.", err))
		}
		return ok(pend)
	case TypeConfirmNetwork:
		var r ConfirmNetworkRequest
		if err := decodeStrict(p, &r); err != nil {
			return fail(err)
		}
		if err := r.validate(); err != nil {
			return fail(err)
		}
		if nw == nil {
			return fail(errNoNetwork)
		}
		if err := nw.Confirm(r.ID); err != nil {
			return fail(err)
		}
		return ok(nil)
	default: // TypeSetTime
		var r SetTimeRequest
		if err := decodeStrict(p, &r); err != nil {
			return fail(err)
		}
		if len(r.Time.NTP) > netspec.MaxNTP {
			return fail(&netspec.FieldError{Field: "time.ntp", Reason: "too many"})
		}
		if clk == nil {
			return fail(errNoClock)
		}
		if s.policy != nil && !s.policy.allow() {
			return fail(errNetworkRate)
		}
		if err := clk.Set(r.Time); err != nil {
			return fail(prefixed("time.", err))
		}
		return ok(nil)
	}
}

// GetNetwork returns the confirmed network, the pending change and the live addresses.
func (c *Client) GetNetwork(ctx context.Context) (netspec.State, error) {
	var st netspec.State
	err := c.Do(ctx, TypeGetNetwork, nil, &st)
	return st, err
}

// SetNetwork applies n as a pending change that reverts unless confirmed.
func (c *Client) SetNetwork(ctx context.Context, n netspec.Network) (netspec.Pending, error) {
	var p netspec.Pending
	err := c.Do(ctx, TypeSetNetwork, SetNetworkRequest{Network: n}, &p)
	return p, err
}

// ConfirmNetwork makes the pending network change permanent.
func (c *Client) ConfirmNetwork(ctx context.Context, id string) error {
	return c.Do(ctx, TypeConfirmNetwork, ConfirmNetworkRequest{ID: id}, nil)
}

// GetTime returns the time configuration and the last NTP synchronisation.
func (c *Client) GetTime(ctx context.Context) (netspec.TimeState, error) {
	var st netspec.TimeState
	err := c.Do(ctx, TypeGetTime, nil, &st)
	return st, err
}

// SetTime replaces the NTP servers and the time zone.
func (c *Client) SetTime(ctx context.Context, t netspec.Time) error {
	return c.Do(ctx, TypeSetTime, SetTimeRequest{Time: t}, nil)
}
