package admin

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
)

// Prompts is the media engine's prompt library; *prompts.Library
// implements it.
type Prompts interface {
	Custom(lang, name string) bool
	Put(lang, name string, upload []byte) (wav.Info, error)
	Delete(lang, name string) error
}

// maxPromptUpload bounds a prompt upload (the WAV parser's own cap);
// uploads are parsed one at a time so at most one such body is in memory.
const maxPromptUpload = wav.DefaultMaxBytes

// PromptView is one prompt of the catalogue for a language.
type PromptView struct {
	Name       string `json:"name"`
	Purpose    string `json:"purpose"`
	Default    string `json:"default"`     // what the generated default sounds like
	MaxSeconds int    `json:"max_seconds"` // upload limit
	Custom     bool   `json:"custom"`      // an uploaded file replaces the default
	Language   string `json:"language"`
}

func (s *Server) promptList(lang string) []PromptView {
	var out []PromptView
	for _, p := range prompts.Catalog() {
		out = append(out, PromptView{Name: p.Name, Purpose: p.Purpose, Default: p.Default, MaxSeconds: int(p.MaxDuration.Seconds()),
			Custom: s.prompts.Custom(lang, p.Name), Language: lang})
	}
	return out
}

func promptLang(r *http.Request) string {
	if l := r.URL.Query().Get("lang"); l != "" {
		return l
	}
	return "en"
}

func promptError(err error) error {
	switch {
	case errors.Is(err, prompts.ErrUnknown):
		return fmt.Errorf("%w: %v", errNotFound, err)
	case errors.Is(err, wav.ErrRefused):
		return withField("/file", fmt.Errorf("%w: %v", errBadRequest, err))
	}
	return err
}

func (s *Server) apiPrompts(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.prompts == nil {
		return errUnavailable
	}
	lang := promptLang(r)
	if !validLang(lang) {
		return fmt.Errorf("%w: language %.16q (like en, de or pt-BR)", errBadRequest, lang)
	}
	writeJSON(w, http.StatusOK, map[string]any{"language": lang, "prompts": s.promptList(lang)})
	return nil
}

func validLang(lang string) bool { return prompts.ValidLanguage(lang) }

// apiPutPrompt replaces one prompt of a language with an uploaded WAV
// (the body, or a multipart part named "file"): parsed strictly and
// converted, bounded in size and length; audited.
func (s *Server) apiPutPrompt(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.prompts == nil {
		return errUnavailable
	}
	lang, name := r.PathValue("lang"), r.PathValue("name")
	if !validLang(lang) {
		return fmt.Errorf("%w: language %.16q (like en, de or pt-BR)", errNotFound, lang)
	}
	s.promptMu.Lock()
	defer s.promptMu.Unlock()
	data, err := readUpload(w, r, maxPromptUpload)
	if err != nil {
		return err
	}
	info, err := s.prompts.Put(lang, name, data)
	if err != nil {
		return promptError(err)
	}
	if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "prompt.upload", Target: lang + "/" + name,
		Detail: fmt.Sprintf("%s %d Hz %d ch %s, %d bytes", info.Format, info.SampleRate, info.Channels, info.Duration.Round(1e7), len(data))}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "Prompt " + name + " (" + lang + ") replaced: " +
		strconv.FormatFloat(info.Duration.Seconds(), 'f', 1, 64) + " s of audio."})
	return nil
}

func (s *Server) apiDeletePrompt(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.prompts == nil {
		return errUnavailable
	}
	lang, name := r.PathValue("lang"), r.PathValue("name")
	if err := s.prompts.Delete(lang, name); err != nil {
		return promptError(err)
	}
	if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "prompt.revert", Target: lang + "/" + name}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "Prompt " + name + " (" + lang + ") is the default again."})
	return nil
}
