// Package conference is the box's conference rooms: an application of
// the call endpoint (conference/<room>) that mixes its callers in Go
// (firmware/mediaserver/mix), G.711 and G.722 alike. A room has a number,
// an optional PIN and moderator PIN (argon2id, voicemail's PIN policy;
// wrong PINs are charged to the SIP guard like voicemail's), a size
// limit, join and leave tones, and may wait for its moderator.
package conference

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/firmware/voicemail"
)

// Bounds of a room.
const (
	MaxRooms        = 100
	MaxParticipants = 64 // per room; the mixer allows more, a small box does not
	maxNameLen      = 64
	bucket          = "conference"
)

// Errors.
var (
	ErrNoRoom  = errors.New("conference: no such room")
	ErrInvalid = errors.New("conference: invalid room")
	ErrFull    = errors.New("conference: room full")
)

// Room is a room as stored: never the PINs, only their hashes.
type Room struct {
	Number          string `json:"number"`
	Name            string `json:"name,omitempty"`
	PINHash         string `json:"pin_hash,omitempty"`
	ModeratorHash   string `json:"moderator_pin_hash,omitempty"`
	MaxParticipants int    `json:"max_participants"`
	// WaitModerator: participants hear music (and are not heard) until a
	// moderator is in the room.
	WaitModerator bool `json:"wait_moderator,omitempty"`
	Tones         bool `json:"tones"`
	// Wideband mixes at 16 kHz (G.722 callers stay wideband); off mixes
	// at 8 kHz, cheaper when everyone speaks G.711.
	Wideband bool `json:"wideband,omitempty"`
}

// RoomRequest creates or changes a room. PIN and ModeratorPIN: nil keeps
// the stored one, "" removes it, digits set it (policy as voicemail's).
type RoomRequest struct {
	Name            string  `json:"name,omitempty"`
	PIN             *string `json:"pin,omitempty"`
	ModeratorPIN    *string `json:"moderator_pin,omitempty"`
	MaxParticipants int     `json:"max_participants"`
	WaitModerator   bool    `json:"wait_moderator,omitempty"`
	Tones           bool    `json:"tones"`
	Wideband        bool    `json:"wideband,omitempty"`
}

// Guard is the SIP edge's brute-force guard (as voicemail.Guard).
type Guard = voicemail.Guard

// Hasher hashes PINs (argon2id); *auth.Hasher implements it.
type Hasher = voicemail.Hasher

// Prompts gives the prompts a room plays at rate.
type Prompts interface {
	Prompt(name string, rate int) []int16
}

// Music is what a participant waiting for the moderator hears: a new
// looping source at rate per listener (firmware/mediaserver/moh).
type Music interface {
	Frames(rate int) (func() []int16, error)
}

// Config wires a Service. DB and Hasher are required.
type Config struct {
	DB     *store.DB
	Hasher Hasher
	// Taken reports whether a number is already something else (an
	// extension, a ring group): a room may not shadow it.
	Taken   func(number string) bool
	Guard   Guard // nil: wrong PINs only end the call
	Prompts Prompts
	Music   Music // nil: silence while waiting
	Log     *slog.Logger
	Now     func() time.Time
}

// Service keeps the rooms and runs the live ones. Safe for concurrent use.
type Service struct {
	cfg Config

	mu   sync.Mutex
	live map[string]*liveRoom
	seq  uint64
}

// New returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.DB == nil || cfg.Hasher == nil {
		return nil, errors.New("conference: DB and Hasher are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Taken == nil {
		cfg.Taken = func(string) bool { return false }
	}
	return &Service{cfg: cfg, live: map[string]*liveRoom{}}, nil
}

// validNumber: 2-8 digits, as dialled from a phone.
func validNumber(n string) bool {
	if len(n) < 2 || len(n) > 8 {
		return false
	}
	for i := range len(n) {
		if n[i] < '0' || n[i] > '9' {
			return false
		}
	}
	return true
}

// Rooms lists the rooms by number.
func (s *Service) Rooms() ([]Room, error) {
	var out []Room
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		var keys []string
		if err := tx.ForEach(bucket, func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
			return err
		}
		for _, k := range keys {
			var r Room
			if ok, err := tx.Get(bucket, k, &r); err != nil {
				return err
			} else if ok {
				out = append(out, r)
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Room) int {
		if len(a.Number) != len(b.Number) {
			return len(a.Number) - len(b.Number)
		}
		if a.Number < b.Number {
			return -1
		}
		return 1
	})
	return out, err
}

// Room returns one room.
func (s *Service) Room(number string) (Room, error) {
	var r Room
	if !validNumber(number) {
		return r, fmt.Errorf("%w: %q", ErrNoRoom, number)
	}
	var ok bool
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		var err error
		ok, err = tx.Get(bucket, number, &r)
		return err
	})
	if err == nil && !ok {
		err = fmt.Errorf("%w: %q", ErrNoRoom, number)
	}
	return r, err
}

// Has reports whether number is a room (the dial plan's question).
func (s *Service) Has(number string) bool {
	_, err := s.Room(number)
	return err == nil
}

// Put creates or replaces room number; also runs in the same transaction
// (the audit entry).
func (s *Service) Put(ctx context.Context, number string, req RoomRequest, also ...func(*store.Tx) error) (Room, error) {
	if !validNumber(number) {
		return Room{}, fmt.Errorf("%w: number %q: 2 to 8 digits", ErrInvalid, number)
	}
	if len(req.Name) > maxNameLen {
		return Room{}, fmt.Errorf("%w: name longer than %d", ErrInvalid, maxNameLen)
	}
	if !utf8.ValidString(req.Name) {
		return Room{}, fmt.Errorf("%w: name is not UTF-8", ErrInvalid)
	}
	for _, r := range req.Name {
		if unicode.IsControl(r) {
			return Room{}, fmt.Errorf("%w: name has control characters", ErrInvalid)
		}
	}
	if req.MaxParticipants < 2 || req.MaxParticipants > MaxParticipants {
		return Room{}, fmt.Errorf("%w: max_participants %d: 2 to %d", ErrInvalid, req.MaxParticipants, MaxParticipants)
	}
	if s.cfg.Taken(number) {
		return Room{}, fmt.Errorf("%w: number %s is already an extension or group", ErrInvalid, number)
	}
	hash := func(pin *string) (string, bool, error) {
		if pin == nil {
			return "", false, nil
		}
		if *pin == "" {
			return "", true, nil
		}
		if err := voicemail.CheckPIN(*pin, number); err != nil {
			return "", false, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		h, err := s.cfg.Hasher.Hash(ctx, *pin)
		return h, true, err
	}
	pin, setPIN, err := hash(req.PIN)
	if err != nil {
		return Room{}, err
	}
	mod, setMod, err := hash(req.ModeratorPIN)
	if err != nil {
		return Room{}, err
	}
	if req.PIN != nil && req.ModeratorPIN != nil && *req.PIN != "" && *req.PIN == *req.ModeratorPIN {
		return Room{}, fmt.Errorf("%w: the moderator PIN must differ from the PIN", ErrInvalid)
	}
	var out Room
	err = s.cfg.DB.Update(func(tx *store.Tx) error {
		var old Room
		exists, err := tx.Get(bucket, number, &old)
		if err != nil {
			return err
		}
		if !exists {
			n := 0
			if err := tx.ForEach(bucket, func(string, []byte) error { n++; return nil }); err != nil {
				return err
			}
			if n >= MaxRooms {
				return fmt.Errorf("%w: at most %d rooms", ErrInvalid, MaxRooms)
			}
		}
		out = Room{Number: number, Name: req.Name, PINHash: old.PINHash, ModeratorHash: old.ModeratorHash,
			MaxParticipants: req.MaxParticipants, WaitModerator: req.WaitModerator, Tones: req.Tones, Wideband: req.Wideband}
		if setPIN {
			out.PINHash = pin
		}
		if setMod {
			out.ModeratorHash = mod
		}
		if out.WaitModerator && out.ModeratorHash == "" {
			return fmt.Errorf("%w: waiting for a moderator needs a moderator PIN", ErrInvalid)
		}
		if err := tx.Put(bucket, number, out); err != nil {
			return err
		}
		for _, f := range also {
			if err := f(tx); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// Delete removes a room and ends its calls.
func (s *Service) Delete(number string, also ...func(*store.Tx) error) error {
	if _, err := s.Room(number); err != nil {
		return err
	}
	err := s.cfg.DB.Update(func(tx *store.Tx) error {
		if err := tx.Delete(bucket, number); err != nil {
			return err
		}
		for _, f := range also {
			if err := f(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	lr := s.live[number]
	s.mu.Unlock()
	if lr != nil {
		lr.kickAll()
	}
	return nil
}

// Participant is one caller in a live room, as the API shows it.
type Participant struct {
	ID        string    `json:"id"`
	Caller    string    `json:"caller"`
	Source    string    `json:"source,omitempty"`
	Joined    time.Time `json:"joined"`
	Moderator bool      `json:"moderator"`
	Wideband  bool      `json:"wideband"` // G.722
	Waiting   bool      `json:"waiting"`  // for the moderator
}

// Participants lists who is in room number now.
func (s *Service) Participants(number string) ([]Participant, error) {
	if _, err := s.Room(number); err != nil {
		return nil, err
	}
	s.mu.Lock()
	lr := s.live[number]
	s.mu.Unlock()
	if lr == nil {
		return []Participant{}, nil
	}
	return lr.list(), nil
}

// ErrNoParticipant: Kick found nobody of that id.
var ErrNoParticipant = errors.New("conference: no such participant")

// Kick ends one participant's call; also runs in a transaction first
// (the audit entry).
func (s *Service) Kick(number, id string, also ...func(*store.Tx) error) error {
	s.mu.Lock()
	lr := s.live[number]
	s.mu.Unlock()
	var m *member
	if lr != nil {
		m = lr.find(id)
	}
	if m == nil {
		return fmt.Errorf("%w: %q in room %q", ErrNoParticipant, id, number)
	}
	if len(also) > 0 {
		if err := s.cfg.DB.Update(func(tx *store.Tx) error {
			for _, f := range also {
				if err := f(tx); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	m.cancel()
	return nil
}

// Target is the dial plan's decision target for room number.
func Target(number string) string { return dialplan.AppTarget(dialplan.AppConference, number) }

// pinAccount names the room for the SIP guard ("conference/800").
func pinAccount(number string) string { return "conference/" + number }

// sourceString is the caller's address for the API.
func sourceString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
