package pbxconfig

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSIPStartOnlyArePageFields: every restart-only name the settings page
// marks is a JSON path of SIPSettings, and changing that field on the page
// is reported as exactly that pending field by SIPRestartFields.
func TestSIPStartOnlyArePageFields(t *testing.T) {
	mutate := map[string]func(*SIPSettings){
		"max_message_bytes": func(s *SIPSettings) { s.MaxMessageBytes += 100 },
		"algorithms":        func(s *SIPSettings) { s.Algorithms = []string{"SHA-256"} },
		"nonce_ttl":         func(s *SIPSettings) { s.NonceTTL += time.Second },
		"guard.max_tracked": func(s *SIPSettings) { s.Guard.MaxTracked++ },
	}
	base := DefaultSIPSettings()
	raw, err := json.Marshal(base)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	names := SIPStartOnly()
	if len(names) != len(mutate) {
		t.Fatalf("SIPStartOnly = %v; the test knows %d fields", names, len(mutate))
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			var v any = fields
			for _, part := range strings.Split(name, ".") {
				m, ok := v.(map[string]any)
				if !ok {
					t.Fatalf("%s is not a JSON path of SIPSettings", name)
				}
				if v, ok = m[part]; !ok {
					t.Fatalf("%s is not a JSON path of SIPSettings", name)
				}
			}
			mut, ok := mutate[name]
			if !ok {
				t.Fatalf("no mutation for %s", name)
			}
			next := base
			next.Algorithms = slices.Clone(base.Algorithms)
			mut(&next)
			got := SIPRestartFields(base.Apply(DefaultSIP()), next.Apply(DefaultSIP()))
			if !slices.Equal(got, []string{name}) {
				t.Fatalf("SIPRestartFields after changing %s = %v", name, got)
			}
		})
	}
}

// TestSIPRestartFieldsEdgeOnly: settings outside the page (realm, cache,
// trunks) are restart-only too, and an unchanged configuration has none.
func TestSIPRestartFieldsEdgeOnly(t *testing.T) {
	boot := DefaultSIP()
	if got := SIPRestartFields(boot, boot); got != nil {
		t.Fatalf("unchanged: %v", got)
	}
	next := boot
	next.Realm = boot.Realm + ".x"
	next.RetransmitCache++
	next.Trunks = []Trunk{{Name: "itsp"}}
	if got := SIPRestartFields(boot, next); !slices.Equal(got, []string{"retransmit_cache", "realm", "trunks"}) {
		t.Fatalf("got %v", got)
	}
	for _, n := range []string{"realm", "retransmit_cache", "trunks"} {
		if slices.Contains(SIPStartOnly(), n) {
			t.Fatalf("%s is not a page setting", n)
		}
	}
}

func TestValidSIPUser(t *testing.T) {
	for s, want := range map[string]bool{
		"100": true, "alice.b_c+d-e": true, strings.Repeat("a", 64): true,
		"": false, strings.Repeat("a", 65): false, "a b": false, "a@b": false, "a:b": false, "ä": false, "a\n": false,
	} {
		if got := ValidSIPUser(s); got != want {
			t.Errorf("ValidSIPUser(%q) = %v, want %v", s, got, want)
		}
	}
}
