package features

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/queue"
)

func TestDefaultCodesValid(t *testing.T) {
	if err := validateCodes(DefaultCodes()); err != nil {
		t.Fatal(err)
	}
	// Every action has a code and a printed description.
	txt := Print(DefaultCodes())
	for _, a := range actions {
		if !slices.ContainsFunc(DefaultCodes(), func(c Code) bool { return c.Action == a.a }) {
			t.Errorf("no default code for %s", a.a)
		}
		if !strings.Contains(txt, a.help) {
			t.Errorf("printed table lacks %s", a.a)
		}
	}
}

func TestValidateCodes(t *testing.T) {
	tests := []struct {
		name  string
		codes []Code
		want  string
	}{
		{"no star", []Code{{"72", ForwardOn}}, "'*' then"},
		{"letters", []Code{{"*7a", ForwardOn}}, "'*' then"},
		{"too long", []Code{{"*12345678", ForwardOn}}, "'*' then"},
		{"unknown action", []Code{{"*72", "format-disk"}}, "unknown action"},
		{"action twice", []Code{{"*72", ForwardOn}, {"*74", ForwardOn}}, "two codes"},
		{"prefix", []Code{{"*7", ForwardOn}, {"*72", DNDOn}}, "prefix"},
		{"fine", []Code{{"*7", ForwardOn}, {"*8", DNDOn}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateCodes(tc.codes)
			if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	cs := DefaultCodes()
	tests := []struct {
		dialled string
		a       Action
		arg     string
		ok      bool
	}{
		{"*72201", ForwardOn, "201", true},
		{"*72201#", ForwardOn, "201", true},
		{"*72*97", ForwardOn, "*97", true},
		{"*73", ForwardOff, "", true},
		{"*73#", ForwardOff, "", true},
		{"*7312", "", "", false}, // an off code takes nothing after it
		{"**201", DirectedPickup, "201", true},
		{"*8", GroupPickup, "", true},
		{"*97", VoicemailOwn, "", true},
		{"*98201", VoicemailOther, "201", true},
		{"*31#0301234", "", "", false}, // not ours: the dial plan decides
		{"201", "", "", false},
	}
	for _, tc := range tests {
		a, arg, ok := match(cs, tc.dialled)
		if a != tc.a || arg != tc.arg || ok != tc.ok {
			t.Errorf("%s: %q %q %v, want %q %q %v", tc.dialled, a, arg, ok, tc.a, tc.arg, tc.ok)
		}
	}
}

func isExt(n string) bool { return slices.Contains([]string{"201", "202", "203"}, n) }

func TestConfigValidate(t *testing.T) {
	group := func(mod func(*RingGroup)) Config {
		g := RingGroup{Number: "600", Strategy: RingAll, Members: []Member{{Extension: "201"}, {Extension: "202"}}}
		mod(&g)
		return Config{Groups: []RingGroup{g}}
	}
	// queues: 820, 821, ... each falling back to the next of fbs.
	queues := func(fbs ...string) Config {
		var c Config
		for i, f := range fbs {
			c.Queues = append(c.Queues, queue.Queue{Number: fmt.Sprint(820 + i), Strategy: queue.RingAll, Fallback: f,
				Agents: []queue.Agent{{Extension: "201"}}})
		}
		return c
	}
	tests := []struct {
		name string
		c    Config
		want string
	}{
		{"fine", group(func(*RingGroup) {}), ""},
		{"number is an extension", group(func(g *RingGroup) { g.Number = "201" }), "already an extension"},
		{"number not digits", group(func(g *RingGroup) { g.Number = "6a0" }), "digits only"},
		{"strategy", group(func(g *RingGroup) { g.Strategy = "random" }), "strategy"},
		{"no members", group(func(g *RingGroup) { g.Members = nil }), "members"},
		{"unknown member", group(func(g *RingGroup) { g.Members[0].Extension = "999" }), "not an extension"},
		{"member twice", group(func(g *RingGroup) { g.Members[1].Extension = "201" }), "listed twice"},
		{"ring too short", group(func(g *RingGroup) { g.Members[0].Ring = 1 }), "ring time"},
		{"fallback to itself", group(func(g *RingGroup) { g.Fallback = "600" }), "fallback"},
		{"fallback external", group(func(g *RingGroup) { g.Fallback = "0301234" }), "fallback"},
		{"fallback voicemail", group(func(g *RingGroup) { g.Fallback = "voicemail/203" }), ""},
		{"name control char", group(func(g *RingGroup) { g.Name = "a\nb" }), "control"},
		{"pickup unknown member", Config{PickupGroups: []PickupGroup{{Name: "x", Members: []string{"999"}}}}, "not an extension"},
		{"pickup name twice", Config{PickupGroups: []PickupGroup{{Name: "x"}, {Name: "x"}}}, "unique"},
		{"hops", Config{MaxHops: 99}, "max_hops"},
		{"bad codes", Config{Codes: []Code{{"*7", ForwardOn}, {"*70", Park}}}, "prefix"},
		{"queue fallback chain", queues("821", "822", "823", ""), ""},
		{"queue fallback loop", queues("821", "822", "820"), "loop back to 820"},
		{"queue fallback loop not to itself", queues("821", "822", "821"), "loop back to 821"},
		{"queue fallback chain too long", queues("821", "822", "823", "824", ""), "more than 3 queues"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate(isExt)
			if (err == nil) != (tc.want == "") || err != nil && (!strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrConfig)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestMaySee: nobody sees anybody unless a pickup group holds both.
func TestMaySee(t *testing.T) {
	c := Config{PickupGroups: []PickupGroup{{Name: "sales", Members: []string{"201", "202"}}, {Name: "desk", Members: []string{"202", "203"}}}}
	tests := []struct {
		sub, target string
		want        bool
	}{
		{"201", "202", true}, {"202", "201", true}, {"202", "203", true},
		{"201", "203", false}, // not transitive
		{"201", "201", true}, {"204", "201", false}, {"", "", false}, {"201", "", false},
	}
	for _, tc := range tests {
		if got := c.MaySee(tc.sub, tc.target); got != tc.want {
			t.Errorf("MaySee(%q, %q) = %v", tc.sub, tc.target, got)
		}
	}
}

func TestSettingsShape(t *testing.T) {
	if err := (Settings{FollowMe: FollowMe{Numbers: make([]string, maxFollowMe+1)}}).validShape(); err == nil {
		t.Fatal("too many follow-me numbers accepted")
	}
	if err := (Settings{Ring: 1000}).validShape(); err == nil {
		t.Fatal("ring time 1000 s accepted")
	}
	if err := (Settings{FollowMe: FollowMe{Numbers: []string{Voicemail}}}).validShape(); err == nil {
		t.Fatal("voicemail as a follow-me number accepted")
	}
}

// FuzzMatch: any dialled string (as the dial plan normalises it) either
// matches one code of the table, which it starts with, or none.
func FuzzMatch(f *testing.F) {
	for _, s := range []string{"*72201", "**", "*8", "*73#", "*98*", "＊７２２０１", "%2A72201", "sip:*72201@box"} {
		f.Add(s)
	}
	cs := DefaultCodes()
	f.Fuzz(func(t *testing.T, dialled string) {
		n, err := dialplan.Normalize(dialled)
		if err != nil {
			return
		}
		a, arg, ok := match(cs, n)
		if !ok {
			return
		}
		i := slices.IndexFunc(cs, func(c Code) bool { return c.Action == a })
		if i < 0 || !strings.HasPrefix(n, cs[i].Code) || len(arg) > len(n) {
			t.Fatalf("%q matched %s with %q", n, a, arg)
		}
		if wants, _ := takesArg(a); !wants && arg != "" {
			t.Fatalf("%q: %s took argument %q", n, a, arg)
		}
	})
}
