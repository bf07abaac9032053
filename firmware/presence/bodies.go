package presence

import (
	"encoding/xml"
	"strconv"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/call"
)

// Bodies of the NOTIFYs. Every value put in XML goes through xmlText; the
// values come from the box (extension numbers the registrar accepted,
// numbers the dial plan classified), but the writer does not rely on it.

func xmlText(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// dialogView is one dialog as a given subscriber may see it.
type dialogView struct {
	id        string // opaque per box, never the SIP identifiers
	state     call.DialogState
	direction call.Direction
	remote    string // remote identity URI; "": not shown
}

// dialogInfo writes an RFC 4235 full-state document.
func dialogInfo(version uint32, entity string, ds []dialogView) []byte {
	var b strings.Builder
	b.Grow(256 + 256*len(ds))
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="`)
	b.WriteString(strconv.FormatUint(uint64(version), 10))
	b.WriteString(`" state="full" entity="`)
	b.WriteString(xmlText(entity))
	b.WriteString(`">` + "\n")
	for _, d := range ds {
		b.WriteString(`<dialog id="`)
		b.WriteString(xmlText(d.id))
		b.WriteString(`" direction="`)
		b.WriteString(d.direction.String())
		b.WriteString(`">` + "\n<state>")
		b.WriteString(d.state.String())
		b.WriteString("</state>\n")
		if d.remote != "" {
			b.WriteString("<remote><identity>")
			b.WriteString(xmlText(d.remote))
			b.WriteString("</identity><target uri=\"")
			b.WriteString(xmlText(d.remote))
			b.WriteString("\"/></remote>\n")
		}
		b.WriteString("<local><identity>")
		b.WriteString(xmlText(entity))
		b.WriteString("</identity></local>\n</dialog>\n")
	}
	b.WriteString("</dialog-info>\n")
	return []byte(b.String())
}

// presenceState is what a presence document says of an extension.
type presenceState struct {
	registered bool
	dnd        bool
	busy       bool // in a call (a dialog not terminated)
}

// pidf writes an RFC 3863 document with RFC 4480 activities: open when
// registered and not on do-not-disturb; the note says why.
func pidf(entity string, st presenceState) []byte {
	basic, note, activity := "closed", "Offline", ""
	switch {
	case st.dnd:
		note, activity = "Do not disturb", "busy"
	case st.registered && st.busy:
		basic, note, activity = "open", "On the phone", "on-the-phone"
	case st.registered:
		basic, note = "open", "Available"
	}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="`)
	b.WriteString(xmlText(entity))
	b.WriteString(`">` + "\n<tuple id=\"t1\"><status><basic>")
	b.WriteString(basic)
	b.WriteString("</basic></status><contact>")
	b.WriteString(xmlText(entity))
	b.WriteString("</contact><note>")
	b.WriteString(note)
	b.WriteString("</note></tuple>\n<dm:person id=\"p1\">")
	if activity != "" {
		b.WriteString("<rpid:activities><rpid:" + activity + "/></rpid:activities>")
	}
	b.WriteString("<dm:note>" + note + "</dm:note></dm:person>\n</presence>\n")
	return []byte(b.String())
}

// Mailbox is a voice mailbox's counts for message-summary.
type Mailbox struct {
	New, Old             int
	UrgentNew, UrgentOld int
}

// clampCount keeps counts sane whatever the caller passes.
func clampCount(n int) int {
	if n < 0 {
		return 0
	}
	if n > 99999 {
		return 99999
	}
	return n
}

// messageSummary writes an RFC 3842 body.
func messageSummary(account string, m Mailbox) []byte {
	waiting := "no"
	if m.New > 0 {
		waiting = "yes"
	}
	var b strings.Builder
	b.WriteString("Messages-Waiting: " + waiting + "\r\n")
	b.WriteString("Message-Account: " + account + "\r\n")
	b.WriteString("Voice-Message: " + strconv.Itoa(m.New) + "/" + strconv.Itoa(m.Old) +
		" (" + strconv.Itoa(m.UrgentNew) + "/" + strconv.Itoa(m.UrgentOld) + ")\r\n")
	return []byte(b.String())
}
