package control

import (
	"context"
	"errors"
	"time"

	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Reset is PID 1's factory reset (cmd/init over init/reset). PID 1 cannot
// check the admin's password and second factor: only edgepbxd holds the
// accounts. So edgepbxd re-authenticates the admin and names them in the
// request; PID 1 rate-limits, announces the request on the console, and
// acts only on the single-use token it issued (ConfirmReset must return
// before the reset starts: the reply goes out first).
type Reset interface {
	BeginReset(FactoryResetRequest) (FactoryResetTicket, error)
	ConfirmReset(token string) error
}

// FactoryResetRequest is the first step: who asked (already
// re-authenticated by edgepbxd) and from where, for the console.
type FactoryResetRequest struct {
	Actor  string `json:"actor"`
	Source string `json:"source"`
}

// FactoryResetTicket is PID 1's answer: the token to send back, and until
// when it is valid.
type FactoryResetTicket struct {
	Token     string        `json:"token"`
	Expires   time.Time     `json:"expires"`
	Remaining time.Duration `json:"remaining"`
}

// FactoryResetConfirm is the second step.
type FactoryResetConfirm struct {
	Token string `json:"token"`
}

const maxResetField = 128

func (r FactoryResetRequest) validate() error {
	if r.Actor == "" || len(r.Actor) > maxResetField || !printable(r.Actor) {
		return fieldErr("actor", "1..%d printable characters", maxResetField)
	}
	if len(r.Source) > maxResetField || !printable(r.Source) {
		return fieldErr("source", "at most %d printable characters", maxResetField)
	}
	return nil
}

func (r FactoryResetConfirm) validate() error {
	if !fwspec.ValidPendingID(r.Token) {
		return fieldErr("token", "must be 32 hex digits")
	}
	return nil
}

var errNoReset = errors.New("control: factory reset not available")

func (s *Server) dispatchReset(t Type, p []byte) Reply {
	if t == TypeFactoryResetBegin {
		var r FactoryResetRequest
		if err := decodeStrict(p, &r); err != nil {
			return fail(err)
		}
		if err := r.validate(); err != nil {
			return fail(err)
		}
		if s.cfg.Reset == nil {
			return fail(errNoReset)
		}
		tk, err := s.cfg.Reset.BeginReset(r)
		if err != nil {
			return fail(err)
		}
		return ok(tk)
	}
	var r FactoryResetConfirm
	if err := decodeStrict(p, &r); err != nil {
		return fail(err)
	}
	if err := r.validate(); err != nil {
		return fail(err)
	}
	if s.cfg.Reset == nil {
		return fail(errNoReset)
	}
	if err := s.cfg.Reset.ConfirmReset(r.Token); err != nil {
		return fail(err)
	}
	return ok(nil)
}

// BeginFactoryReset asks PID 1 for a factory reset token. Call it only
// after the admin re-authenticated (password and second factor).
func (c *Client) BeginFactoryReset(ctx context.Context, r FactoryResetRequest) (FactoryResetTicket, error) {
	var tk FactoryResetTicket
	err := c.Do(ctx, TypeFactoryResetBegin, r, &tk)
	return tk, err
}

// ConfirmFactoryReset sends the token back: PID 1 stops the services,
// erases the keys and wipes /data, then reboots.
func (c *Client) ConfirmFactoryReset(ctx context.Context, token string) error {
	return c.Do(ctx, TypeFactoryResetConfirm, FactoryResetConfirm{Token: token}, nil)
}
