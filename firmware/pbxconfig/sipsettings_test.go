package pbxconfig

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

func TestDefaultSIPSettingsMatchDefaultSIP(t *testing.T) {
	s := DefaultSIPSettings()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	d := DefaultSIP()
	a := s.Apply(d)
	if a.Guard != d.Guard || a.TLSMin != d.TLSMin || !slices.Equal(a.ScannerUserAgents, d.ScannerUserAgents) ||
		!slices.Equal(a.AllowedZones, d.AllowedZones) || a.MaxExpires != d.MaxExpires || a.UDP != d.UDP {
		t.Fatalf("defaults applied differ from DefaultSIP: %+v", a)
	}
}

func TestSIPSettingsValidate(t *testing.T) {
	tests := []struct {
		name, want string // want "" = valid
		mod        func(*SIPSettings)
	}{
		{"defaults", "", func(*SIPSettings) {}},
		{"tls 1.3 only", "", func(s *SIPSettings) { s.TLSMin = "1.3" }},
		{"stricter guard", "", func(s *SIPSettings) { s.Guard.MaxFailsPerSource = 1; s.Guard.RateLimit = 50 }},
		{"own scanner", "", func(s *SIPSettings) { s.ScannerUserAgents = append(s.ScannerUserAgents, "evil-dialer") }},
		{"tls min 1.0", "tls_min", func(s *SIPSettings) { s.TLSMin = "1.0" }},
		{"tls max below min", "tls_max below", func(s *SIPSettings) { s.TLSMin, s.TLSMax = "1.3", "1.2" }},
		{"empty scanner", "scanner user agent", func(s *SIPSettings) { s.ScannerUserAgents = []string{" "} }},
		{"scanner control char", "scanner user agent", func(s *SIPSettings) { s.ScannerUserAgents = []string{"a\r\nb"} }},
		{"scanner too long", "scanner user agent", func(s *SIPSettings) { s.ScannerUserAgents = []string{strings.Repeat("x", 65)} }},
		{"scanner twice", "twice", func(s *SIPSettings) { s.ScannerUserAgents = []string{"sipvicious", "SIPVicious"} }},
		{"too many scanners", "at most 256", func(s *SIPSettings) { s.ScannerUserAgents = make([]string, 257) }},
		{"no zones", "allowed_zones empty", func(s *SIPSettings) { s.AllowedZones = nil }},
		{"zone host bits", "network address", func(s *SIPSettings) { s.AllowedZones = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")} }},
		{"allowlist everything", "whole internet", func(s *SIPSettings) { s.Allowlist = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")} }},
		{"rate limit zero", "guard", func(s *SIPSettings) { s.Guard.RateLimit = 0 }},
		{"fails per source zero", "guard", func(s *SIPSettings) { s.Guard.MaxFailsPerSource = 0 }},
		{"ban forever", "bans at most", func(s *SIPSettings) { s.Guard.AuthBan = 365 * 24 * time.Hour }},
		{"min expires above max", "expiry bounds", func(s *SIPSettings) { s.MinExpires = 2 * time.Hour }},
		{"max expires huge", "max_expires", func(s *SIPSettings) { s.MaxExpires = 48 * time.Hour }},
		{"algorithm", "digest algorithm", func(s *SIPSettings) { s.Algorithms = []string{"SHA-1"} }},
		{"algorithm twice", "listed twice", func(s *SIPSettings) { s.Algorithms = []string{"MD5", "MD5"} }},
		{"message size", "max_message_bytes", func(s *SIPSettings) { s.MaxMessageBytes = 100 }},
		{"per source above total", "connection caps", func(s *SIPSettings) { s.MaxConnsPerSource = s.MaxConns + 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := DefaultSIPSettings()
			tc.mod(&s)
			err := s.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrSIPSettings) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrSIPSettings mentioning %q", err, tc.want)
			}
		})
	}
}

func TestSIPStoreVersions(t *testing.T) {
	db := openTestDB(t)
	s, err := LoadSIP(db)
	if err != nil {
		t.Fatal(err)
	}
	if s.Current().Version != 0 || s.Running() != 0 {
		t.Fatalf("initial version %d running %d", s.Current().Version, s.Running())
	}
	next := s.Current()
	next.Guard.MaxFailsPerSource = 2
	next.ScannerUserAgents = append(next.ScannerUserAgents, "evil-dialer")
	saved, err := s.Save(next)
	if err != nil {
		t.Fatal(err)
	}
	if saved.Version != 1 || s.Current().Version != 1 || s.Running() != 0 {
		t.Fatalf("after save: saved %d current %d running %d", saved.Version, s.Current().Version, s.Running())
	}

	// Stale and invalid saves change nothing, in memory or in the store.
	tests := []struct {
		name string
		mod  func(*SIPSettings)
		want error
	}{
		{"stale", func(x *SIPSettings) { x.Version = 0 }, ErrSIPVersion},
		{"future", func(x *SIPSettings) { x.Version = 7 }, ErrSIPVersion},
		{"invalid", func(x *SIPSettings) { x.Guard.RateLimit = -1 }, ErrSIPSettings},
	}
	for _, tc := range tests {
		x := s.Current()
		x.Guard.MaxFailsPerSource = 9
		tc.mod(&x)
		if _, err := s.Save(x); !errors.Is(err, tc.want) {
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Callers cannot change the stored value through a returned copy.
	c := s.Current()
	c.ScannerUserAgents[0] = "changed"
	if s.Current().ScannerUserAgents[0] == "changed" || s.Current().Guard.MaxFailsPerSource != 2 {
		t.Fatalf("settings changed: %+v", s.Current())
	}

	// A reload (daemon restart) sees version 1 and runs it.
	r, err := LoadSIP(db)
	if err != nil {
		t.Fatal(err)
	}
	if cur := r.Current(); cur.Version != 1 || r.Running() != 1 || cur.Guard.MaxFailsPerSource != 2 || !slices.Contains(cur.ScannerUserAgents, "evil-dialer") {
		t.Fatalf("reloaded %+v running %d", cur, r.Running())
	}

	// Stored settings that no longer validate are refused at load.
	bad := r.Current()
	bad.Guard.RateLimit = 0
	if err := db.Update(func(tx *store.Tx) error { return tx.Put(SIPBucket, sipKey, bad) }); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSIP(db); !errors.Is(err, ErrSIPSettings) {
		t.Fatalf("invalid stored settings loaded: %v", err)
	}
}

// TestSIPStoreApplier: with the running edge attached a save is applied
// before it is stored; a refused apply stores nothing; settings that need
// a restart keep Running on the start version until they are reverted.
func TestSIPStoreApplier(t *testing.T) {
	db := openTestDB(t)
	s, err := LoadSIP(db)
	if err != nil {
		t.Fatal(err)
	}
	var got []SIPSettings
	s.SetApplier(func(x SIPSettings) ([]string, error) {
		if slices.Contains(x.ScannerUserAgents, "refuse-me") {
			return nil, errors.New("edge says no")
		}
		got = append(got, x)
		if x.NonceTTL != DefaultSIPSettings().NonceTTL {
			return []string{"nonce_ttl"}, nil
		}
		return nil, nil
	})
	if !s.Live() {
		t.Fatal("not live with an applier")
	}
	steps := []struct {
		name        string
		mod         func(*SIPSettings)
		wantErr     error
		wantVersion int64
		wantRunning int64
		wantPending []string
	}{
		{"live change", func(x *SIPSettings) { x.Guard.MaxFailsPerSource = 2 }, nil, 1, 1, nil},
		{"refused by the edge", func(x *SIPSettings) { x.ScannerUserAgents = []string{"refuse-me"} }, ErrSIPApply, 1, 1, nil},
		{"restart-only change", func(x *SIPSettings) { x.NonceTTL = time.Minute }, nil, 2, 0, []string{"nonce_ttl"}},
		{"reverted", func(x *SIPSettings) { x.NonceTTL = DefaultSIPSettings().NonceTTL }, nil, 3, 3, nil},
	}
	for _, st := range steps {
		x := s.Current()
		st.mod(&x)
		if _, err := s.Save(x); !errors.Is(err, st.wantErr) || (err == nil) != (st.wantErr == nil) {
			t.Fatalf("%s: %v, want %v", st.name, err, st.wantErr)
		}
		if s.Current().Version != st.wantVersion || s.Running() != st.wantRunning || !slices.Equal(s.Pending(), st.wantPending) {
			t.Fatalf("%s: version %d running %d pending %v", st.name, s.Current().Version, s.Running(), s.Pending())
		}
		r, err := LoadSIP(db)
		if err != nil || r.Current().Version != st.wantVersion {
			t.Fatalf("%s: stored version %d, %v", st.name, r.Current().Version, err)
		}
	}
	if len(got) != 3 || got[0].Version != 1 || got[0].Guard.MaxFailsPerSource != 2 {
		t.Fatalf("applied %d versions: %+v", len(got), got)
	}
}

// TestSIPStoreApplierStoreFails: a save the store cannot take changes
// nothing, and the edge does not end up on an unsaved version.
func TestSIPStoreApplierCommitFails(t *testing.T) {
	db := openTestDB(t)
	s, err := LoadSIP(db)
	if err != nil {
		t.Fatal(err)
	}
	var applied []int64
	s.SetApplier(func(x SIPSettings) ([]string, error) { applied = append(applied, x.Version); return nil, nil })
	db.Close() // every later transaction fails
	x := s.Current()
	x.Guard.RateLimit = 10
	if _, err := s.Save(x); err == nil || errors.Is(err, ErrSIPApply) {
		t.Fatalf("save on a closed store: %v", err)
	}
	if s.Current().Version != 0 || s.Current().Guard.RateLimit == 10 {
		t.Fatalf("settings changed: %+v", s.Current())
	}
	// Whether or not the edge was asked, its last version is the saved one.
	if len(applied) > 0 && applied[len(applied)-1] != 0 {
		t.Fatalf("edge left on version %d", applied[len(applied)-1])
	}
}

// FuzzSIPSettingsValidate: any decoded settings validate without panic,
// and settings that pass give a SIP edge configuration that passes too.
func FuzzSIPSettingsValidate(f *testing.F) {
	for _, s := range []string{`{}`, `{"tls_min":"1.2","tls_max":"1.3","allowed_zones":["10.0.0.0/8"],"scanner_user_agents":["x"],"algorithms":["MD5"]}`,
		`{"allowed_zones":["10.1.2.3/8"]}`, `{"guard":{"rate_limit":-1}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := DefaultSIPSettings()
		if json.Unmarshal(b, &s) != nil {
			return
		}
		if s.Validate() != nil {
			return
		}
		if err := s.Apply(DefaultSIP()).Validate(); err != nil {
			t.Fatalf("accepted settings give an invalid edge: %v", err)
		}
	})
}
