// Package moh is the box's music on hold: classes of uploaded music
// (WAV through the strict parser, converted on upload to the box's 16 kHz
// mono PCM, bounded in size and length) and the generated default, played
// as looping 20 ms frames to whoever waits: a held party, a parked call,
// a queue's caller, a conference waiting for its moderator.
//
// Use:
//
//	src, err := lib.Source(class, rate) // class "" or unknown: the default
//	for each 20 ms tick { pcm := src.Next() } // FrameSamples(rate) samples
//
// Each listener takes its own Source (its own position); the decoded
// audio of a class is shared and cached until the class changes.
package moh

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
	"github.com/edgepbx/edgepbx/init/atomicfile"
)

// Bounds of the music library.
const (
	Rate        = 16000 // stored and cached rate
	MaxBytes    = 16 << 20
	MaxDuration = 5 * time.Minute
	MaxClasses  = 16
	// DefaultClass is the generated music; it cannot be deleted, an
	// upload under its name replaces it until deleted again.
	DefaultClass = "default"
	frameMillis  = 20
)

// Errors.
var (
	ErrClass    = errors.New("moh: invalid class name (1-32 of a-z, 0-9, -, _)")
	ErrNoClass  = errors.New("moh: no such class")
	ErrTooMany  = errors.New("moh: too many classes")
	classNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	errBadRate  = errors.New("moh: rate must be 8000 or 16000")
)

// Class is one music class as listed.
type Class struct {
	Name     string        `json:"name"`
	Uploaded bool          `json:"uploaded"` // false: the generated default
	Duration time.Duration `json:"duration"`
	Bytes    int64         `json:"bytes"`
	Modified time.Time     `json:"modified,omitzero"`
}

// Library is the music store under Dir (e.g. /data/moh). Safe for
// concurrent use; files are replaced atomically.
type Library struct {
	dir string

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	mod time.Time
	pcm []int16 // at Rate
}

// New returns the library at dir (created if missing).
func New(dir string) (*Library, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("moh: %w", err)
	}
	return &Library{dir: dir, cache: map[string]cached{}}, nil
}

// FrameSamples is a 20 ms frame at rate.
func FrameSamples(rate int) int { return rate * frameMillis / 1000 }

func (l *Library) path(class string) (string, error) {
	if !classNameRE.MatchString(class) {
		return "", ErrClass
	}
	return filepath.Join(l.dir, class+".wav"), nil
}

// Classes lists the default and every uploaded class.
func (l *Library) Classes() ([]Class, error) {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("moh: %w", err)
	}
	out := []Class{}
	hasDefault := false
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".wav")
		if !ok || !classNameRE.MatchString(name) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		// Stored files are 16-bit mono at Rate behind a 44-byte header.
		dur := time.Duration(max(0, fi.Size()-44)/2) * time.Second / Rate
		out = append(out, Class{Name: name, Uploaded: true, Duration: dur, Bytes: fi.Size(), Modified: fi.ModTime().UTC()})
		hasDefault = hasDefault || name == DefaultClass
	}
	if !hasDefault {
		pcm, _ := prompts.Default(prompts.MusicOnHold)
		out = append(out, Class{Name: DefaultClass, Duration: time.Duration(len(pcm)) * time.Second / time.Duration(prompts.Rate)})
	}
	slices.SortFunc(out, func(a, b Class) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Put stores an uploaded WAV as class after parsing and converting it
// (16 kHz mono); a refused file changes nothing. It returns what was
// uploaded, for the audit entry.
func (l *Library) Put(class string, upload []byte) (wav.Info, error) {
	p, err := l.path(class)
	if err != nil {
		return wav.Info{}, err
	}
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		cs, err := l.Classes()
		if err != nil {
			return wav.Info{}, err
		}
		if len(cs) >= MaxClasses {
			return wav.Info{}, fmt.Errorf("%w: at most %d", ErrTooMany, MaxClasses)
		}
	}
	pcm, info, err := wav.Parse(upload, wav.Options{Rate: Rate, MaxBytes: MaxBytes, MaxAudio: MaxDuration})
	if err != nil {
		return wav.Info{}, err
	}
	if len(pcm) < FrameSamples(Rate) {
		return wav.Info{}, fmt.Errorf("%w: shorter than 20 ms", wav.ErrRefused)
	}
	if err := atomicfile.Write(p, wav.Encode(Rate, pcm), 0o600); err != nil {
		return wav.Info{}, fmt.Errorf("moh: %w", err)
	}
	l.mu.Lock()
	delete(l.cache, class)
	l.mu.Unlock()
	return info, nil
}

// Delete removes an uploaded class (the default: back to the generated
// music).
func (l *Library) Delete(class string) error {
	p, err := l.path(class)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %q", ErrNoClass, class)
		}
		return fmt.Errorf("moh: %w", err)
	}
	l.mu.Lock()
	delete(l.cache, class)
	l.mu.Unlock()
	return nil
}

// pcm is class's audio at Rate: the upload, else (class "" or not
// uploaded) the default class's upload, else the generated music.
func (l *Library) pcm(class string) ([]int16, error) {
	if class == "" {
		class = DefaultClass
	}
	p, err := l.path(class)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		if class != DefaultClass {
			return l.pcm(DefaultClass)
		}
		return prompts.Default(prompts.MusicOnHold)
	}
	if err != nil {
		return nil, fmt.Errorf("moh: %w", err)
	}
	l.mu.Lock()
	c, ok := l.cache[class]
	l.mu.Unlock()
	if ok && c.mod.Equal(fi.ModTime()) {
		return c.pcm, nil
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("moh: %w", err)
	}
	// Our own file, still parsed strictly.
	pcm, _, err := wav.Parse(data, wav.Options{Rate: Rate, MaxBytes: MaxBytes, MaxAudio: MaxDuration})
	if err != nil {
		return nil, fmt.Errorf("moh: stored %s: %w", class, err)
	}
	l.mu.Lock()
	l.cache[class] = cached{mod: fi.ModTime(), pcm: pcm}
	l.mu.Unlock()
	return pcm, nil
}

// Source is one listener's position in a class's music. Not safe for
// concurrent use (one listener, one goroutine).
type Source struct {
	pcm   []int16 // at the listener's rate
	pos   int
	frame []int16
}

// Source returns a new listener of class at rate (8000 or 16000).
func (l *Library) Source(class string, rate int) (*Source, error) {
	if rate != 8000 && rate != 16000 {
		return nil, errBadRate
	}
	pcm, err := l.pcm(class)
	if err != nil {
		return nil, err
	}
	if rate != Rate {
		var d codec.Downsampler
		pcm = d.Process(make([]int16, 0, len(pcm)/2), pcm)
	}
	return NewSource(pcm, rate), nil
}

// NewSource loops pcm (at rate) in 20 ms frames.
func NewSource(pcm []int16, rate int) *Source {
	return &Source{pcm: pcm, frame: make([]int16, FrameSamples(rate))}
}

// Next returns the next 20 ms frame, looping at the end. The slice is
// reused by the next call.
func (s *Source) Next() []int16 {
	if len(s.pcm) == 0 {
		clear(s.frame)
		return s.frame
	}
	for i := range s.frame {
		s.frame[i] = s.pcm[s.pos]
		if s.pos++; s.pos == len(s.pcm) {
			s.pos = 0
		}
	}
	return s.frame
}

// Frames is the default class as a frame function at rate (what
// firmware/conference's waiting room plays).
func (l *Library) Frames(rate int) (func() []int16, error) {
	s, err := l.Source("", rate)
	if err != nil {
		return nil, err
	}
	return s.Next, nil
}
