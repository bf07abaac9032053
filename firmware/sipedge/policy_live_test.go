package sipedge

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/emiago/sipgo/sip"
)

// TestPolicyLiveTrunks: trunks from the stored telephony configuration are
// identified next to the settings' own, replaced whole, and survive a
// change of the settings (set) — and the settings' trunk survives theirs.
func TestPolicyLiveTrunks(t *testing.T) {
	pfx := netip.MustParsePrefix
	p := newPolicy(nil, []netip.Prefix{pfx("10.0.0.0/8")}, nil,
		[]pbxconfig.Trunk{{Name: "boot", Peers: []netip.Prefix{pfx("192.0.2.1/32")}}})
	p.setLive([]pbxconfig.Trunk{{Name: "itsp", Peers: []netip.Prefix{pfx("198.51.100.0/28")}}})
	p.set(nil, []netip.Prefix{pfx("10.1.0.0/16")}, nil,
		[]pbxconfig.Trunk{{Name: "boot", Peers: []netip.Prefix{pfx("192.0.2.1/32")}}})

	cases := []struct {
		src, want string
		ok        bool
	}{
		{"192.0.2.1", "boot", true},
		{"198.51.100.5", "itsp", true},
		{"198.51.100.17", "", false},
		{"10.1.2.3", "", false},
	}
	for _, c := range cases {
		name, ok := p.Trunk(netip.MustParseAddr(c.src))
		if name != c.want || ok != c.ok {
			t.Errorf("Trunk(%s) = %q %v, want %q %v", c.src, name, ok, c.want, c.ok)
		}
	}
	if v := p.Zone(netip.MustParseAddr("198.51.100.5")); v.Drop {
		t.Errorf("live trunk outside the SIP zones dropped: %s", v.Reason)
	}

	p.setLive(nil)
	if _, ok := p.Trunk(netip.MustParseAddr("198.51.100.5")); ok {
		t.Error("removed live trunk still identified")
	}
	if v := p.Zone(netip.MustParseAddr("198.51.100.5")); !v.Drop {
		t.Error("removed live trunk still passes the zone ACL")
	}
	if _, ok := p.Trunk(netip.MustParseAddr("192.0.2.1")); !ok {
		t.Error("settings trunk lost when the live trunks were replaced")
	}
}

// TestDomainRegisterMatchesDomain: the fast path's byte form of stage 3
// gives Domain's verdict for a REGISTER, with and without domains.
func TestDomainRegisterMatchesDomain(t *testing.T) {
	hosts := []string{"pbx.example.com", "PBX.Example.COM", "pbx.example.com.", "other.example", "192.0.2.10",
		"[2001:db8::1]", "[[2001:db8::1]]", "", ".", "[", "pbx.example.com..", "PBX.EXAMPLE.COM.", "ünï.example",
		strings.Repeat("a", 300)}
	src := netip.MustParseAddr("10.0.0.5")
	for _, domains := range [][]string{nil, {"pbx.example.com", "ünï.example"}} {
		p := newPolicy(domains, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, nil, nil)
		for _, ru := range hosts {
			for _, to := range hosts {
				req := sip.NewRequest(sip.REGISTER, sip.Uri{Host: ru})
				req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Host: to}})
				want := p.Domain(req, src).Drop
				if got := p.domainRegister([]byte(ru), []byte(to), src).Drop; got != want {
					t.Errorf("domains %v, %q / %q: fast drop %v, Domain %v", domains, ru, to, got, want)
				}
			}
		}
	}
}
