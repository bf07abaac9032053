package netfw

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

func TestValidate(t *testing.T) {
	mod := func(f func(p *Policy)) Policy {
		p := DefaultPolicy()
		f(&p)
		return p
	}
	pfx := netip.MustParsePrefix
	cases := []struct {
		name string
		p    Policy
		want error // nil: valid
	}{
		{"default", DefaultPolicy(), nil},
		{"empty zone", mod(func(p *Policy) { p.Zones = append(p.Zones, Zone{Name: "x"}) }), ErrInvalidPolicy},
		{"overlap in zone", mod(func(p *Policy) { p.Zones[0].Prefixes = append(p.Zones[0].Prefixes, pfx("10.1.0.0/16")) }), ErrInvalidPolicy},
		{"host bits", mod(func(p *Policy) { p.Zones[0].Prefixes = []netip.Prefix{pfx("10.0.0.1/8")} }), ErrInvalidPolicy},
		{"mapped", mod(func(p *Policy) { p.Zones[0].Prefixes = []netip.Prefix{pfx("::ffff:10.0.0.0/104")} }), ErrInvalidPolicy},
		{"zone named any", mod(func(p *Policy) { p.Zones[0].Name = ZoneAny }), ErrInvalidPolicy},
		{"bad zone name", mod(func(p *Policy) { p.Zones[0].Name = "Lan;drop" }), ErrInvalidPolicy},
		{"duplicate zone", mod(func(p *Policy) { p.Zones = append(p.Zones, p.Zones[0]) }), ErrInvalidPolicy},
		{"unknown zone", mod(func(p *Policy) { p.Rules[0].Zones = []string{"nowhere"} }), ErrInvalidPolicy},
		{"unknown service", mod(func(p *Policy) { p.Rules = append(p.Rules, Rule{Service: "telnet", Zones: []string{"lan"}}) }), ErrInvalidPolicy},
		{"rule without zones", mod(func(p *Policy) { p.Rules[1].Zones = nil }), ErrInvalidPolicy},
		{"port zero", mod(func(p *Policy) { p.Services[0].Ports = Port(0) }), ErrInvalidPolicy},
		{"port range reversed", mod(func(p *Policy) { p.Services[0].Ports = PortRange{First: 6000, Last: 5000} }), ErrInvalidPolicy},
		{"service in RTP range", mod(func(p *Policy) {
			p.Services = append(p.Services, Service{Name: "x", Proto: UDP, Ports: Port(15000)})
		}), ErrInvalidPolicy},
		{"services share a port", mod(func(p *Policy) {
			p.Services = append(p.Services, Service{Name: "x", Proto: TCP, Ports: PortRange{First: 440, Last: 450}})
		}), ErrInvalidPolicy},
		{"bad proto", mod(func(p *Policy) { p.Services[0].Proto = "sctp" }), ErrInvalidPolicy},
		{"RTP empty", mod(func(p *Policy) { p.RTP = PortRange{} }), ErrInvalidPolicy},
		{"admin to any", mod(func(p *Policy) { p.Rules[0].Zones = []string{ZoneAny} }), ErrAdminToAny},
		{"admin to any with override", mod(func(p *Policy) { p.Rules[0].Zones = []string{ZoneAny}; p.AllowAdminFromAny = true }), nil},
		{"ssh to any", mod(func(p *Policy) { p.Rules = append(p.Rules, Rule{Service: SvcSSH, Zones: []string{ZoneAny}}) }), ErrAdminToAny},
		{"sip to any", mod(func(p *Policy) { p.Rules = append(p.Rules, Rule{Service: SvcSIPUDP, Zones: []string{ZoneAny}}) }), nil},
		{"no admin service", mod(func(p *Policy) { p.Rules = p.Rules[1:] }), ErrAdminLockout},
		{"admin source kept", mod(func(p *Policy) { p.AdminSources = []netip.Addr{netip.MustParseAddr("192.168.1.5")} }), nil},
		{"admin source locked out", mod(func(p *Policy) { p.AdminSources = []netip.Addr{netip.MustParseAddr("8.8.8.8")} }), ErrAdminLockout},
		{"allowlist unknown", mod(func(p *Policy) { p.Allowlist = []string{"trunks"} }), ErrInvalidPolicy},
		{"allowlist any", mod(func(p *Policy) { p.Allowlist = []string{ZoneAny} }), ErrInvalidPolicy},
		{"sip udp service not udp", mod(func(p *Policy) { p.SIPUDPService = SvcSIPTCP }), ErrInvalidPolicy},
		{"too many zones", mod(func(p *Policy) {
			for i := range maxZones + 1 {
				p.Zones = append(p.Zones, Zone{Name: fmt.Sprintf("z%d", i), Prefixes: []netip.Prefix{pfx("192.0.2.0/24")}})
			}
		}), ErrInvalidPolicy},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.p.Validate()
			if c.want == nil && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("Validate = %v, want %v", err, c.want)
			}
			if c.want != nil && !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v does not wrap ErrInvalidPolicy", err)
			}
		})
	}
}

func TestMergeRanges(t *testing.T) {
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	cases := []struct {
		in   []netip.Prefix
		f    family
		want []addrRange
	}{
		{[]netip.Prefix{pfx("10.0.0.0/24"), pfx("10.0.1.0/24")}, fam4, []addrRange{{addr("10.0.0.0"), addr("10.0.1.255")}}},
		{[]netip.Prefix{pfx("10.0.0.0/8"), pfx("10.1.0.0/16"), pfx("192.0.2.7/32")}, fam4,
			[]addrRange{{addr("10.0.0.0"), addr("10.255.255.255")}, {addr("192.0.2.7"), addr("192.0.2.7")}}},
		{[]netip.Prefix{pfx("0.0.0.0/0"), pfx("fc00::/7")}, fam4, []addrRange{{addr("0.0.0.0"), addr("255.255.255.255")}}},
		{[]netip.Prefix{pfx("0.0.0.0/0"), pfx("fc00::/7")}, fam6, []addrRange{{addr("fc00::"), addr("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}}},
	}
	for _, c := range cases {
		if got := mergeRanges(c.in, c.f); !slices.Equal(got, c.want) {
			t.Errorf("mergeRanges(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	// The top of the address space has no interval end element.
	if els := intervalElems([]addrRange{{addr("255.255.255.0"), addr("255.255.255.255")}}, 0); len(els) != 1 {
		t.Errorf("elements for a range at the top: %d, want 1", len(els))
	}
}

// policyFromBytes builds an arbitrary policy from fuzz input: zones with
// random prefixes, rules naming random zones (including "any") and
// services, random overrides.
func policyFromBytes(data []byte) Policy {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	p := DefaultPolicy()
	p.Zones = nil
	p.Rules = nil
	// Mostly well-formed input so the property is checked on many valid
	// policies; sometimes broken names, overlaps and missing zones.
	zoneNames := []string{"lan", "phones", "trunks", "admins", "any", "Bad"}
	for i := range int(next() % 5) {
		name := zoneNames[i]
		if next()%8 == 0 {
			name = zoneNames[int(next())%len(zoneNames)]
		}
		z := Zone{Name: name}
		for range 1 + int(next()%3) {
			if next()%2 == 0 {
				a := netip.AddrFrom4([4]byte{next(), next(), next(), next()})
				z.Prefixes = append(z.Prefixes, netip.PrefixFrom(a, 8+int(next()%25)).Masked())
			} else {
				var b [16]byte
				b[0], b[1], b[15] = next(), next(), next()
				z.Prefixes = append(z.Prefixes, netip.PrefixFrom(netip.AddrFrom16(b), 16+int(next()%113)).Masked())
			}
		}
		p.Zones = append(p.Zones, z)
	}
	if next()%4 != 0 {
		p.Rules = append(p.Rules, Rule{Service: SvcHTTPS, Zones: []string{zoneNames[int(next())%5]}})
	}
	for range int(next() % 8) {
		r := Rule{Service: p.Services[int(next())%len(p.Services)].Name}
		for range 1 + int(next()%3) {
			r.Zones = append(r.Zones, zoneNames[int(next())%len(zoneNames)])
		}
		p.Rules = append(p.Rules, r)
	}
	p.AllowAdminFromAny = next()%4 == 0
	if next()%3 == 0 && len(p.Zones) > 0 {
		p.Allowlist = []string{p.Zones[0].Name}
	}
	return p
}

// checkCompiled is the compiler's security property: no rule accepts
// traffic from every source unless it is an essential (loopback,
// conntrack, DHCP replies, ICMP), a pinhole lookup, or a service the
// policy explicitly opened to "any"; zone rules only use the zones the
// policy names for that service; the chain ends in drop.
func checkCompiled(t *testing.T, p *Policy, c *compiled) {
	t.Helper()
	openToAny := map[string]bool{}
	zonesFor := map[string][]string{}
	for _, r := range p.Rules {
		for _, z := range r.Zones {
			if z == ZoneAny {
				openToAny[r.Service] = true
			}
			zonesFor[r.Service] = append(zonesFor[r.Service], zoneSet(z, fam4), zoneSet(z, fam6))
		}
	}
	for _, r := range c.Rules {
		if r.Verdict != accept {
			continue
		}
		if r.DPort.First != 0 && r.Proto == UDP && r.DPort.Overlaps(c.RTP) && r.Pinhole == "" {
			t.Fatalf("rule %q accepts RTP without a pinhole", r.Name)
		}
		switch r.Kind {
		case kindEssential:
			ok := r.Iif == "lo" ||
				(r.CtState != 0 && r.CtState&(ctNew|ctInvalid) == 0) ||
				(r.SPort == Port(67) && r.DPort == Port(68)) || (r.SPort == Port(547) && r.DPort == Port(546)) ||
				// The phones' DHCP server: only on interfaces PID 1 checked, rate limited.
				(r.IifSet == setDHCPIf && r.SPort == Port(68) && r.DPort == Port(67) && r.RateLimit != 0) ||
				(r.ICMP != nil && r.RateLimit != 0) || (r.ICMPv6 != nil && (r.RateLimit != 0 || r.ICMPv6[0] >= 133 && r.ICMPv6[1] <= 136))
			if !ok {
				t.Fatalf("essential rule %q is broader than an essential: %+v", r.Name, r)
			}
		case kindPinholeRule:
			if r.Pinhole == "" {
				t.Fatalf("pinhole rule %q without lookup", r.Name)
			}
		case kindService:
			if r.SrcSet == "" && !openToAny[r.Service] {
				t.Fatalf("rule %q opens %q to everyone; the policy does not", r.Name, r.Service)
			}
			if r.SrcSet != "" && !slices.Contains(zonesFor[r.Service], r.SrcSet) {
				t.Fatalf("rule %q uses zone %q not listed for %q", r.Name, r.SrcSet, r.Service)
			}
			if r.SrcSet == "" {
				var svc Service
				for _, s := range p.Services {
					if s.Name == r.Service {
						svc = s
					}
				}
				if svc.Admin && !p.AllowAdminFromAny {
					t.Fatalf("admin service %q open to any without override", r.Service)
				}
			}
		default:
			t.Fatalf("rule %q of kind %d accepts", r.Name, r.Kind)
		}
	}
	if last := c.Rules[len(c.Rules)-1]; last.Verdict != drop || last.Kind != kindFinalDrop {
		t.Fatalf("chain does not end in drop: %+v", last)
	}
	names := map[string]bool{}
	for _, s := range c.Sets {
		names[s.Name] = true
	}
	for _, r := range c.Rules {
		for _, s := range []string{r.SrcSet, r.ExemptSet, r.Pinhole} {
			if s != "" && !names[s] {
				t.Fatalf("rule %q uses undefined set %q", r.Name, s)
			}
		}
	}
}

func FuzzCompile(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0, 2, 0, 10, 0, 0, 0, 8, 1, 4, 0, 2, 0, 4})
	f.Add([]byte{2, 3, 1, 1, 1, 2, 7, 64, 3, 5, 4, 2, 4, 3, 1, 2, 3, 0, 3})
	f.Add([]byte("any admins trunks phones lan 0123456789abcdef"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := policyFromBytes(data)
		c, err := compile(&p, nil)
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v does not wrap ErrInvalidPolicy", err)
			}
			return
		}
		checkCompiled(t, &p, c)
		// Rendering never panics and references only sets of the batch.
		for _, r := range c.Rules {
			_ = ruleExprs(r, fakeSets(c))
		}
	})
}

func TestCompileDefaultAndLab(t *testing.T) {
	for _, p := range []Policy{DefaultPolicy(), labPolicy()} {
		c, err := compile(&p, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkCompiled(t, &p, c)
	}
	p := labPolicy()
	p.Rules = append(p.Rules, Rule{Service: SvcSIPUDP, Zones: []string{ZoneAny}})
	c, err := compile(&p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(c.Rules, func(r ruleSpec) bool { return r.Kind == kindService && r.SrcSet == "" }) {
		t.Fatal("SIP opened to any produced no open rule")
	}
}

func TestParseBans(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	good := `{"version":1,"bans":[{"prefix":"192.0.2.1/32","reason":"sip-bruteforce","expires":"2026-01-02T00:00:00Z"},` +
		`{"prefix":"2001:db8::/32","reason":"scanner","expires":"2025-01-01T00:00:00Z"}]}`
	bans, _, err := parseBans([]byte(good), now)
	if err != nil || len(bans) != 1 || bans[0].Reason != "sip-bruteforce" {
		t.Fatalf("parseBans = %+v, %v (want the one unexpired ban)", bans, err)
	}
	for _, bad := range []string{
		`{`,
		`{"version":2,"bans":[]}`,
		`{"version":1,"bans":[{"prefix":"192.0.2.1/24","reason":"x","expires":"2026-01-02T00:00:00Z"}]}`,
		`{"version":1,"bans":[{"prefix":"192.0.2.0/24","reason":"","expires":"2026-01-02T00:00:00Z"}]}`,
		`{"version":1,"bans":[{"prefix":"192.0.2.0/24","reason":"x"},{"prefix":"192.0.2.7/32","reason":"y"}]}`,
	} {
		if _, _, err := parseBans([]byte(bad), now); err == nil {
			t.Errorf("parseBans(%s) accepted", bad)
		}
	}
}

func FuzzParseBans(f *testing.F) {
	f.Add([]byte(`{"version":1,"bans":[{"prefix":"192.0.2.1/32","reason":"x","expires":"2030-01-02T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"bans":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		bans, _, err := parseBans(data, now)
		if err != nil {
			return
		}
		// Whatever loads is what Ban would accept: canonical, no overlap,
		// valid reason, in the future; and it round-trips.
		var ps []netip.Prefix
		for _, b := range bans {
			if fwspec.Reason(b.Reason) != nil || !b.Expires.After(now) || strings.ContainsAny(b.Reason, " \n") {
				t.Fatalf("loaded invalid ban %+v", b)
			}
			if _, err := fwspec.BanPrefix(b.Prefix); err != nil {
				t.Fatalf("loaded ban below the floor: %v", err)
			}
			ps = append(ps, b.Prefix)
		}
		if err := checkPrefixes(ps); err != nil {
			t.Fatalf("loaded bans: %v", err)
		}
		out, err := json.Marshal(banFile{Version: banFileVersion, Bans: bans})
		if err != nil {
			t.Fatal(err)
		}
		again, _, err := parseBans(out, now)
		if err != nil || len(again) != len(bans) {
			t.Fatalf("round trip: %v, %d vs %d", err, len(again), len(bans))
		}
	})
}

func fakeSets(c *compiled) map[string]*nftables.Set {
	m := map[string]*nftables.Set{}
	for i, s := range c.Sets {
		m[s.Name] = &nftables.Set{Name: s.Name, ID: uint32(i + 1)}
	}
	return m
}

// TestCompileProperty runs the fuzz property over many pseudo-random
// policies in every ordinary test run (fixed seed: deterministic).
func TestCompileProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	valid := 0
	for range 20000 {
		data := make([]byte, 64)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		p := policyFromBytes(data)
		c, err := compile(&p, nil)
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v does not wrap ErrInvalidPolicy", err)
			}
			continue
		}
		valid++
		checkCompiled(t, &p, c)
	}
	if valid < 500 {
		t.Fatalf("only %d of 20000 generated policies were valid: generator too weak", valid)
	}
	t.Logf("%d valid policies checked", valid)
}
