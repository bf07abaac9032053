package ivr

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
)

func testEnv() Env {
	return Env{
		Internal:  func(n string) bool { return n == "201" || n == "202" || n == "600" },
		Emergency: func(n string) bool { return n == "112" },
		External: func(as, number string) error {
			if as == "201" && number == "0301234567" {
				return nil
			}
			return errors.New("blocked (premium or class)")
		},
	}
}

func goodConfig() Config {
	return Config{
		Zone: "Europe/Berlin",
		TimeConditions: []TimeCondition{{Number: "700", Name: "office",
			Hours:    []Hours{{Days: []string{"mon", "tue", "wed", "thu", "fri"}, From: "08:00", To: "17:30"}},
			Holidays: []Holiday{{Name: "christmas", From: "2026-12-24", To: "2026-12-26"}},
			Open:     "800", Closed: "voicemail/201"}},
		Menus: []Menu{
			{Number: "800", Options: []Option{{Key: "1", Dest: "201"}, {Key: "2", Dest: "600"}, {Key: "9", Dest: "801"},
				{Key: "0", Dest: "external/201/0301234567"}}, Fallback: "202"},
			{Number: "801", Options: []Option{{Key: "*", Dest: "800"}}, Timeout: 10, Repeats: 2},
		},
	}
}

// TestValidate: each refusal names its field.
func TestValidate(t *testing.T) {
	if err := goodConfig().Validate(testEnv()); err != nil {
		t.Fatalf("good config: %v", err)
	}
	cases := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"bad zone", func(c *Config) { c.Zone = "Mars/Olympus" }, "/zone"},
		{"zone path", func(c *Config) { c.TimeConditions[0].Zone = "../../etc/passwd" }, "/time_conditions/0/zone"},
		{"number taken by extension", func(c *Config) { c.Menus[0].Number = "201" }, "/menus/0/number"},
		{"number taken by group", func(c *Config) { c.TimeConditions[0].Number = "600" }, "/time_conditions/0/number"},
		{"number twice", func(c *Config) { c.Menus[1].Number = "700" }, "/menus/1/number"},
		{"emergency number", func(c *Config) { c.Menus[1].Number = "112" }, "/menus/1/number"},
		{"not digits", func(c *Config) { c.Menus[0].Number = "8a0" }, "/menus/0/number"},
		{"unknown day", func(c *Config) { c.TimeConditions[0].Hours[0].Days[2] = "wednesday" }, "/time_conditions/0/hours/0/days/2"},
		{"day twice", func(c *Config) { c.TimeConditions[0].Hours[0].Days[1] = "mon" }, "/time_conditions/0/hours/0/days/1"},
		{"no days", func(c *Config) { c.TimeConditions[0].Hours[0].Days = nil }, "/time_conditions/0/hours/0/days"},
		{"bad from", func(c *Config) { c.TimeConditions[0].Hours[0].From = "8:00" }, "/time_conditions/0/hours/0/from"},
		{"from 24:00", func(c *Config) { c.TimeConditions[0].Hours[0].From = "24:00" }, "/time_conditions/0/hours/0/from"},
		{"to 24:30", func(c *Config) { c.TimeConditions[0].Hours[0].To = "24:30" }, "/time_conditions/0/hours/0/to"},
		{"to before from", func(c *Config) { c.TimeConditions[0].Hours[0].To = "07:00" }, "/time_conditions/0/hours/0/to"},
		{"bad holiday", func(c *Config) { c.TimeConditions[0].Holidays[0].From = "24.12.2026" }, "/time_conditions/0/holidays/0/from"},
		{"holiday backwards", func(c *Config) { c.TimeConditions[0].Holidays[0].To = "2026-12-01" }, "/time_conditions/0/holidays/0/to"},
		{"holiday name control", func(c *Config) { c.TimeConditions[0].Holidays[0].Name = "x\x00y" }, "/time_conditions/0/holidays/0/name"},
		{"no open", func(c *Config) { c.TimeConditions[0].Open = "" }, "/time_conditions/0/open"},
		{"unknown closed", func(c *Config) { c.TimeConditions[0].Closed = "999" }, "/time_conditions/0/closed"},
		{"voicemail of nobody", func(c *Config) { c.TimeConditions[0].Closed = "voicemail/999" }, "/time_conditions/0/closed"},
		{"bad key", func(c *Config) { c.Menus[0].Options[0].Key = "12" }, "/menus/0/options/0/key"},
		{"key twice", func(c *Config) { c.Menus[0].Options[1].Key = "1" }, "/menus/0/options/1/key"},
		{"dial any number", func(c *Config) { c.Menus[0].Options[0].Dest = "0049*" }, "/menus/0/options/0/dest"},
		{"external by class", func(c *Config) { c.Menus[0].Options[3].Dest = "external/201/09001234567" }, "/menus/0/options/3/dest"},
		{"external paid by nobody", func(c *Config) { c.Menus[0].Options[3].Dest = "external/999/0301234567" }, "/menus/0/options/3/dest"},
		{"external without form", func(c *Config) { c.Menus[0].Options[3].Dest = "0301234567" }, "/menus/0/options/3/dest"},
		{"timeout", func(c *Config) { c.Menus[1].Timeout = 61 }, "/menus/1/timeout"},
		{"repeats", func(c *Config) { c.Menus[1].Repeats = -1 }, "/menus/1/repeats"},
		{"prompt", func(c *Config) { c.Menus[1].Prompt = "../x" }, "/menus/1/prompt"},
		{"lang", func(c *Config) { c.Menus[1].Lang = "english" }, "/menus/1/lang"},
		{"fallback", func(c *Config) { c.Menus[0].Fallback = "voicemail/" }, "/menus/0/fallback"},
		{"on_invalid", func(c *Config) { c.Menus[0].OnInvalid = "1234" }, "/menus/0/on_invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := goodConfig().Clone()
			tc.edit(&c)
			err := c.Validate(testEnv())
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrConfig) || fe.Field != tc.field {
				t.Fatalf("got %v, want a refusal of %s", err, tc.field)
			}
		})
	}
	// Without an External check, no external destination is accepted.
	env := testEnv()
	env.External = nil
	if err := goodConfig().Validate(env); err == nil {
		t.Fatal("external destination accepted without a check")
	}
}

func at(t *testing.T, loc *time.Location, s string) time.Time {
	t.Helper()
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestOpenAcrossDST: hours are local wall-clock times on both sides of
// Berlin's DST changes (UTC+1 to UTC+2 on 2026-03-29, back on
// 2026-10-25), holidays are dates in the zone, and the box's zone applies
// when the condition names none.
func TestOpenAcrossDST(t *testing.T) {
	c := goodConfig()
	tc := c.TimeConditions[0]
	tc.Hours = append(tc.Hours, Hours{Days: []string{"sun"}, From: "02:00", To: "04:00"})
	berlin, err := LoadZone("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	utc := func(s string) time.Time { return at(t, time.UTC, s) }
	cases := []struct {
		now  time.Time
		open bool
	}{
		{utc("2026-03-27 06:59"), false}, // Fri 07:59 CET
		{utc("2026-03-27 07:00"), true},  // Fri 08:00 CET
		{utc("2026-03-27 16:29"), true},  // Fri 17:29 CET
		{utc("2026-03-27 16:30"), false}, // Fri 17:30 CET
		{utc("2026-03-30 05:59"), false}, // Mon 07:59 CEST: the same UTC hour was open on Friday
		{utc("2026-03-30 06:00"), true},  // Mon 08:00 CEST
		{utc("2026-03-30 15:29"), true},  // Mon 17:29 CEST
		{utc("2026-03-30 15:30"), false}, // Mon 17:30 CEST
		{utc("2026-03-29 00:59"), false}, // Sun 01:59 CET
		{utc("2026-03-29 01:00"), true},  // Sun 03:00 CEST: 02:00-03:00 does not exist that night
		{utc("2026-03-29 01:59"), true},  // Sun 03:59 CEST
		{utc("2026-03-29 02:00"), false}, // Sun 04:00 CEST
		{utc("2026-10-25 00:00"), true},  // Sun 02:00 CEST (first pass)
		{utc("2026-10-25 01:30"), true},  // Sun 02:30 CET (second pass)
		{utc("2026-10-25 03:00"), false}, // Sun 04:00 CET
		{utc("2026-10-26 06:59"), false}, // Mon 07:59 CET
		{utc("2026-10-26 07:00"), true},  // Mon 08:00 CET
		{utc("2026-12-23 16:00"), true},  // Wed 17:00 CET
		{utc("2026-12-23 23:00"), false}, // Thu 00:00 CET, Christmas Eve
		{utc("2026-12-24 10:00"), false}, // holiday
		{utc("2026-12-28 10:00"), true},  // Mon after the holidays
	}
	for _, k := range cases {
		if got := tc.IsOpen(k.now, c.Location(tc, nil)); got != k.open {
			t.Errorf("%s (%s): open %v, want %v", k.now.Format(time.RFC3339), k.now.In(berlin).Format("Mon 15:04 MST"), got, k.open)
		}
	}
	// Zone resolution: condition, configuration, box, UTC.
	ny, _ := LoadZone("America/New_York")
	if loc := (Config{}).Location(TimeCondition{}, ny); loc != ny {
		t.Errorf("box zone not used: %v", loc)
	}
	if loc := (Config{}).Location(TimeCondition{}, nil); loc != time.UTC {
		t.Errorf("no zone: %v", loc)
	}
	if loc := (Config{Zone: "Europe/Berlin"}).Location(TimeCondition{Zone: "America/New_York"}, time.UTC); loc.String() != "America/New_York" {
		t.Errorf("condition zone not used: %v", loc)
	}
}

// baseRouter is a dial plan in front of which the IVR router sits: it
// routes numbers like extensions, and external numbers of 201 over itsp.
type baseRouter struct{ outbound []string }

func (b *baseRouter) RouteOutbound(from, dialled string) (dialplan.Decision, *dialplan.Lease, error) {
	if strings.HasPrefix(dialled, "0") {
		b.outbound = append(b.outbound, from+">"+dialled)
		if from != "201" {
			return dialplan.Decision{}, nil, dialplan.ErrBlocked
		}
		return dialplan.Decision{Kind: dialplan.KindOutbound, Trunk: "itsp", Target: dialled}, nil, nil
	}
	return dialplan.Decision{Kind: dialplan.KindInternal, Target: dialled}, nil, nil
}

func (b *baseRouter) RouteInbound(trunk, called string) (dialplan.Decision, *dialplan.Lease, error) {
	return dialplan.Decision{Kind: dialplan.KindInbound, Trunk: trunk, Target: called}, nil, nil
}

// TestRouterClock: a DID to a time condition goes to its menu in office
// hours and to voicemail after, by the injected clock; a menu's number is
// the IVR; loops of conditions end.
func TestRouterClock(t *testing.T) {
	c := goodConfig()
	c.TimeConditions = append(c.TimeConditions,
		TimeCondition{Number: "701", Hours: []Hours{{Days: []string{"mon"}, From: "00:00", To: "24:00"}}, Open: "702", Closed: "external/201/0301234567"},
		TimeCondition{Number: "702", Hours: []Hours{{Days: []string{"mon"}, From: "00:00", To: "24:00"}}, Open: "701", Closed: "201"})
	now := at(t, time.UTC, "2026-03-30 07:00") // Mon 09:00 CEST
	base := &baseRouter{}
	r := &Router{Next: base, Conf: func() Config { return c }, Now: func() time.Time { return now }}
	for _, k := range []struct {
		now    time.Time
		called string
		kind   dialplan.Kind
		target string
		err    bool
	}{
		{now, "700", dialplan.KindApp, "ivr/800", false},
		{at(t, time.UTC, "2026-03-30 17:00"), "700", dialplan.KindApp, "voicemail/201", false},
		{now, "801", dialplan.KindApp, "ivr/801", false},
		{now, "201", dialplan.KindInbound, "201", false},
		{now, "701", "", "", true}, // 701 -> 702 -> 701 ...
		{at(t, time.UTC, "2026-03-31 07:00"), "701", dialplan.KindOutbound, "0301234567", false},
	} {
		now = k.now
		d, _, err := r.RouteInbound("itsp", k.called)
		if (err != nil) != k.err || d.Kind != k.kind || d.Target != k.target {
			t.Errorf("%s at %s: %+v %v, want %s %s", k.called, k.now, d, err, k.kind, k.target)
		}
	}
	if got := strings.Join(base.outbound, " "); got != "201>0301234567" {
		t.Errorf("outbound routed %q: want only the configured number, as 201", got)
	}
}

// FuzzConfig: any JSON the admin API may send decodes and validates
// without panicking, and an accepted configuration evaluates and
// resolves without panicking either.
func FuzzConfig(f *testing.F) {
	good, _ := json.Marshal(goodConfig())
	f.Add(good)
	f.Add([]byte(`{"time_conditions":[{"number":"1","hours":[{"days":["mon"],"from":"24:00","to":"00:00"}],"open":"1","closed":"1"}]}`))
	f.Add([]byte(`{"menus":[{"number":"9","options":[{"key":"#","dest":"external/1/+"}],"timeout":-5}]}`))
	env := testEnv()
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Config
		if err := json.Unmarshal(b, &c); err != nil {
			return
		}
		err := c.Validate(env)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" || !strings.HasPrefix(fe.Field, "/") {
				t.Fatalf("refusal without a field: %v", err)
			}
			return
		}
		for _, tc := range c.TimeConditions {
			for _, s := range []string{tc.Open, tc.Closed} {
				if _, err := ParseDest(s); err != nil {
					t.Fatalf("accepted destination %q does not parse", s)
				}
			}
			_ = c.Resolve(tc, time.Unix(1_790_000_000, 0), nil)
		}
		r := &Router{Next: &baseRouter{}, Conf: func() Config { return c }}
		for _, n := range c.Numbers() {
			if _, _, err := r.RouteInbound("itsp", n); err != nil && !errors.Is(err, dialplan.ErrNoRoute) {
				t.Fatalf("route %s: %v", n, err)
			}
		}
	})
}

// FuzzParseDest: destinations parse into exactly one form, never into
// something typed keys could extend.
func FuzzParseDest(f *testing.F) {
	for _, s := range []string{"201", "voicemail/201", "external/201/+4930123", "external//", "voicemail/", "0049*1#"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDest(s)
		if err != nil {
			return
		}
		var back string
		switch {
		case d.Voicemail:
			back = "voicemail/" + d.Number
		case d.External != "":
			back = fmt.Sprintf("external/%s/%s", d.As, d.External)
		default:
			back = d.Number
		}
		if back != s {
			t.Fatalf("%q parsed as %+v", s, d)
		}
	})
}
