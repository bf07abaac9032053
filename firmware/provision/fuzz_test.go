package provision

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzIdentify(f *testing.F) {
	for _, p := range phones() {
		f.Add("GET", p.device, p.ua)
		for _, c := range p.common {
			f.Add("GET", c, p.ua)
		}
	}
	f.Add("PUT", "0004f2aabbcc-boot.log", "")
	f.Add("GET", "cfg000b828aa872", "Grandstream Model HW GXP2135 SW 1.0.7.97 DevId 000b828aa872")
	f.Fuzz(func(t *testing.T, method, file, ua string) {
		r, err := Identify(method, file, ua)
		if err != nil {
			return
		}
		if r.MAC != "" && !isMAC(r.MAC) {
			t.Fatalf("MAC %q", r.MAC)
		}
		if r.Kind == KindDevice && r.MAC == "" {
			t.Fatal("device file without MAC")
		}
		if r.UAMAC != "" && r.MAC != "" && r.UAMAC != r.MAC {
			t.Fatal("MAC mismatch accepted")
		}
		if r.Model != "" && !validModel(r.Model) || r.Firmware != "" && !validVersion(r.Firmware) {
			t.Fatalf("model %q firmware %q", r.Model, r.Firmware)
		}
	})
}

func FuzzSplitPath(f *testing.F) {
	for _, s := range []string{"/805ec0112233.cfg", "/t/AAAAAAAAAAAAAAAAAAAAAAAAAA/linphone-02aabbccddee.xml", "/fw/0123", "/../x", "//x", "/t//x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		tok, file, _, ok := splitPath(p)
		if !ok {
			return
		}
		if strings.Contains(file, "/") || file == "" || (tok != "" && len(tok) != 26) {
			t.Fatalf("%q -> %q %q", p, tok, file)
		}
	})
}

func FuzzSanitizeLog(f *testing.F) {
	f.Add([]byte("0104122233|cfg |4|00|Boot ok\n"), 64)
	f.Add([]byte{0xff, 0x1b, '[', 0x00}, 3)
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		if max <= 0 || max > 1<<16 {
			return
		}
		out := SanitizeLog(b, max)
		if !utf8.Valid(out) {
			t.Fatal("invalid UTF-8")
		}
		for _, c := range out {
			if c < 0x20 && c != '\n' && c != '\t' || c == 0x7f {
				t.Fatalf("control byte %#x", c)
			}
		}
		if len(out) > 3*max {
			t.Fatalf("%d bytes from max %d", len(out), max)
		}
	})
}

func FuzzParseCAPEM(f *testing.F) {
	f.Add([]byte(testCA))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseCAPEM(b)
		if err == nil && (len(certs) == 0 || len(certs) > maxCACert) {
			t.Fatalf("%d certificates", len(certs))
		}
	})
}

func FuzzParseFirmwareMeta(f *testing.F) {
	f.Add("T46S-66.86.0.20.rom", "yealink", "SIP-T46S,SIP-T48S", "66.86.0.20")
	f.Add("../../etc/passwd", "poly", "VVX_500", "1")
	f.Fuzz(func(t *testing.T, name, vendor, models, version string) {
		m, err := ParseFirmwareMeta(name, vendor, models, version)
		if err != nil {
			return
		}
		if strings.ContainsAny(m.Name, "/\\\x00") || strings.HasPrefix(m.Name, ".") || len(m.Models) == 0 || len(m.Models) > 16 {
			t.Fatalf("accepted %+v", m)
		}
	})
}

func FuzzMACsInString(f *testing.F) {
	f.Add("SEP0004F2AABBCC")
	f.Add("00:04:f2:aa:bb:cc")
	f.Add("urn:dev:mac:0004f2aabbcc0004f2aabbcc")
	f.Fuzz(func(t *testing.T, s string) {
		for _, m := range MACsInString(s) {
			if !isMAC(m) {
				t.Fatalf("%q from %q", m, s)
			}
		}
	})
}

// FuzzRender feeds hostile values to every template: a render either
// refuses or gives a file with exactly the structure of a benign render
// (same number of key = value lines, same XML elements), so no value can
// add a setting.
func FuzzRender(f *testing.F) {
	f.Add("101", "Alice", "pbx.example.test")
	f.Add("101\nstatic.x = 1", "<x>", "h")
	f.Add("0", "000&", "h</P47><P2>x")
	shape := func(format string, out []byte) (int, error) {
		if format == "kv" {
			return bytes.Count(out, []byte("\n")), nil
		}
		d := xml.NewDecoder(bytes.NewReader(out))
		n := 0
		for {
			tok, err := d.Token()
			if err == io.EOF {
				return n, nil
			}
			if err != nil {
				return 0, err
			}
			if _, ok := tok.(xml.StartElement); ok {
				n++
			}
		}
	}
	f.Fuzz(func(t *testing.T, user, display, host string) {
		mk := func(u, d, h string) Params {
			return Params{Host: h, SIPPort: 5061, Transport: "tls", ProvURL: "https://h/", Lines: []Line{{Index: 1, User: u, Password: "pw", Display: d}}}
		}
		for v, tpl := range templates() {
			p := mk(user, display, host)
			out, err := tpl.Render(&p, true)
			if err != nil {
				continue
			}
			b := mk("u", "d", "h")
			ref, _ := tpl.Render(&b, true)
			got, err := shape(tpl.Format, out)
			if err != nil {
				t.Fatalf("%s: not well-formed: %v\n%s", v, err, out)
			}
			want, _ := shape(tpl.Format, ref)
			if got != want && !(user == "" || display == "" || host == "") {
				t.Fatalf("%s: %d entries, benign render has %d:\n%s", v, got, want, out)
			}
		}
	})
}
