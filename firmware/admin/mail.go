package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/mailer"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Mail is the outgoing mail service (voicemail to e-mail);
// *mailer.Service implements it.
type Mail interface {
	Settings() (mailer.Settings, bool, error)
	SetSettings(st mailer.Settings, also ...func(*store.Tx) error) error
	ClearSettings(also ...func(*store.Tx) error) error
	SendTest(ctx context.Context, to string) error
	Stats() mailer.Stats
}

// MailView is the mail server as the API shows it: never the password.
type MailView struct {
	Configured  bool         `json:"configured"`
	Host        string       `json:"host"`
	Port        int          `json:"port"`
	Mode        string       `json:"mode"`
	User        string       `json:"user"`
	PasswordSet bool         `json:"password_set"`
	From        string       `json:"from"`
	CAPEM       string       `json:"ca_pem"` // "": the system roots
	Queue       mailer.Stats `json:"queue"`
}

// MailRequest sets the mail server. An empty password with a user keeps
// the stored one; no user means no AUTH.
type MailRequest struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Mode     string `json:"mode"` // "starttls" (587) or "tls" (465)
	User     string `json:"user"`
	Password string `json:"password"`
	From     string `json:"from"`
	CAPEM    string `json:"ca_pem"`
}

// MailTestRequest names the recipient of a test message.
type MailTestRequest struct {
	To string `json:"to"`
}

func (s *Server) mailView() (MailView, error) {
	st, ok, err := s.mail.Settings()
	if err != nil {
		return MailView{}, err
	}
	return MailView{Configured: ok, Host: st.Host, Port: st.Port, Mode: st.Mode, User: st.User, PasswordSet: st.Password != "",
		From: st.From, CAPEM: st.CAPEM, Queue: s.mail.Stats()}, nil
}

func (s *Server) apiMail(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.mail == nil {
		return errUnavailable
	}
	v, err := s.mailView()
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, v)
	return nil
}

// mailFieldError names the refused field for the form.
func mailFieldError(err error) error {
	var fe *mailer.FieldError
	if errors.As(err, &fe) {
		return withField("/"+fe.Field, fmt.Errorf("%w: %v", errBadRequest, fe.Err))
	}
	if errors.Is(err, mailer.ErrInvalid) {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return err
}

func (s *Server) apiSetMail(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.mail == nil {
		return errUnavailable
	}
	var q MailRequest
	if err := decodeJSON(r, &q); err != nil {
		return err
	}
	st := mailer.Settings{Host: q.Host, Port: q.Port, Mode: q.Mode, User: q.User, Password: q.Password, From: q.From, CAPEM: q.CAPEM}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "mail.settings", Target: q.Host + ":" + strconv.Itoa(q.Port),
		Detail: fmt.Sprintf("mode=%s auth=%t password_changed=%t pinned_ca=%t", q.Mode, q.User != "", q.Password != "", q.CAPEM != "")}
	if err := s.mail.SetSettings(st, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return mailFieldError(err)
	}
	v, err := s.mailView()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) apiClearMail(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.mail == nil {
		return errUnavailable
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "mail.clear", Target: "mail"}
	if err := s.mail.ClearSettings(func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "mail off: voicemail is no longer sent by e-mail"})
	return nil
}

// apiMailTest sends a test message now (at most one a minute, bounded by
// the mailer's send timeout) and answers in words what happened; the
// attempt and its outcome are audited.
func (s *Server) apiMailTest(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.mail == nil {
		return errUnavailable
	}
	var q MailTestRequest
	if err := decodeJSON(r, &q); err != nil {
		return err
	}
	if err := mailer.CheckAddress(q.To); err != nil {
		return withField("/to", fmt.Errorf("%w: %v", errBadRequest, err))
	}
	err := s.mail.SendTest(r.Context(), q.To)
	outcome := "sent"
	if err != nil {
		outcome = "failed: " + err.Error()
	}
	if aerr := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "mail.test", Target: q.To, Detail: outcome}); aerr != nil {
		return aerr
	}
	switch {
	case err == nil:
		st, _, _ := s.mail.Settings()
		writeJSON(w, http.StatusOK, map[string]string{"status": "sent",
			"message": fmt.Sprintf("Test message accepted by %s:%d (%s) for %s.", st.Host, st.Port, st.Mode, q.To)})
		return nil
	case errors.Is(err, mailer.ErrTooSoon):
		w.Header().Set("Retry-After", "60")
		problem(w, http.StatusTooManyRequests, "too many requests", "A test message was sent less than a minute ago; try again in a minute.")
		return nil
	case errors.Is(err, mailer.ErrNotConfigured):
		return fmt.Errorf("%w: set the mail server first", errConflict)
	case errors.Is(err, mailer.ErrInvalid):
		return mailFieldError(err)
	}
	problem(w, http.StatusBadGateway, "test message not sent", "The mail server did not take the message: "+err.Error())
	return nil
}
