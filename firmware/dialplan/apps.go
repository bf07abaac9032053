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

// AppCode is a feature code dialled alone that reaches an application.
// Self puts the caller's own extension in the target.
type AppCode struct {
	Code string
	App  string
	Self bool
}

// AppCodes is the one table of the box's application feature codes (a
// configurable feature-code table can take it over).
func AppCodes() []AppCode {
	return []AppCode{
		{Code: "*97", App: AppVoicemailAccess, Self: true}, // own mailbox
		{Code: "*98", App: AppVoicemailAccess},             // any mailbox: asked for
	}
}

// AppTarget is the Decision target of app with arg.
func AppTarget(app, arg string) string { return app + "/" + arg }

// SplitAppTarget splits a KindApp target into application and argument.
func SplitAppTarget(t string) (app, arg string) {
	app, arg, _ = strings.Cut(t, "/")
	return app, arg
}

// appCode maps a number dialled by extension from to an application, when
// it is one of AppCodes (dialled alone, in any form Normalize accepts).
func appCode(from, dialled string) (Decision, bool) {
	n, err := Normalize(dialled)
	if err != nil {
		return Decision{}, false
	}
	for _, c := range AppCodes() {
		if n != c.Code {
			continue
		}
		arg := ""
		if c.Self {
			arg = from
		}
		return Decision{Kind: KindApp, Class: Internal, Target: AppTarget(c.App, arg), Dialled: n}, true
	}
	return Decision{}, false
}
