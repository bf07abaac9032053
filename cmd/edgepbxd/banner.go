package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/sipedge"

	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// banTimeout bounds one Ban request to PID 1, so a stalled control socket
// cannot hold up the admin login path or the SIP guard's ban queue.
const banTimeout = 2 * time.Second

// banClient is the part of the PID 1 control client the firewall bans use.
type banClient interface {
	Ban(ctx context.Context, b fwspec.Ban) error
}

// controlBanner forwards bans from the admin (auth) and SIP services to
// PID 1's netfw; it is their auth.Banner and sipedge.Banner.
type controlBanner struct{ c banClient }

func (b controlBanner) Ban(ctx context.Context, ban fwspec.Ban) error {
	ctx, cancel := context.WithTimeout(ctx, banTimeout)
	defer cancel()
	if err := b.c.Ban(ctx, ban); err != nil {
		return fmt.Errorf("ban %s (%s) via PID 1: %w", ban.Prefix, ban.Reason, err)
	}
	return nil
}

// sipBlocks shows the SIP edge's bans and throttles to the admin side.
type sipBlocks struct{ s *sipedge.Server }

func (b sipBlocks) Blocks() []admin.SIPBlock {
	var out []admin.SIPBlock
	for _, x := range b.s.Blocks() {
		out = append(out, admin.SIPBlock{Source: x.Source, User: x.User, Reason: x.Reason, Since: x.Since, Until: x.Until, Registered: x.Registered})
	}
	return out
}

func (b sipBlocks) Lift(p netip.Prefix, user string) (bans, throttles int) { return b.s.Lift(p, user) }
