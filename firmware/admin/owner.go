package admin

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/firmware/voicemail"
)

// Mailbox-owner sign-in: the owner of an extension signs in on the box's
// HTTPS with the extension and the voicemail PIN and reaches their own
// mailbox, nothing else. The session is a separate cookie kept in memory
// (never an admin session: the admin guard does not know it), short-lived,
// bounded in number, and carries no role, so auth.Principal.Can refuses
// every permission even if one reached an admin handler. Wrong PINs go
// through voicemail.Service.Login charged to the SIP edge's guard, exactly
// like a wrong PIN typed on a phone: the same mailbox lockout, the same
// throttle of the source for "voicemail/<ext>" and the same ban of a
// source that fails across mailboxes.

// OwnerCookieName is the owner session's cookie (__Host-: Secure,
// host-only, Path=/).
const OwnerCookieName = "__Host-edgepbx_mailbox"

// Owner session bounds.
const (
	ownerIdle        = 10 * time.Minute // ends after this long unused
	ownerMaxAge      = 30 * time.Minute // ends this long after sign-in in any case
	ownerMaxSessions = 512              // in all
	ownerPerMailbox  = 4                // per mailbox: a fifth sign-in ends the oldest
	// A source may try this many sign-ins per window (IPv4 host, IPv6
	// /64), the box this many a minute in all: the PIN hasher is shared
	// with the phones.
	ownerSourceTries  = 10
	ownerSourceWindow = 10 * time.Minute
	ownerTotalPerMin  = 120
	ownerMaxSources   = 4096
)

// ownerActorPrefix names a mailbox owner in the audit log; admin user
// names cannot contain the colon.
const ownerActorPrefix = "mailbox:"

// OwnerMailbox is what the owner side needs from the voicemail service
// besides Voicemail (*voicemail.Service implements it).
type OwnerMailbox interface {
	Login(ctx context.Context, ext, pin string, src netip.Addr, charge bool) error
	SetPIN(ctx context.Context, ext, pin string, also ...func(*store.Tx) error) error
	MarkOld(ext, id string) error
}

var _ OwnerMailbox = (*voicemail.Service)(nil)

type ownerSession struct {
	id, ext, csrf string
	created, seen time.Time
}

// owners are the live owner sessions and the sign-in rate limits.
type owners struct {
	mu    sync.Mutex
	m     map[[32]byte]*ownerSession // by SHA-256 of the cookie's secret
	tries map[netip.Prefix][]time.Time
	total []time.Time
}

func newOwners() *owners {
	return &owners{m: map[[32]byte]*ownerSession{}, tries: map[netip.Prefix][]time.Time{}}
}

func ownerKey(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }

func randomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// attempt charges one sign-in attempt to src before the PIN is checked (a
// parallel burst cannot slip past), false when src or the box is over its
// budget. Memory is bounded: a full table forgets idle sources, then any.
func (o *owners) attempt(src netip.Addr, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	cut := 0
	for cut < len(o.total) && now.Sub(o.total[cut]) >= time.Minute {
		cut++
	}
	o.total = o.total[cut:]
	if len(o.total) >= ownerTotalPerMin {
		return false
	}
	k := sourcePrefixOf(src)
	h := o.tries[k]
	cut = 0
	for cut < len(h) && now.Sub(h[cut]) >= ownerSourceWindow {
		cut++
	}
	h = h[cut:]
	if len(h) >= ownerSourceTries {
		o.tries[k] = h
		return false
	}
	if _, ok := o.tries[k]; !ok && len(o.tries) >= ownerMaxSources {
		for kk, hh := range o.tries {
			if len(hh) == 0 || now.Sub(hh[len(hh)-1]) >= ownerSourceWindow {
				delete(o.tries, kk)
			}
		}
		for kk := range o.tries {
			if len(o.tries) < ownerMaxSources {
				break
			}
			delete(o.tries, kk)
		}
	}
	o.tries[k] = append(h, now)
	o.total = append(o.total, now)
	return true
}

func sourcePrefixOf(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 64
	if a.Is4() {
		bits = 32
	}
	p, _ := a.Prefix(bits)
	return p
}

// create starts a session for ext; the secret goes in the cookie.
func (o *owners) create(ext string, now time.Time) (secret string, s *ownerSession, err error) {
	secret, err = randomSecret()
	if err != nil {
		return "", nil, err
	}
	csrf, err := randomSecret()
	if err != nil {
		return "", nil, err
	}
	id, err := randomSecret()
	if err != nil {
		return "", nil, err
	}
	s = &ownerSession{id: id[:12], ext: ext, csrf: csrf, created: now, seen: now}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.expire(now)
	var oldest [32]byte
	var oldestAt time.Time
	n := 0
	for k, v := range o.m {
		if v.ext == ext {
			n++
			if oldestAt.IsZero() || v.created.Before(oldestAt) {
				oldest, oldestAt = k, v.created
			}
		}
	}
	if n >= ownerPerMailbox {
		delete(o.m, oldest)
	}
	if len(o.m) >= ownerMaxSessions {
		return "", nil, fmt.Errorf("%w: too many mailbox sessions; try again in a few minutes", auth.ErrBusy)
	}
	o.m[ownerKey(secret)] = s
	return secret, s, nil
}

func (o *owners) expire(now time.Time) {
	for k, v := range o.m {
		if now.Sub(v.seen) >= ownerIdle || now.Sub(v.created) >= ownerMaxAge {
			delete(o.m, k)
		}
	}
}

// lookup resolves a cookie's secret to its live session and marks it used.
func (o *owners) lookup(secret string, now time.Time) (ownerSession, bool) {
	if secret == "" || len(secret) > 128 {
		return ownerSession{}, false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	k := ownerKey(secret)
	s, ok := o.m[k]
	if !ok {
		return ownerSession{}, false
	}
	if now.Sub(s.seen) >= ownerIdle || now.Sub(s.created) >= ownerMaxAge {
		delete(o.m, k)
		return ownerSession{}, false
	}
	s.seen = now
	return *s, true
}

// end ends ext's session id, or with all every session of ext but id
// (id "": every one; the admin set a new PIN).
func (o *owners) end(ext, id string, all bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, v := range o.m {
		if v.ext != ext {
			continue
		}
		if (all && v.id != id) || (!all && v.id == id) {
			delete(o.m, k)
		}
	}
}

// ownerPrincipal carries an owner session through the route handlers'
// signature: no role (it can do nothing an admin can), the actor named
// "mailbox:<ext>".
func ownerPrincipal(s ownerSession) auth.Principal {
	return auth.Principal{Username: ownerActorPrefix + s.ext, SessionID: s.id, CSRF: s.csrf}
}

// ownerExt is the mailbox of an owner principal ("" for anything else).
func ownerExt(p auth.Principal) string {
	ext, ok := strings.CutPrefix(p.Username, ownerActorPrefix)
	if !ok || p.Role != "" || p.TokenID != "" || !voicemail.ValidExt(ext) {
		return ""
	}
	return ext
}

// ownerGuard is the guard of the owner routes: the origin check, the owner
// cookie (never an admin session or token), CSRF on changes.
func (s *Server) ownerGuard(rt route) http.Handler {
	isAPI := strings.HasPrefix(rt.path, "/api/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isStateChange(r.Method) {
			if err := s.checkOrigin(r); err != nil {
				s.refuse(r, auth.Principal{}, "http.origin_refused", err.Error())
				problem(w, http.StatusForbidden, "forbidden", "cross-origin request refused")
				return
			}
		}
		var sess ownerSession
		ok := false
		if c, err := r.Cookie(OwnerCookieName); err == nil {
			sess, ok = s.owners.lookup(c.Value, s.clock.Now())
		}
		if !ok {
			if !isAPI {
				http.Redirect(w, r, "/mailbox/login", http.StatusSeeOther)
				return
			}
			problem(w, http.StatusUnauthorized, "unauthorized", "sign in to your mailbox first")
			return
		}
		p := ownerPrincipal(sess)
		if isStateChange(r.Method) {
			tok := r.Header.Get(csrfHeader)
			if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(sess.csrf)) != 1 {
				s.refuse(r, p, "http.csrf_refused", "missing or wrong CSRF token")
				problem(w, http.StatusForbidden, "forbidden", "missing or wrong CSRF token; reload the page")
				return
			}
		}
		ctx := context.WithValue(r.Context(), ctxKey{}, p)
		if err := rt.h(w, r.WithContext(ctx), p); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// ownerRoutes are the mailbox owner's page and API.
func (s *Server) ownerRoutes() []route {
	return []route{
		{method: "GET", path: "/mailbox/login", public: true, h: s.page("mailboxlogin", nil)},
		{method: "GET", path: "/mailbox", owner: true, h: s.ownerPage},
		{method: "POST", path: "/api/v1/mailbox/login", public: true, req: OwnerLoginRequest{}, h: s.apiOwnerLogin,
			summary: "Mailbox owner sign-in with the extension and its voicemail PIN: a session cookie for that mailbox only (10 min idle, 30 min at most) and its CSRF token. Wrong PINs count like wrong PINs on a phone (the mailbox locks, the SIP guard throttles and bans the source); at most 10 tries per source in 10 min; audited"},
		{method: "POST", path: "/api/v1/mailbox/logout", owner: true, h: s.apiOwnerLogout, summary: "End the mailbox owner's session"},
		{method: "GET", path: "/api/v1/mailbox", owner: true, h: s.apiOwnerMailbox, summary: "The signed-in owner's mailbox: PIN set, lockout, options, greetings, messages"},
		{method: "GET", path: "/api/v1/mailbox/messages/{id}/audio", owner: true, h: s.apiOwnerAudio, summary: "One of the owner's messages as WAV for listening, or as a download with ?download=1 (marked heard); audited"},
		{method: "DELETE", path: "/api/v1/mailbox/messages/{id}", owner: true, h: s.apiOwnerDelete, summary: "Delete one of the owner's messages (record and encrypted file); audited"},
		{method: "PUT", path: "/api/v1/mailbox/pin", owner: true, req: OwnerPINRequest{}, h: s.apiOwnerPIN, summary: "Change the mailbox PIN: the current PIN (checked like a sign-in) and a new one under the PIN policy (6-12 digits, no repeats, sequences or the extension); ends the mailbox's other sessions; audited"},
		{method: "PUT", path: "/api/v1/mailbox/email", owner: true, req: OwnerEmailRequest{}, h: s.apiOwnerEmail, summary: "The owner's voicemail to e-mail: address (empty: off) and audio attached or only a notice; audited"},
		{method: "PUT", path: "/api/v1/mailbox/greetings/{name}", owner: true, h: s.apiOwnerPutGreeting, summary: "Replace one of the owner's greetings (unavailable, busy or name) with a WAV (audio/wav body or a multipart part named file; at most 12 MiB and 60 s, 10 s for the name); stored encrypted; audited"},
		{method: "DELETE", path: "/api/v1/mailbox/greetings/{name}", owner: true, h: s.apiOwnerDeleteGreeting, summary: "Remove one of the owner's greetings; audited"},
	}
}

// OwnerLoginRequest is the body of POST /api/v1/mailbox/login.
type OwnerLoginRequest struct {
	Ext string `json:"ext"`
	PIN string `json:"pin"`
}

// OwnerPINRequest is the body of PUT /api/v1/mailbox/pin.
type OwnerPINRequest struct {
	CurrentPIN string `json:"current_pin"`
	NewPIN     string `json:"new_pin"`
}

// OwnerEmailRequest is the body of PUT /api/v1/mailbox/email.
type OwnerEmailRequest struct {
	Email       string `json:"email"`
	AttachAudio bool   `json:"attach_audio"`
}

// Owner sign-in refusals (401 and 429 in writeError).
var (
	errWrongPIN     = errors.New("wrong extension or PIN")
	errPINThrottled = errors.New("too many sign-in attempts for this mailbox or from this address; try again later")
)

func (s *Server) ownerMailbox() (OwnerMailbox, error) {
	if s.vm == nil {
		return nil, errUnavailable
	}
	o, ok := s.vm.(OwnerMailbox)
	if !ok {
		return nil, errUnavailable
	}
	return o, nil
}

// pinError maps a PIN check to the answer: every refusal that would tell
// which mailboxes exist or have a PIN reads as a wrong PIN.
func pinError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, voicemail.ErrLocked):
		return errPINThrottled
	case errors.Is(err, voicemail.ErrWrongPIN), errors.Is(err, voicemail.ErrNoMailbox), errors.Is(err, voicemail.ErrNoPIN):
		return errWrongPIN
	}
	return err
}

func (s *Server) apiOwnerLogin(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	om, err := s.ownerMailbox()
	if err != nil {
		return err
	}
	c := clientOf(r)
	now := s.clock.Now()
	if !s.owners.attempt(c.Addr, now) {
		return errPINThrottled
	}
	var req OwnerLoginRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	actor := ownerActorPrefix + req.Ext
	if !voicemail.ValidExt(req.Ext) || len(req.PIN) > voicemail.MaxPINLen {
		actor = ownerActorPrefix + "?"
	}
	// Charged: the HTTPS connection proves its source address.
	err = pinError(om.Login(r.Context(), req.Ext, req.PIN, c.Addr, true))
	if err != nil {
		if errors.Is(err, errWrongPIN) || errors.Is(err, errPINThrottled) {
			_ = s.audit.Record(audit.Event{Actor: actor, Source: c.String(), Action: "mailbox.login", Outcome: audit.Denied, Detail: err.Error()})
		}
		return err
	}
	secret, sess, err := s.owners.create(req.Ext, now)
	if err != nil {
		return err
	}
	if err := s.audit.Record(audit.Event{Actor: actor, Source: c.String(), Action: "mailbox.login", Target: req.Ext}); err != nil {
		s.owners.end(req.Ext, sess.id, false)
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: OwnerCookieName, Value: secret, Path: "/", Expires: now.Add(ownerMaxAge),
		MaxAge: int(ownerMaxAge.Seconds()), Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, loginAnswer{Status: "ok", CSRFToken: sess.csrf})
	return nil
}

func (s *Server) apiOwnerLogout(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	ext := ownerExt(p)
	s.owners.end(ext, p.SessionID, false)
	_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "mailbox.logout", Target: ext})
	http.SetCookie(w, &http.Cookie{Name: OwnerCookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]string{"status": "signed out"})
	return nil
}

func (s *Server) apiOwnerMailbox(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.vm == nil {
		return errUnavailable
	}
	v, err := s.mailboxView(ownerExt(p))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) apiOwnerAudio(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	om, err := s.ownerMailbox()
	if err != nil {
		return err
	}
	ext, id := ownerExt(p), r.PathValue("id")
	rate, pcm, err := s.vm.Audio(ext, id)
	if err != nil {
		return vmError(err)
	}
	action := "voicemail.message.listen"
	if r.URL.Query().Get("download") == "1" {
		action = "voicemail.message.download"
		w.Header().Set("Content-Disposition", `attachment; filename="voicemail-`+ext+"-"+id+`.wav"`)
	}
	if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: action, Target: ext + "/" + id}); err != nil {
		return err
	}
	if err := om.MarkOld(ext, id); err != nil {
		s.log.Warn("voicemail: mark heard", "mailbox", ext, "err", err)
	}
	wav := wavPCM16(rate, pcm)
	w.Header().Set("Content-Type", "audio/wav")
	w.Header().Set("Content-Length", fmt.Sprint(len(wav)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(wav)
	return nil
}

func (s *Server) apiOwnerDelete(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.vm == nil {
		return errUnavailable
	}
	ext, id := ownerExt(p), r.PathValue("id")
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "voicemail.message.delete", Target: ext + "/" + id}
	if err := s.vm.Delete(ext, id, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return vmError(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}

func (s *Server) apiOwnerPIN(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	om, err := s.ownerMailbox()
	if err != nil {
		return err
	}
	var req OwnerPINRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ext := ownerExt(p)
	// The policy first: a weak new PIN costs no try of the current one.
	if err := voicemail.CheckPIN(req.NewPIN, ext); err != nil {
		return withField("/new_pin", fmt.Errorf("%w: %v", errBadRequest, strings.TrimPrefix(err.Error(), "voicemail: ")))
	}
	if err := pinError(om.Login(r.Context(), ext, req.CurrentPIN, clientOf(r).Addr, true)); err != nil {
		if errors.Is(err, errWrongPIN) {
			return withField("/current_pin", fmt.Errorf("%w: the current PIN is wrong", errBadRequest))
		}
		return err
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "voicemail.pin.change", Target: ext}
	if err := om.SetPIN(r.Context(), ext, req.NewPIN, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return vmError(err)
	}
	s.owners.end(ext, p.SessionID, true)
	writeJSON(w, http.StatusOK, map[string]string{"status": "PIN changed"})
	return nil
}

func (s *Server) apiOwnerEmail(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.vm == nil {
		return errUnavailable
	}
	var req OwnerEmailRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ext := ownerExt(p)
	b, err := s.vm.Mailbox(ext)
	if err != nil {
		return vmError(err)
	}
	// The owner's phone skipping the PIN stays the admin's choice.
	o := voicemail.Options{SkipPINOwnPhone: b.SkipPINOwnPhone, Email: req.Email, AttachAudio: req.AttachAudio}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "voicemail.options", Target: ext,
		Detail: fmt.Sprintf("email_set=%t attach_audio=%t", o.Email != "", o.AttachAudio)}
	if err := s.vm.SetOptions(ext, o, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		if errors.Is(err, voicemail.ErrOptions) {
			return withField("/email", fmt.Errorf("%w: not a valid e-mail address", errBadRequest))
		}
		return vmError(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "saved"})
	return nil
}

// greetingBody reads a greeting upload: the WAV as the body, or the part
// named file of a multipart form (the page's upload), bounded either way.
func greetingBody(r *http.Request) ([]byte, error) {
	limit := int64(voicemail.MaxGreetingUpload)
	var rd io.Reader = io.LimitReader(r.Body, limit+64<<10)
	if mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == "multipart/form-data" {
		mr := multipart.NewReader(rd, params["boundary"])
		for i := 0; ; i++ {
			part, err := mr.NextPart()
			if err != nil || i > 4 {
				return nil, fmt.Errorf("%w: no part named file in the form", errBadRequest)
			}
			if part.FormName() == "file" {
				rd = part
				break
			}
		}
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(rd, limit+1)); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("%w: greeting larger than %d bytes", errBadRequest, limit)
	}
	return buf.Bytes(), nil
}

func (s *Server) apiOwnerPutGreeting(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	g, err := s.greetings()
	if err != nil {
		return err
	}
	ext, name := ownerExt(p), r.PathValue("name")
	body, err := greetingBody(r)
	if err != nil {
		return err
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "voicemail.greeting.upload", Target: ext + "/" + name}
	dur, err := g.SetGreetingWAV(ext, name, body, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) })
	if err != nil {
		return greetingError(err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "stored", "greeting": name, "seconds": dur.Seconds()})
	return nil
}

func (s *Server) apiOwnerDeleteGreeting(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	g, err := s.greetings()
	if err != nil {
		return err
	}
	ext, name := ownerExt(p), r.PathValue("name")
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "voicemail.greeting.delete", Target: ext + "/" + name}
	if err := g.DeleteGreeting(ext, name, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return greetingError(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}

// ownerPage is the owner's mailbox page.
func (s *Server) ownerPage(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	d := pageData{Title: "mailbox", Page: "mailbox", CSRF: p.CSRF}
	if s.vm == nil {
		d.Data = map[string]any{"Available": false}
	} else {
		v, err := s.mailboxView(ownerExt(p))
		if err != nil {
			return err
		}
		d.Data = map[string]any{"Available": true, "Box": v, "Greetings": []string{"unavailable", "busy", "name"}}
	}
	var buf bytes.Buffer
	if err := s.pages.t["mailbox"].Execute(&buf, d); err != nil {
		return fmt.Errorf("render mailbox: %w", err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err := buf.WriteTo(w)
	return err
}
