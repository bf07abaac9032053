package conference

import (
	"context"
	"testing"
	"unicode"
)

// FuzzPut: whatever an admin request carries, a room is either refused
// or stored with a valid number, a printable bounded name, and PINs only
// as hashes.
func FuzzPut(f *testing.F) {
	f.Add("800", "all hands", "582914", "730461", 5, true)
	f.Add("8", "\x00", "", "", 1, false)
	f.Add("1001", "x", "123456", "123456", 64, true)
	s := newService(f)
	f.Fuzz(func(t *testing.T, number, name, pin, mod string, maxp int, wait bool) {
		req := RoomRequest{Name: name, MaxParticipants: maxp, WaitModerator: wait}
		if pin != "-" {
			req.PIN = &pin
		}
		if mod != "-" {
			req.ModeratorPIN = &mod
		}
		r, err := s.Put(context.Background(), number, req)
		if err != nil {
			return
		}
		if !validNumber(r.Number) || len(r.Name) > maxNameLen || r.MaxParticipants < 2 || r.MaxParticipants > MaxParticipants {
			t.Fatalf("stored %+v", r)
		}
		for _, c := range r.Name {
			if unicode.IsControl(c) {
				t.Fatalf("control character stored in %q", r.Name)
			}
		}
		if (pin != "" && pin != "-" && r.PINHash == pin) || (mod != "" && mod != "-" && r.ModeratorHash == mod) {
			t.Fatal("PIN stored in the clear")
		}
		if r.WaitModerator && r.ModeratorHash == "" {
			t.Fatal("waits for a moderator nobody can be")
		}
		_ = s.Delete(number)
	})
}
