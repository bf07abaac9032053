package netfw

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// TestFloorsAfterUnmapping: netfw applies the ban and pinhole floors to
// the address it will install, after unmapping, whoever calls it. A ban of
// ::ffff:0.0.0.0/96 is 0.0.0.0/0 and must not cut IPv4 off; a persisted
// one (as older firmware wrote it) must not come back at boot.
func TestFloorsAfterUnmapping(t *testing.T) {
	l := newLab(t)
	banPath := filepath.Join(t.TempDir(), "netfw", "bans.json")
	fw := l.firewall(WithBanFile(banPath))
	p := labPolicy()
	p.Rules = append(p.Rules, Rule{Service: SvcSIPUDP, Zones: []string{ZoneAny}})
	if err := fw.Apply(p); err != nil {
		t.Fatal(err)
	}
	reaches := func(host string, src, dst netip.Addr, port uint16) bool {
		return l.udpProbe(host, src, dst, port, replyWait)
	}
	if !reaches(hostInternet, inet4, boxInet4, 5060) || !reaches(hostPhones, phone4, boxPhone4, 5060) {
		t.Fatal("lab: SIP not reachable before any ban")
	}

	for _, pfx := range []string{
		"::ffff:0.0.0.0/96",    // 0.0.0.0/0
		"::ffff:0.0.0.0/100",   // 0.0.0.0/4
		"::ffff:203.0.0.0/104", // 203.0.0.0/8
		"::ffff:203.0.0.0/111", // 203.0.0.0/15
		"::ffff:0:0/95",        // mapped and plain IPv6 space at once
		"2001:db8::/32",
		"0.0.0.0/0",
	} {
		err := fw.Ban(Ban{Prefix: netip.MustParsePrefix(pfx), Reason: "attack"})
		var fe *fwspec.FieldError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &fe) || fe.Field != "prefix" {
			t.Errorf("Ban(%s) = %v, want a FieldError on prefix", pfx, err)
		}
	}
	if bans, _ := fw.ListBans(); len(bans) != 0 {
		t.Fatalf("refused bans left state: %+v", bans)
	}
	if !reaches(hostInternet, inet4b, boxInet4, 5060) || !reaches(hostPhones, phone4, boxPhone4, 5060) {
		t.Fatal("a refused ban cut IPv4 off")
	}
	// A mapped host ban is the IPv4 host ban.
	if err := fw.Ban(Ban{Prefix: netip.MustParsePrefix("::ffff:203.0.113.2/128"), Reason: "attack"}); err != nil {
		t.Fatal(err)
	}
	if reaches(hostInternet, inet4, boxInet4, 5060) {
		t.Error("mapped host ban did not ban the IPv4 host")
	}
	if !reaches(hostInternet, inet4b, boxInet4, 5060) {
		t.Error("mapped host ban hit the neighbour")
	}
	if bans, _ := fw.ListBans(); len(bans) != 1 || bans[0].Prefix != netip.MustParsePrefix("203.0.113.2/32") {
		t.Errorf("bans: %+v", bans)
	}

	// Pinholes: the remote is checked after unmapping, the port has a floor.
	for _, c := range []struct {
		ph    Pinhole
		field string
	}{
		{Pinhole{Remote: netip.MustParseAddr("::ffff:0.0.0.0"), LocalPort: 10000}, "remote"},
		{Pinhole{Remote: netip.MustParseAddr("::ffff:127.0.0.1"), LocalPort: 10000}, "remote"},
		{Pinhole{Remote: netip.MustParseAddr("::ffff:255.255.255.255"), LocalPort: 10000}, "remote"},
		{Pinhole{Remote: netip.MustParseAddr("::ffff:224.0.0.1"), LocalPort: 10000}, "remote"},
		{Pinhole{Remote: inet4b, LocalPort: 80}, "local_port"},
		{Pinhole{Remote: inet4b, LocalPort: 5060}, "local_port"},
	} {
		err := fw.OpenPinhole(c.ph)
		var fe *fwspec.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("OpenPinhole(%+v) = %v, want a FieldError on %s", c.ph, err, c.field)
		}
	}
	if reaches(hostInternet, inet4b, boxInet4, 10000) {
		t.Fatal("RTP passes without a pinhole")
	}
	if err := fw.OpenPinhole(Pinhole{Remote: netip.MustParseAddr("::ffff:203.0.113.3"), LocalPort: 10000, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if !reaches(hostInternet, inet4b, boxInet4, 10000) {
		t.Error("mapped pinhole remote did not open for the IPv4 host")
	}

	// A ban file holding 0.0.0.0/0 (what the unmapping wrote before the
	// floors) next to a real ban: the wide one is dropped at restore.
	old, err := json.Marshal(banFile{Version: banFileVersion, Bans: []Ban{
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Timeout: time.Hour, Reason: "attack", Expires: time.Now().Add(time.Hour).UTC()},
		{Prefix: netip.MustParsePrefix("203.0.113.2/32"), Timeout: time.Hour, Reason: "attack", Expires: time.Now().Add(time.Hour).UTC()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(banPath, old, 0o600); err != nil {
		t.Fatal(err)
	}
	fw.Close()
	l.nft("flush", "ruleset")
	fw2 := l.firewall()
	if err := fw2.Apply(p); err != nil {
		t.Fatal(err)
	}
	if err := fw2.RestoreBans(banPath); err != nil {
		t.Fatal(err)
	}
	if !reaches(hostPhones, phone4, boxPhone4, 5060) || !reaches(hostInternet, inet4b, boxInet4, 5060) {
		t.Error("a persisted world ban cut IPv4 off at boot")
	}
	if reaches(hostInternet, inet4, boxInet4, 5060) {
		t.Error("the real persisted ban was not restored")
	}
	// The same file given at construction (WithBanFile) is filtered too.
	fw2.Close()
	l.nft("flush", "ruleset")
	fw3 := l.firewall(WithBanFile(banPath))
	if err := fw3.Apply(p); err != nil {
		t.Fatal(err)
	}
	if bans, _ := fw3.ListBans(); len(bans) != 1 || bans[0].Prefix != netip.MustParsePrefix("203.0.113.2/32") {
		t.Errorf("bans loaded with WithBanFile: %+v", bans)
	}
	if !reaches(hostPhones, phone4, boxPhone4, 5060) {
		t.Error("a persisted world ban cut IPv4 off (WithBanFile)")
	}
}
