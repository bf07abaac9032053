package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/ivr"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Telephony is the stored dial plan configuration
// (*config.TelephonyStore); edgepbxd's dial plan reads the same store, so
// a saved change applies to the next call.
type Telephony interface {
	Current() pbxconfig.Telephony
	// SaveWith stores next and runs also (the audit entry) in the same
	// transaction.
	SaveWith(next pbxconfig.Telephony, known func(string) bool, also func(*store.Tx, pbxconfig.Telephony) error) (pbxconfig.Telephony, error)
}

// TelephonyRequest is the body of PUT /api/v1/telephony: the whole
// configuration with the version it was edited from. Trunk passwords are
// write-only: send one to set it, leave it out to keep the stored one.
type TelephonyRequest = pbxconfig.Telephony

// knownExtension reports whether a SIP extension exists (DID targets).
func (s *Server) knownExtension() func(string) bool {
	if s.exts == nil {
		return nil
	}
	list := s.exts.List()
	return func(n string) bool { return slices.Contains(list, n) }
}

func (s *Server) apiTelephony(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.tel == nil {
		return errUnavailable
	}
	writeJSON(w, http.StatusOK, s.tel.Current())
	return nil
}

func (s *Server) apiSetTelephony(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.tel == nil {
		return errUnavailable
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return fmt.Errorf("%w: read body: %v", errBadRequest, err)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var req TelephonyRequest
	if err := decodeJSON(r, &req); err != nil {
		if f, detail := badPeer(body); f != "" {
			telephonyProblem(w, http.StatusBadRequest, "bad request", detail, f)
			return nil
		}
		return err
	}
	before := s.tel.Current()
	// After is what was asked for, without passwords (the audit log also
	// redacts password keys; this keeps them out of memory copies too).
	asked := req
	asked.Trunks = slices.Clone(req.Trunks)
	for i := range asked.Trunks {
		if asked.Trunks[i].Password != "" {
			asked.Trunks[i].Password, asked.Trunks[i].PasswordSet = "", true
		}
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "telephony.set", Before: before, After: asked}
	// The change and its audit entry commit in one transaction: a power
	// cut cannot leave a change nobody is recorded to have made.
	saved, err := s.tel.SaveWith(req, s.knownExtension(), func(tx *store.Tx, saved pbxconfig.Telephony) error {
		ev.After, ev.Target = saved, fmt.Sprintf("version %d", saved.Version)
		return s.audit.RecordTx(tx, ev)
	})
	if err != nil {
		ev.Outcome, ev.Detail, ev.After, ev.Target = audit.Failed, err.Error(), asked, ""
		_ = s.audit.Record(ev)
		switch {
		case errors.Is(err, pbxconfig.ErrVersion):
			return fmt.Errorf("%w: %w", errConflict, err)
		case errors.Is(err, pbxconfig.ErrTelephony):
			// The per-field editor shows the refusal next to the field
			// it names: problem+json with a JSON pointer into the body.
			telephonyProblem(w, http.StatusUnprocessableEntity, "telephony configuration refused",
				fmt.Errorf("%w: %w", errTelephonyRefused, err).Error(), telephonyField(req, err))
			return nil
		}
		return err
	}
	writeJSON(w, http.StatusOK, saved)
	return nil
}

// errTelephonyRefused marks a configuration that failed validation.
var errTelephonyRefused = errors.New("telephony configuration refused")

// telephonyData is the dial plan page: the configuration as tables and,
// for the editor's script, as the JSON it edits field by field and sends
// back (static/telephony.js).
func (s *Server) telephonyData(r *http.Request, p auth.Principal) (any, error) {
	if s.tel == nil {
		return map[string]any{"Unavailable": true}, nil
	}
	cur := s.tel.Current()
	raw, err := json.Marshal(cur)
	if err != nil {
		return nil, err
	}
	var exts []string
	if s.exts != nil {
		exts = s.exts.List()
	}
	classes := map[string][]dialplan.Class{}
	for _, x := range cur.Extensions {
		classes[x.Number] = x.Classes
	}
	type row struct {
		Number  string
		Classes []dialplan.Class
		Default bool
	}
	var rows []row
	for _, n := range exts {
		c, ok := classes[n]
		if !ok || c == nil {
			c = cur.DefaultClasses
		}
		rows = append(rows, row{Number: n, Classes: c, Default: !ok})
	}
	country, _ := dialplan.LookupCountry(cur.Country)
	states, hints := s.trunkInline(r.Context(), cur.Trunks)
	return map[string]any{"Config": cur, "JSON": string(raw), "Rows": rows, "Extensions": strings.Join(exts, " "),
		"Emergency": append(slices.Clone(country.Emergency), cur.Emergency...), "States": states, "Hints": hints,
		"CanTest": s.canTestTrunks(), "Templates": trunkTemplatesJSON,
		"Codes": features.Table(cur.Features.Table()), "Forwards": s.forwardRows(exts), "Prompts": promptNames()}, nil
}

// promptNames is the prompt catalogue the IVR editor offers for a menu.
func promptNames() string {
	var n []string
	for _, p := range prompts.Catalog() {
		n = append(n, p.Name)
	}
	return strings.Join(n, " ")
}

// telephonyProblem answers as problem+json (RFC 9457) with the extension
// member "field", a JSON pointer (RFC 6901) into the request body at the
// value that was refused ("" when none fits).
func telephonyProblem(w http.ResponseWriter, status int, title, detail, field string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	detail = inWords(detail, field) // one sentence naming the field (humanize.go)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": title, "status": status, "detail": detail, "field": field})
}

// badPeer finds, in a body that did not decode, a trunk source network
// that is not a CIDR prefix: the one value of the form that fails in the
// JSON decoder rather than in validation. body is bounded by maxBody.
func badPeer(body []byte) (field, detail string) {
	var loose struct {
		Trunks []struct {
			Peers []string `json:"peers"`
		} `json:"trunks"`
	}
	if json.Unmarshal(body, &loose) != nil {
		return "", ""
	}
	for i, t := range loose.Trunks {
		for j, p := range t.Peers {
			if _, err := netip.ParsePrefix(p); err != nil {
				return fmt.Sprintf("/trunks/%d/peers/%d", i, j),
					fmt.Sprintf("%v: source network %q: want a CIDR network such as 192.0.2.0/28", errBadRequest, p)
			}
		}
	}
	return "", ""
}

// fieldRule maps one form of config's and dialplan's validation messages
// to the field it is about. The messages name the element (trunk name,
// route prefix, DID number, extension); resolve finds it in the request.
type fieldRule struct {
	re      *regexp.Regexp
	resolve func(t pbxconfig.Telephony, m []string) string
}

// name matches a name the messages print either quoted (%q) or bare.
const namePat = `("(?:[^"\\]|\\.)*"|[^\s:"]*)`

func unq(s string) string {
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return s
}

// nth finds the index of the n-th (0-based) element for which match holds.
func nth(count int, match func(int) bool, n int) (int, bool) {
	for i := range count {
		if match(i) {
			if n == 0 {
				return i, true
			}
			n--
		}
	}
	return 0, false
}

func trunkPtr(t pbxconfig.Telephony, nm, field string, occurrence int) string {
	i, ok := nth(len(t.Trunks), func(i int) bool { return t.Trunks[i].Name == nm }, occurrence)
	if !ok {
		return "/trunks"
	}
	return fmt.Sprintf("/trunks/%d/%s", i, field)
}

func routePtr(t pbxconfig.Telephony, prefix, field string, match func(dialplan.Route) bool) string {
	i, ok := nth(len(t.Routes), func(i int) bool { return t.Routes[i].Prefix == prefix && (match == nil || match(t.Routes[i])) }, 0)
	if !ok {
		return "/routes"
	}
	return fmt.Sprintf("/routes/%d/%s", i, field)
}

func didPtr(t pbxconfig.Telephony, number, field string) string {
	i, ok := nth(len(t.DIDs), func(i int) bool { return t.DIDs[i].Number == number }, 0)
	if !ok {
		return "/dids"
	}
	return fmt.Sprintf("/dids/%d/%s", i, field)
}

func extPtr(t pbxconfig.Telephony, number, field string, occurrence int) string {
	i, ok := nth(len(t.Extensions), func(i int) bool { return t.Extensions[i].Number == number }, occurrence)
	if !ok {
		return "/extensions"
	}
	return fmt.Sprintf("/extensions/%d/%s", i, field)
}

// limitField says which of two limits is out of dialplan's range.
func limitField(l dialplan.Limits) string {
	if l.MaxConcurrent < 0 || l.MaxConcurrent > 100000 {
		return "limits/max_concurrent"
	}
	return "limits/max_per_hour"
}

func rule(expr string, resolve func(t pbxconfig.Telephony, m []string) string) fieldRule {
	return fieldRule{re: regexp.MustCompile(expr), resolve: resolve}
}

func fixed(ptr string) func(pbxconfig.Telephony, []string) string {
	return func(pbxconfig.Telephony, []string) string { return ptr }
}

func trunkField(field string) func(pbxconfig.Telephony, []string) string {
	return func(t pbxconfig.Telephony, m []string) string { return trunkPtr(t, unq(m[1]), field, 0) }
}

// telephonyFields, first match wins; more specific forms come first.
var telephonyFields = []fieldRule{
	rule(`^country `, fixed("/country")),
	rule(`^default[_ ]class`, fixed("/default_classes")),
	rule(`^trunk name `+namePat+`:`, trunkField("name")),
	rule(`^trunk `+namePat+` listed twice`, func(t pbxconfig.Telephony, m []string) string { return trunkPtr(t, unq(m[1]), "name", 1) }),
	rule(`^trunk `+namePat+`: (?:host|port) `, trunkField("host")),
	rule(`^trunk `+namePat+`: transport `, trunkField("transport")),
	rule(`^trunk `+namePat+`: (?:invalid peer|IP authentication needs)`, trunkField("peers")),
	rule(`^trunk `+namePat+`: IP authentication takes no`, trunkField("username")),
	rule(`^trunk `+namePat+`: registration needs a username`, func(t pbxconfig.Telephony, m []string) string {
		tr, _ := t.Trunk(unq(m[1]))
		if tr.Username == "" || len(tr.Username) > 128 || strings.ContainsAny(tr.Username, " \t\r\n:;@<>\"") {
			return trunkPtr(t, unq(m[1]), "username", 0)
		}
		return trunkPtr(t, unq(m[1]), "domain", 0)
	}),
	rule(`^trunk `+namePat+`: (?:password|registration needs a password)`, trunkField("password")),
	rule(`^trunk `+namePat+`: auth `, trunkField("auth")),
	rule(`^trunk `+namePat+`: srtp`, trunkField("srtp")),
	rule(`^trunk `+namePat+`: caller`, trunkField("caller_id")),
	rule(`^caller ID `+namePat+` for extension `+namePat, func(t pbxconfig.Telephony, m []string) string {
		return "/caller_ids/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(unq(m[2]))
	}),
	rule(`^(?:dialplan: )?route prefix `+namePat, func(t pbxconfig.Telephony, m []string) string { return routePtr(t, unq(m[1]), "prefix", nil) }),
	rule(`^premium prefix `, fixed("/premium_prefixes")),
	rule(`^emergency number \S+ has no route`, fixed("/emergency_trunk")),
	rule(`^emergency number `, fixed("/emergency")),
	rule(`^DID `+namePat+`: unknown extension`, func(t pbxconfig.Telephony, m []string) string { return didPtr(t, unq(m[1]), "extension") }),
	rule(`^extension `+namePat+` is an emergency number`, func(t pbxconfig.Telephony, m []string) string { return extPtr(t, unq(m[1]), "number", 0) }),
	rule(`^dialplan: trunk `+namePat+`: limits`, func(t pbxconfig.Telephony, m []string) string {
		tr, _ := t.Trunk(unq(m[1]))
		return trunkPtr(t, unq(m[1]), limitField(tr.Limits), 0)
	}),
	rule(`^dialplan: trunk name `, fixed("/trunks")),
	rule(`^dialplan: extension `+namePat+`: must be`, func(t pbxconfig.Telephony, m []string) string { return extPtr(t, unq(m[1]), "number", 0) }),
	rule(`^dialplan: extension `+namePat+` repeated`, func(t pbxconfig.Telephony, m []string) string { return extPtr(t, unq(m[1]), "number", 1) }),
	rule(`^dialplan: extension `+namePat+`: unknown class`, func(t pbxconfig.Telephony, m []string) string { return extPtr(t, unq(m[1]), "classes", 0) }),
	rule(`^dialplan: extension `+namePat+`: limits`, func(t pbxconfig.Telephony, m []string) string {
		i, ok := nth(len(t.Extensions), func(i int) bool { return t.Extensions[i].Number == unq(m[1]) }, 0)
		if !ok {
			return "/extensions"
		}
		return fmt.Sprintf("/extensions/%d/%s", i, limitField(t.Extensions[i].Limits))
	}),
	rule(`^dialplan: route `+namePat+`: unknown trunk `+namePat, func(t pbxconfig.Telephony, m []string) string {
		return routePtr(t, unq(m[1]), "trunk", func(r dialplan.Route) bool { return r.Trunk == unq(m[2]) })
	}),
	rule(`^dialplan: route `+namePat+`: strip`, func(t pbxconfig.Telephony, m []string) string {
		return routePtr(t, unq(m[1]), "strip", func(r dialplan.Route) bool { return r.Strip < 0 || r.Strip > len(r.Prefix) })
	}),
	rule(`^dialplan: route `+namePat+`: add`, func(t pbxconfig.Telephony, m []string) string { return routePtr(t, unq(m[1]), "add", nil) }),
	rule(`^dialplan: route `+namePat+`: (?:more than \d+ )?feature code`, func(t pbxconfig.Telephony, m []string) string {
		return routePtr(t, unq(m[1]), "feature_codes", nil)
	}),
	rule(`^dialplan: unknown emergency trunk`, fixed("/emergency_trunk")),
	rule(`^dialplan: DID `+namePat+`: unknown trunk`, func(t pbxconfig.Telephony, m []string) string { return didPtr(t, unq(m[1]), "trunk") }),
	rule(`^dialplan: DID `+namePat+`: unknown extension`, func(t pbxconfig.Telephony, m []string) string { return didPtr(t, unq(m[1]), "extension") }),
	rule(`^dialplan: DID `+namePat+`$`, func(t pbxconfig.Telephony, m []string) string { return didPtr(t, unq(m[1]), "number") }),
	rule(`^dialplan: negative burst`, fixed("/burst_attempts")),
}

// telephonyField names the field a validation error is about, as a JSON
// pointer into t; "" when the error is about no single field (too many
// entries, for one).
func telephonyField(t pbxconfig.Telephony, err error) string {
	if fe, ok := errors.AsType[*ivr.FieldError](err); ok { // menus and time conditions name their field
		return "/ivr" + fe.Field
	}
	msg := err.Error()
	for _, prefix := range []string{pbxconfig.ErrTelephony.Error() + ": "} {
		for strings.HasPrefix(msg, prefix) {
			msg = strings.TrimPrefix(msg, prefix)
		}
	}
	for _, r := range telephonyFields {
		if m := r.re.FindStringSubmatch(msg); m != nil {
			return r.resolve(t, m)
		}
	}
	return ""
}
