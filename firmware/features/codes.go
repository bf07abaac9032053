// Package features holds the call features an installer configures on day
// one: the feature-code table phones dial (*72 …), each extension's
// forwarding, do-not-disturb and follow-me, ring groups, and the pickup
// groups that also decide who may watch whom (MaySee, for BLF). The admin
// parts (Config) live in the telephony configuration; what users set from
// their phones (Settings) lives in its own bucket (Store). Engine applies
// both to calls: it is the B2BUA's router in front of the dial plan (feature
// codes never reach a trunk) and its call.Hunter (stages of a forwarded or
// group call).
package features

import (
	"fmt"
	"slices"
	"strings"
)

// Action is what a feature code does.
type Action string

// Actions. The ones ending in "on" take a destination after the code
// (*72201 forwards everything to 201); the others take none, except
// directed pickup (the ringing extension) and voicemail of another box.
const (
	ForwardOn          Action = "forward-on"
	ForwardOff         Action = "forward-off"
	BusyOn             Action = "forward-busy-on"
	BusyOff            Action = "forward-busy-off"
	NoAnswerOn         Action = "forward-noanswer-on"
	NoAnswerOff        Action = "forward-noanswer-off"
	UnreachableOn      Action = "forward-unreachable-on"
	UnreachableOff     Action = "forward-unreachable-off"
	DNDOn              Action = "dnd-on"
	DNDOff             Action = "dnd-off"
	FollowMeOn         Action = "followme-on"
	FollowMeOff        Action = "followme-off"
	GroupPickup        Action = "pickup-group"
	DirectedPickup     Action = "pickup-directed"
	Park               Action = "park"
	QueueLogin         Action = "queue-login"     // the queue number after the code; none: every queue of the agent
	QueueLogout        Action = "queue-logout"    // likewise
	VoicemailOwn       Action = "voicemail"       // app voicemail-access/<caller>
	VoicemailOther     Action = "voicemail-other" // app voicemail-access/<digits dialled after the code>
	RecordToggle       Action = "record-toggle"   // typed during a call (RFC 4733): start or stop an on-demand recording
	AppVoicemailAccess        = "voicemail-access"
)

// Code is one row of the table.
type Code struct {
	Code   string `json:"code"`
	Action Action `json:"action"`
}

// actions describes every action for the printed table and the UI, and
// whether it takes an argument after the code.
var actions = []struct {
	a    Action
	arg  bool
	help string
}{
	{ForwardOn, true, "forward all calls to the number dialled after the code (*72201; *72*97: to your voicemail)"},
	{ForwardOff, false, "cancel forwarding of all calls"},
	{BusyOn, true, "forward when busy to the number dialled after the code"},
	{BusyOff, false, "cancel forwarding when busy"},
	{NoAnswerOn, true, "forward when not answered to the number dialled after the code"},
	{NoAnswerOff, false, "cancel forwarding when not answered"},
	{UnreachableOn, true, "forward when no phone is registered to the number dialled after the code"},
	{UnreachableOff, false, "cancel forwarding when unreachable"},
	{DNDOn, false, "do not disturb: callers get busy (or your busy forward)"},
	{DNDOff, false, "do not disturb off"},
	{FollowMeOn, false, "follow-me on (numbers set on the web page)"},
	{FollowMeOff, false, "follow-me off"},
	{GroupPickup, false, "pick up a call ringing in your pickup group"},
	{DirectedPickup, true, "pick up the call ringing at the extension dialled after the code (same pickup group only)"},
	{Park, false, "park: transfer a call to this code; it waits in the first free park slot"},
	{QueueLogin, true, "log in as an agent to the queue dialled after the code (no number: to all your queues)"},
	{QueueLogout, true, "log out of the queue dialled after the code (no number: of all your queues)"},
	{VoicemailOwn, false, "your voicemail"},
	{VoicemailOther, true, "voicemail of the box dialled after the code"},
	{RecordToggle, false, "during a call: start or stop recording it (where the recording policy is on demand)"},
}

func takesArg(a Action) (bool, bool) {
	for _, x := range actions {
		if x.a == a {
			return x.arg, true
		}
	}
	return false, false
}

// Help is the description of an action printed for users.
func Help(a Action) string {
	for _, x := range actions {
		if x.a == a {
			return x.help
		}
	}
	return ""
}

// DefaultCodes is the table a new box has (the usual '*' style).
func DefaultCodes() []Code {
	return []Code{
		{"*72", ForwardOn}, {"*73", ForwardOff},
		{"*90", BusyOn}, {"*91", BusyOff},
		{"*92", NoAnswerOn}, {"*93", NoAnswerOff},
		{"*94", UnreachableOn}, {"*95", UnreachableOff},
		{"*78", DNDOn}, {"*79", DNDOff},
		{"*21", FollowMeOn}, {"*22", FollowMeOff},
		{"*8", GroupPickup}, {"**", DirectedPickup},
		{"*70", Park},
		{"*45", QueueLogin}, {"*46", QueueLogout},
		{"*97", VoicemailOwn}, {"*98", VoicemailOther},
		{"*1", RecordToggle},
	}
}

// maxCodeLen bounds one code.
const maxCodeLen = 8

// validateCodes checks a table: every code starts with '*' and holds
// only '*', '#' and digits, every action appears at most once, and no code
// is a prefix of another (the longest would never be reached).
func validateCodes(cs []Code) error {
	if len(cs) > len(actions) {
		return fmt.Errorf("features: more than %d feature codes", len(actions))
	}
	seen := map[Action]bool{}
	for i, c := range cs {
		if len(c.Code) < 2 || len(c.Code) > maxCodeLen || c.Code[0] != '*' || strings.Trim(c.Code, "0123456789*#") != "" {
			return fmt.Errorf("features: code %q: '*' then up to %d digits, '*' or '#'", c.Code, maxCodeLen-1)
		}
		if _, ok := takesArg(c.Action); !ok {
			return fmt.Errorf("features: code %s: unknown action %q", c.Code, c.Action)
		}
		if seen[c.Action] {
			return fmt.Errorf("features: action %s has two codes", c.Action)
		}
		seen[c.Action] = true
		for j, o := range cs {
			if i != j && strings.HasPrefix(o.Code, c.Code) {
				return fmt.Errorf("features: code %s is a prefix of %s", c.Code, o.Code)
			}
		}
	}
	return nil
}

// match finds the code a dialled string (normalised: digits, '*', '#')
// starts with and returns its action and the argument after it (a
// trailing '#', the send key of many phones, is dropped). ok false: no
// code of the table.
func match(cs []Code, dialled string) (a Action, arg string, ok bool) {
	for _, c := range cs {
		if !strings.HasPrefix(dialled, c.Code) {
			continue
		}
		arg = strings.TrimSuffix(dialled[len(c.Code):], "#")
		wants, _ := takesArg(c.Action)
		if !wants && arg != "" {
			return "", "", false
		}
		return c.Action, arg, true
	}
	return "", "", false
}

// Row is one line of the printable table.
type Row struct {
	Code   string `json:"code"`
	Action Action `json:"action"`
	Help   string `json:"help"`
}

// Table is the table users are given, in its configured order.
func Table(cs []Code) []Row {
	rows := make([]Row, 0, len(cs))
	for _, c := range cs {
		rows = append(rows, Row{Code: c.Code, Action: c.Action, Help: Help(c.Action)})
	}
	return rows
}

// Print writes the table as plain text (one code a line) for a user card.
func Print(cs []Code) string {
	var b strings.Builder
	b.WriteString("Feature codes\n")
	for _, r := range Table(cs) {
		fmt.Fprintf(&b, "%-8s %s\n", r.Code, r.Help)
	}
	return b.String()
}

func cloneCodes(cs []Code) []Code { return slices.Clone(cs) }
