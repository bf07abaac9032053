package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/init/strictjson"
)

// maxBody bounds every request body.
const maxBody = 64 << 10

// errBadRequest wraps every decoding error.
var errBadRequest = errors.New("bad request")

// decodeJSON reads exactly one JSON object of at most maxBody bytes with no
// unknown fields into v.
func decodeJSON(r *http.Request, v any) error { return decodeJSONLimit(r, v, maxBody) }

// decodeJSONLimit is decodeJSON with another bound (certificate uploads).
func decodeJSONLimit(r *http.Request, v any, limit int) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return fmt.Errorf("%w: Content-Type must be application/json", errBadRequest)
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return fmt.Errorf("%w: read body: %v", errBadRequest, err)
	}
	return decodeBodyLimit(body, v, limit)
}

func decodeBody(body []byte, v any) error { return decodeBodyLimit(body, v, maxBody) }

// decodeBodyLimit decodes strictly (strictjson): exact field names, no
// duplicate keys, no unknown fields, nothing after the one value. A
// refusal wraps errBadRequest and a *strictjson.Error naming the field.
func decodeBodyLimit(body []byte, v any, limit int) error {
	if len(body) > limit {
		return fmt.Errorf("%w: body larger than %d bytes", errBadRequest, limit)
	}
	if err := strictjson.Unmarshal(body, v); err != nil {
		// A value that fails its type's own parser (netip.Prefix, ...)
		// comes back without a field: find it in the body by its value.
		if se := (*strictjson.Error)(nil); errors.As(err, &se) && se.Pointer == "" {
			if val := quotedValue(err); val != "" {
				se.Pointer = pointerOf(body, val)
			}
		}
		return fmt.Errorf("%w: %w", errBadRequest, err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// problem writes an RFC 9457 problem+json answer.
func problem(w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": title, "status": status, "detail": detail})
}

// writeError maps service errors to answers; unknown errors are logged and
// answered without detail.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var status int
	title := "bad request"
	switch {
	case errors.Is(err, auth.ErrReauth):
		// The session stays valid (until its network is locked out), so
		// neither 401 nor 403 (which means "your role may not"); the fields
		// to fix are named.
		status, title = http.StatusUnprocessableEntity, "re-authentication failed"
		telephonyProblem(w, status, title, err.Error(), "/current_password")
		return
	case errors.Is(err, auth.ErrInvalidCredentials), errors.Is(err, auth.ErrNoSession), errors.Is(err, auth.ErrBadSetupCode), errors.Is(err, errWrongPIN):
		status, title = http.StatusUnauthorized, "unauthorized"
	case errors.Is(err, auth.ErrThrottled), errors.Is(err, errPINThrottled):
		w.Header().Set("Retry-After", "600")
		status, title = http.StatusTooManyRequests, "too many requests"
	case errors.Is(err, auth.ErrBusy):
		w.Header().Set("Retry-After", "1")
		status, title = http.StatusServiceUnavailable, "busy"
	case errors.Is(err, errPolicyRefused):
		status, title = http.StatusUnprocessableEntity, "firewall policy refused"
	case errors.Is(err, errNetworkRefused):
		status, title = http.StatusUnprocessableEntity, "network settings refused"
	case errors.Is(err, errTelephonyRefused):
		status, title = http.StatusUnprocessableEntity, "telephony configuration refused"
	case errors.Is(err, errSIPRefused):
		status, title = http.StatusUnprocessableEntity, "sip settings refused"
	case errors.Is(err, errBackupRefused):
		status, title = http.StatusUnprocessableEntity, "backup refused"
	case errors.Is(err, errBackupRemote):
		status, title = http.StatusBadGateway, "backup target failed"
	case errors.Is(err, certs.ErrInvalid):
		status, title = http.StatusUnprocessableEntity, "certificate refused"
	case errors.Is(err, errUnavailable):
		status, title = http.StatusConflict, "not available"
	case errors.Is(err, auth.ErrNotFound), errors.Is(err, errNotFound):
		status, title = http.StatusNotFound, "not found"
	case errors.Is(err, auth.ErrExists), errors.Is(err, auth.ErrLastAdmin), errors.Is(err, auth.ErrAlreadyClaimed),
		errors.Is(err, auth.ErrNotClaimed), errors.Is(err, auth.ErrTOTPNotPending), errors.Is(err, errConflict):
		status, title = http.StatusConflict, "conflict"
	case isPasswordError(err), errors.Is(err, auth.ErrTOTP), errors.Is(err, auth.ErrWrongCurrentPassword):
		status, title = http.StatusUnprocessableEntity, "rejected"
	case errors.Is(err, errBadRequest), errors.Is(err, auth.ErrPolicy), errors.Is(err, auth.ErrBadUsername),
		errors.Is(err, auth.ErrBadRole), errors.Is(err, auth.ErrBadToken), errors.Is(err, audit.ErrFormat), errors.Is(err, errBadOrigin),
		errors.Is(err, certs.ErrKeyLog):
		status = http.StatusBadRequest
	default:
		s.log.Error("admin request failed", "path", r.URL.Path, "err", err)
		problem(w, http.StatusInternalServerError, "internal error", "")
		return
	}
	// One sentence, and the field it is about as a JSON pointer (a body
	// the decoder refused, a field error of PID 1's or of the request).
	detail, field := humanize(err)
	if field == "/password" && r.URL.Path == "/api/v1/me/password" {
		field = "/new_password" // PasswordRequest spells it so
	}
	if field != "" {
		telephonyProblem(w, status, title, detail, field)
		return
	}
	if se := (*strictjson.Error)(nil); errors.As(err, &se) {
		telephonyProblem(w, status, title, detail, se.Pointer)
		return
	}
	problem(w, status, title, detail)
}

func isPasswordError(err error) bool {
	for _, e := range []error{auth.ErrPasswordEmpty, auth.ErrPasswordShort, auth.ErrPasswordLong, auth.ErrPasswordWeak,
		auth.ErrPasswordUsername, auth.ErrPasswordCommon, auth.ErrPasswordRepetitive, auth.ErrPasswordInvalidUTF8} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// errBadOrigin is returned for an invalid allowlist entry.
var errBadOrigin = errors.New("invalid origin")

// normalizeOrigin checks an allowlist entry: "https://host[:port]", nothing else.
func normalizeOrigin(o string) (string, error) {
	o = strings.ToLower(strings.TrimSpace(o))
	rest, ok := strings.CutPrefix(o, "https://")
	if !ok || rest == "" || len(o) > 253 || strings.ContainsAny(rest, "/?#@ \\\t*") {
		return "", fmt.Errorf("%w %q: want https://host[:port]", errBadOrigin, o)
	}
	return o, nil
}
