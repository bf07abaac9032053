package dialplan

import "strings"

// maxE164 is the longest international number (ITU-T E.164).
const maxE164 = 15

// Classification is what the dial plan knows about an external number.
type Classification struct {
	Class Class
	Label string // the range when it is not an ordinary number ("premium-rate", "other NANP country JM", …)
	// National is the one form routes match and the trunk is sent (after
	// the route's strip/add): national format with the trunk prefix, or
	// "+" and the E.164 digits for a number abroad.
	National string
}

// Classify classifies the number proper (Number.Core: digits with an
// optional leading '+', feature codes already split off) in the
// country's numbering plan.
func (c Country) Classify(core string) (Classification, error) {
	if !plainNumber(core) {
		return Classification{}, invalid(true, "%q is not digits with an optional leading '+'", core)
	}
	rest, intl := "", false
	switch {
	case core[0] == '+':
		rest, intl = core[1:], true
	case c.InternationalPrefix != "" && strings.HasPrefix(core, c.InternationalPrefix):
		rest, intl = core[len(c.InternationalPrefix):], true
	}
	if intl {
		switch {
		case rest == "":
			return Classification{}, invalid(false, "international prefix without a number")
		case len(rest) > maxE164:
			return Classification{}, invalid(true, "international number of %d digits (E.164 allows %d)", len(rest), maxE164)
		case rest[0] == '0':
			return Classification{}, invalid(true, "country code starting with 0")
		case strings.HasPrefix(rest, c.Code):
			return c.significant(rest[len(c.Code):])
		}
		return foreign(rest), nil
	}
	if c.NANP() {
		return c.nanpDialled(core)
	}
	if np := c.NationalPrefix; np != "" && strings.HasPrefix(core, np) {
		nsn := core[len(np):]
		if strings.HasPrefix(nsn, np) {
			// 00… that is not the international prefix (AU 0014,
			// 0015, …): another operator's access code.
			return Classification{Class: Premium, Label: labelAccess, National: core}, nil
		}
		return c.significant(nsn)
	}
	if r, ok := match(c.Short, core); ok {
		return Classification{Class: r.Class, Label: r.Label, National: core}, nil
	}
	return Classification{Class: National, National: core}, nil // local number
}

// significant classifies a national significant number of c.
func (c Country) significant(nsn string) (Classification, error) {
	if c.NANP() {
		return c.nanpNSN(nsn)
	}
	switch {
	case nsn == "":
		return Classification{}, invalid(false, "country code +%s without a number", c.Code)
	case c.NationalPrefix != "" && strings.HasPrefix(nsn, c.NationalPrefix):
		// "+49 0044…" would reach the trunk as "00044…" or "0044…".
		return Classification{}, invalid(true, "trunk prefix %s after country code +%s", c.NationalPrefix, c.Code)
	}
	cl := Classification{Class: National, National: c.NationalPrefix + nsn}
	if r, ok := match(c.Ranges, nsn); ok {
		cl.Class, cl.Label = r.Class, r.Label
	}
	return cl, nil
}

// nanpDialled classifies a number dialled in a NANP country without '+'
// or 011: 1+10 digits, 10 digits, 7-digit local, N11 or a short code.
func (c Country) nanpDialled(core string) (Classification, error) {
	if r, ok := match(c.Short, core); ok {
		return Classification{Class: r.Class, Label: r.Label, National: core}, nil
	}
	switch {
	case len(core) == 11 && core[0] == '1':
		return c.nanpNSN(core[1:])
	case len(core) == 10:
		return c.nanpNSN(core)
	case len(core) == 7 && core[0] >= '2':
		cl := Classification{Class: National, National: core}
		if strings.HasPrefix(core, "976") {
			cl.Class, cl.Label = Premium, labelPremium
		}
		return cl, nil
	case len(core) == 3 && core[0] >= '2' && core[1:] == "11":
		return Classification{Class: National, Label: "N11 service", National: core}, nil
	}
	return Classification{}, invalid(false, "%s is not a NANP number (1 + 10 digits, 10 digits, 7 digits or N11)", core)
}

// nanpNSN classifies a 10-digit NANP number NPA-NXX-XXXX; its national
// form is 1 + the 10 digits, whatever form was dialled.
func (c Country) nanpNSN(nsn string) (Classification, error) {
	if len(nsn) != 10 || nsn[0] < '2' || nsn[3] < '2' {
		return Classification{}, invalid(false, "%s is not a NANP number NPA-NXX-XXXX", nsn)
	}
	if cl, ok := nanpSpecial(nsn); ok {
		cl.National = "1" + nsn
		return cl, nil
	}
	if iso := NANPCountry(nsn[:3]); iso != c.ISO {
		return Classification{Class: International, Label: labelNANPForeign + " " + iso, National: "+1" + nsn}, nil
	}
	return Classification{Class: National, National: "1" + nsn}, nil
}

// nanpSpecial finds premium and special NPAs and the 976 exchanges.
func nanpSpecial(nsn string) (Classification, bool) {
	if r, ok := match(nanpRanges, nsn); ok {
		return Classification{Class: r.Class, Label: r.Label}, true
	}
	if nsn[3:6] == "976" {
		return Classification{Class: Premium, Label: labelPremium}, true
	}
	return Classification{}, false
}

// foreign classifies E.164 digits (after '+') of another country: global
// services, and the premium ranges of the countries the box knows, are
// premium; the rest is international.
func foreign(e164 string) Classification {
	cl := Classification{Class: International, National: "+" + e164}
	if r, ok := match(globalRanges, e164); ok {
		cl.Class, cl.Label = r.Class, r.Label
		return cl
	}
	if e164[0] == '1' {
		if nsn := e164[1:]; len(nsn) == 10 {
			if s, ok := nanpSpecial(nsn); ok {
				cl.Class, cl.Label = s.Class, s.Label
			}
		}
		return cl
	}
	for _, k := range countries {
		if k.NANP() || !strings.HasPrefix(e164, k.Code) {
			continue
		}
		if r, ok := match(k.Ranges, e164[len(k.Code):]); ok && r.Class == Premium {
			cl.Class, cl.Label = Premium, r.Label+" "+k.ISO
		}
		break
	}
	return cl
}
