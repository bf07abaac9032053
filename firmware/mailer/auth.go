package mailer

import (
	"errors"
	"net/smtp"
	"strings"
)

// pickAuth prefers PLAIN and falls back to LOGIN. Both refuse to run
// outside TLS (Send never gets here without it; this is the second lock).
func pickAuth(mechs string, s Settings) smtp.Auth {
	for _, m := range strings.Fields(strings.ToUpper(mechs)) {
		if m == "PLAIN" {
			return tlsOnly{smtp.PlainAuth("", s.User, s.Password, s.Host)}
		}
	}
	return tlsOnly{&loginAuth{user: s.User, pass: s.Password}}
}

var errAuthNoTLS = errors.New("mailer: refusing to send credentials without TLS")

// tlsOnly refuses any mechanism on a connection without TLS, whatever
// the host is called (net/smtp's PLAIN lets localhost through).
type tlsOnly struct{ smtp.Auth }

func (a tlsOnly) Start(si *smtp.ServerInfo) (string, []byte, error) {
	if !si.TLS {
		return "", nil, errAuthNoTLS
	}
	return a.Auth.Start(si)
}

// loginAuth is the LOGIN mechanism (draft-murchison-sasl-login): the
// server asks for "Username:" then "Password:".
type loginAuth struct {
	user, pass string
	step       int
}

func (a *loginAuth) Start(*smtp.ServerInfo) (string, []byte, error) {
	a.step = 0
	return "LOGIN", nil, nil
}

func (a *loginAuth) Next(fromServer []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	a.step++
	switch a.step {
	case 1:
		return []byte(a.user), nil
	case 2:
		return []byte(a.pass), nil
	}
	return nil, errors.New("mailer: LOGIN: unexpected server challenge")
}
