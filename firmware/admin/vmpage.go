package admin

import (
	"net/http"
	"slices"

	"github.com/edgepbx/edgepbx/firmware/auth"
)

// voicemailData is the voicemail page: every extension's mailbox (PIN
// set or not, lockout, options, messages), the mail server, and the
// prompts of the default language.
func (s *Server) voicemailData(r *http.Request, p auth.Principal) (any, error) {
	d := map[string]any{"Available": s.vm != nil}
	if s.vm != nil && s.exts != nil {
		var boxes []MailboxView
		exts := s.exts.List()
		slices.Sort(exts)
		for _, ext := range exts {
			v, err := s.mailboxView(ext)
			if err != nil {
				continue // not a numeric extension: no mailbox
			}
			boxes = append(boxes, v)
		}
		d["Boxes"] = boxes
	}
	if s.mail != nil && p.Can(auth.PermSystemWrite) {
		v, err := s.mailView()
		if err != nil {
			return nil, err
		}
		d["Mail"] = v
	}
	if s.prompts != nil {
		d["Lang"] = promptLang(r)
		if !validLang(d["Lang"].(string)) {
			d["Lang"] = "en"
		}
		d["Prompts"] = s.promptList(d["Lang"].(string))
	}
	return d, nil
}
