package dialplan

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/edgepbx/edgepbx/firmware/logs"
)

// emergencyClass marks an expected emergency number in the form tables.
const emergencyClass Class = "emergency"

// invalidClass marks a number that must be refused as not a number.
const invalidClass Class = "invalid"

// formPlan is a plan for country with one default-class extension, a
// default route and an international route, neither stripping anything:
// the trunk must get exactly the classified form.
func formPlan(country string) Plan {
	return Plan{
		Country:    country,
		Trunks:     []Trunk{{Name: "itsp", Limits: Limits{MaxConcurrent: 1000, MaxPerHour: 100000}}},
		Extensions: []Extension{{Number: "2001", Limits: Limits{MaxConcurrent: 1000, MaxPerHour: 100000}}},
		Routes:     []Route{{Prefix: "", Trunk: "itsp"}, {Prefix: "+", Trunk: "itsp"}},
		// Never suspend: every form must be judged on its own.
		BurstAttempts: 1 << 30,
	}
}

// attackForms is every way a phone or an attacker can write number: as
// typed, with every kind of separator, as tel: and sip: URIs with
// parameters, percent-encoded, in full-width and Arabic-Indic digits,
// with Unicode spaces.
func attackForms(number string) []string {
	compact := strings.ReplaceAll(number, " ", "")
	pct := ""
	for _, r := range compact {
		pct += fmt.Sprintf("%%%02X", r)
	}
	mapDigits := func(zero rune) string {
		return strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return zero + r - '0'
			}
			if r == '+' && zero == '０' {
				return '＋'
			}
			return r
		}, number)
	}
	return []string{
		number, compact,
		strings.ReplaceAll(number, " ", "-"),
		strings.ReplaceAll(number, " ", "."),
		"(" + strings.Replace(number, " ", ") ", 1),
		strings.ReplaceAll(number, " ", "\u00a0"),
		strings.ReplaceAll(number, " ", "\u2011"),
		"tel:" + strings.ReplaceAll(number, " ", "-") + ";phone-context=example.com",
		"sip:" + compact + "@pbx.example;user=phone",
		"SIP:" + compact + ";isub=1@pbx.example",
		compact + ";user=phone",
		pct,
		mapDigits('０'), // full-width
		mapDigits('٠'), // Arabic-Indic
	}
}

// codeForms hides number behind the feature codes ITSPs and GSM gateways
// act on.
func codeForms(country Country, number string) []string {
	compact := strings.ReplaceAll(number, " ", "")
	out := []string{"*31#" + compact, "#31#" + compact, "*31%23" + compact, "%2331%23" + compact, "*#31#" + compact,
		"＊31＃" + compact, "*31#*31#" + compact}
	if country.NANP() && !strings.HasPrefix(compact, "+") {
		out = append(out, "*67"+compact, "*82"+compact, "*67*31#"+compact)
	}
	return out
}

type formCase struct {
	number string
	class  Class
}

// formTables: per supported country, numbers an attacker would try, in
// the country's own formats, with the class each must get.
var formTables = map[string][]formCase{
	"DE": {
		{"030 123456", National}, {"+49 30 123456", National}, {"0049 30 123456", National},
		{"0151 2345678", National}, {"0800 1234567", National}, {"116 117", National},
		{"+44 20 7946 0000", International}, {"0044 20 7946 0000", International},
		{"+1 212 555 0100", International}, {"+1 876 555 0100", International},
		{"0900 123456", Premium}, {"+49 900 123456", Premium}, {"0049 900 123456", Premium},
		{"0137 1234567", Premium}, {"0180 5 123456", Premium}, {"0700 12345678", Premium},
		{"012 3456789", Premium}, {"0191 1234", Premium}, {"01088 0044 20 7946 0000", Premium},
		{"11833", Premium}, {"0118 33", Premium},
		{"00882 1234 5678", Premium}, {"+881 6 1234 5678", Premium}, {"+979 1234 5678", Premium},
		{"+1 900 555 0100", Premium}, {"+44 909 879 0000", Premium}, {"+43 900 123456", Premium},
		{"+49 0044 20 7946 0000", invalidClass}, {"0049 0 30 123456", invalidClass},
		{"+1234567890123456", invalidClass},
		{"112", emergencyClass}, {"110", emergencyClass},
	},
	"AT": {
		{"01 5123456", National}, {"+43 1 5123456", National}, {"0043 1 5123456", National},
		{"0900 123456", Premium}, {"0901 123456", Premium}, {"0930 123456", Premium}, {"0939 123456", Premium},
		{"0810 123456", Premium}, {"0820 123456", Premium}, {"+43 900 123456", Premium},
		{"118 877", Premium}, {"1002 0044 20 7946 0000", Premium}, {"00882 1234 5678", Premium},
		{"0049 30 123456", International}, {"+1 876 555 0100", International},
		{"+43 0 1 5123456", invalidClass},
		{"112", emergencyClass}, {"122", emergencyClass}, {"133", emergencyClass}, {"144", emergencyClass},
	},
	"CH": {
		{"044 123 45 67", National}, {"+41 44 123 45 67", National}, {"0800 123 456", National},
		{"0900 123 456", Premium}, {"0901 123 456", Premium}, {"0906 123 456", Premium},
		{"0848 123 456", Premium}, {"0878 123 456", Premium}, {"1811", Premium},
		{"1088 0044 20 7946 0000", Premium}, {"+41 906 123 456", Premium},
		{"0049 30 123456", International},
		{"112", emergencyClass}, {"117", emergencyClass}, {"118", emergencyClass}, {"144", emergencyClass}, {"1414", emergencyClass},
	},
	"FR": {
		{"01 23 45 67 89", National}, {"+33 1 23 45 67 89", National}, {"06 12 34 56 78", National},
		{"3919", National},
		{"089 123 4567", Premium}, {"0899 12 34 56", Premium}, {"081 123 4567", Premium}, {"082 123 4567", Premium},
		{"118 712", Premium}, {"3615", Premium}, {"1633 0044 20 7946 0000", Premium}, {"+33 8 99 12 34 56", Premium},
		{"0044 20 7946 0000", International},
		{"+33 0 1 23 45 67 89", invalidClass},
		{"112", emergencyClass}, {"15", emergencyClass}, {"17", emergencyClass}, {"18", emergencyClass}, {"114", emergencyClass},
	},
	"GB": {
		{"020 7946 0000", National}, {"+44 20 7946 0000", National}, {"07700 900123", National},
		{"07624 123456", National}, {"0800 123 4567", National},
		{"0909 879 0000", Premium}, {"0871 123 4567", Premium}, {"0845 123 4567", Premium},
		{"070 1234 5678", Premium}, {"076 1234 5678", Premium}, {"118 118", Premium}, {"100", Premium}, {"155", Premium},
		{"+44 909 879 0000", Premium}, {"0044 909 879 0000", Premium},
		{"00 1 876 555 0100", International}, {"0049 30 123456", International},
		{"+44 0 20 7946 0000", invalidClass},
		{"999", emergencyClass}, {"112", emergencyClass},
	},
	"US": {
		{"212 555 0100", National}, {"1 212 555 0100", National}, {"+1 212 555 0100", National},
		{"011 1 212 555 0100", National}, {"555 0100", National}, {"800 555 0100", National},
		{"787 555 0100", National}, {"340 555 0100", National}, {"311", National},
		{"876 555 0100", International}, {"1 876 555 0100", International}, {"+1 876 555 0100", International},
		{"011 1 876 555 0100", International}, {"658 555 0100", International}, {"809 555 0100", International},
		{"849 555 0100", International}, {"441 555 0100", International}, {"284 555 0100", International},
		{"649 555 0100", International}, {"+1 416 555 0100", International}, {"011 44 20 7946 0000", International},
		{"900 555 0100", Premium}, {"1 900 555 0100", Premium}, {"+1 900 555 0100", Premium},
		{"212 976 1234", Premium}, {"976 1234", Premium}, {"500 555 0100", Premium}, {"700 555 0100", Premium},
		{"456 555 0100", Premium}, {"880 555 0100", Premium}, {"411", Premium},
		{"0", Premium}, {"0 212 555 0100", Premium}, {"01 44 20 7946 0000", Premium},
		{"1010 321 011 44 20 7946 0000", Premium}, {"011 882 1234 5678", Premium}, {"+44 909 879 0000", Premium},
		{"1 011 44 20 7946 0000", Premium}, {"+1 011 44 20 7946 0000", invalidClass}, {"112 555 0100", invalidClass},
		{"212 055 0100", invalidClass}, {"12 3456", invalidClass},
		{"911", emergencyClass},
	},
	"CA": {
		{"416 555 0100", National}, {"1 416 555 0100", National}, {"+1 416 555 0100", National}, {"604 555 0100", National},
		{"212 555 0100", International}, {"+1 212 555 0100", International}, {"876 555 0100", International},
		{"900 555 0100", Premium}, {"600 555 0100", Premium}, {"416 976 1234", Premium},
		{"911", emergencyClass},
	},
	"AU": {
		{"02 9876 5432", National}, {"+61 2 9876 5432", National}, {"1300 123 456", National}, {"1800 123 456", National},
		{"0412 345 678", National},
		{"1900 123 456", Premium}, {"1902 123 456", Premium}, {"0145 123 456", Premium}, {"0147 123 456", Premium},
		{"0198 123 456", Premium}, {"0014 44 20 7946 0000", Premium}, {"0011 882 1234 5678", Premium},
		{"0011 44 20 7946 0000", International}, {"+1 876 555 0100", International},
		{"+61 0 2 9876 5432", invalidClass},
		{"000", emergencyClass}, {"112", emergencyClass},
	},
}

// TestNumberFormsPerCountry: every supported country has a table, and in
// every form an attacker would write a number (separators, URIs,
// percent-encoding, Unicode digits) it gets the same class; under the
// default classes it goes out only if that class is internal or
// national, and the trunk then gets exactly the classified form. Hidden
// behind feature codes it never reaches a trunk (routes list no codes),
// except an emergency number, which goes out without the code.
func TestNumberFormsPerCountry(t *testing.T) {
	for _, iso := range Countries() {
		if _, ok := formTables[iso]; !ok {
			t.Errorf("no number-form table for %s", iso)
		}
	}
	for iso, table := range formTables {
		country, _ := LookupCountry(iso)
		e, err := New(formPlan(iso), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range table {
			for _, form := range attackForms(tc.number) {
				t.Run(iso+"/"+form, func(t *testing.T) { checkForm(t, e, form, tc.class, false) })
			}
			for _, form := range codeForms(country, tc.number) {
				t.Run(iso+"/"+form, func(t *testing.T) { checkForm(t, e, form, tc.class, true) })
			}
		}
	}
}

func checkForm(t *testing.T, e *Engine, form string, want Class, coded bool) {
	t.Helper()
	_, cl, cerr := e.Classify(form)
	d, lease, err := e.RouteOutbound("2001", form)
	defer lease.Release()
	allowed := slices.Contains(DefaultClasses(), want)
	switch {
	case want == emergencyClass:
		if err != nil || d.Kind != KindEmergency || !digitsOnly(d.Target) {
			t.Fatalf("emergency %q: %+v, %v", form, d, err)
		}
		return
	case want == invalidClass:
		if !errors.Is(err, ErrInvalidNumber) || !errors.Is(cerr, ErrInvalidNumber) || lease != nil {
			t.Fatalf("%q: want invalid, got %+v, %v", form, d, err)
		}
		return
	}
	if cerr != nil || cl.Class != want {
		t.Fatalf("%q classified %+v, %v; want %s", form, cl, cerr, want)
	}
	switch {
	case !allowed:
		if !errors.Is(err, ErrBlocked) || lease != nil || SIPStatus(err) != 403 {
			t.Fatalf("%q (%s) not blocked: %+v, %v", form, want, d, err)
		}
	case coded:
		if !errors.Is(err, ErrFeatureCode) || lease != nil || SIPStatus(err) != 403 {
			t.Fatalf("%q went out with its feature code: %+v, %v", form, d, err)
		}
	default:
		if err != nil || d.Kind != KindOutbound || d.Target != cl.National || !plainNumber(d.Target) {
			t.Fatalf("%q: %+v, %v; want out to the trunk as %q", form, d, err, cl.National)
		}
	}
}

// FuzzTrunkNumber: whatever a phone dials, in every supported country, a
// call that goes out as national or internal goes out as exactly the
// classified number: the trunk gets plain digits (or "+" digits) equal to
// the classified national form, and classifying what the trunk gets
// gives the same class and the same form again. With a route that lists
// feature codes, the trunk gets one of those codes and then exactly the
// classified number. Nothing but internal, national and emergency calls
// pass the default classes.
func FuzzTrunkNumber(f *testing.F) {
	for _, table := range formTables {
		for _, tc := range table {
			f.Add(uint8(0), tc.number)
		}
	}
	for _, s := range []string{"*31#0044201234567", "#31#00882123456", "*31%23030123456", "+490044201234567",
		"*67 876 555 0100", "sip:%2331%23030123456@x;user=phone", "tel:+1-900-555-0100", "１１２", "*31#112"} {
		f.Add(uint8(1), s)
	}
	isos := Countries()
	slices.Sort(isos)
	type engines struct{ plain, coded *Engine }
	all := map[string]engines{}
	for _, iso := range isos {
		p := formPlan(iso)
		plain, err := New(p, nil, nil)
		if err != nil {
			f.Fatal(err)
		}
		p.Routes[0].FeatureCodes = []string{"*31#", "#31#"}
		coded, err := New(p, nil, nil)
		if err != nil {
			f.Fatal(err)
		}
		all[iso] = engines{plain, coded}
	}
	f.Fuzz(func(t *testing.T, which uint8, dialled string) {
		iso := isos[int(which)%len(isos)]
		for i, e := range []*Engine{all[iso].plain, all[iso].coded} {
			n, cl, cerr := e.Classify(dialled)
			d, lease, err := e.RouteOutbound("2001", dialled)
			lease.Release()
			if err != nil {
				continue
			}
			switch d.Kind {
			case KindEmergency:
				if !slices.Contains(e.emergency, d.Target) {
					t.Fatalf("%s %q: emergency target %q", iso, dialled, d.Target)
				}
				continue
			case KindInternal:
				if _, ok := e.exts[d.Target]; !ok || d.Trunk != "" {
					t.Fatalf("%s %q: internal call %+v", iso, dialled, d)
				}
				continue
			}
			if cerr != nil || d.Class != cl.Class || !slices.Contains(DefaultClasses(), d.Class) {
				t.Fatalf("%s %q: out as %+v, classified %+v %v", iso, dialled, d, cl, cerr)
			}
			target := d.Target
			if n.Codes != "" {
				if i == 0 || !slices.Contains([]string{"*31#", "#31#"}, n.Codes) || !strings.HasPrefix(target, n.Codes) {
					t.Fatalf("%s %q: codes %q reached the trunk as %q", iso, dialled, n.Codes, target)
				}
				target = target[len(n.Codes):]
			}
			if target != cl.National || !plainNumber(target) {
				t.Fatalf("%s %q: trunk got %q, classified %q", iso, dialled, d.Target, cl.National)
			}
			_, again, err := e.Classify(target)
			if err != nil || again != cl {
				t.Fatalf("%s %q: trunk's %q classifies as %+v %v, not %+v", iso, dialled, target, again, err, cl)
			}
		}
	})
}

// TestDigitValueTable: digitValue relies on every range of Go's Nd table
// starting at a zero and holding whole runs of ten digits.
func TestDigitValueTable(t *testing.T) {
	for _, r := range unicode.Nd.R16 {
		if r.Stride != 1 || (r.Hi-r.Lo+1)%10 != 0 {
			t.Fatalf("Nd range %+v", r)
		}
	}
	for _, r := range unicode.Nd.R32 {
		if r.Stride != 1 || (r.Hi-r.Lo+1)%10 != 0 {
			t.Fatalf("Nd range %+v", r)
		}
	}
	for _, zero := range []rune{'0', '０', '٠', '۰', '०', '𝟎', '𝟘'} {
		for v := range rune(10) {
			if got := digitValue(zero + v); zero != '0' && got != byte(v) {
				t.Fatalf("digitValue(%q) = %d, want %d", zero+v, got, v)
			}
		}
	}
}

// TestNormalizeForms: refusals name the reason; the forms that only an
// attacker sends are marked suspicious (logged as security events).
func TestNormalizeForms(t *testing.T) {
	tests := []struct {
		in, out    string
		suspicious bool
	}{
		{"tel:+49-30-123456;phone-context=example.com", "+4930123456", false},
		{"sip:*31%230301234@pbx;user=phone", "*31#0301234", false},
		{"sips:+1%20212%20555%200100@pbx", "+12125550100", false},
		{"０３０　１２３", "030123", false},
		{"*31%25230044", "", true},   // double-encoded '#'
		{"0044%2", "", true},         // broken escape
		{"00\u200b44", "", true},     // zero-width space hides a character
		{"00\u202e44", "", true},     // right-to-left override
		{"0301234\x00", "", true},    // control character
		{"1-800-FLOWERS", "", false}, // letters: a mistake, not an attack
		{"sip:pbx.example", "", false},
		{"030+1234", "", true},
		{strings.Repeat("1", 300), "", true},
	}
	for _, tc := range tests {
		got, err := Normalize(tc.in)
		var ne *NumberError
		if got != tc.out || (tc.out == "") != (err != nil) || (err != nil && (!errors.As(err, &ne) || ne.Suspicious != tc.suspicious)) {
			t.Errorf("Normalize(%q) = %q, %v; want %q (suspicious %v)", tc.in, got, err, tc.out, tc.suspicious)
		}
	}
}

// TestSuspiciousFormsAreEvents: a number hidden behind a feature code or
// an evasive encoding is a security event and counts towards the burst
// that suspends the extension; a typo is neither.
func TestSuspiciousFormsAreEvents(t *testing.T) {
	log, _ := logs.New(nil, 100)
	p := formPlan("DE")
	p.BurstAttempts = 3
	e, err := New(p, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.RouteOutbound("2001", "0301x"); !errors.Is(err, ErrInvalidNumber) || len(log.Recent(10)) != 0 {
		t.Fatalf("typo: %v, events %v", err, kinds(log))
	}
	for _, n := range []string{"*31#030123456", "*31%2523030123456", "#31#0044201234567"} {
		if _, _, err := e.RouteOutbound("2001", n); err == nil {
			t.Fatalf("%q went out", n)
		}
	}
	if _, ok := e.Suspended("2001"); !ok || !slices.Contains(kinds(log), KindSuspended) {
		t.Fatalf("not suspended after three evasive numbers: %v", kinds(log))
	}
	if d, l, err := e.RouteOutbound("2001", "#31#112"); err != nil || d.Kind != KindEmergency || d.Target != "112" {
		t.Fatalf("emergency after suspension: %+v %v", d, err)
	} else {
		l.Release()
	}
}

// TestRouteFeatureCodesValidated: a route lists well-formed codes only,
// and Add cannot smuggle codes in front of every number.
func TestRouteFeatureCodesValidated(t *testing.T) {
	for _, mod := range []func(*Plan){
		func(p *Plan) { p.Routes[0].FeatureCodes = []string{"*31#0044"} },
		func(p *Plan) { p.Routes[0].FeatureCodes = []string{"31"} },
		func(p *Plan) { p.Routes[0].Add = "*31#" },
		func(p *Plan) { p.Routes[0].Add = "#31#" },
		func(p *Plan) { p.Routes[0].Prefix = "*31#" },
		func(p *Plan) { p.DIDs = []DID{{Number: "*31#030", Extension: "2001"}} },
	} {
		p := formPlan("DE")
		mod(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("plan accepted: %+v", p.Routes)
		}
	}
}
