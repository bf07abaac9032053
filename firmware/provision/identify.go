package provision

import (
	"errors"
	"strings"
)

// Vendor names a phone family whose provisioning dialect the box speaks.
type Vendor string

// The vendors the templates cover.
const (
	Yealink     Vendor = "yealink"
	Poly        Vendor = "poly"
	Snom        Vendor = "snom"
	Grandstream Vendor = "grandstream"
	Fanvil      Vendor = "fanvil"
	Cisco       Vendor = "cisco"
	Linphone    Vendor = "linphone"
)

// Vendors lists every vendor, in the order the UI shows them.
var vendorList = []Vendor{Yealink, Poly, Snom, Grandstream, Fanvil, Cisco, Linphone}

// Vendors returns every supported vendor.
func Vendors() []Vendor { return append([]Vendor(nil), vendorList...) }

// ValidVendor reports whether v is a supported vendor.
func ValidVendor(v Vendor) bool {
	for _, x := range vendorList {
		if x == v {
			return true
		}
	}
	return false
}

// Kind is what a request asks for.
type Kind int

// Request kinds.
const (
	// KindCommon is a file without a MAC (Yealink y0000000000xx.cfg, Poly
	// 000000000000.cfg, Grandstream cfg.xml, …): bootstrap only, no secret.
	KindCommon Kind = iota + 1
	// KindDevice is one phone's configuration: it carries secrets.
	KindDevice
	// KindLog is a Poly upload (PUT <mac>-boot.log, <mac>-app.log, <mac>-phone.cfg).
	KindLog
	// KindCA is the box's CA certificate (public).
	KindCA
)

// Bounds on what the identifier looks at; longer input is refused before parsing.
const (
	maxPathLen = 256
	maxUALen   = 512
	maxModel   = 32
)

// ErrNotProvisioning means the path is not a file any supported phone asks for.
var ErrNotProvisioning = errors.New("provision: not a provisioning file")

// Request is what Identify makes of a phone's request.
type Request struct {
	Vendor Vendor
	Kind   Kind
	// MAC is the phone's address, from the path (or, for Cisco, from the
	// User-Agent): 12 lower-case hex digits. Empty for KindCommon.
	MAC string
	// Model is what the User-Agent names (e.g. "SIP-T46S", "VVX_500"); "" if none.
	Model string
	// Firmware is the version the User-Agent names; "" if none.
	Firmware string
	// UAMAC is a MAC the User-Agent carries; a request whose path MAC
	// differs from it is refused (a tool that did not copy the phone well).
	UAMAC string
	// File is the requested file name (the last path element).
	File string
}

// Identify classifies a request by its file name (the path after any
// provisioning prefix) and User-Agent. It never looks at anything else, so it
// can be fuzzed on its own.
func Identify(method, file, ua string) (Request, error) {
	if len(file) > maxPathLen || len(ua) > maxUALen || file == "" || strings.ContainsAny(file, "/\\\x00") {
		return Request{}, ErrNotProvisioning
	}
	v, model, fw, uamac := parseUA(ua)
	r := Request{Vendor: v, Model: model, Firmware: fw, UAMAC: uamac, File: file}
	lf := strings.ToLower(file)
	if method == "PUT" {
		// Poly uploads <mac>-boot.log, <mac>-app.log and <mac>-phone.cfg.
		for _, suf := range []string{"-boot.log", "-app.log", "-phone.cfg"} {
			if m, ok := strings.CutSuffix(lf, suf); ok && isMAC(m) {
				r.Vendor, r.Kind, r.MAC = Poly, KindLog, m
				return r, nil
			}
		}
		return Request{}, ErrNotProvisioning
	}
	if method != "GET" && method != "HEAD" {
		return Request{}, ErrNotProvisioning
	}
	switch {
	case lf == "ca.pem" || lf == "ca.crt":
		r.Kind = KindCA
		return r, nil
	case lf == "000000000000.cfg":
		// Poly's default master file; Yealink's T5x also ask for it.
		if r.Vendor == "" {
			r.Vendor = Poly
		}
		r.Kind = KindCommon
		return r, nil
	case len(lf) == 17 && strings.HasPrefix(lf, "y") && strings.HasSuffix(lf, ".cfg") && allDigits(lf[1:13]) && strings.HasPrefix(lf, "y0000000000"):
		r.Vendor, r.Kind = Yealink, KindCommon
		return r, nil
	case lf == "y000000000000.boot":
		r.Vendor, r.Kind = Yealink, KindCommon
		return r, nil
	case lf == "cfg.xml" || (strings.HasPrefix(lf, "cfg") && strings.HasSuffix(lf, ".xml") && !isMAC(lf[3:len(lf)-4]) && validModel(lf[3:len(lf)-4])):
		r.Vendor, r.Kind = Grandstream, KindCommon
		return r, nil
	case strings.HasPrefix(lf, "snom") && !strings.HasPrefix(lf, "snom-") && (strings.HasSuffix(lf, ".htm") || strings.HasSuffix(lf, ".xml")) && validModel(lf[4:len(lf)-4]) && !isMAC(lf[4:len(lf)-4]):
		r.Vendor, r.Kind = Snom, KindCommon
		return r, nil
	}
	// Per-device files.
	if m, ok := strings.CutPrefix(lf, "cfg"); ok {
		// cfg<mac> without .xml is Grandstream's encrypted binary format,
		// which the box does not write: the phone moves on to cfg<mac>.xml.
		if m, ok := strings.CutSuffix(m, ".xml"); ok && isMAC(m) {
			r.Vendor, r.Kind, r.MAC = Grandstream, KindDevice, m
			return r, r.checkUAMAC()
		}
	}
	if m, ok := strings.CutPrefix(lf, "edgepbx-"); ok {
		// The file Poly's master names through CONFIG_FILES.
		if m, ok := strings.CutSuffix(m, ".cfg"); ok && isMAC(m) {
			r.Vendor, r.Kind, r.MAC = Poly, KindDevice, m
			return r, r.checkUAMAC()
		}
	}
	if m, ok := strings.CutPrefix(lf, "linphone-"); ok {
		if m, ok := strings.CutSuffix(m, ".xml"); ok && isMAC(m) {
			r.Vendor, r.Kind, r.MAC = Linphone, KindDevice, m
			return r, nil
		}
	}
	if m, ok := strings.CutPrefix(lf, "snom-"); ok {
		if m, ok := strings.CutSuffix(m, ".xml"); ok && isMAC(m) {
			r.Vendor, r.Kind, r.MAC = Snom, KindDevice, m
			return r, r.checkUAMAC()
		}
	}
	base, ext, _ := strings.Cut(lf, ".")
	if !isMAC(base) || (ext != "cfg" && ext != "xml") {
		return Request{}, ErrNotProvisioning
	}
	r.MAC, r.Kind = base, KindDevice
	switch {
	case ext == "xml" && (r.Vendor == Snom || r.Vendor == Cisco):
	case ext == "cfg" && (r.Vendor == Yealink || r.Vendor == Fanvil):
	case ext == "cfg" && r.Vendor == Poly:
		// <mac>.cfg is Poly's per-phone master file: it names the config
		// file and carries nothing secret.
		r.Kind = KindCommon
	default:
		// A MAC file whose vendor the User-Agent does not say: Yealink's
		// older firmware sends a bare "Yealink" string, Fanvil too; anything
		// else is refused like an unknown MAC.
		return Request{}, ErrNotProvisioning
	}
	return r, r.checkUAMAC()
}

// ErrMACMismatch means the path names another MAC than the User-Agent.
var ErrMACMismatch = errors.New("provision: path and User-Agent name different MACs")

func (r Request) checkUAMAC() error {
	if r.UAMAC != "" && r.MAC != "" && r.UAMAC != r.MAC {
		return ErrMACMismatch
	}
	return nil
}

// parseUA reads vendor, model, firmware version and MAC from the
// User-Agents phones send when fetching (examples in PROVISIONING.md):
//
//	Yealink SIP-T46S 66.86.0.15 80:5e:c0:11:22:33
//	FileTransport PolycomVVX-VVX_500-UA/5.9.7.4477 Type/Application
//	Mozilla/4.0 (compatible; snomD785-SIP 10.1.169.16 … 00041396D9B4 …)
//	Grandstream Model HW GXP2135 SW 1.0.7.97 DevId 000b828aa872
//	Fanvil X5U-V2 2.12.1 0c3800000000
//	Cisco-CP-8841-3PCC/11.0 (00562b043615)
//	Linphone/5.2.0 (…) LinphoneSDK/…
func parseUA(ua string) (v Vendor, model, fw, mac string) {
	if len(ua) > maxUALen {
		return "", "", "", ""
	}
	f := strings.Fields(ua)
	field := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	lu := strings.ToLower(ua)
	switch {
	case strings.HasPrefix(lu, "yealink"):
		v, model, fw = Yealink, field(1), field(2)
		mac = macToken(field(3))
	case strings.Contains(lu, "polycom"):
		v = Poly
		for _, t := range f {
			if rest, ok := strings.CutPrefix(t, "PolycomVVX-"); ok {
				model, fw, _ = strings.Cut(rest, "-UA/")
			} else if rest, ok := strings.CutPrefix(t, "Polycom"); ok && model == "" {
				model, fw, _ = strings.Cut(rest, "-UA/")
			}
		}
	case strings.Contains(lu, "snom"):
		v = Snom
		for i, t := range f {
			tl := strings.ToLower(t)
			if strings.HasPrefix(tl, "snom") && strings.HasSuffix(tl, "-sip") {
				model, fw = t[4:len(t)-4], field(i+1)
			}
			if m := macToken(strings.Trim(t, "();")); m != "" {
				mac = m
			}
		}
	case strings.HasPrefix(lu, "grandstream"):
		v = Grandstream
		for i, t := range f {
			switch t {
			case "HW":
				model = field(i + 1)
			case "SW":
				fw = field(i + 1)
			case "DevId":
				mac = macToken(field(i + 1))
			}
		}
	case strings.HasPrefix(lu, "fanvil"):
		v, model, fw = Fanvil, field(1), field(2)
		mac = macToken(field(3))
	case strings.HasPrefix(lu, "cisco-"):
		v = Cisco
		prod, ver, _ := strings.Cut(field(0)[len("cisco-"):], "/")
		model, fw = prod, ver
		mac = macToken(strings.Trim(field(1), "()"))
	case strings.HasPrefix(lu, "linphone") || strings.Contains(lu, "linphonesdk") || strings.Contains(lu, "liblinphone"):
		v = Linphone
		name, ver, _ := strings.Cut(field(0), "/")
		model, fw = name, ver
	}
	if !validModel(model) {
		model = ""
	}
	if !validVersion(fw) {
		fw = ""
	}
	return v, model, fw, mac
}

// macToken returns t as 12 lower-case hex digits if it is a MAC written
// with or without ':' or '-' separators, else "".
func macToken(t string) string {
	if len(t) == 17 {
		var b strings.Builder
		for i := 0; i < 17; i++ {
			if i%3 == 2 {
				if t[i] != ':' && t[i] != '-' {
					return ""
				}
				continue
			}
			b.WriteByte(t[i])
		}
		t = b.String()
	}
	t = strings.ToLower(t)
	if !isMAC(t) {
		return ""
	}
	return t
}

// NormalizeMAC accepts aa:bb:cc:dd:ee:ff, aa-bb-…, AABBCCDDEEFF and returns
// 12 lower-case hex digits.
func NormalizeMAC(s string) (string, error) {
	if m := macToken(strings.TrimSpace(s)); m != "" {
		if m == "000000000000" || m == "ffffffffffff" {
			return "", errors.New("provision: not a phone's MAC")
		}
		return m, nil
	}
	return "", errors.New("provision: MAC must be 12 hex digits (separators : or - allowed)")
}

func isMAC(s string) bool {
	if len(s) != 12 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// validModel accepts what model names look like: letters, digits, - and _.
func validModel(s string) bool {
	if s == "" || len(s) > maxModel {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validVersion(s string) bool {
	if s == "" || len(s) > maxModel {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
