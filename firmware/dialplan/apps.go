package dialplan

import "strings"

// Applications the box answers itself (KindApp). A Decision's Target is
// "<app>/<arg>"; firmware/call hands it to the application of that name.
const (
	AppVoicemail       = "voicemail"        // deposit: voicemail/<ext>
	AppVoicemailAccess = "voicemail-access" // retrieve: voicemail-access/<ext>; empty arg: the caller says which mailbox
	AppConference      = "conference"       // conference/<room>
	AppIVR             = "ivr"              // ivr/<menu>
)

// AppTarget is the Decision target of app with arg.
func AppTarget(app, arg string) string { return app + "/" + arg }

// SplitAppTarget splits a KindApp target into application and argument.
func SplitAppTarget(t string) (app, arg string) {
	app, arg, _ = strings.Cut(t, "/")
	return app, arg
}

// AdmitApp takes extension from's place in the concurrency counters for a
// call the box answers itself (the feature-code table in front of the plan
// sends *97 and the like there): an application call counts like any
// other, so a phone cannot open mailboxes beyond its limits.
func (e *Engine) AdmitApp(from string) (*Lease, error) {
	ext, ok := e.exts[from]
	if !ok {
		return nil, ErrUnknownExtension
	}
	return e.admit(ext, "", false)
}
