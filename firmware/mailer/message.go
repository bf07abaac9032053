// Package mailer sends the box's e-mail (voicemail to e-mail, the admin's
// test message) over SMTP submission with TLS only: implicit TLS (port
// 465) or STARTTLS (587) that is required, never skipped. The server's
// certificate is verified against the system roots or a CA the admin
// pins; credentials go only inside TLS (AUTH PLAIN or LOGIN). The
// settings, password included, are sealed with the device key in the
// store. Sending is asynchronous through a bounded queue with retries;
// what a job mails (a voicemail message) stays on the box whatever
// happens to the mail.
package mailer

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on what a message may carry.
const (
	MaxAddress    = 254 // RFC 5321 path limit, less the brackets
	MaxSubject    = 200 // characters, before encoding
	MaxBody       = 16 << 10
	MaxAttachment = 8 << 20 // a 3-minute 16 kHz WAV is 5.8 MB
)

// ErrInvalid wraps every refusal of an address, header or size.
var ErrInvalid = errors.New("mailer: invalid message")

// Attachment is one file of a message.
type Attachment struct {
	Name        string // file name: letters, digits, '-', '_', '.'
	ContentType string // e.g. "audio/wav"
	Data        []byte
}

// Message is one e-mail before it is encoded.
type Message struct {
	To       string
	Subject  string // free text: control characters are refused
	Body     string // plain text (UTF-8)
	Attached *Attachment
}

// CheckAddress accepts a bare addr-spec (local@domain) that net/mail
// parses to exactly itself, with no display name, comment, control
// character or space: anything else could carry header or command text.
func CheckAddress(s string) error {
	if s == "" || len(s) > MaxAddress {
		return fmt.Errorf("%w: address of %d bytes", ErrInvalid, len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '<' || c == '>' || c == '"' || c == '(' || c == ')' || c == ',' || c == ';' || c == '\\' {
			return fmt.Errorf("%w: address %.64q has a character not allowed here", ErrInvalid, s)
		}
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return fmt.Errorf("%w: address %.64q", ErrInvalid, s)
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || len(local) > 64 || domain == "" || strings.Contains(domain, "@") ||
		strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, "..") {
		return fmt.Errorf("%w: address %.64q", ErrInvalid, s)
	}
	return nil
}

// checkText refuses control characters (CR and LF above all) and invalid
// UTF-8 in a header value.
func checkText(what, s string, max int) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not UTF-8", ErrInvalid, what)
	}
	if utf8.RuneCountInString(s) > max {
		return fmt.Errorf("%w: %s longer than %d characters", ErrInvalid, what, max)
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return fmt.Errorf("%w: %s has a control character", ErrInvalid, what)
		}
	}
	return nil
}

func checkFileName(s string) error {
	if s == "" || len(s) > 100 {
		return fmt.Errorf("%w: attachment name of %d bytes", ErrInvalid, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: attachment name %.64q", ErrInvalid, s)
		}
	}
	return nil
}

// Validate checks m as Build would, without encoding it.
func (m Message) Validate() error {
	if err := CheckAddress(m.To); err != nil {
		return err
	}
	if err := checkText("subject", m.Subject, MaxSubject); err != nil {
		return err
	}
	if !utf8.ValidString(m.Body) || len(m.Body) > MaxBody {
		return fmt.Errorf("%w: body of %d bytes or not UTF-8", ErrInvalid, len(m.Body))
	}
	if a := m.Attached; a != nil {
		if err := checkFileName(a.Name); err != nil {
			return err
		}
		if _, _, err := mime.ParseMediaType(a.ContentType); err != nil || strings.ContainsAny(a.ContentType, "\r\n;") {
			return fmt.Errorf("%w: content type %.64q", ErrInvalid, a.ContentType)
		}
		if len(a.Data) > MaxAttachment {
			return fmt.Errorf("%w: attachment of %d bytes (at most %d)", ErrInvalid, len(a.Data), MaxAttachment)
		}
	}
	return nil
}

// Build encodes m from from as an RFC 5322 message: every header value
// is checked (no CR/LF can reach the header section) and the subject is
// RFC 2047-encoded; the body is quoted-printable, the attachment base64.
func Build(from string, m Message, now time.Time) ([]byte, error) {
	if err := CheckAddress(from); err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("mailer: message id: %w", err)
	}
	_, domain, _ := strings.Cut(from, "@")
	var b bytes.Buffer
	hdr := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	hdr("From", from)
	hdr("To", m.To)
	hdr("Subject", encodeSubject(m.Subject))
	hdr("Date", now.UTC().Format(time.RFC1123Z))
	hdr("Message-ID", "<"+hex.EncodeToString(id[:])+"@"+domain+">")
	hdr("MIME-Version", "1.0")
	hdr("Auto-Submitted", "auto-generated")
	body := func(w *bytes.Buffer) error {
		qp := quotedprintable.NewWriter(w)
		if _, err := qp.Write([]byte(strings.ReplaceAll(strings.ReplaceAll(m.Body, "\r\n", "\n"), "\n", "\r\n"))); err != nil {
			return err
		}
		return qp.Close()
	}
	if m.Attached == nil {
		hdr("Content-Type", `text/plain; charset="utf-8"`)
		hdr("Content-Transfer-Encoding", "quoted-printable")
		b.WriteString("\r\n")
		if err := body(&b); err != nil {
			return nil, err
		}
		return b.Bytes(), nil
	}
	mw := multipart.NewWriter(&b)
	hdr("Content-Type", `multipart/mixed; boundary="`+mw.Boundary()+`"`)
	b.WriteString("\r\n")
	pw, err := mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":              {`text/plain; charset="utf-8"`},
		"Content-Transfer-Encoding": {"quoted-printable"},
	})
	if err != nil {
		return nil, err
	}
	var tb bytes.Buffer
	if err := body(&tb); err != nil {
		return nil, err
	}
	if _, err := pw.Write(tb.Bytes()); err != nil {
		return nil, err
	}
	a := m.Attached
	aw, err := mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":              {mime.FormatMediaType(a.ContentType, map[string]string{"name": a.Name})},
		"Content-Disposition":       {mime.FormatMediaType("attachment", map[string]string{"filename": a.Name})},
		"Content-Transfer-Encoding": {"base64"},
	})
	if err != nil {
		return nil, err
	}
	enc := base64.StdEncoding.EncodeToString(a.Data)
	for len(enc) > 76 {
		if _, err := aw.Write([]byte(enc[:76] + "\r\n")); err != nil {
			return nil, err
		}
		enc = enc[76:]
	}
	if _, err := aw.Write([]byte(enc + "\r\n")); err != nil {
		return nil, err
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// encodeSubject leaves plain ASCII as it is and writes anything else, or
// text that would read as an encoded word, as RFC 2047 B-words of at most
// 45 bytes each, folded: the reader decodes exactly the original.
func encodeSubject(s string) string {
	plain := !strings.Contains(s, "=?") && strings.TrimSpace(s) == s
	for i := 0; i < len(s) && plain; i++ {
		plain = s[i] >= ' ' && s[i] < 0x7f
	}
	if plain {
		return s
	}
	var words []string
	for len(s) > 0 {
		n := 0
		for _, r := range s {
			l := utf8.RuneLen(r)
			if n+l > 45 {
				break
			}
			n += l
		}
		words = append(words, "=?utf-8?b?"+base64.StdEncoding.EncodeToString([]byte(s[:n]))+"?=")
		s = s[n:]
	}
	return strings.Join(words, "\r\n ")
}
