package netfw_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// TestControlRefusesMappedWorldBan: through PID 1's control socket to real
// nftables in a fresh netns, a ban of ::ffff:0.0.0.0/96 (0.0.0.0/0 once
// unmapped) and others below the floors are refused with an error naming
// the field, and nothing enters the ban sets or the ban file.
func TestControlRefusesMappedWorldBan(t *testing.T) {
	netnstest.Require(t, "nft")
	box := netnstest.New(t)
	banPath := filepath.Join(t.TempDir(), "bans.json")
	fw, err := netfw.New(netfw.WithNetNS(int(box)), netfw.WithBanFile(banPath), netfw.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if err := fw.Apply(netfw.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "init.sock")
	srv, err := control.Listen(control.Config{Path: path, Firewall: fw, System: noPower{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	cl, err := control.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	for _, c := range []struct {
		req   func() error
		field string
	}{
		{func() error {
			return cl.Ban(ctx, netfw.Ban{Prefix: netip.MustParsePrefix("::ffff:0.0.0.0/96"), Reason: "x"})
		}, "prefix"},
		{func() error {
			return cl.Ban(ctx, netfw.Ban{Prefix: netip.MustParsePrefix("::ffff:10.0.0.0/104"), Reason: "x"})
		}, "prefix"},
		{func() error {
			return cl.OpenPinhole(ctx, netfw.Pinhole{Remote: netip.MustParseAddr("::ffff:0.0.0.0"), LocalPort: 10000})
		}, "remote"},
		{func() error {
			return cl.OpenPinhole(ctx, netfw.Pinhole{Remote: netip.MustParseAddr("192.0.2.1"), LocalPort: 443})
		}, "local_port"},
	} {
		err := c.req()
		var re *control.RemoteError
		if !errors.As(err, &re) || re.Field != c.field {
			t.Errorf("err = %v, want a refusal naming %q", err, c.field)
		}
	}
	n, err := fw.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range n.Sets {
		if s.Elements != 0 {
			t.Errorf("set %s holds %d elements after refused requests", s.Name, s.Elements)
		}
	}
	if bans, _ := cl.ListBans(ctx); len(bans) != 0 {
		t.Errorf("bans after refused requests: %+v", bans)
	}
	// A mapped host ban goes in as the IPv4 host.
	if err := cl.Ban(ctx, netfw.Ban{Prefix: netip.MustParsePrefix("::ffff:192.0.2.7/128"), Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	if bans, _ := cl.ListBans(ctx); len(bans) != 1 || bans[0].Prefix != netip.MustParsePrefix("192.0.2.7/32") {
		t.Errorf("bans: %+v", bans)
	}
}
