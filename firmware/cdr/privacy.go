package cdr

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Bucket is where records live (the privacy settings report its size).
const Bucket = bucket

// about reports whether r names subject as caller, callee or dialled number.
func (r *Record) about(subject string) bool {
	return r.From == subject || r.To == subject || r.Dialled == subject
}

// Subject returns every record that names subject (an extension or a
// number, compared exactly), oldest first.
func (s *Store) Subject(subject string) ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *store.Tx) error {
		return tx.ForEach(bucket, func(k string, raw []byte) error {
			var r Record
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("cdr: decode %s: %w", k, err)
			}
			if r.about(subject) {
				out = append(out, r)
			}
			return nil
		})
	})
	return out, err
}

// Forget deletes every record that names subject and returns how many.
func (s *Store) Forget(subject string) (int, error) {
	n := 0
	err := s.db.Update(func(tx *store.Tx) error {
		var err error
		n, err = ForgetTx(tx, subject)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// ForgetTx deletes every record that names subject inside tx, so a
// privacy Forget erases them in one transaction with the other stores'
// data about the subject.
func ForgetTx(tx *store.Tx, subject string) (int, error) {
	var keys []string
	err := tx.ForEach(bucket, func(k string, raw []byte) error {
		var r Record
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("cdr: decode %s: %w", k, err)
		}
		if r.about(subject) {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cdr: forget: %w", err)
	}
	for _, k := range keys {
		if err := tx.Delete(bucket, k); err != nil {
			return 0, fmt.Errorf("cdr: forget: %w", err)
		}
	}
	return len(keys), nil
}

// maskMinDigits is the shortest string treated as a phone number: shorter
// ones are extensions, which identify a desk, not an outside party.
const maskMinDigits = 7

// maskKeep is how many trailing digits a masked number keeps, enough to
// tell calls apart in a report, too few to dial.
const maskKeep = 3

// MaskNumber masks a phone number (+ and at least maskMinDigits digits)
// to its last maskKeep digits; anything else comes back as it is.
func MaskNumber(s string) string {
	digits := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '+' && i == 0:
		default:
			return s
		}
	}
	if digits < maskMinDigits {
		return s
	}
	b := []byte(s)
	keep := maskKeep
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] >= '0' && b[i] <= '9' {
			if keep > 0 {
				keep--
				continue
			}
			b[i] = 'x'
		}
	}
	return string(b)
}

// MaskNumbers masks the phone numbers of the records of calls that started
// before t (once: masked records are marked) and returns how many changed.
func (s *Store) MaskNumbers(t time.Time) (int, error) {
	hi := fmt.Sprintf("%016x/", uint64(max(t.UnixNano(), 0)))
	total := 0
	after := ""
	for {
		n, last, more := 0, "", false
		err := s.db.Update(func(tx *store.Tx) error {
			var upd []Record
			var keys []string
			err := tx.ForEach(bucket, func(k string, raw []byte) error {
				if k <= after {
					return nil
				}
				if k >= hi {
					return errStop
				}
				if len(keys) >= purgeBatch {
					more = true
					return errStop
				}
				last = k
				var r Record
				if err := json.Unmarshal(raw, &r); err != nil {
					return fmt.Errorf("cdr: decode %s: %w", k, err)
				}
				if r.Masked {
					return nil
				}
				r.From, r.To, r.Dialled, r.Masked = MaskNumber(r.From), MaskNumber(r.To), MaskNumber(r.Dialled), true
				upd, keys = append(upd, r), append(keys, k)
				return nil
			})
			if err != nil && !errors.Is(err, errStop) {
				return err
			}
			for i, k := range keys {
				if err := tx.Put(bucket, k, upd[i]); err != nil {
					return err
				}
			}
			n = len(keys)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("cdr: mask numbers: %w", err)
		}
		total += n
		if !more {
			return total, nil
		}
		after = last
	}
}
