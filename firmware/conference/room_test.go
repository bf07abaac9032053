package conference

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

func newService(t testing.TB) *Service {
	t.Helper()
	s, err := New(Config{DB: storetest.Open(t, make([]byte, 32)),
		Hasher: auth.NewHasher(auth.Params{Time: 1, MemoryKiB: 1024, Threads: 1}, 2, 8),
		Taken:  func(n string) bool { return n == "1001" }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ptr(s string) *string { return &s }

func TestRooms(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, number string
		req          RoomRequest
	}{
		{"short number", "8", RoomRequest{MaxParticipants: 3}},
		{"letters", "80a", RoomRequest{MaxParticipants: 3}},
		{"an extension", "1001", RoomRequest{MaxParticipants: 3}},
		{"too small", "800", RoomRequest{MaxParticipants: 1}},
		{"too big", "800", RoomRequest{MaxParticipants: MaxParticipants + 1}},
		{"weak PIN", "800", RoomRequest{MaxParticipants: 3, PIN: ptr("111111")}},
		{"PIN with the number", "800", RoomRequest{MaxParticipants: 3, PIN: ptr("580093")}},
		{"same PINs", "800", RoomRequest{MaxParticipants: 3, PIN: ptr("582914"), ModeratorPIN: ptr("582914")}},
		{"waits without moderator PIN", "800", RoomRequest{MaxParticipants: 3, WaitModerator: true}},
		{"control characters", "800", RoomRequest{MaxParticipants: 3, Name: "a\x1b[2J"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Put(ctx, tc.number, tc.req); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err %v, want ErrInvalid", err)
			}
		})
	}
	if rs, err := s.Rooms(); err != nil || len(rs) != 0 {
		t.Fatalf("refusals stored rooms: %+v %v", rs, err)
	}
	r, err := s.Put(ctx, "800", RoomRequest{Name: "all hands", MaxParticipants: 5, PIN: ptr("582914"), ModeratorPIN: ptr("730461"), WaitModerator: true})
	if err != nil || r.PINHash == "" || r.ModeratorHash == "" || r.PINHash == "582914" {
		t.Fatalf("put: %+v %v", r, err)
	}
	// nil keeps the PINs, "" removes one.
	r2, err := s.Put(ctx, "800", RoomRequest{MaxParticipants: 6, ModeratorPIN: ptr(""), WaitModerator: false})
	if err != nil || r2.PINHash != r.PINHash || r2.ModeratorHash != "" || r2.MaxParticipants != 6 {
		t.Fatalf("update: %+v %v", r2, err)
	}
	if !s.Has("800") || s.Has("801") {
		t.Fatal("Has")
	}
	if _, err := s.Open("conference", "801", call.Caller{}); !errors.Is(err, call.ErrNoApp) {
		t.Fatalf("open unknown room: %v", err)
	}
	if _, err := s.Open("conference", "800", call.Caller{}); err != nil {
		t.Fatalf("open: %v", err)
	}
	if ps, err := s.Participants("800"); err != nil || len(ps) != 0 {
		t.Fatalf("participants %v %v", ps, err)
	}
	if err := s.Kick("800", "1"); !errors.Is(err, ErrNoParticipant) {
		t.Fatalf("kick nobody: %v", err)
	}
	if err := s.Delete("800"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("800"); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestMaxRooms(t *testing.T) {
	s := newService(t)
	for i := range MaxRooms {
		if _, err := s.Put(context.Background(), fmt.Sprint(7000+i), RoomRequest{MaxParticipants: 2}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(context.Background(), "9999", RoomRequest{MaxParticipants: 2}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("room %d: %v", MaxRooms+1, err)
	}
}
