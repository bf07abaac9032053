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
}

// opPrefix is a control request type or Go call naming itself ("SetPolicy: ").
var opPrefix = regexp.MustCompile(`^[A-Z][A-Za-z]+: `)

// netipErr is a netip parse error: the function, the value and the reason.
var netipErr = regexp.MustCompile(`netip\.Parse(Prefix|Addr|AddrPort)\(("(?:[^"\\]|\\.)*")\): ?(.*)$`)

// humanize returns the sentence to show for err and the JSON pointer of the
// field it is about ("" when none is known).
func humanize(err error) (detail, field string) {
	var (
		fe *fwspec.FieldError
		ne *netspec.FieldError
		re *control.RemoteError
		se *strictjson.Error
		de *net.DNSError
	)
	switch {
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
	msg := sentence(err.Error())
	// "min_length must be ...": a request key first names the field.
	if m := keyFirst.FindStringSubmatch(msg); m != nil {
		return sentence(m[2]), "/" + strings.ToLower(m[1])
	}
	return msg, ""
}

// keyFirst is a message that starts with a JSON key (snake_case).
var keyFirst = regexp.MustCompile(`^([A-Za-z][a-z0-9]*(?:_[a-z0-9]+)+) (.+)$`)

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
	msg = strings.TrimSpace(msg)
	if msg == "" {
		return ""
	}
	if !strings.HasSuffix(msg, ".") && !strings.HasSuffix(msg, ")") {
		msg += "."
	}
	return msg
}

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
