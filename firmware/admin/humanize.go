package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/privacy"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/netconf/netspec"
	"github.com/edgepbx/edgepbx/init/strictjson"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Refusals reach the admin as chains of wrapped errors ("bad request:
// malformed JSON: netip.ParsePrefix(...)", "control: request refused:
// SetPolicy: invalid firewall policy: ..."). The UI shows a person one
// sentence next to the field it is about; humanize makes that sentence
// from the typed errors and drops the plumbing.

// plumbing are the prefixes of wrapped errors that say where an error went
// through, not what is wrong.
var plumbing = []string{
	errBadRequest.Error() + ": ", "malformed JSON: ", errPolicyRefused.Error() + ": ", errNetworkRefused.Error() + ": ",
	control.ErrRemote.Error() + ": ", "invalid firewall policy: ", "invalid policy: ", "invalid: ",
	errTelephonyRefused.Error() + ": ", "telephony configuration invalid: ", "dialplan: ", "invalid metrics settings: ",
	"invalid syslog settings: ", errSIPRefused.Error() + ": ", "sip settings invalid: ", "sip: ", "cdr: ", privacy.ErrPolicy.Error() + ": ", privacy.ErrSubject.Error() + ": ", errConflict.Error() + ": ", errNotFound.Error() + ": ", errUnavailable.Error() + ": ",
}

// plumbingLines are joined errors (errors.Join) that only classify.
var plumbingLines = []string{errBadRequest.Error(), errNotFound.Error(), errConflict.Error(), errBadOrigin.Error()}

// opPrefix is a control request type or Go call naming itself ("SetPolicy: ").
var opPrefix = regexp.MustCompile(`^[A-Z][A-Za-z]+: `)

// netipErr is a netip parse error: the function, the value and the reason.
// (Addr's and Prefix's UnmarshalText leave out the package name).
var netipErr = regexp.MustCompile(`(?:netip\.)?Parse(Prefix|Addr|AddrPort)\(("(?:[^"\\]|\\.)*")\): ?(.*)$`)

// fieldError ties a handler's refusal to the request field it is about.
type fieldError struct {
	ptr string // JSON pointer into the request body
	err error
}

func (e *fieldError) Error() string { return e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

// withField marks err as being about the field at JSON pointer ptr.
func withField(ptr string, err error) error { return &fieldError{ptr: ptr, err: err} }

// sentinelFields names the request field of the auth package's refusals
// (its requests spell them the same way everywhere but the password
// change, see writeError).
var sentinelFields = []struct {
	err error
	ptr string
}{
	{auth.ErrBadUsername, "/username"}, {auth.ErrBadRole, "/role"}, {auth.ErrReauth, "/current_password"},
	{auth.ErrWrongCurrentPassword, "/current_password"},
	{auth.ErrPasswordEmpty, "/password"}, {auth.ErrPasswordShort, "/password"}, {auth.ErrPasswordLong, "/password"},
	{auth.ErrPasswordWeak, "/password"}, {auth.ErrPasswordUsername, "/password"}, {auth.ErrPasswordCommon, "/password"},
	{auth.ErrPasswordRepetitive, "/password"}, {auth.ErrPasswordInvalidUTF8, "/password"},
}

// humanize returns the sentence to show for err and the JSON pointer of the
// field it is about ("" when none is known).
func humanize(err error) (detail, field string) {
	msg, field := humanizeRaw(err)
	return inWords(msg, field), field
}

func humanizeRaw(err error) (detail, field string) {
	var (
		xe *fieldError
		fe *fwspec.FieldError
		ne *netspec.FieldError
		re *control.RemoteError
		se *strictjson.Error
		de *net.DNSError
	)
	switch {
	case errors.As(err, &xe):
		return sentence(xe.Error()), xe.ptr
	case errors.As(err, &fe):
		return sentence(fe.Reason), pointer(fe.Field)
	case errors.As(err, &ne):
		return sentence(ne.Reason), pointer(ne.Field)
	case errors.As(err, &re):
		msg := re.Message
		if re.Field != "" {
			msg = strings.TrimPrefix(msg, re.Field+": ")
			field = pointer(re.Field)
		}
		return sentence(msg), field
	case errors.As(err, &de):
		return dnsSentence(de), ""
	case errors.As(err, &se):
		return sentence(se.Error()), se.Pointer
	}
	for _, sf := range sentinelFields {
		if errors.Is(err, sf.err) {
			return sentence(err.Error()), sf.ptr
		}
	}
	msg := sentence(err.Error())
	// "networks[0]: ..." or "guard.rate_limit: ...": a path names the field.
	if m := pathFirst.FindStringSubmatch(msg); m != nil {
		return sentence(m[2]), pointer(m[1])
	}
	// "tls_min: ..." or "guard: ...": a key and a colon.
	if m := keyColon.FindStringSubmatch(msg); m != nil {
		return sentence(m[2]), "/" + m[1]
	}
	// "min_length must be ...": a request key first names the field.
	if m := keyFirst.FindStringSubmatch(msg); m != nil {
		return sentence(m[2]), "/" + strings.ToLower(m[1])
	}
	// "address must be host:port": a one-word key, then what it must be.
	if m := wordFirst.FindStringSubmatch(msg); m != nil {
		return sentence(msg), "/" + m[1]
	}
	return msg, ""
}

// keyFirst is a message that starts with a JSON key (snake_case).
var keyFirst = regexp.MustCompile(`^([A-Za-z][a-z0-9]*(?:_[a-z0-9]+)+) (.+)$`)

// keyColon is a message that starts with a bare key (snake_case, or a
// word the SIP settings use alone) and a colon.
var keyColon = regexp.MustCompile(`^([a-z][a-z0-9]*(?:_[a-z0-9]+)+|guard|days): (.+)$`)

// pathFirst is a message that starts with a field path and a colon.
var pathFirst = regexp.MustCompile(`^([a-z][a-z0-9_]*(?:\[\d+\]|\.[a-z][a-z0-9_]*)+): (.+)$`)

// wordFirst is a message that starts with a one-word key and a rule.
var wordFirst = regexp.MustCompile(`^(address|prefix|password|username|role|transport|facility|origins?|hostname|networks|days) (?:must|is|are|needs) `)

// elementLead is the part of a validation message that says which
// element it is about ("trunk itsp: ", "route \"00\": "): the field
// pointer and its label say that already.
var elementLead = regexp.MustCompile(`^(?:trunk|route|DID|extension|zone|rule) (?:"(?:[^"\\]|\\.)*"|[^\s:"]*)?: `)

// collection labels a list by one of its elements; key labels a field.
var (
	collection = map[string]string{"trunks": "trunk", "routes": "route", "dids": "DID", "extensions": "extension",
		"peers": "source network", "zones": "zone", "prefixes": "network", "rules": "rule", "networks": "network",
		"origins": "origin", "interfaces": "interface", "addresses": "address", "dns": "DNS server", "vlans": "VLAN",
		"ntp": "NTP server", "premium_prefixes": "premium prefix", "emergency": "emergency number",
		"default_classes": "class", "classes": "class", "allowed_zones": "SIP network", "allowlist": "allowlist network",
		"scanner_user_agents": "scanner User-Agent", "feature_codes": "feature code", "totp_roles": "role", "algorithms": "digest algorithm"}
	key = map[string]string{"min_length": "minimum password length", "max_age_days": "password lifetime",
		"gateway4": "IPv4 gateway", "gateway6": "IPv6 gateway", "hostname": "host name", "time_zone": "time zone",
		"username": "user name", "current_password": "current password", "current_code": "second-factor code",
		"new_password": "new password", "user": "extension", "id": "ID", "ca_pem": "CA certificates",
		"address": "collector address", "caller_id": "caller ID", "srtp": "SRTP", "emergency_trunk": "emergency trunk",
		"burst_attempts": "burst attempts", "allowed_zones": "networks allowed to speak SIP",
		"tls_min": "lowest TLS version", "tls_max": "highest TLS version", "guard": "flood and brute-force settings", "max_concurrent": "concurrent calls", "max_per_hour": "calls per hour"}
)

// fieldLabel names the field at JSON pointer (or query parameter) ptr in
// words: "/trunks/0/host" is "trunk 1, host"; the second result is the
// label of its last part alone ("host"), the third that part's key.
func fieldLabel(ptr string) (full, last, raw string) {
	parts := strings.Split(strings.TrimPrefix(ptr, "/"), "/")
	var words []string
	for i := 0; i < len(parts); i++ {
		k := strings.NewReplacer("~1", "/", "~0", "~").Replace(parts[i])
		if i+1 < len(parts) {
			if n, err := strconv.Atoi(parts[i+1]); err == nil {
				el, ok := collection[k]
				if !ok {
					el = strings.TrimSuffix(strings.ReplaceAll(k, "_", " "), "s")
				}
				last, raw = el, strings.ReplaceAll(k, "_", " ")
				words = append(words, el+" "+strconv.Itoa(n+1))
				i++
				continue
			}
		}
		l, ok := key[k]
		if !ok {
			l = strings.ReplaceAll(k, "_", " ")
		}
		last, raw = l, strings.ReplaceAll(k, "_", " ")
		words = append(words, l)
	}
	return strings.Join(words, ", "), last, raw
}

// inWords is the one sentence a person sees: msg without plumbing and
// without the element lead-in, naming the field at ptr unless it does
// already. The case of its first letter is kept (clients match on the
// text; the pages capitalise it).
func inWords(msg, ptr string) string {
	msg = sentence(msg)
	if ptr != "" {
		if rest, ok := strings.CutPrefix(msg, elementLead.FindString(msg)); ok && rest != "" {
			msg = rest
		}
		if wantRule.MatchString(msg) {
			msg = wantRule.ReplaceAllString(strings.TrimPrefix(msg, "invalid "), `$1 is not valid: write $2`)
		}
		full, last, raw := fieldLabel(ptr)
		lower := strings.ToLower(msg)
		if last != "" && !strings.Contains(lower, strings.ToLower(last)) && !strings.Contains(lower, raw) {
			msg = full + ": " + msg
		}
	}
	return msg
}

// wantRule is a value and the rule it broke ("\"sctp\": want udp, tcp or tls").
var wantRule = regexp.MustCompile(`("(?:[^"\\]|\\.)*"): want (.+)$`)

func dnsSentence(de *net.DNSError) string {
	switch {
	case de.IsNotFound:
		return sentence(fmt.Sprintf("the name %q does not exist in DNS (check the spelling, or use an address)", de.Name))
	case de.IsTimeout:
		return sentence(fmt.Sprintf("no DNS server answered for %q: check the box's DNS servers on the System page", de.Name))
	}
	return sentence(fmt.Sprintf("the name %q could not be looked up: %s", de.Name, de.Err))
}

// sentence drops plumbing prefixes from msg, rewrites Go parse errors in
// words, and ends the sentence (its case is kept: it may start with a
// name).
func sentence(msg string) string {
	// errors.Join puts one error a line: keep those that say something.
	if strings.Contains(msg, "\n") {
		var keep []string
		for _, l := range strings.Split(msg, "\n") {
			if l = strings.TrimSpace(l); l != "" && !slices.Contains(plumbingLines, l) {
				keep = append(keep, l)
			}
		}
		msg = strings.Join(keep, "; ")
	}
	for changed := true; changed; {
		changed = false
		for _, p := range plumbing {
			if rest, ok := strings.CutPrefix(msg, p); ok {
				msg, changed = rest, true
			}
		}
		if m := opPrefix.FindString(msg); m != "" {
			msg, changed = msg[len(m):], true
		}
	}
	if m := netipErr.FindStringSubmatchIndex(msg); m != nil {
		kind, val := msg[m[2]:m[3]], msg[m[4]:m[5]]
		if v, err := strconv.Unquote(val); err == nil {
			val = strconv.Quote(v)
		}
		want := map[string]string{
			"Prefix":   "is not a network: write an address and a prefix length, such as 192.0.2.0/24 or 2001:db8::/48",
			"Addr":     "is not an IP address: write one such as 192.0.2.10 or 2001:db8::10",
			"AddrPort": "is not an address and port: write one such as 192.0.2.10:5060 or [2001:db8::10]:5060",
		}[kind]
		msg = msg[:m[0]] + val + " " + want
	}
	if m := unknownKey.FindStringSubmatch(msg); m != nil {
		msg = "unknown field " + m[1] + ": this form has no such field"
	}
	msg = strings.TrimSpace(msg)
	if msg == "" {
		return ""
	}
	if !strings.HasSuffix(msg, ".") && !strings.HasSuffix(msg, ")") {
		msg += "."
	}
	return msg
}

// unknownKey is the strict decoder's refusal of a key the request type
// does not have.
var unknownKey = regexp.MustCompile(`^field ("(?:[^"\\]|\\.)*"): unknown field$`)

// quotedValue is the value a netip parse error quotes, or "".
func quotedValue(err error) string {
	m := netipErr.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	v, uerr := strconv.Unquote(m[2])
	if uerr != nil {
		return ""
	}
	return v
}

// pointerOf finds the JSON pointer of the first string equal to val in
// body (bounded by the caller: at most maxBody bytes), or "".
func pointerOf(body []byte, val string) string {
	d := json.NewDecoder(bytes.NewReader(body))
	var v any
	if d.Decode(&v) != nil {
		return ""
	}
	p, _ := findString(v, val, "", 0)
	return p
}

func findString(v any, val, at string, depth int) (string, bool) {
	if depth > 32 {
		return "", false
	}
	switch x := v.(type) {
	case string:
		return at, x == val
	case []any:
		for i, e := range x {
			if p, ok := findString(e, val, at+"/"+strconv.Itoa(i), depth+1); ok {
				return p, true
			}
		}
	case map[string]any:
		// Object keys in a stable order, so the answer does not vary.
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			esc := strings.NewReplacer("~", "~0", "/", "~1").Replace(k)
			if p, ok := findString(x[k], val, at+"/"+esc, depth+1); ok {
				return p, true
			}
		}
	}
	return "", false
}

// policyRules map the firewall's validation messages to the field of the
// request they are about (netfw names rules and zones, not indexes).
var policyRules = []struct {
	re      *regexp.Regexp
	resolve func(a fwspec.Access, m []string) string
}{
	{regexp.MustCompile(`rule names unknown service ("(?:[^"\\]|\\.)*")`), func(a fwspec.Access, m []string) string {
		i := slices.IndexFunc(a.Rules, func(r fwspec.Rule) bool { return r.Service == unq(m[1]) })
		return fmt.Sprintf("/rules/%d/service", i)
	}},
	{regexp.MustCompile(`rule for ("(?:[^"\\]|\\.)*")(?::| names unknown zone ("(?:[^"\\]|\\.)*"))`), func(a fwspec.Access, m []string) string {
		i := slices.IndexFunc(a.Rules, func(r fwspec.Rule) bool { return r.Service == unq(m[1]) })
		if m[2] == "" || i < 0 {
			return fmt.Sprintf("/rules/%d/zones", i)
		}
		return fmt.Sprintf("/rules/%d/zones/%d", i, slices.Index(a.Rules[i].Zones, unq(m[2])))
	}},
	{regexp.MustCompile(`allowlist names unknown or catch-all zone ("(?:[^"\\]|\\.)*")`), func(a fwspec.Access, m []string) string {
		return fmt.Sprintf("/allowlist/%d", slices.Index(a.Allowlist, unq(m[1])))
	}},
	{regexp.MustCompile(`zone ("(?:[^"\\]|\\.)*") (?:is predefined|defined twice|is empty|:)|zone name ("(?:[^"\\]|\\.)*")`), func(a fwspec.Access, m []string) string {
		n := unq(m[1] + m[2])
		return fmt.Sprintf("/zones/%d/name", slices.IndexFunc(a.Zones, func(z fwspec.Zone) bool { return z.Name == n }))
	}},
}

// policyField ties a refused firewall change to the field of req it is
// about, when the message names one that req has.
func policyField(req fwspec.Access, err error) error {
	var fe *fwspec.FieldError
	if errors.As(err, &fe) && fe.Field != "" {
		return err
	}
	msg := err.Error()
	for _, pr := range policyRules {
		if m := pr.re.FindStringSubmatch(msg); m != nil {
			if ptr := pr.resolve(req, m); !strings.Contains(ptr, "-1") {
				return withField(ptr, err)
			}
			return err
		}
	}
	return err
}
