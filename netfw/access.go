package netfw

import (
	"net/netip"
	"slices"
)

// Access returns a copy of the policy's zones, rules and allowlist.
func (p Policy) Access() Access {
	return Access{Zones: cloneZones(p.Zones), Rules: cloneRules(p.Rules),
		Allowlist: slices.Clone(p.Allowlist), AllowAdminFromAny: p.AllowAdminFromAny}
}

// WithAccess returns p with its zones, rules, allowlist and admin override
// replaced by copies of a's. AdminSources are cleared: they belong to one
// request, not to the stored policy.
func (p Policy) WithAccess(a Access) Policy {
	p.Zones, p.Rules = cloneZones(a.Zones), cloneRules(a.Rules)
	p.Allowlist, p.AllowAdminFromAny = slices.Clone(a.Allowlist), a.AllowAdminFromAny
	p.Services = slices.Clone(p.Services)
	p.AdminSources = nil
	return p
}

func cloneZones(zs []Zone) []Zone {
	out := make([]Zone, len(zs))
	for i, z := range zs {
		out[i] = Zone{Name: z.Name, Prefixes: slices.Clone(z.Prefixes)}
	}
	return out
}

func cloneRules(rs []Rule) []Rule {
	out := make([]Rule, len(rs))
	for i, r := range rs {
		out[i] = Rule{Service: r.Service, Zones: slices.Clone(r.Zones)}
	}
	return out
}

// normalized gives nil slices their empty value so JSON shows [] not null.
func normalized(a Access) Access {
	if a.Zones == nil {
		a.Zones = []Zone{}
	}
	if a.Rules == nil {
		a.Rules = []Rule{}
	}
	if a.Allowlist == nil {
		a.Allowlist = []string{}
	}
	for i := range a.Zones {
		if a.Zones[i].Prefixes == nil {
			a.Zones[i].Prefixes = []netip.Prefix{}
		}
	}
	return a
}
