// Package ivr holds the box's auto-attendant: menus (prompt, key to
// destination, timeout, invalid key, repeats, final fallback) and time
// conditions (weekly business hours and holidays in a named time zone),
// as one model shared by DIDs, the dial plan and the menus themselves.
//
// Menus and time conditions have numbers like extensions: a DID, a dialled
// number, a ring group's fallback or a menu key names them the same way.
// Destinations are internal unless the admin names one external number
// explicitly, charged to an extension whose class of service allows it
// (checked when the configuration is saved, like forwards). Keys typed in
// a menu only choose among the configured options: they are never dialled.
package ivr

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrConfig wraps every validation failure (a *FieldError).
var ErrConfig = errors.New("ivr configuration invalid")

// FieldError refuses one field of Config. Field is a JSON pointer
// (RFC 6901) relative to the ivr object ("/menus/0/options/1/dest").
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }

// Unwrap makes every FieldError an ErrConfig.
func (e *FieldError) Unwrap() error { return ErrConfig }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, a...)}
}

// Config is the admin's IVR part of the telephony configuration.
type Config struct {
	// Zone is the IANA time zone of time conditions that name none;
	// "": the box's zone.
	Zone           string          `json:"zone,omitempty"`
	TimeConditions []TimeCondition `json:"time_conditions,omitempty"`
	Menus          []Menu          `json:"menus,omitempty"`
}

// TimeCondition routes to Open during its hours (and not on a holiday),
// to Closed otherwise.
type TimeCondition struct {
	Number string `json:"number"`
	Name   string `json:"name,omitempty"`
	// Zone overrides Config.Zone for this condition.
	Zone     string    `json:"zone,omitempty"`
	Hours    []Hours   `json:"hours"`
	Holidays []Holiday `json:"holidays,omitempty"`
	Open     string    `json:"open"`
	Closed   string    `json:"closed"`
}

// Hours is one weekly range: on Days, from From to To (local wall clock,
// "HH:MM", To after From; "24:00" is the end of the day).
type Hours struct {
	Days []string `json:"days"` // mon tue wed thu fri sat sun
	From string   `json:"from"`
	To   string   `json:"to"`
}

// Holiday is a closed date or range of dates (inclusive), in the
// condition's zone.
type Holiday struct {
	Name string `json:"name,omitempty"`
	From string `json:"from"`         // YYYY-MM-DD
	To   string `json:"to,omitempty"` // YYYY-MM-DD; "": From only
}

// Menu is one auto-attendant menu.
type Menu struct {
	Number string `json:"number"`
	Name   string `json:"name,omitempty"`
	// Prompt is a prompt of the library (firmware/mediaserver/prompts,
	// admin-uploadable per language); "": the default menu prompt.
	Prompt string `json:"prompt,omitempty"`
	Lang   string `json:"lang,omitempty"` // "": en
	// Options map one key each to a destination.
	Options []Option `json:"options"`
	// Timeout is how long the menu waits for a key after its prompt, in
	// seconds (0: DefaultTimeout).
	Timeout int `json:"timeout,omitempty"`
	// Repeats is how often the prompt is played before Fallback
	// (0: DefaultRepeats).
	Repeats int `json:"repeats,omitempty"`
	// OnTimeout and OnInvalid, when set, are where the call goes at once
	// when no key came or a key without option; "": the invalid prompt
	// (for a key) and the menu again.
	OnTimeout string `json:"on_timeout,omitempty"`
	OnInvalid string `json:"on_invalid,omitempty"`
	// Fallback is where the call goes once the repeats are used up;
	// "": goodbye and hang up.
	Fallback string `json:"fallback,omitempty"`
}

// Option is one key of a menu.
type Option struct {
	Key  string `json:"key"` // one of 0-9 * #
	Dest string `json:"dest"`
}

// Defaults and bounds.
const (
	DefaultTimeout = 5
	MaxTimeout     = 60
	DefaultRepeats = 3
	MaxRepeats     = 10
	maxMenus       = 256
	maxConditions  = 256
	maxHours       = 32
	maxHolidays    = 366
	maxName        = 64
	maxNumber      = 32
	// MaxHops bounds the menus and conditions one call passes through
	// (menus may lead back to each other).
	MaxHops = 16
)

// Destination forms (besides a plain internal number).
const (
	voicemailPrefix = "voicemail/"
	externalPrefix  = "external/" // external/<extension>/<number>
)

// Dest is a parsed destination.
type Dest struct {
	// Number is an internal number (extension, ring group, menu, time
	// condition) or, with Voicemail, the mailbox's extension.
	Number    string
	Voicemail bool
	// External is the external number, called as extension As.
	External string
	As       string
}

// ParseDest parses a destination string (no semantic checks).
func ParseDest(s string) (Dest, error) {
	switch {
	case strings.HasPrefix(s, voicemailPrefix):
		ext := s[len(voicemailPrefix):]
		if !digits(ext) {
			return Dest{}, fmt.Errorf("voicemail/<extension>: %q is not an extension number", ext)
		}
		return Dest{Number: ext, Voicemail: true}, nil
	case strings.HasPrefix(s, externalPrefix):
		as, num, ok := strings.Cut(s[len(externalPrefix):], "/")
		if !ok || !digits(as) || !externalNumber(num) {
			return Dest{}, fmt.Errorf("external/<extension>/<number>: want the extension that pays for the call and a number (digits, optional leading +)")
		}
		return Dest{External: num, As: as}, nil
	case digits(s):
		return Dest{Number: s}, nil
	}
	return Dest{}, fmt.Errorf("%q: want an internal number, voicemail/<extension> or external/<extension>/<number>", clip(s))
}

// Env is what validation checks destinations against.
type Env struct {
	// Internal says whether n is an extension or a ring group (numbers
	// the dial plan routes internally besides menus and conditions).
	Internal func(n string) bool
	// Emergency says whether n is an emergency number (never a menu's
	// or condition's number).
	Emergency func(n string) bool
	// External decides whether extension as may call number (class of
	// service, route, no premium or emergency); nil: every external
	// destination is refused.
	External func(as, number string) error
}

// Validate reports the first problem as a *FieldError.
func (c Config) Validate(env Env) error {
	if c.Zone != "" {
		if _, err := LoadZone(c.Zone); err != nil {
			return fieldErr("/zone", "%v", err)
		}
	}
	if len(c.TimeConditions) > maxConditions {
		return fieldErr("/time_conditions", "more than %d time conditions", maxConditions)
	}
	if len(c.Menus) > maxMenus {
		return fieldErr("/menus", "more than %d menus", maxMenus)
	}
	own := map[string]string{} // number -> field of its owner
	number := func(field, n string) error {
		switch {
		case !digits(n):
			return fieldErr(field, "%q: digits only, at most %d", clip(n), maxNumber)
		case own[n] != "":
			return fieldErr(field, "%s is already the number of %s", n, own[n])
		case env.Internal != nil && env.Internal(n):
			return fieldErr(field, "%s is already an extension or a ring group", n)
		case env.Emergency != nil && env.Emergency(n):
			return fieldErr(field, "%s is an emergency number", n)
		}
		own[n] = field
		return nil
	}
	for i, t := range c.TimeConditions {
		if err := number(fmt.Sprintf("/time_conditions/%d/number", i), t.Number); err != nil {
			return err
		}
	}
	for i, m := range c.Menus {
		if err := number(fmt.Sprintf("/menus/%d/number", i), m.Number); err != nil {
			return err
		}
	}
	dest := func(field, s string, optional bool) error {
		if s == "" {
			if optional {
				return nil
			}
			return fieldErr(field, "a destination is required")
		}
		d, err := ParseDest(s)
		if err != nil {
			return fieldErr(field, "%v", err)
		}
		switch {
		case d.External != "":
			if env.External == nil {
				return fieldErr(field, "external destinations are not allowed here")
			}
			if env.Internal == nil || !env.Internal(d.As) {
				return fieldErr(field, "%s is not an extension", d.As)
			}
			if err := env.External(d.As, d.External); err != nil {
				return fieldErr(field, "extension %s may not call %s: %v", d.As, d.External, err)
			}
		case d.Voicemail:
			if env.Internal == nil || !env.Internal(d.Number) {
				return fieldErr(field, "voicemail of %s: not an extension", d.Number)
			}
		default:
			if own[d.Number] == "" && (env.Internal == nil || !env.Internal(d.Number)) {
				return fieldErr(field, "%s is not an extension, ring group, menu or time condition", d.Number)
			}
		}
		return nil
	}
	text := func(field, s string) error {
		if len(s) > maxName || strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return fieldErr(field, "at most %d characters, no control characters", maxName)
		}
		return nil
	}
	for i, t := range c.TimeConditions {
		p := fmt.Sprintf("/time_conditions/%d", i)
		if err := text(p+"/name", t.Name); err != nil {
			return err
		}
		if t.Zone != "" {
			if _, err := LoadZone(t.Zone); err != nil {
				return fieldErr(p+"/zone", "%v", err)
			}
		}
		if len(t.Hours) > maxHours {
			return fieldErr(p+"/hours", "more than %d ranges", maxHours)
		}
		for j, h := range t.Hours {
			hp := fmt.Sprintf("%s/hours/%d", p, j)
			if len(h.Days) == 0 || len(h.Days) > 7 {
				return fieldErr(hp+"/days", "1-7 days (mon tue wed thu fri sat sun)")
			}
			for k, d := range h.Days {
				if _, ok := weekday(d); !ok || slices.Contains(h.Days[:k], d) {
					return fieldErr(fmt.Sprintf("%s/days/%d", hp, k), "%q: mon, tue, wed, thu, fri, sat or sun, once each", clip(d))
				}
			}
			from, err := clock(h.From)
			if err != nil || from == 24*60 {
				return fieldErr(hp+"/from", "%q: want HH:MM from 00:00 to 23:59", clip(h.From))
			}
			to, err := clock(h.To)
			if err != nil {
				return fieldErr(hp+"/to", "%q: want HH:MM up to 24:00", clip(h.To))
			}
			if to <= from {
				return fieldErr(hp+"/to", "%s is not after %s (split a range across midnight in two)", h.To, h.From)
			}
		}
		if len(t.Holidays) > maxHolidays {
			return fieldErr(p+"/holidays", "more than %d holidays", maxHolidays)
		}
		for j, h := range t.Holidays {
			hp := fmt.Sprintf("%s/holidays/%d", p, j)
			if err := text(hp+"/name", h.Name); err != nil {
				return err
			}
			from, err := time.Parse(time.DateOnly, h.From)
			if err != nil {
				return fieldErr(hp+"/from", "%q: want YYYY-MM-DD", clip(h.From))
			}
			if h.To != "" {
				to, err := time.Parse(time.DateOnly, h.To)
				if err != nil {
					return fieldErr(hp+"/to", "%q: want YYYY-MM-DD", clip(h.To))
				}
				if to.Before(from) || to.Sub(from) > 366*24*time.Hour {
					return fieldErr(hp+"/to", "%s: on or after %s, within a year", h.To, h.From)
				}
			}
		}
		if err := dest(p+"/open", t.Open, false); err != nil {
			return err
		}
		if err := dest(p+"/closed", t.Closed, false); err != nil {
			return err
		}
	}
	for i, m := range c.Menus {
		p := fmt.Sprintf("/menus/%d", i)
		if err := text(p+"/name", m.Name); err != nil {
			return err
		}
		if m.Prompt != "" && !promptName(m.Prompt) {
			return fieldErr(p+"/prompt", "%q: a prompt name of the library", clip(m.Prompt))
		}
		if m.Lang != "" && !langTag(m.Lang) {
			return fieldErr(p+"/lang", "%q: a language such as en or de-CH", clip(m.Lang))
		}
		if m.Timeout < 0 || m.Timeout > MaxTimeout {
			return fieldErr(p+"/timeout", "%d s: want 1-%d (0: %d)", m.Timeout, MaxTimeout, DefaultTimeout)
		}
		if m.Repeats < 0 || m.Repeats > MaxRepeats {
			return fieldErr(p+"/repeats", "%d: want 1-%d (0: %d)", m.Repeats, MaxRepeats, DefaultRepeats)
		}
		if len(m.Options) > 12 {
			return fieldErr(p+"/options", "at most 12 options (one per key)")
		}
		for j, o := range m.Options {
			op := fmt.Sprintf("%s/options/%d", p, j)
			if len(o.Key) != 1 || !strings.Contains("0123456789*#", o.Key) {
				return fieldErr(op+"/key", "%q: one of 0-9, * or #", clip(o.Key))
			}
			if slices.ContainsFunc(m.Options[:j], func(x Option) bool { return x.Key == o.Key }) {
				return fieldErr(op+"/key", "key %s listed twice", o.Key)
			}
			if err := dest(op+"/dest", o.Dest, false); err != nil {
				return err
			}
		}
		for _, f := range []struct{ name, v string }{{"on_timeout", m.OnTimeout}, {"on_invalid", m.OnInvalid}, {"fallback", m.Fallback}} {
			if err := dest(p+"/"+f.name, f.v, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// Menu returns the menu with number n.
func (c Config) Menu(n string) (Menu, bool) {
	i := slices.IndexFunc(c.Menus, func(m Menu) bool { return m.Number == n })
	if i < 0 {
		return Menu{}, false
	}
	return c.Menus[i], true
}

// TimeCondition returns the time condition with number n.
func (c Config) TimeCondition(n string) (TimeCondition, bool) {
	i := slices.IndexFunc(c.TimeConditions, func(t TimeCondition) bool { return t.Number == n })
	if i < 0 {
		return TimeCondition{}, false
	}
	return c.TimeConditions[i], true
}

// Numbers lists the menus' and conditions' numbers (the dial plan routes
// them like extensions).
func (c Config) Numbers() []string {
	out := make([]string, 0, len(c.Menus)+len(c.TimeConditions))
	for _, t := range c.TimeConditions {
		out = append(out, t.Number)
	}
	for _, m := range c.Menus {
		out = append(out, m.Number)
	}
	return out
}

// Clone copies c deeply.
func (c Config) Clone() Config {
	c.TimeConditions = slices.Clone(c.TimeConditions)
	for i := range c.TimeConditions {
		t := &c.TimeConditions[i]
		t.Hours = slices.Clone(t.Hours)
		for j := range t.Hours {
			t.Hours[j].Days = slices.Clone(t.Hours[j].Days)
		}
		t.Holidays = slices.Clone(t.Holidays)
	}
	c.Menus = slices.Clone(c.Menus)
	for i := range c.Menus {
		c.Menus[i].Options = slices.Clone(c.Menus[i].Options)
	}
	return c
}

func digits(s string) bool {
	if s == "" || len(s) > maxNumber {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func externalNumber(s string) bool { return digits(strings.TrimPrefix(s, "+")) }

func promptName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func langTag(s string) bool {
	a, b, ok := strings.Cut(s, "-")
	lower := func(s string) bool { return strings.Trim(s, "abcdefghijklmnopqrstuvwxyz") == "" }
	upper := func(s string) bool { return strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == "" }
	return len(a) >= 2 && len(a) <= 3 && lower(a) && (!ok || len(b) == 2 && upper(b))
}

// clip bounds untrusted text quoted in an error.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
