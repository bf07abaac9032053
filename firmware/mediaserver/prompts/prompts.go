// Package prompts holds the audio the box's applications play: the
// default set, generated in code from tones (no recorded speech ships in
// the image: nothing to license, no bytes in the image), and per-language
// replacements that admins upload as WAV files. An uploaded prompt is
// parsed strictly (package wav), converted to 16 kHz mono and stored under
// /data; it replaces the tone for that language only.
package prompts

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
	"github.com/edgepbx/edgepbx/init/atomicfile"
)

// Rate is the rate prompts are stored and generated at; 8 kHz legs get
// them down-sampled.
const Rate = 16000

// Prompt describes one prompt the applications use.
type Prompt struct {
	Name        string
	Purpose     string        // what the application says with it
	Default     string        // what the default tone sounds like
	MaxDuration time.Duration // upload limit
}

// The prompt names. Applications refer to these constants; the admin UI
// lists Catalog.
const (
	Record          = "record"           // start speaking after the tone
	EnterPIN        = "enter-pin"        // enter your PIN, then #
	InvalidPIN      = "invalid-pin"      // wrong PIN
	Locked          = "locked"           // mailbox locked / access refused
	Invalid         = "invalid"          // invalid choice
	MenuDefault     = "menu"             // default IVR menu: choose an option
	Goodbye         = "goodbye"          // call ends
	NoMessages      = "no-messages"      // mailbox empty
	NewMessages     = "new-messages"     // followed by Count(n) pips
	MessageSaved    = "saved"            // message saved / deleted / done
	Unavailable     = "vm-unavailable"   // default voicemail greeting, no answer
	Busy            = "vm-busy"          // default voicemail greeting, busy
	ConferencePIN   = "conf-enter-pin"   // enter the conference PIN
	ConferenceFull  = "conf-full"        // conference full or locked
	ConferenceAlone = "conf-alone"       // you are the only participant
	Transfer        = "transfer"         // please hold, transferring
	MusicOnHold     = "moh"              // music on hold (loops)
	RecordingNotice = "recording-notice" // this call is recorded
)

// Catalog lists every prompt, in the order the UI shows them.
var catalog = []Prompt{
	{Record, "start speaking after the tone", "one 1 kHz beep, 300 ms", 30 * time.Second},
	{EnterPIN, "enter your PIN followed by #", "two rising tones", 2 * time.Minute},
	{InvalidPIN, "the PIN was wrong", "three short low tones", 2 * time.Minute},
	{Locked, "access refused or mailbox locked", "long low tone", 2 * time.Minute},
	{Invalid, "invalid choice", "two short low tones", 2 * time.Minute},
	{MenuDefault, "choose an option", "three rising tones", 2 * time.Minute},
	{Goodbye, "goodbye", "three falling tones", 2 * time.Minute},
	{NoMessages, "you have no messages", "one falling pair", 2 * time.Minute},
	{NewMessages, "you have new messages (a pip per message follows)", "rising pair", 2 * time.Minute},
	{MessageSaved, "done", "short high double tone", 2 * time.Minute},
	{Unavailable, "the person you called is not available, leave a message", "two soft chimes", 2 * time.Minute},
	{Busy, "the person you called is busy, leave a message", "busy-like three tones", 2 * time.Minute},
	{ConferencePIN, "enter the conference PIN", "two rising tones, higher", 2 * time.Minute},
	{ConferenceFull, "the conference is full", "three short low tones", 2 * time.Minute},
	{ConferenceAlone, "you are the only participant", "one soft chime", 2 * time.Minute},
	{Transfer, "please hold while you are transferred", "rising arpeggio", 2 * time.Minute},
	{MusicOnHold, "music on hold (loops)", "a generated 16-bar melody", wav.DefaultMaxAudio},
	{RecordingNotice, "this call is being recorded", "two 1.4 kHz beeps", 2 * time.Minute},
}

// Catalog returns the prompt list.
func Catalog() []Prompt { return slices.Clone(catalog) }

func lookup(name string) (Prompt, bool) {
	for _, p := range catalog {
		if p.Name == name {
			return p, true
		}
	}
	return Prompt{}, false
}

// ErrUnknown is returned for a prompt name or language that is not valid.
var ErrUnknown = errors.New("prompts: unknown prompt or language")

var langRE = regexp.MustCompile(`^[a-z]{2,3}(-[A-Z]{2})?$`)

// note is one tone of a generated prompt: frequency (0 = pause), length.
type note struct {
	f  float64
	ms int
}

var tones = map[string][]note{
	Record:          {{1000, 300}},
	EnterPIN:        {{600, 150}, {0, 50}, {900, 150}},
	InvalidPIN:      {{400, 120}, {0, 80}, {400, 120}, {0, 80}, {400, 120}},
	Locked:          {{300, 900}},
	Invalid:         {{400, 120}, {0, 80}, {400, 120}},
	MenuDefault:     {{500, 150}, {0, 50}, {700, 150}, {0, 50}, {900, 150}},
	Goodbye:         {{900, 150}, {0, 50}, {700, 150}, {0, 50}, {500, 250}},
	NoMessages:      {{800, 150}, {0, 50}, {600, 250}},
	NewMessages:     {{600, 150}, {0, 50}, {800, 250}},
	MessageSaved:    {{1200, 80}, {0, 60}, {1200, 80}},
	Unavailable:     {{660, 300}, {0, 100}, {880, 400}, {0, 300}},
	Busy:            {{480, 250}, {0, 250}, {480, 250}, {0, 250}, {480, 250}, {0, 300}},
	ConferencePIN:   {{800, 150}, {0, 50}, {1100, 150}},
	ConferenceFull:  {{400, 120}, {0, 80}, {400, 120}, {0, 80}, {400, 120}},
	ConferenceAlone: {{880, 400}},
	Transfer:        {{523, 100}, {659, 100}, {784, 100}, {1047, 200}},
	RecordingNotice: {{1400, 200}, {0, 200}, {1400, 200}},
}

// synth renders notes at rate: sines at -14 dBFS with 8 ms ramps.
func synth(notes []note, rate int) []int16 {
	var out []int16
	for _, n := range notes {
		k := rate * n.ms / 1000
		ramp := rate * 8 / 1000
		for i := range k {
			if n.f == 0 {
				out = append(out, 0)
				continue
			}
			g := 1.0
			if i < ramp {
				g = float64(i) / float64(ramp)
			} else if k-i < ramp {
				g = float64(k-i) / float64(ramp)
			}
			out = append(out, int16(6500*g*math.Sin(2*math.Pi*n.f*float64(i)/float64(rate))))
		}
	}
	return out
}

// music generates the default hold music: a slow I-vi-IV-V arpeggio in
// C major with soft attack and decay, 16 bars (about 19 s), made here so
// it carries no licence.
func music(rate int) []int16 {
	chords := [][3]float64{{261.63, 329.63, 392.00}, {220.00, 261.63, 329.63}, {174.61, 220.00, 261.63}, {196.00, 246.94, 293.66}}
	noteLen := rate * 300 / 1000
	var out []int16
	for bar := range 16 {
		ch := chords[bar%4]
		for step := range 4 {
			f := ch[[]int{0, 1, 2, 1}[step]]
			if bar%8 == 7 && step == 3 {
				f *= 2
			}
			for i := range noteLen {
				t := float64(i) / float64(rate)
				env := math.Min(1, t/0.02) * math.Exp(-3*t)
				v := 5000 * env * (math.Sin(2*math.Pi*f*t) + 0.3*math.Sin(4*math.Pi*f*t))
				out = append(out, int16(v))
			}
		}
	}
	return out
}

// Default returns the generated default of a prompt at Rate.
func Default(name string) ([]int16, error) {
	if name == MusicOnHold {
		return music(Rate), nil
	}
	n, ok := tones[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknown, name)
	}
	return synth(n, Rate), nil
}

// Count returns n short pips (n capped at 20), for "you have n messages".
func Count(n int) []int16 {
	var notes []note
	for range min(n, 20) {
		notes = append(notes, note{1000, 80}, note{0, 170})
	}
	return synth(notes, Rate)
}

// Library is the prompt store: uploaded per-language prompts under Dir,
// falling back to the defaults. Safe for concurrent use (files are
// replaced atomically).
type Library struct {
	Dir string // e.g. /data/prompts
}

func (l *Library) path(lang, name string) (string, Prompt, error) {
	p, ok := lookup(name)
	if !ok {
		return "", Prompt{}, fmt.Errorf("%w: prompt %q", ErrUnknown, name)
	}
	if !langRE.MatchString(lang) {
		return "", Prompt{}, fmt.Errorf("%w: language %q (like en, de or pt-BR)", ErrUnknown, lang)
	}
	return filepath.Join(l.Dir, lang, name+".wav"), p, nil
}

// Get returns the prompt for lang at rate (8000 or 16000): the uploaded
// one when there is one, else the default.
func (l *Library) Get(lang, name string, rate int) ([]int16, error) {
	if rate != 8000 && rate != 16000 {
		return nil, fmt.Errorf("prompts: rate %d: only 8000 or 16000", rate)
	}
	p, _, err := l.path(lang, name)
	if err != nil {
		return nil, err
	}
	var pcm []int16
	data, err := os.ReadFile(p)
	switch {
	case err == nil:
		// Our own file, written by Put; still parsed strictly.
		if pcm, _, err = wav.Parse(data, wav.Options{Rate: Rate}); err != nil {
			return nil, fmt.Errorf("prompts: stored %s/%s: %w", lang, name, err)
		}
	case errors.Is(err, os.ErrNotExist):
		if pcm, err = Default(name); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("prompts: %w", err)
	}
	if rate == Rate {
		return pcm, nil
	}
	var d codec.Downsampler
	return d.Process(make([]int16, 0, len(pcm)/2), pcm), nil
}

// Custom reports whether lang has an uploaded prompt name.
func (l *Library) Custom(lang, name string) bool {
	p, _, err := l.path(lang, name)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// Put stores an uploaded WAV file as the prompt for lang, after parsing
// and converting it; a refused file changes nothing. It returns what was
// uploaded (for the audit entry).
func (l *Library) Put(lang, name string, upload []byte) (wav.Info, error) {
	p, prompt, err := l.path(lang, name)
	if err != nil {
		return wav.Info{}, err
	}
	pcm, info, err := wav.Parse(upload, wav.Options{Rate: Rate, MaxAudio: prompt.MaxDuration})
	if err != nil {
		return wav.Info{}, err
	}
	if err := atomicfile.Write(p, wav.Encode(Rate, pcm), 0o600); err != nil {
		return wav.Info{}, fmt.Errorf("prompts: %w", err)
	}
	return info, nil
}

// Delete removes an uploaded prompt: the default plays again.
func (l *Library) Delete(lang, name string) error {
	p, _, err := l.path(lang, name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("prompts: %w", err)
	}
	return nil
}
