package provision

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
)

// Params are the values a configuration is made of. Every string in it is
// checked by check() before rendering: nothing may break out of a
// key = value line or an XML attribute.
type Params struct {
	MAC       string
	Host      string // the box's name or address as phones reach it
	SIPPort   int    // 5061 for TLS
	Transport string // "tls" preferred; "tcp" or "udp" only if the admin says so
	ProvURL   string // https://host:port/ (ends in /)
	BootURL   string // http://host:port/ (bootstrap, no secrets)
	CAURL     string // where the box's CA certificate is served
	CAPEM     string // the box's CA certificate (inline where the format allows)
	NTP       string
	Timezone  string // IANA name
	Language  string // e.g. "English"
	Codecs    []string
	Firmware  string // URL of the firmware file for this model, "" if none
	ProvUser  string // per-device provisioning user (the MAC)
	ProvPass  string // per-device provisioning credential (secret)
	Lines     []Line
}

// Line is one SIP account on the phone.
type Line struct {
	Index    int // 1-based
	User     string
	Password string // secret
	Display  string
}

// Setting is one entry of a vendor template: what it sets (Purpose), the
// vendor's key, and the value as a function of the parameters. Secret
// settings are left out of anything served without proof.
type Setting struct {
	Purpose string
	Key     string
	Value   func(p *Params) string
	Secret  bool
}

// LineSetting is a per-line entry; Key may contain %d for the line index.
type LineSetting struct {
	Purpose string
	Key     string
	Value   func(p *Params, l *Line) string
	Secret  bool
}

// Template is one vendor's configuration: its file format and settings.
type Template struct {
	Vendor   Vendor
	Format   string // "kv", "poly", "snom", "grandstream", "fanvil", "cisco", "linphone"
	Settings []Setting
	Lines    []LineSetting
}

func lit(s string) func(*Params) string { return func(*Params) string { return s } }

func transportUpper(p *Params) string { return strings.ToUpper(p.Transport) }

// transportCode maps the transport to the vendors' numeric codes where the
// value is a number: Yealink 0 UDP, 1 TCP, 2 TLS; Grandstream P130 0 UDP,
// 1 TCP, 2 TLS; Fanvil the same.
func transportCode(p *Params) string {
	switch p.Transport {
	case "tcp":
		return "1"
	case "tls":
		return "2"
	}
	return "0"
}

func srtpOn(p *Params) string {
	if p.Transport == "tls" {
		return "2" // compulsory where the key is 0 off / 1 optional / 2 compulsory
	}
	return "1"
}

func port(p *Params) string   { return strconv.Itoa(p.SIPPort) }
func codecs(p *Params) string { return strings.Join(p.Codecs, ",") }

// Templates are written from the vendors' administrator guides (keys as
// listed in /work/shared/PROVISIONING.md and each guide's parameter
// reference). They are data: the renderers below know only the file formats.
func templates() map[Vendor]*Template {
	return map[Vendor]*Template{
		Yealink: {Vendor: Yealink, Format: "kv",
			Settings: []Setting{
				{"provisioning server", "static.auto_provision.server.url", func(p *Params) string { return p.ProvURL }, false},
				{"provisioning user", "static.auto_provision.server.username", func(p *Params) string { return p.ProvUser }, true},
				{"provisioning password", "static.auto_provision.server.password", func(p *Params) string { return p.ProvPass }, true},
				{"box CA", "static.trusted_certificates.url", func(p *Params) string { return p.CAURL }, false},
				{"only trusted certificates", "static.security.trust_certificates", lit("1"), false},
				{"time server", "local_time.ntp_server1", func(p *Params) string { return p.NTP }, false},
				{"time zone", "local_time.time_zone_name", func(p *Params) string { return p.Timezone }, false},
				{"language", "lang.gui", func(p *Params) string { return p.Language }, false},
				{"firmware", "static.firmware.url", func(p *Params) string { return p.Firmware }, false},
			},
			Lines: []LineSetting{
				{"line on", "account.%d.enable", func(*Params, *Line) string { return "1" }, false},
				{"display name", "account.%d.display_name", func(_ *Params, l *Line) string { return l.Display }, false},
				{"user", "account.%d.user_name", func(_ *Params, l *Line) string { return l.User }, false},
				{"auth user", "account.%d.auth_name", func(_ *Params, l *Line) string { return l.User }, false},
				{"SIP password", "account.%d.password", func(_ *Params, l *Line) string { return l.Password }, true},
				{"SIP server", "account.%d.sip_server.1.address", func(p *Params, _ *Line) string { return p.Host }, false},
				{"SIP port", "account.%d.sip_server.1.port", func(p *Params, _ *Line) string { return port(p) }, false},
				{"transport", "account.%d.sip_server.1.transport_type", func(p *Params, _ *Line) string { return transportCode(p) }, false},
				{"SRTP", "account.%d.srtp_encryption", func(p *Params, _ *Line) string { return srtpOn(p) }, false},
				{"codecs", "account.%d.codec_order", func(p *Params, _ *Line) string { return codecs(p) }, false},
			}},
		Poly: {Vendor: Poly, Format: "poly",
			Settings: []Setting{
				{"provisioning user", "device.prov.user", func(p *Params) string { return p.ProvUser }, true},
				{"provisioning password", "device.prov.password", func(p *Params) string { return p.ProvPass }, true},
				{"provisioning server", "device.prov.serverName", func(p *Params) string { return p.ProvURL }, false},
				{"box CA", "sec.TLS.customCaCert.1", func(p *Params) string { return p.CAPEM }, false},
				{"time server", "tcpIpApp.sntp.address", func(p *Params) string { return p.NTP }, false},
				{"language", "lcl.ml.lang", func(p *Params) string { return p.Language }, false},
				{"SRTP", "sec.srtp.enable", lit("1"), false},
				{"SRTP required", "sec.srtp.require", func(p *Params) string { return boolNum(p.Transport == "tls") }, false},
				{"firmware", "device.prov.upgradeServer", func(p *Params) string { return p.Firmware }, false},
			},
			Lines: []LineSetting{
				{"user", "reg.%d.address", func(_ *Params, l *Line) string { return l.User }, false},
				{"display name", "reg.%d.displayName", func(_ *Params, l *Line) string { return l.Display }, false},
				{"auth user", "reg.%d.auth.userId", func(_ *Params, l *Line) string { return l.User }, false},
				{"SIP password", "reg.%d.auth.password", func(_ *Params, l *Line) string { return l.Password }, true},
				{"SIP server", "reg.%d.server.1.address", func(p *Params, _ *Line) string { return p.Host }, false},
				{"SIP port", "reg.%d.server.1.port", func(p *Params, _ *Line) string { return port(p) }, false},
				{"transport", "reg.%d.server.1.transport", func(p *Params, _ *Line) string { return transportUpper(p) }, false},
			}},
		Snom: {Vendor: Snom, Format: "snom",
			Settings: []Setting{
				{"provisioning server", "setting_server", func(p *Params) string { return p.ProvURL + "snom-{mac}.xml" }, false},
				{"provisioning user", "http_user", func(p *Params) string { return p.ProvUser }, true},
				{"provisioning password", "http_pass", func(p *Params) string { return p.ProvPass }, true},
				{"time server", "ntp_server", func(p *Params) string { return p.NTP }, false},
				{"time zone", "timezone", func(p *Params) string { return p.Timezone }, false},
				{"language", "language", func(p *Params) string { return p.Language }, false},
				{"firmware", "firmware", func(p *Params) string { return p.Firmware }, false},
				{"box CA", "custom_certs", func(p *Params) string { return p.CAURL }, false},
			},
			Lines: []LineSetting{
				{"user", "user_name", func(_ *Params, l *Line) string { return l.User }, false},
				{"display name", "user_realname", func(_ *Params, l *Line) string { return l.Display }, false},
				{"SIP password", "user_pass", func(_ *Params, l *Line) string { return l.Password }, true},
				{"SIP server", "user_host", func(p *Params, _ *Line) string { return p.Host + ":" + port(p) + ";transport=" + p.Transport }, false},
				{"SRTP", "user_srtp", func(p *Params, _ *Line) string { return onOff(true) }, false},
				{"codecs", "codec_priority_list", func(p *Params, _ *Line) string { return codecs(p) }, false},
			}},
		Grandstream: {Vendor: Grandstream, Format: "grandstream",
			Settings: []Setting{
				{"provisioning via", "P212", func(p *Params) string { return "2" }, false}, // 2 = HTTPS
				{"provisioning server", "P237", func(p *Params) string { return strings.TrimSuffix(p.ProvURL, "/") }, false},
				{"provisioning user", "P1360", func(p *Params) string { return p.ProvUser }, true},
				{"provisioning password", "P1361", func(p *Params) string { return p.ProvPass }, true},
				{"firmware", "P192", func(p *Params) string { return p.Firmware }, false},
				{"time server", "P30", func(p *Params) string { return p.NTP }, false},
				{"box CA", "P8433", func(p *Params) string { return p.CAPEM }, false},
			},
			Lines: []LineSetting{ // account 1 P-values; further lines are not mapped here
				{"SIP server", "P47", func(p *Params, _ *Line) string { return p.Host + ":" + port(p) }, false},
				{"user", "P35", func(_ *Params, l *Line) string { return l.User }, false},
				{"auth user", "P36", func(_ *Params, l *Line) string { return l.User }, false},
				{"SIP password", "P34", func(_ *Params, l *Line) string { return l.Password }, true},
				{"display name", "P3", func(_ *Params, l *Line) string { return l.Display }, false},
				{"transport", "P130", func(p *Params, _ *Line) string { return transportCode(p) }, false},
				{"SRTP", "P183", func(p *Params, _ *Line) string { return srtpOn(p) }, false},
			}},
		Fanvil: {Vendor: Fanvil, Format: "fanvil",
			Settings: []Setting{
				{"provisioning server", "AUTOUPDATE_CONFIG_MODULE/Download_Server", func(p *Params) string { return p.ProvURL }, false},
				{"provisioning user", "AUTOUPDATE_CONFIG_MODULE/Download_Username", func(p *Params) string { return p.ProvUser }, true},
				{"provisioning password", "AUTOUPDATE_CONFIG_MODULE/Download_Password", func(p *Params) string { return p.ProvPass }, true},
				{"firmware", "AUTOUPDATE_CONFIG_MODULE/Upgrade_Server_1", func(p *Params) string { return p.Firmware }, false},
				{"time server", "NET_CONFIG_MODULE/SNTP_Server", func(p *Params) string { return p.NTP }, false},
				{"language", "PHONE_CONFIG_MODULE/Language", func(p *Params) string { return p.Language }, false},
				{"box CA", "SECURITY_CONFIG_MODULE/Trusted_Certificate_URL", func(p *Params) string { return p.CAURL }, false},
			},
			Lines: []LineSetting{
				{"user", "SIP_CONFIG_MODULE/SIP_Line%d/Phone_Number", func(_ *Params, l *Line) string { return l.User }, false},
				{"display name", "SIP_CONFIG_MODULE/SIP_Line%d/Display_Name", func(_ *Params, l *Line) string { return l.Display }, false},
				{"auth user", "SIP_CONFIG_MODULE/SIP_Line%d/Register_User", func(_ *Params, l *Line) string { return l.User }, false},
				{"SIP password", "SIP_CONFIG_MODULE/SIP_Line%d/Register_Pswd", func(_ *Params, l *Line) string { return l.Password }, true},
				{"SIP server", "SIP_CONFIG_MODULE/SIP_Line%d/Register_Addr", func(p *Params, _ *Line) string { return p.Host }, false},
				{"SIP port", "SIP_CONFIG_MODULE/SIP_Line%d/Register_Port", func(p *Params, _ *Line) string { return port(p) }, false},
				{"transport", "SIP_CONFIG_MODULE/SIP_Line%d/Transport", func(p *Params, _ *Line) string { return transportCode(p) }, false},
				{"SRTP", "SIP_CONFIG_MODULE/SIP_Line%d/Enable_SRTP", func(p *Params, _ *Line) string { return srtpOn(p) }, false},
			}},
		Cisco: {Vendor: Cisco, Format: "cisco",
			Settings: []Setting{
				// The credential rides in the rule; bootstrap params carry none,
				// so the bootstrap form is the bare HTTPS rule.
				{"provisioning server", "Profile_Rule", func(p *Params) string {
					if p.ProvPass == "" {
						return p.ProvURL + "$MA.xml"
					}
					return "[--uid " + p.ProvUser + " --pwd " + p.ProvPass + "]" + p.ProvURL + "$MA.xml"
				}, false},
				{"firmware", "Upgrade_Rule", func(p *Params) string { return p.Firmware }, false},
				{"box CA", "Custom_CA_Rule", func(p *Params) string { return p.CAURL }, false},
				{"time server", "Primary_NTP_Server", func(p *Params) string { return p.NTP }, false},
				{"language", "Dictionary_Server_Script", func(p *Params) string { return "" }, false},
			},
			Lines: []LineSetting{
				{"SIP server", "Proxy_%d_", func(p *Params, _ *Line) string { return p.Host + ":" + port(p) }, false},
				{"transport", "SIP_Transport_%d_", func(p *Params, _ *Line) string { return transportUpper(p) }, false},
				{"user", "User_ID_%d_", func(_ *Params, l *Line) string { return l.User }, false},
				{"auth user", "Auth_ID_%d_", func(_ *Params, l *Line) string { return l.User }, false},
				{"SIP password", "Password_%d_", func(_ *Params, l *Line) string { return l.Password }, true},
				{"display name", "Display_Name_%d_", func(_ *Params, l *Line) string { return l.Display }, false},
				{"SRTP", "Secure_Call_Setting_%d_", func(p *Params, _ *Line) string { return yesNo(p.Transport == "tls") }, false},
			}},
		Linphone: {Vendor: Linphone, Format: "linphone",
			Settings: []Setting{
				{"box CA", "misc/root_ca", func(p *Params) string { return p.CAPEM }, false},
				{"SRTP", "sip/media_encryption", func(p *Params) string { return "srtp" }, false},
				{"SRTP required", "sip/media_encryption_mandatory", func(p *Params) string { return boolNum(p.Transport == "tls") }, false},
				{"TLS verification", "sip/verify_server_certs", lit("1"), false},
			},
			Lines: []LineSetting{
				{"SIP server", "proxy_%d/reg_proxy", func(p *Params, _ *Line) string {
					return "<sip:" + p.Host + ":" + port(p) + ";transport=" + p.Transport + ">"
				}, false},
				{"identity", "proxy_%d/reg_identity", func(p *Params, l *Line) string {
					return "\"" + l.Display + "\" <sip:" + l.User + "@" + p.Host + ">"
				}, false},
				{"register", "proxy_%d/reg_sendregister", func(*Params, *Line) string { return "1" }, false},
				{"auth user", "auth_info_%d/username", func(_ *Params, l *Line) string { return l.User }, false},
				{"SIP password", "auth_info_%d/passwd", func(_ *Params, l *Line) string { return l.Password }, true},
				{"realm", "auth_info_%d/domain", func(p *Params, _ *Line) string { return p.Host }, false},
			}},
	}
}

func boolNum(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// kv is one rendered entry.
type kv struct {
	key, val string
	line     int // 0: global
}

// entries evaluates t for p; secrets are included only if withSecrets.
func (t *Template) entries(p *Params, withSecrets bool) []kv {
	var out []kv
	for _, s := range t.Settings {
		if s.Secret && !withSecrets {
			continue
		}
		if v := s.Value(p); v != "" {
			out = append(out, kv{key: s.Key, val: v})
		}
	}
	if !withSecrets {
		return out // lines name users and passwords: only with proof
	}
	for i := range p.Lines {
		l := &p.Lines[i]
		for _, s := range t.Lines {
			if v := s.Value(p, l); v != "" {
				key := s.Key
				if strings.Contains(key, "%d") {
					key = fmt.Sprintf(key, lineIndex(t.Format, l.Index))
				}
				out = append(out, kv{key: key, val: v, line: l.Index})
			}
		}
	}
	return out
}

// lineIndex: Linphone counts proxies from 0, everyone else from 1.
func lineIndex(format string, i int) int {
	if format == "linphone" {
		return i - 1
	}
	return i
}

// Render produces a configuration file. withSecrets=false gives the
// bootstrap form: server URL, CA, time, language, firmware; no user, no
// password.
func (t *Template) Render(p *Params, withSecrets bool) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	es := t.entries(p, withSecrets)
	var b bytes.Buffer
	switch t.Format {
	case "kv":
		b.WriteString("#!version:1.0.0.1\n")
		for _, e := range es {
			if strings.ContainsAny(e.val, "\r\n") {
				continue // multi-line values (PEM) go by URL in this format
			}
			fmt.Fprintf(&b, "%s = %s\n", e.key, e.val)
		}
	case "poly":
		b.WriteString(xml.Header + "<PHONE_CONFIG>\n<ALL")
		for _, e := range es {
			b.WriteString("\n  " + e.key + "=\"")
			xmlEscape(&b, e.val)
			b.WriteString("\"")
		}
		b.WriteString("/>\n</PHONE_CONFIG>\n")
	case "snom":
		b.WriteString(xml.Header + "<settings>\n<phone-settings>\n")
		for _, e := range es {
			if e.line > 0 {
				fmt.Fprintf(&b, "<%s idx=\"%d\" perm=\"R\">", e.key, e.line)
			} else {
				fmt.Fprintf(&b, "<%s perm=\"R\">", e.key)
			}
			xmlEscape(&b, e.val)
			fmt.Fprintf(&b, "</%s>\n", e.key)
		}
		b.WriteString("</phone-settings>\n</settings>\n")
	case "grandstream":
		b.WriteString(xml.Header + "<gs_provision version=\"1\">\n")
		if p.MAC != "" && withSecrets {
			b.WriteString("<mac>" + p.MAC + "</mac>\n")
		}
		b.WriteString("<config version=\"1\">\n")
		for _, e := range es {
			if e.line > 1 {
				continue // P-values above are account 1's
			}
			fmt.Fprintf(&b, "<%s>", e.key)
			xmlEscape(&b, e.val)
			fmt.Fprintf(&b, "</%s>\n", e.key)
		}
		b.WriteString("</config>\n</gs_provision>\n")
	case "fanvil":
		b.WriteString(xml.Header + "<VOIP_CONFIG_FILE>\n<version>2.0002</version>\n")
		renderNested(&b, es)
		b.WriteString("</VOIP_CONFIG_FILE>\n")
	case "cisco":
		b.WriteString("<flat-profile>\n")
		for _, e := range es {
			fmt.Fprintf(&b, "<%s ua=\"na\">", e.key)
			xmlEscape(&b, e.val)
			fmt.Fprintf(&b, "</%s>\n", e.key)
		}
		b.WriteString("</flat-profile>\n")
	case "linphone":
		b.WriteString(xml.Header + "<config xmlns=\"http://www.linphone.org/xsds/lpconfig.xsd\">\n")
		renderSections(&b, es)
		b.WriteString("</config>\n")
	default:
		return nil, fmt.Errorf("provision: unknown format %q", t.Format)
	}
	return b.Bytes(), nil
}

// renderNested writes "A/B/C" keys as <A><B><C>v</C></B></A>, grouping
// neighbours that share their leading elements.
func renderNested(b *bytes.Buffer, es []kv) {
	var open []string
	for _, e := range es {
		parts := strings.Split(e.key, "/")
		path, leaf := parts[:len(parts)-1], parts[len(parts)-1]
		n := 0
		for n < len(open) && n < len(path) && open[n] == path[n] {
			n++
		}
		for i := len(open) - 1; i >= n; i-- {
			b.WriteString("</" + open[i] + ">\n")
		}
		open = open[:n]
		for _, p := range path[n:] {
			b.WriteString("<" + p + ">\n")
			open = append(open, p)
		}
		b.WriteString("<" + leaf + ">")
		xmlEscape(b, e.val)
		b.WriteString("</" + leaf + ">\n")
	}
	for i := len(open) - 1; i >= 0; i-- {
		b.WriteString("</" + open[i] + ">\n")
	}
}

// renderSections writes Linphone's "section/entry" keys.
func renderSections(b *bytes.Buffer, es []kv) {
	cur := ""
	for _, e := range es {
		sec, name, _ := strings.Cut(e.key, "/")
		if sec != cur {
			if cur != "" {
				b.WriteString("</section>\n")
			}
			b.WriteString("<section name=\"" + sec + "\">\n")
			cur = sec
		}
		b.WriteString("<entry name=\"" + name + "\" overwrite=\"true\">")
		xmlEscape(b, e.val)
		b.WriteString("</entry>\n")
	}
	if cur != "" {
		b.WriteString("</section>\n")
	}
}

func xmlEscape(b *bytes.Buffer, s string) { _ = xml.EscapeText(b, []byte(s)) }

// check refuses values that could inject lines or markup. They come from
// the admin (display names, host) or are generated, but a key = value
// format has no escaping at all.
func (p *Params) check() error {
	bad := func(name, v string) error {
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < 0x20 && !(name == "ca" && (c == '\n' || c == '\r')) || c == 0x7f {
				return fmt.Errorf("provision: %s contains a control character", name)
			}
		}
		return nil
	}
	for _, f := range []struct{ n, v string }{{"host", p.Host}, {"prov_url", p.ProvURL}, {"ca_url", p.CAURL}, {"ntp", p.NTP},
		{"timezone", p.Timezone}, {"language", p.Language}, {"firmware", p.Firmware}, {"prov_user", p.ProvUser}, {"prov_pass", p.ProvPass}, {"ca", p.CAPEM}} {
		if err := bad(f.n, f.v); err != nil {
			return err
		}
	}
	for _, l := range p.Lines {
		for _, f := range []struct{ n, v string }{{"user", l.User}, {"password", l.Password}, {"display", l.Display}} {
			if err := bad(f.n, f.v); err != nil {
				return err
			}
		}
	}
	return nil
}
