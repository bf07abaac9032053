package presence

import (
	"encoding/xml"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/emiago/sipgo/sip"
)

func TestParseEvent(t *testing.T) {
	for _, c := range []struct {
		in      string
		pkg     Package
		id      string
		wantErr error
	}{
		{"dialog", PkgDialog, "", nil},
		{"Dialog ;id=abc", PkgDialog, "abc", nil},
		{"presence", PkgPresence, "", nil},
		{"message-summary", PkgMWI, "", nil},
		{"dialog;call-id=x;to-tag=1;from-tag=2;include-session-description", PkgDialog, "", nil},
		{"dialog.winfo", 0, "", errUnknownPkg},
		{"ua-profile;profile-type=device", 0, "", errUnknownPkg},
		{"", 0, "", errBadEvent},
		{"dia log", 0, "", errBadEvent},
		{"dialog;id=", 0, "", errBadEvent},
		{"dialog;id=a b", 0, "", errBadEvent},
		{"dialog;=x", 0, "", errBadEvent},
		{"dialog;p=\"quoted ok\"", PkgDialog, "", nil},
		{"dialog;p=\"bad\"quote\"", 0, "", errBadEvent},
		{"dialog;id=" + strings.Repeat("a", 65), 0, "", errBadEvent},
		{strings.Repeat("d", 300), 0, "", errBadEvent},
	} {
		pkg, id, err := parseEvent(c.in)
		if err != c.wantErr || pkg != c.pkg || id != c.id {
			t.Errorf("parseEvent(%q) = %v %q %v, want %v %q %v", c.in, pkg, id, err, c.pkg, c.id, c.wantErr)
		}
	}
}

func TestAccepts(t *testing.T) {
	for _, c := range []struct {
		in       []string
		pkg      Package
		acc, ok_ bool
	}{
		{nil, PkgDialog, true, true},
		{[]string{"application/dialog-info+xml"}, PkgDialog, true, true},
		{[]string{"application/pidf+xml, application/dialog-info+xml;q=0.5"}, PkgDialog, true, true},
		{[]string{"application/pidf+xml"}, PkgDialog, false, true},
		{[]string{"application/xpidf+xml"}, PkgPresence, false, true},
		{[]string{"application/*"}, PkgMWI, true, true},
		{[]string{"*/*"}, PkgPresence, true, true},
		{[]string{""}, PkgPresence, false, true},
		{[]string{"garbage"}, PkgPresence, false, false},
		{[]string{strings.Repeat("a/b,", 40)}, PkgPresence, false, false},
	} {
		acc, ok := accepts(c.in, c.pkg)
		if acc != c.acc || ok != c.ok_ {
			t.Errorf("accepts(%q, %v) = %v %v, want %v %v", c.in, c.pkg, acc, ok, c.acc, c.ok_)
		}
	}
}

const baseSubscribe = "SUBSCRIBE sip:102@10.0.0.1 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKabc\r\n" +
	"From: <sip:101@10.0.0.1>;tag=ft1\r\n" +
	"To: <sip:102@10.0.0.1>\r\n" +
	"Call-ID: cid1\r\n" +
	"CSeq: 1 SUBSCRIBE\r\n" +
	"Max-Forwards: 70\r\n" +
	"Contact: <sip:101@10.0.0.9:5060;line=abc>\r\n"

func parseReq(t testing.TB, s string) *sip.Request {
	t.Helper()
	m, err := sip.ParseMessage([]byte(s))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, s)
	}
	return m.(*sip.Request)
}

func TestParseSubscribe(t *testing.T) {
	for _, c := range []struct {
		name  string
		extra string
		code  int
	}{
		{"dialog", "Event: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: 600\r\n", 0},
		{"compact event", "o: presence\r\n", 0},
		{"no event", "", 489},
		{"unknown package", "Event: conference\r\n", 489},
		{"two events", "Event: dialog\r\nEvent: presence\r\n", 400},
		{"bad event", "Event: dia log\r\n", 400},
		{"not acceptable", "Event: dialog\r\nAccept: application/pidf+xml\r\n", 406},
		{"bad accept", "Event: dialog\r\nAccept: nonsense\r\n", 400},
		{"bad expires", "Event: dialog\r\nExpires: soon\r\n", 400},
		{"huge expires", "Event: dialog\r\nExpires: 99999999999\r\n", 400},
	} {
		req := parseReq(t, baseSubscribe+c.extra+"Content-Length: 0\r\n\r\n")
		r, err := parseSubscribe(req)
		code := 0
		if err != nil {
			code = err.code
		}
		if code != c.code {
			t.Errorf("%s: code %d, want %d (%v)", c.name, code, c.code, err)
			continue
		}
		if code == 489 && err.hdrs[0].Value() != AllowEvents {
			t.Errorf("%s: 489 without Allow-Events", c.name)
		}
		if code == 0 && (r.target != "102" || r.fromTag != "ft1" || r.contact.Host != "10.0.0.9") {
			t.Errorf("%s: %+v", c.name, r)
		}
	}
	// Contact rules.
	noContact := strings.Replace(baseSubscribe, "Contact: <sip:101@10.0.0.9:5060;line=abc>\r\n", "", 1)
	if _, err := parseSubscribe(parseReq(t, noContact+"Event: dialog\r\nContent-Length: 0\r\n\r\n")); err == nil || err.code != 400 {
		t.Fatalf("no Contact: %v", err)
	}
	two := baseSubscribe + "Contact: <sip:101@10.0.0.10>\r\n"
	if _, err := parseSubscribe(parseReq(t, two+"Event: dialog\r\nContent-Length: 0\r\n\r\n")); err == nil || err.code != 400 {
		t.Fatalf("two Contacts: %v", err)
	}
	tel := strings.Replace(baseSubscribe, "<sip:101@10.0.0.9:5060;line=abc>", "<tel:+4930123>", 1)
	if _, err := parseSubscribe(parseReq(t, tel+"Event: dialog\r\nContent-Length: 0\r\n\r\n")); err == nil || err.code != 400 {
		t.Fatalf("tel Contact: %v", err)
	}
	noTag := strings.Replace(baseSubscribe, ";tag=ft1", "", 1)
	if _, err := parseSubscribe(parseReq(t, noTag+"Event: dialog\r\nContent-Length: 0\r\n\r\n")); err == nil || err.code != 400 {
		t.Fatalf("no From tag: %v", err)
	}
}

// wellFormed checks a body is XML a phone's parser takes.
func wellFormed(t testing.TB, b []byte) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(string(b)))
	for {
		_, err := d.Token()
		if err != nil {
			if err.Error() == "EOF" {
				return
			}
			t.Fatalf("body not well-formed: %v\n%s", err, b)
		}
	}
}

func TestBodies(t *testing.T) {
	di := dialogInfo(3, "sip:102@box", []dialogView{
		{id: "ab", state: call.DialogEarly, direction: call.Recipient, remote: "sip:101@box"},
		{id: "cd", state: call.DialogConfirmed, direction: call.Initiator},
	})
	wellFormed(t, di)
	for _, want := range []string{`version="3"`, `state="full"`, `entity="sip:102@box"`, `direction="recipient"`,
		"<state>early</state>", "<identity>sip:101@box</identity>", "<state>confirmed</state>"} {
		if !strings.Contains(string(di), want) {
			t.Errorf("dialog-info lacks %s:\n%s", want, di)
		}
	}
	evil := dialogInfo(0, `sip:"<x>&@box`, nil)
	wellFormed(t, evil)
	for _, c := range []struct {
		st          presenceState
		basic, note string
	}{
		{presenceState{}, "closed", "Offline"},
		{presenceState{registered: true}, "open", "Available"},
		{presenceState{registered: true, busy: true}, "open", "On the phone"},
		{presenceState{registered: true, dnd: true}, "closed", "Do not disturb"},
	} {
		p := pidf("sip:102@box", c.st)
		wellFormed(t, p)
		if !strings.Contains(string(p), "<basic>"+c.basic+"</basic>") || !strings.Contains(string(p), "<note>"+c.note+"</note>") {
			t.Errorf("%+v:\n%s", c.st, p)
		}
	}
	m := string(messageSummary("sip:101@box", Mailbox{New: 2, Old: 5, UrgentNew: 1}))
	want := "Messages-Waiting: yes\r\nMessage-Account: sip:101@box\r\nVoice-Message: 2/5 (1/0)\r\n"
	if m != want {
		t.Fatalf("message-summary %q, want %q", m, want)
	}
	if m := string(messageSummary("sip:101@box", Mailbox{Old: 5})); !strings.HasPrefix(m, "Messages-Waiting: no\r\n") {
		t.Fatalf("no new messages: %q", m)
	}
}

func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{"dialog", "presence;id=1", "message-summary", "dialog;call-id=\"x\";to-tag=a", "x;y=\"\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pkg, id, err := parseEvent(s)
		if err != nil {
			return
		}
		if pkg.String() == "" || len(id) > maxEventID || (id != "" && !isToken(id)) {
			t.Fatalf("parseEvent(%q) = %v %q", s, pkg, id)
		}
	})
}

func FuzzAccepts(f *testing.F) {
	for _, s := range []string{"application/dialog-info+xml", "*/*", "application/*;q=1, text/plain", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, p := range []Package{PkgDialog, PkgPresence, PkgMWI} {
			acc, ok := accepts([]string{s}, p)
			if !ok && acc {
				t.Fatalf("accepts(%q) acceptable but malformed", s)
			}
		}
	})
}

// FuzzParseSubscribe runs whole SUBSCRIBE requests through sipgo's parser
// and the server's checks: nothing panics, and what passes is bounded.
func FuzzParseSubscribe(f *testing.F) {
	f.Add(baseSubscribe + "Event: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n")
	f.Add(baseSubscribe + "o: presence;id=7\r\nAccept: application/pidf+xml, */*\r\nContent-Length: 0\r\n\r\n")
	f.Add(baseSubscribe + "Event: message-summary\r\nm: <sip:x@y>\r\nContent-Length: 0\r\n\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := sip.ParseMessage([]byte(s))
		if err != nil {
			return
		}
		req, ok := m.(*sip.Request)
		if !ok {
			return
		}
		r, bad := parseSubscribe(req)
		if bad != nil {
			if bad.code < 400 || bad.code > 499 {
				t.Fatalf("answer %d", bad.code)
			}
			return
		}
		if len(r.callID) > maxCallIDLen || len(r.fromTag) > maxTagLen || len(r.contact.String()) > maxContactLen {
			t.Fatalf("unbounded: %+v", r)
		}
		if s := strings.ToLower(r.contact.Scheme); s != "sip" && s != "sips" {
			t.Fatalf("contact scheme %q", r.contact.Scheme)
		}
	})
}
