package call

import (
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// FuzzParseDelta: Session-Expires values come from the network.
func FuzzParseDelta(f *testing.F) {
	for _, s := range []string{"1800", "90;refresher=uac", " 3600 ;refresher=uas", "-1", "99999999999999999999", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseDelta(s)
		if ok && (d <= 0 || d > 24*time.Hour) {
			t.Fatalf("%q -> %v accepted", s, d)
		}
		if !ok && d != 0 {
			t.Fatalf("%q refused with %v", s, d)
		}
	})
}

// FuzzTargetFromBinding: registrar bindings hold Contact strings phones sent.
func FuzzTargetFromBinding(f *testing.F) {
	f.Add("<sip:102@10.0.0.5:5060;transport=udp>;expires=60", "192.0.2.1:5060", "udp")
	f.Add("sip:102@[::1]:5062", "[::1]:5062", "TLS")
	f.Add("<sip:", "x", "")
	f.Fuzz(func(t *testing.T, contact, source, transport string) {
		tg, err := TargetFromBinding(contact, source, transport)
		if err != nil {
			return
		}
		if tg.Dest != source || tg.Transport == "" {
			t.Fatalf("target %+v from %q %q", tg, contact, source)
		}
	})
}

func TestTargetFromBinding(t *testing.T) {
	tests := []struct {
		contact, source, transport string
		ok                         bool
		user, host                 string
	}{
		{"<sip:102@10.0.0.5:5060>;expires=60", "192.0.2.1:40000", "udp", true, "102", "10.0.0.5"},
		{"sip:ext@example.org", "192.0.2.1:5061", "TLS", true, "ext", "example.org"},
		{"<sip:102@10.0.0.5", "192.0.2.1:5060", "udp", false, "", ""},
		{"<sip:102@10.0.0.5>", "no-port", "udp", false, "", ""},
	}
	for _, tc := range tests {
		tg, err := TargetFromBinding(tc.contact, tc.source, tc.transport)
		if (err == nil) != tc.ok {
			t.Fatalf("%q: err %v", tc.contact, err)
		}
		if tc.ok && (tg.URI.User != tc.user || tg.URI.Host != tc.host || tg.Dest != tc.source) {
			t.Fatalf("%q: %+v", tc.contact, tg)
		}
	}
}

// FuzzReferTo: a REFER's Refer-To comes from a phone.
func FuzzReferTo(f *testing.F) {
	for _, s := range []string{"<sip:103@box>", "sip:103@box;user=phone", "<sip:103@box?Replaces=x>", "<mailto:a@b>", "<sip:", "",
		"<sip:103@box?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>", "<sip:103@box?Replaces=a%3Bto-tag%3D1%3Bfrom-tag%3D2&Require=replaces>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		req := sip.NewRequest(sip.REFER, sip.Uri{Scheme: "sip", Host: "box"})
		req.AppendHeader(sip.NewHeader("Refer-To", v))
		user, rp, code := referTarget(req)
		if (code == 0) == (user == "") {
			t.Fatalf("%q -> %q, %d", v, user, code)
		}
		if code == 0 && len(v) > maxReferTo {
			t.Fatalf("%q accepted", v)
		}
		if code == 0 && strings.ContainsRune(v, '?') != (rp != nil) {
			t.Fatalf("%q: embedded headers without a Replaces accepted (%+v)", v, rp)
		}
		if rp != nil && (rp.callID == "" || rp.toTag == "" || rp.fromTag == "") {
			t.Fatalf("%q: incomplete Replaces %+v accepted", v, rp)
		}
	})
}

// FuzzReplaces: INVITE Replaces headers come from phones.
func FuzzReplaces(f *testing.F) {
	for _, s := range []string{"abc@h;to-tag=1;from-tag=2", "abc;from-tag=2;to-tag=1;early-only", "x;to-tag=;from-tag=2", ";;", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r, err := parseReplaces(v)
		if err != nil {
			return
		}
		if len(v) > maxReplaces || !sipToken(r.callID, true) || !sipToken(r.toTag, false) || !sipToken(r.fromTag, false) {
			t.Fatalf("%q accepted as %+v", v, r)
		}
	})
}

// FuzzRAck: PRACKs come from phones.
func FuzzRAck(f *testing.F) {
	for _, s := range []string{"1 1 INVITE", "4294967295 7 invite", "0 1 INVITE", "1 1", "-1 2 INVITE", "1 99999999999 INVITE"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		req := sip.NewRequest(sip.PRACK, sip.Uri{Scheme: "sip", Host: "box"})
		req.AppendHeader(sip.NewHeader("RAck", v))
		rseq, _, ok := parseRAck(req)
		if ok && (rseq == 0 || len(v) > 64) {
			t.Fatalf("%q accepted as RSeq %d", v, rseq)
		}
	})
}

// FuzzPrivacy: a caller's Privacy header decides whether its number is
// shown; anything unclear must hide it.
func FuzzPrivacy(f *testing.F) {
	for _, s := range []string{"id", "none", "header;id", "user, critical", "ID", strings.Repeat("x", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", Host: "box"})
		req.AppendHeader(sip.NewHeader("Privacy", v))
		if strings.Contains(strings.ToLower(v), "id") && !privacyID(req) {
			for _, tok := range strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
				if strings.EqualFold(tok, "id") {
					t.Fatalf("%q: Privacy id not honoured", v)
				}
			}
		}
	})
}
