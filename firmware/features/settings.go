package features

import (
	"fmt"
	"slices"
	"sync"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Voicemail is the forward destination "the extension's own voicemail".
const Voicemail = "voicemail"

// FollowMe rings further numbers when the extension itself does not
// answer: one after another (each for Ring seconds), or together with the
// extension's phones.
type FollowMe struct {
	On       bool     `json:"on"`
	Numbers  []string `json:"numbers,omitempty"`
	Together bool     `json:"together,omitempty"`
	Ring     int      `json:"ring,omitempty"` // seconds per number (0: DefaultRing)
}

// Settings are what a user sets for their extension (phone feature codes,
// the UI, the API). Destinations are an extension, a group number, an
// external number (a call of this extension: its class of service applies)
// or Voicemail.
type Settings struct {
	Always      string   `json:"always,omitempty"`
	Busy        string   `json:"busy,omitempty"`
	NoAnswer    string   `json:"no_answer,omitempty"`
	Unreachable string   `json:"unreachable,omitempty"`
	Ring        int      `json:"ring,omitempty"` // seconds before no-answer forward (0: DefaultRing)
	DND         bool     `json:"dnd,omitempty"`
	FollowMe    FollowMe `json:"follow_me"`
}

// maxFollowMe bounds the follow-me list.
const maxFollowMe = 8

// active reports whether s changes how calls to the extension ring.
func (s Settings) active() bool {
	return s.Always != "" || s.Busy != "" || s.NoAnswer != "" || s.Unreachable != "" || s.DND || (s.FollowMe.On && len(s.FollowMe.Numbers) > 0)
}

func (s Settings) clone() Settings {
	s.FollowMe.Numbers = slices.Clone(s.FollowMe.Numbers)
	return s
}

// destinations lists every destination s sets (for validation).
func (s Settings) destinations() []string {
	out := []string{}
	for _, d := range []string{s.Always, s.Busy, s.NoAnswer, s.Unreachable} {
		if d != "" {
			out = append(out, d)
		}
	}
	return append(out, s.FollowMe.Numbers...)
}

func (s Settings) validShape() error {
	if err := ringOK(s.Ring); err != nil {
		return err
	}
	if err := ringOK(s.FollowMe.Ring); err != nil {
		return fmt.Errorf("follow-me: %w", err)
	}
	if len(s.FollowMe.Numbers) > maxFollowMe {
		return fmt.Errorf("follow-me: more than %d numbers", maxFollowMe)
	}
	for _, n := range s.FollowMe.Numbers {
		if n == Voicemail {
			return fmt.Errorf("follow-me: %q is not a number", n)
		}
	}
	return nil
}

// Bucket holds each extension's Settings under its number.
const Bucket = "features.user"

// Store keeps Settings in the store and in memory. It is safe for
// concurrent use.
type Store struct {
	db *store.DB

	mu  sync.RWMutex
	set map[string]Settings
	dnd func(ext string, on bool) // WatchDND; nil: nobody listens
}

// WatchDND makes fn see every change of an extension's DND once it is
// stored (presence shows DND), and each extension in DND now. Call it
// before the store is in use; fn runs without the store's lock held.
func (s *Store) WatchDND(fn func(ext string, on bool)) {
	s.mu.Lock()
	s.dnd = fn
	var on []string
	for ext, set := range s.set {
		if set.DND {
			on = append(on, ext)
		}
	}
	s.mu.Unlock()
	for _, ext := range on {
		fn(ext, true)
	}
}

// LoadStore reads every extension's settings.
func LoadStore(db *store.DB) (*Store, error) {
	s := &Store{db: db, set: map[string]Settings{}}
	err := db.View(func(tx *store.Tx) error {
		return tx.ForEach(Bucket, func(key string, _ []byte) error {
			var v Settings
			if _, err := tx.Get(Bucket, key, &v); err != nil {
				return err
			}
			s.set[key] = v
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("features: load settings: %w", err)
	}
	return s, nil
}

// Get returns ext's settings (zero: none).
func (s *Store) Get(ext string) Settings {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.set[ext].clone()
}

// Update changes ext's settings with fn, stores them (also runs inside the
// same transaction: the caller's audit entry) and returns them. fn's
// error leaves everything unchanged.
func (s *Store) Update(ext string, fn func(*Settings) error, also func(tx *store.Tx, saved Settings) error) (Settings, error) {
	saved, was, err := s.update(ext, fn, also)
	if err == nil && saved.DND != was {
		s.mu.RLock()
		hook := s.dnd
		s.mu.RUnlock()
		if hook != nil {
			hook(ext, saved.DND)
		}
	}
	return saved, err
}

func (s *Store) update(ext string, fn func(*Settings) error, also func(tx *store.Tx, saved Settings) error) (saved Settings, wasDND bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wasDND = s.set[ext].DND
	next := s.set[ext].clone()
	if err := fn(&next); err != nil {
		return Settings{}, wasDND, err
	}
	err = s.db.Update(func(tx *store.Tx) error {
		var err error
		if next.active() || next.Ring != 0 || len(next.FollowMe.Numbers) > 0 {
			err = tx.Put(Bucket, ext, next)
		} else {
			err = tx.Delete(Bucket, ext)
		}
		if err == nil && also != nil {
			err = also(tx, next.clone())
		}
		return err
	})
	if err != nil {
		return Settings{}, wasDND, fmt.Errorf("features: save settings of %s: %w", ext, err)
	}
	if next.active() || next.Ring != 0 || len(next.FollowMe.Numbers) > 0 {
		s.set[ext] = next
	} else {
		delete(s.set, ext)
	}
	return next.clone(), wasDND, nil
}

// ForgetTx erases ext's settings inside tx (the extension is being
// deleted: a new extension with the same number must not inherit its
// forwards); call Forgot after tx committed.
func ForgetTx(tx *store.Tx, ext string) error { return tx.Delete(Bucket, ext) }

// Forgot drops ext's settings from memory after ForgetTx committed.
func (s *Store) Forgot(ext string) {
	s.mu.Lock()
	was, hook := s.set[ext].DND, s.dnd
	delete(s.set, ext)
	s.mu.Unlock()
	if was && hook != nil {
		hook(ext, false)
	}
}
