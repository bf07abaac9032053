package pbxconfig

import (
	"regexp"
	"slices"
)

// sipUserRE is the rule for SIP extension user names: the user part of a
// SIP URI and of a digest username, without characters that need escaping.
var sipUserRE = regexp.MustCompile(`^[A-Za-z0-9._+-]{1,64}$`)

// ValidSIPUser reports whether s may name a SIP extension: 1-64 of
// A-Z a-z 0-9 . _ + -. The SIP edge's extension store and the admin API
// both check it.
func ValidSIPUser(s string) bool { return sipUserRE.MatchString(s) }

// restartField is a SIP setting the running edge takes only when it
// starts: sipedge.Server.Apply keeps the rest of a change live and reports
// these as pending until edgepbxd restarts.
type restartField struct {
	name    string // JSON path in SIP (and SIPSettings when page is set)
	page    bool   // part of SIPSettings, so editable on the security page
	changed func(boot, next SIP) bool
}

// restartOnly is the one list of restart-only SIP settings.
func restartOnly() []restartField {
	return []restartField{
		{"max_message_bytes", true, func(a, b SIP) bool { return a.MaxMessageBytes != b.MaxMessageBytes }},
		{"algorithms", true, func(a, b SIP) bool { return !slices.Equal(a.Algorithms, b.Algorithms) }},
		{"nonce_ttl", true, func(a, b SIP) bool { return a.NonceTTL != b.NonceTTL }},
		{"guard.max_tracked", true, func(a, b SIP) bool { return a.Guard.MaxTracked != b.Guard.MaxTracked }},
		{"retransmit_cache", false, func(a, b SIP) bool { return a.RetransmitCache != b.RetransmitCache }},
		{"realm", false, func(a, b SIP) bool { return a.Realm != b.Realm }},
		{"trunks", false, func(a, b SIP) bool { return !slices.EqualFunc(a.Trunks, b.Trunks, sameTrunk) }},
	}
}

// SIPRestartFields lists the settings of next that differ from boot and
// that only a newly started SIP edge takes.
func SIPRestartFields(boot, next SIP) []string {
	var out []string
	for _, f := range restartOnly() {
		if f.changed(boot, next) {
			out = append(out, f.name)
		}
	}
	return out
}

// SIPStartOnly names the SIPSettings fields (JSON paths) that apply only
// after a restart of edgepbxd; the settings page marks them.
func SIPStartOnly() []string {
	var out []string
	for _, f := range restartOnly() {
		if f.page {
			out = append(out, f.name)
		}
	}
	return out
}

func sameTrunk(a, b Trunk) bool {
	if a.Name != b.Name || !slices.Equal(a.Peers, b.Peers) || (a.Register == nil) != (b.Register == nil) {
		return false
	}
	return a.Register == nil || *a.Register == *b.Register
}
