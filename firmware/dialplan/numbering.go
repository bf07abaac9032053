package dialplan

// Numbering facts of the supported countries, as data. Written by hand
// from the public numbering plans (state of 2025); a range missing here
// falls back to the plan's class by form (national or international), so
// the tables list what costs more than a normal call.
//
// Sources:
//   - ITU-T E.164 and the "List of ITU-T Recommendation E.164 assigned
//     country codes" (global services: 800, 808, 870, 878, 881, 882, 883,
//     888, 979, 991).
//   - NANPA, "NPA (area code) assignments" and the CNAC list of Canadian
//     area codes; N11 and vertical service codes (ATIS-0300052).
//   - Bundesnetzagentur, "Nummernplan" / "Nummernraum für Premium-Dienste,
//     Service-Dienste, Massenverkehr, Auskunft, Verbindungsnetzbetreiber".
//   - RTR (Austria), KEM-V 2009: Bereiche 0810, 0820/0821, 0900/0901,
//     0930/0931, 0939, 118, Verbindungsnetzbetreiber 10xx.
//   - BAKOM (Switzerland), Nummerierungsplan E.164/2002: 0840–0848,
//     0878, 0900/0901/0906, 18xx.
//   - ARCEP (France), plan de numérotation: 081/082 (coût partagé),
//     089 (majoré), 118xyz, 3BPQ, 16xy (préfixes de sélection).
//   - Ofcom, "National Telephone Numbering Plan": 070, 076, 084, 087, 09,
//     118, 100/155 (operator).
//   - ACMA, "Telecommunications Numbering Plan 2025": 190, 0145/0147
//     (satellite), 0198 (data), 0011 and the other 001x access codes.

// Range is a block of numbers that is not an ordinary call.
type Range struct {
	// Prefix of the national significant number (E.164 without the
	// country code, so without a trunk prefix), or for Short ranges of
	// the number as dialled without a trunk prefix.
	Prefix string
	Class  Class
	Label  string // what the range is, for logs and refusals
}

// Country holds the numbering plan facts the dial plan needs.
type Country struct {
	ISO                 string   // ISO 3166 alpha-2
	Code                string   // calling code without '+', e.g. "49"
	InternationalPrefix string   // e.g. "00", "011"
	NationalPrefix      string   // trunk prefix, e.g. "0", "1"
	Emergency           []string // always-allowed numbers
	// Ranges are national significant number prefixes; Short are
	// numbers dialled without a trunk prefix (directory, carrier
	// selection, premium short codes). The longest match wins.
	Ranges []Range
	Short  []Range
}

// NANP reports whether the country is in the North American Numbering
// Plan (shares +1, 10-digit NPA-NXX-XXXX numbers).
func (c Country) NANP() bool { return c.Code == "1" }

// Labels used in the tables.
const (
	labelPremium     = "premium-rate"
	labelSharedCost  = "shared-cost"
	labelPersonal    = "personal-number"
	labelMass        = "mass-calling"
	labelDirectory   = "directory"
	labelCarrier     = "carrier-selection"
	labelOperator    = "operator"
	labelSatellite   = "satellite"
	labelSpecial     = "special-service"
	labelGlobal      = "global-service"
	labelAccess      = "access-code"
	labelNANPForeign = "other NANP country"
)

func premium(label string, prefixes ...string) []Range {
	out := make([]Range, 0, len(prefixes))
	for _, p := range prefixes {
		out = append(out, Range{Prefix: p, Class: Premium, Label: label})
	}
	return out
}

func concat(rs ...[]Range) []Range {
	var out []Range
	for _, r := range rs {
		out = append(out, r...)
	}
	return out
}

// countries are the built-in numbering plans. Emergency lists include 112
// where networks route it; Plan.Emergency adds local numbers.
var countries = map[string]Country{
	"DE": {ISO: "DE", Code: "49", InternationalPrefix: "00", NationalPrefix: "0",
		Emergency: []string{"112", "110"},
		Ranges: concat(
			premium(labelPremium, "900", "190", "12"), // 0900, former 0190, 012 innovative services
			premium(labelMass, "137", "138"),
			premium(labelSharedCost, "180"),
			premium(labelSpecial, "181", "191", "192", "193", "194", "199"), // IVPN, online services, network-internal
			premium(labelPersonal, "700"),
			premium(labelCarrier, "10"), // 010xy / 0100yy call-by-call
			premium(labelDirectory, "118"),
		),
		Short: premium(labelDirectory, "118"),
	},
	"AT": {ISO: "AT", Code: "43", InternationalPrefix: "00", NationalPrefix: "0",
		Emergency: []string{"112", "122", "133", "144", "140", "141", "128"},
		Ranges: concat(
			premium(labelPremium, "900", "901", "930", "931", "939"),
			premium(labelSharedCost, "810", "820", "821"),
			premium(labelDirectory, "118"),
		),
		Short: concat(premium(labelDirectory, "118"), premium(labelCarrier, "10")),
	},
	"CH": {ISO: "CH", Code: "41", InternationalPrefix: "00", NationalPrefix: "0",
		Emergency: []string{"112", "117", "118", "144", "143", "147", "1414"},
		Ranges: concat(
			premium(labelPremium, "900", "901", "906"),
			premium(labelSharedCost, "840", "842", "844", "848"),
			premium(labelPersonal, "878"),
		),
		Short: concat(premium(labelDirectory, "18"), premium(labelCarrier, "10")),
	},
	"FR": {ISO: "FR", Code: "33", InternationalPrefix: "00", NationalPrefix: "0",
		Emergency: []string{"112", "15", "17", "18", "114", "115", "119", "116000", "191", "196", "197"},
		Ranges: concat(
			premium(labelPremium, "89", "836"),
			premium(labelSharedCost, "81", "82"),
		),
		Short: concat(premium(labelDirectory, "118"), premium(labelCarrier, "16"), premium(labelPremium, "3"),
			[]Range{{Prefix: "3919", Class: National, Label: "helpline (free)"}}),
	},
	"GB": {ISO: "GB", Code: "44", InternationalPrefix: "00", NationalPrefix: "0",
		Emergency: []string{"999", "112"},
		Ranges: concat(
			premium(labelPremium, "9", "871", "872", "873"),
			premium(labelSharedCost, "843", "844", "845"),
			premium(labelPersonal, "70", "76"),
			[]Range{{Prefix: "7624", Class: National, Label: "Isle of Man mobile"}},
			premium(labelDirectory, "118"),
		),
		Short: concat(premium(labelDirectory, "118"), premium(labelOperator, "100", "155")),
	},
	"US": nanpCountry("US"),
	"CA": nanpCountry("CA"),
	"AU": {ISO: "AU", Code: "61", InternationalPrefix: "0011", NationalPrefix: "0",
		Emergency: []string{"000", "112", "106"},
		Ranges: concat(
			premium(labelSatellite, "145", "147"),
			premium(labelSpecial, "198"),
			premium(labelPremium, "19"),
		),
		Short: concat(premium(labelPremium, "19"), premium(labelDirectory, "12455")),
	},
}

func nanpCountry(iso string) Country {
	return Country{ISO: iso, Code: "1", InternationalPrefix: "011", NationalPrefix: "1",
		Emergency: []string{"911"},
		Ranges:    nanpRanges,
		Short:     concat(premium(labelDirectory, "411"), premium(labelCarrier, "101"), premium(labelOperator, "0")),
	}
}

// nanpRanges are NPA (area code) ranges of the whole NANP by service
// (NANPA). Numbers in geographic NPAs are further split by country with
// nanpNPA.
var nanpRanges = concat(
	premium(labelPremium, "900"),
	premium("personal-communications", "500", "521", "522", "523", "524", "525", "526", "527", "528", "529",
		"533", "544", "566", "577", "588"),
	premium(labelSpecial, "700", "710", "456"), // carrier services, US government, inbound international
	premium("paid-toll-free", "880", "881", "882"),
	premium("non-geographic (Canada)", "600", "622", "633", "644", "655", "677", "688"),
)

// nanpNPA maps the geographic area codes that are not the United States'
// (nor its territories PR, VI, GU, MP, AS, which are domestic there) to
// their country. Every other valid NPA is the United States'.
var nanpNPA = func() map[string]string {
	m := map[string]string{}
	add := func(iso string, npas ...string) {
		for _, n := range npas {
			m[n] = iso
		}
	}
	add("CA", "204", "226", "236", "249", "250", "257", "263", "289", "306", "343", "354", "365", "367", "368",
		"382", "403", "416", "418", "428", "431", "437", "438", "450", "468", "474", "506", "514", "519", "548",
		"579", "581", "584", "587", "604", "613", "639", "647", "672", "683", "705", "709", "742", "753", "778",
		"780", "782", "807", "819", "825", "867", "873", "879", "902", "905", "942")
	add("AG", "268") // Antigua and Barbuda
	add("AI", "264") // Anguilla
	add("BB", "246") // Barbados
	add("BM", "441") // Bermuda
	add("BS", "242") // Bahamas
	add("DM", "767") // Dominica
	add("DO", "809", "829", "849")
	add("GD", "473") // Grenada
	add("JM", "876", "658")
	add("KN", "869") // Saint Kitts and Nevis
	add("KY", "345") // Cayman Islands
	add("LC", "758") // Saint Lucia
	add("MS", "664") // Montserrat
	add("SX", "721") // Sint Maarten
	add("TC", "649") // Turks and Caicos
	add("TT", "868") // Trinidad and Tobago
	add("VC", "784") // Saint Vincent and the Grenadines
	add("VG", "284") // British Virgin Islands
	return m
}()

// NANPCountry returns the ISO code of the country an NPA belongs to.
func NANPCountry(npa string) string {
	if c, ok := nanpNPA[npa]; ok {
		return c
	}
	return "US"
}

// globalRanges are E.164 codes (after '+') that are not a country, or
// that cost far more than a call to one: international premium rate,
// satellite and international networks (the usual targets of
// international revenue share fraud).
var globalRanges = concat(
	premium(labelGlobal, "979", "881", "882", "883", "870", "878", "888", "991", "808"),
)

// LookupCountry returns the built-in plan for an ISO 3166 alpha-2 code.
func LookupCountry(iso string) (Country, bool) {
	c, ok := countries[upperASCII(iso)]
	if ok {
		c.Emergency = append([]string(nil), c.Emergency...)
		c.Ranges = append([]Range(nil), c.Ranges...)
		c.Short = append([]Range(nil), c.Short...)
	}
	return c, ok
}

// Countries lists the ISO codes of the built-in plans.
func Countries() []string {
	out := make([]string, 0, len(countries))
	for k := range countries {
		out = append(out, k)
	}
	return out
}

func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// match returns the longest range whose prefix starts s.
func match(rs []Range, s string) (Range, bool) {
	var best Range
	found := false
	for _, r := range rs {
		if len(s) >= len(r.Prefix) && s[:len(r.Prefix)] == r.Prefix && (!found || len(r.Prefix) > len(best.Prefix)) {
			best, found = r, true
		}
	}
	return best, found
}
