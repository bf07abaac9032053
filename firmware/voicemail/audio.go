package voicemail

import (
	"encoding/json"
	"math"
)

// Audio stores PCM encrypted at rest (Recordings: the media engine's
// recording store under the media data key) and names each file by an id.
type Audio interface {
	// Create starts a recording of PCM at rate.
	Create(label string, rate int) (AudioWriter, error)
	// Read decrypts a whole recording: its rate and PCM (bounded).
	Read(id string) (rate int, pcm []int16, err error)
	// Remove deletes (crypto-erases) a recording.
	Remove(id string) error
	// Stored is the set of recordings that exist (retention may delete
	// files under a message record).
	Stored() map[string]bool
}

// AudioWriter is one recording being written.
type AudioWriter interface {
	ID() string
	Write(pcm []int16) error
	// Close commits the recording; Abort drops it.
	Close() error
	Abort()
}

// Prompts are the recorded (or generated) announcements, as PCM at rate.
type Prompts interface {
	Prompt(name string, rate int) []int16
}

// Prompt names voicemail plays.
const (
	PromptGreeting    = "vm-greeting"      // the callee cannot answer; leave a message
	PromptBeep        = "vm-beep"          // record after the tone
	PromptSaved       = "vm-saved"         // message saved, goodbye
	PromptFull        = "vm-full"          // mailbox full
	PromptMailbox     = "vm-mailbox"       // enter the mailbox number, then #
	PromptPIN         = "vm-pin"           // enter the PIN, then #
	PromptWrongPIN    = "vm-wrong-pin"     // wrong PIN
	PromptLocked      = "vm-locked"        // mailbox locked
	PromptNewPIN      = "vm-new-pin"       // choose a PIN (6+ digits), then #
	PromptWeakPIN     = "vm-weak-pin"      // PIN refused by the policy
	PromptNoMessages  = "vm-no-messages"   // nothing to hear
	PromptMessage     = "vm-message"       // before each message
	PromptMenu        = "vm-menu"          // 1 replay, 7 delete, 9 keep, # next, * end
	PromptDeleted     = "vm-deleted"       // message deleted
	PromptGoodbye     = "vm-goodbye"       // goodbye
	PromptRecordGreet = "vm-record-greet"  // record your greeting after the tone
	PromptBusyGreet   = "vm-greeting-busy" // the callee is busy; leave a message
	PromptGreetMenu   = "vm-greet-menu"    // 1 unavailable, 2 busy, 3 name greeting
)

// Greetings a mailbox owner records (Mailbox.Greetings keys).
const (
	GreetingUnavailable = "unavailable" // no answer, unreachable
	GreetingBusy        = "busy"        // busy, do-not-disturb
	GreetingName        = "name"        // the owner's name, after the default prompt
)

// ValidGreeting reports whether name is a greeting a mailbox has.
func ValidGreeting(name string) bool {
	return name == GreetingUnavailable || name == GreetingBusy || name == GreetingName
}

// tonePrompts is the fallback prompt set: short tone patterns that are
// told apart by ear (a real set replaces them per language).
type tonePrompts struct{}

func (tonePrompts) Prompt(name string, rate int) []int16 {
	type tone struct {
		hz, ms int
	}
	var seq []tone
	switch name {
	case PromptBeep:
		seq = []tone{{1000, 400}}
	case PromptGreeting:
		seq = []tone{{440, 300}, {0, 100}, {550, 300}, {0, 100}, {660, 300}, {0, 300}}
	case PromptBusyGreet:
		seq = []tone{{480, 300}, {0, 100}, {620, 300}, {0, 100}, {480, 300}, {0, 300}}
	case PromptSaved, PromptGoodbye, PromptDeleted:
		seq = []tone{{660, 200}, {0, 50}, {440, 300}}
	case PromptWrongPIN, PromptWeakPIN, PromptLocked, PromptFull:
		seq = []tone{{480, 250}, {0, 250}, {480, 250}, {0, 250}}
	case PromptNoMessages:
		seq = []tone{{350, 500}}
	case PromptMessage:
		seq = []tone{{880, 150}, {0, 100}}
	default: // a request for input
		seq = []tone{{550, 150}, {0, 80}, {550, 150}}
	}
	var out []int16
	for _, t := range seq {
		n := rate * t.ms / 1000
		for i := range n {
			v := 0.0
			if t.hz > 0 {
				v = 8000 * math.Sin(2*math.Pi*float64(t.hz)*float64(i)/float64(rate))
			}
			out = append(out, int16(v))
		}
	}
	return out
}

func jsonUnmarshal(raw []byte, v any) error { return json.Unmarshal(raw, v) }
