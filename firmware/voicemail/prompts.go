package voicemail

import "github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"

// LibraryPrompts plays the media engine's prompt library (the admin's
// uploads per language, else the generated defaults) for voicemail's
// prompts. A prompt the library cannot give falls back to a tone.
type LibraryPrompts struct {
	Lib  *prompts.Library
	Lang string
}

// libraryName maps voicemail's prompts to the library's catalogue.
var libraryName = map[string]string{
	PromptGreeting:    prompts.Unavailable,
	PromptBeep:        prompts.Record,
	PromptSaved:       prompts.MessageSaved,
	PromptFull:        prompts.Locked,
	PromptMailbox:     prompts.MenuDefault,
	PromptPIN:         prompts.EnterPIN,
	PromptWrongPIN:    prompts.InvalidPIN,
	PromptLocked:      prompts.Locked,
	PromptNewPIN:      prompts.EnterPIN,
	PromptWeakPIN:     prompts.Invalid,
	PromptNoMessages:  prompts.NoMessages,
	PromptMessage:     prompts.NewMessages,
	PromptMenu:        prompts.MenuDefault,
	PromptDeleted:     prompts.MessageSaved,
	PromptGoodbye:     prompts.Goodbye,
	PromptRecordGreet: prompts.Record,
	PromptBusyGreet:   prompts.Busy,
	PromptGreetMenu:   prompts.MenuDefault,
}

// Prompt implements Prompts.
func (p LibraryPrompts) Prompt(name string, rate int) []int16 {
	if n, ok := libraryName[name]; ok && p.Lib != nil {
		if pcm, err := p.Lib.Get(p.Lang, n, rate); err == nil {
			return pcm
		}
	}
	return tonePrompts{}.Prompt(name, rate)
}
