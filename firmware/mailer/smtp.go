package mailer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"regexp"
	"strconv"
	"time"
)

// Modes of the TLS of a submission server.
const (
	ModeTLS      = "tls"      // implicit TLS from the first byte (port 465)
	ModeSTARTTLS = "starttls" // plain greeting, STARTTLS required (port 587)
)

// Settings are the box's outgoing mail server. Password is a secret: the
// admin API never shows it and logs never carry it.
type Settings struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Mode     string `json:"mode"`
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	From     string `json:"from"`
	// CAPEM pins the CA (PEM) that must have signed the server's
	// certificate instead of the system roots ("": the system roots).
	CAPEM string `json:"ca_pem,omitempty"`
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$`)

// FieldError is a refused setting: the JSON name of the field and why.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Validate checks s completely; the error is a *FieldError.
func (s Settings) Validate() error {
	field := func(f string, err error) error { return &FieldError{Field: f, Err: err} }
	if len(s.Host) > 253 || !(hostRE.MatchString(s.Host) || isIP(s.Host)) {
		return field("host", fmt.Errorf("%w: %.64q is not a host name or IP address", ErrInvalid, s.Host))
	}
	if s.Port < 1 || s.Port > 65535 {
		return field("port", fmt.Errorf("%w: port %d is not 1 to 65535", ErrInvalid, s.Port))
	}
	if s.Mode != ModeTLS && s.Mode != ModeSTARTTLS {
		return field("mode", fmt.Errorf("%w: mode %.16q (tls or starttls)", ErrInvalid, s.Mode))
	}
	if err := CheckAddress(s.From); err != nil {
		return field("from", err)
	}
	if err := checkText("user", s.User, 254); err != nil {
		return field("user", err)
	}
	if len(s.Password) > 256 || (s.User == "") != (s.Password == "") {
		return field("password", fmt.Errorf("%w: user and password go together (a password of at most 256 bytes)", ErrInvalid))
	}
	if s.CAPEM != "" {
		if _, err := caPool(s.CAPEM); err != nil {
			return field("ca_pem", err)
		}
	}
	return nil
}

func isIP(s string) bool { return net.ParseIP(s) != nil }

// caPool parses the pinned CA: one to four certificates, CA ones only.
func caPool(p string) (*x509.CertPool, error) {
	if len(p) > 16<<10 {
		return nil, fmt.Errorf("%w: pinned CA longer than 16 KiB", ErrInvalid)
	}
	pool := x509.NewCertPool()
	rest, n := []byte(p), 0
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if blk.Type != "CERTIFICATE" || err != nil || !c.IsCA {
			return nil, fmt.Errorf("%w: pinned CA: a PEM block is not a CA certificate", ErrInvalid)
		}
		if n++; n > 4 {
			return nil, fmt.Errorf("%w: pinned CA: more than 4 certificates", ErrInvalid)
		}
		pool.AddCert(c)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: pinned CA: no PEM certificate", ErrInvalid)
	}
	return pool, nil
}

func (s Settings) tlsConfig() (*tls.Config, error) {
	c := &tls.Config{ServerName: s.Host, MinVersion: tls.VersionTLS12}
	if s.CAPEM != "" {
		pool, err := caPool(s.CAPEM)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	return c, nil
}

// ErrNoTLS: the server does not offer STARTTLS; nothing was sent.
var ErrNoTLS = errors.New("mailer: the server does not offer STARTTLS (the box never sends in clear)")

// Send delivers one encoded message (Build) to to through the server of
// s, within ctx's deadline (30 s if it has none).
func Send(ctx context.Context, s Settings, to string, msg []byte) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if err := CheckAddress(to); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	tc, err := s.tlsConfig()
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	var conn net.Conn
	d := &net.Dialer{}
	if s.Mode == ModeTLS {
		conn, err = (&tls.Dialer{NetDialer: d, Config: tc}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return fmt.Errorf("mailer: connect %s: %w", addr, err)
	}
	// The whole exchange is bounded by ctx: closing the connection ends
	// any read or write in progress.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c, err := smtp.NewClient(conn, s.Host)
	if err != nil {
		return fmt.Errorf("mailer: greeting: %w", err)
	}
	defer c.Close()
	if err := c.Hello(helloName(s.From)); err != nil {
		return fmt.Errorf("mailer: EHLO: %w", err)
	}
	if s.Mode == ModeSTARTTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return ErrNoTLS
		}
		if err := c.StartTLS(tc); err != nil {
			return fmt.Errorf("mailer: STARTTLS: %w", err)
		}
	}
	if st, ok := c.TLSConnectionState(); !ok || !st.HandshakeComplete {
		return ErrNoTLS // cannot happen after the above; never send without TLS
	}
	if s.User != "" {
		ok, mechs := c.Extension("AUTH")
		if !ok {
			return errors.New("mailer: the server offers no AUTH although a user is set")
		}
		if err := c.Auth(pickAuth(mechs, s)); err != nil {
			return fmt.Errorf("mailer: AUTH: %w", err)
		}
	}
	if err := c.Mail(s.From); err != nil {
		return fmt.Errorf("mailer: MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("mailer: RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("mailer: DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("mailer: DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("mailer: message refused: %w", err)
	}
	return c.Quit()
}

// helloName is the EHLO argument: the domain of the From address (a
// syntactically valid name; the box may have no DNS name of its own).
func helloName(from string) string {
	for i := len(from) - 1; i >= 0; i-- {
		if from[i] == '@' {
			return from[i+1:]
		}
	}
	return "localhost"
}
