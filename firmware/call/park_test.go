package call

import (
	"slices"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/media"
)

func TestParkTargets(t *testing.T) {
	tests := []struct {
		target string
		want   []string
	}{
		{ParkApp + "71,72,73", []string{"71", "72", "73"}},
		{ParkApp, nil},
		{RetrieveApp + "71/201,202", []string{"71"}},
		{RetrieveApp + "/201", nil},
		{RetrieveApp, nil},
		{ParkApp + "71,x,/,72", []string{"71", "72"}},
		{"park//", nil},
	}
	for _, tc := range tests {
		if got := parkTargets(tc.target); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.target, got, tc.want)
		}
	}
}

func TestOffersCodec(t *testing.T) {
	r := media.Remote{Formats: []string{"8", "96", "101"}, Rtpmap: map[string]string{"96": "opus/48000/2", "101": "telephone-event/8000"}}
	for name, want := range map[string]bool{"PCMA/8000": true, "pcma/8000": true, "PCMU/8000": false, "opus/48000/2": true, "G722/8000": false} {
		if got := offersCodec(r, name); got != want {
			t.Errorf("%s: %v", name, got)
		}
	}
}

// FuzzParkTargets: a decision target never yields more slots than it
// names, nor an empty or comma-holding one.
func FuzzParkTargets(f *testing.F) {
	for _, s := range []string{ParkApp + "71,72", RetrieveApp + "71/201", ParkApp + ",,", RetrieveApp + "/", "park/\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		got := parkTargets(target)
		if len(got) > maxPickupTargets || len(got) > strings.Count(target, ",")+1 {
			t.Fatalf("%q: %d slots", target, len(got))
		}
		for _, s := range got {
			if !slotNumber(s) || !strings.Contains(target, s) {
				t.Fatalf("%q: slot %q", target, s)
			}
		}
	})
}
