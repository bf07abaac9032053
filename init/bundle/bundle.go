// Package bundle is the signed update bundle: a manifest (board, version,
// monotonic version number, image size and hashes, key id) signed with
// Ed25519, followed by the raw slot image. It is read once, as a stream:
// the manifest is bounded (MaxManifest) and verified before the first byte
// of the image is accepted, and the image is hashed as it passes through,
// so the bytes that are checked are the bytes that were written.
//
// Layout:
//
//	"EPXBNDL1" | manifest length u32 BE | manifest JSON | Ed25519 signature (64) | image | EOF
//
// The signature covers SigContext || manifest bytes. It depends on the
// standard library and init/strictjson only: PID 1 links it.
package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"time"

	"github.com/edgepbx/edgepbx/init/strictjson"
)

// Magic opens every bundle.
const Magic = "EPXBNDL1"

// SigContext is prefixed to the manifest before signing (domain separation:
// a key that signs bundles signs nothing else by accident).
const SigContext = "edgepbx-bundle-v1\x00"

// Format is the manifest format version.
const Format = 1

// Bounds.
const (
	MaxManifest   = 64 << 10
	HeaderLen     = len(Magic) + 4
	maxBoard      = 64
	maxVersion    = 64
	SignatureSize = ed25519.SignatureSize
)

// Reason says what is wrong with a refused bundle; every refusal is a
// *Error carrying one. The admin page, the CLI and the audit log show it.
type Reason string

// Reasons of refusal.
const (
	ReasonFormat    Reason = "format"
	ReasonSignature Reason = "signature"
	ReasonKey       Reason = "key"
	ReasonFloor     Reason = "version-floor"
	ReasonBoard     Reason = "board"
	ReasonHash      Reason = "hash"
	ReasonSize      Reason = "size"
	ReasonSpace     Reason = "space"
	ReasonIO        Reason = "io"
	ReasonBusy      Reason = "busy"
)

// ErrRefused is wrapped by every *Error.
var ErrRefused = errors.New("update bundle refused")

// Error is a refusal: what is wrong (Reason), which manifest field if one
// (Field), and a sentence.
type Error struct {
	Reason Reason
	Field  string
	Msg    string
	Err    error
}

func (e *Error) Error() string {
	s := "update bundle refused (" + string(e.Reason) + ")"
	if e.Field != "" {
		s += ": field " + e.Field
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrRefused, e.Err}
	}
	return []error{ErrRefused}
}

// Refuse builds a refusal.
func Refuse(r Reason, field, format string, a ...any) *Error {
	return &Error{Reason: r, Field: field, Msg: fmt.Sprintf(format, a...)}
}

// ReasonOf returns the reason of a refusal, "" if err is none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// Manifest describes the image that follows it.
type Manifest struct {
	Format        int       `json:"format"`
	Board         string    `json:"board"`
	Version       string    `json:"version"`
	VersionNumber uint64    `json:"version_number"`
	Floor         uint64    `json:"floor"`
	Security      bool      `json:"security,omitempty"`
	Downgrade     bool      `json:"downgrade,omitempty"`
	ImageSize     int64     `json:"image_size"`
	ImageSHA256   string    `json:"image_sha256"`
	ImageSHA512   string    `json:"image_sha512"`
	KeyID         string    `json:"key_id"`
	Created       time.Time `json:"created"`
}

var (
	boardRe   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	versionRe = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]*$`)
	keyIDRe   = regexp.MustCompile(`^[0-9a-f]{16}$`)
	hex256Re  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	hex512Re  = regexp.MustCompile(`^[0-9a-f]{128}$`)
)

// Validate checks the manifest on its own (not against a box).
func (m *Manifest) Validate() error {
	switch {
	case m.Format != Format:
		return Refuse(ReasonFormat, "format", "%d, want %d", m.Format, Format)
	case len(m.Board) > maxBoard || !boardRe.MatchString(m.Board):
		return Refuse(ReasonFormat, "board", "must be a board name")
	case len(m.Version) > maxVersion || !versionRe.MatchString(m.Version):
		return Refuse(ReasonFormat, "version", "must be 1..%d characters of [0-9A-Za-z.+_-]", maxVersion)
	case m.VersionNumber == 0:
		return Refuse(ReasonFormat, "version_number", "must be positive")
	case m.Floor > m.VersionNumber:
		return Refuse(ReasonFormat, "floor", "%d above version_number %d", m.Floor, m.VersionNumber)
	case m.ImageSize <= 0:
		return Refuse(ReasonSize, "image_size", "must be positive")
	case !hex256Re.MatchString(m.ImageSHA256):
		return Refuse(ReasonFormat, "image_sha256", "must be 64 lower-case hex digits")
	case !hex512Re.MatchString(m.ImageSHA512):
		return Refuse(ReasonFormat, "image_sha512", "must be 128 lower-case hex digits")
	case !keyIDRe.MatchString(m.KeyID):
		return Refuse(ReasonFormat, "key_id", "must be 16 lower-case hex digits")
	case m.Created.IsZero():
		return Refuse(ReasonFormat, "created", "missing")
	}
	return nil
}

// ParseManifest decodes manifest bytes strictly and validates them.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) == 0 || len(b) > MaxManifest {
		return m, Refuse(ReasonFormat, "", "manifest of %d bytes (1..%d)", len(b), MaxManifest)
	}
	if err := strictjson.Unmarshal(b, &m); err != nil {
		e := &Error{Reason: ReasonFormat, Msg: "manifest", Err: err}
		var se *strictjson.Error
		if errors.As(err, &se) {
			e.Field = se.Field
		}
		return m, e
	}
	return m, m.Validate()
}

// Header is what precedes the image: the raw manifest, its decoded form
// and the signature. Nothing in it is trusted until Verify.
type Header struct {
	Raw       []byte
	Manifest  Manifest
	Signature [SignatureSize]byte
}

// ReadHeader reads magic, manifest and signature from r, reading no byte
// of the image. The manifest is parsed strictly but not yet verified.
func ReadHeader(r io.Reader) (Header, error) {
	var h Header
	var fixed [HeaderLen]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return h, &Error{Reason: ReasonFormat, Msg: "short header", Err: err}
	}
	if string(fixed[:len(Magic)]) != Magic {
		return h, Refuse(ReasonFormat, "", "not an edgepbx update bundle (bad magic)")
	}
	n := binary.BigEndian.Uint32(fixed[len(Magic):])
	if n == 0 || n > MaxManifest {
		return h, Refuse(ReasonFormat, "", "manifest length %d (1..%d)", n, MaxManifest)
	}
	h.Raw = make([]byte, n)
	if _, err := io.ReadFull(r, h.Raw); err != nil {
		return h, &Error{Reason: ReasonFormat, Msg: "short manifest", Err: err}
	}
	if _, err := io.ReadFull(r, h.Signature[:]); err != nil {
		return h, &Error{Reason: ReasonFormat, Msg: "short signature", Err: err}
	}
	m, err := ParseManifest(h.Raw)
	if err != nil {
		return h, err
	}
	h.Manifest = m
	return h, nil
}

// Verify checks the signature over the raw manifest with the key it
// names, which must be in keys. It returns the key used.
func (h *Header) Verify(keys *Keyring) (Key, error) {
	k, ok := keys.Lookup(h.Manifest.KeyID)
	if !ok {
		return Key{}, Refuse(ReasonKey, "key_id", "key %s is not trusted by this box", h.Manifest.KeyID)
	}
	if !ed25519.Verify(k.Public, signedMessage(h.Raw), h.Signature[:]) {
		return Key{}, Refuse(ReasonSignature, "", "signature does not verify with key %s", k.ID)
	}
	return k, nil
}

func signedMessage(manifest []byte) []byte {
	return append([]byte(SigContext), manifest...)
}

// Box is what a bundle is checked against.
type Box struct {
	Board string
	// Floor is the lowest version_number this box accepts (anti-rollback).
	Floor uint64
	// SlotSize bounds the image.
	SlotSize int64
}

// Check refuses a verified manifest that does not fit the box. A bundle
// below the floor passes only when it asks for a downgrade and is signed
// by an emergency key: the caller audits that (Downgrade returns true).
func (h *Header) Check(k Key, box Box) (downgrade bool, err error) {
	m := &h.Manifest
	if m.Board != box.Board {
		return false, Refuse(ReasonBoard, "board", "bundle is for %q, this box is %q", m.Board, box.Board)
	}
	if m.ImageSize > box.SlotSize {
		return false, Refuse(ReasonSpace, "image_size", "image of %d bytes does not fit the slot of %d bytes", m.ImageSize, box.SlotSize)
	}
	if m.Downgrade && k.Role != RoleEmergency {
		return false, Refuse(ReasonKey, "downgrade", "a downgrade must be signed by an emergency key, %s is a %s key", k.ID, k.Role)
	}
	if m.VersionNumber < box.Floor {
		if !m.Downgrade {
			return false, Refuse(ReasonFloor, "version_number", "%d (%s) is below this box's floor %d", m.VersionNumber, m.Version, box.Floor)
		}
		return true, nil
	}
	return false, nil
}

// ImageReader hashes the image as it is read and checks size and hashes
// at the end. Read returns the image bytes; after the last one it checks
// that the stream ends there and the hashes match, and returns io.EOF only
// if they do. Whatever the caller writes from Read is what was checked.
type ImageReader struct {
	r        io.Reader
	m        Manifest
	n        int64
	s256     hash.Hash
	s512     hash.Hash
	done     bool
	finalErr error
}

// NewImageReader reads the image that follows a header in r.
func NewImageReader(r io.Reader, m Manifest) *ImageReader {
	return &ImageReader{r: r, m: m, s256: sha256.New(), s512: sha512.New()}
}

// Read implements io.Reader.
func (ir *ImageReader) Read(p []byte) (int, error) {
	if ir.done {
		return 0, ir.finalErr
	}
	left := ir.m.ImageSize - ir.n
	if left == 0 {
		ir.done = true
		ir.finalErr = ir.finish()
		return 0, ir.finalErr
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := ir.r.Read(p)
	ir.n += int64(n)
	ir.s256.Write(p[:n])
	ir.s512.Write(p[:n])
	if err == io.EOF {
		if ir.n < ir.m.ImageSize {
			ir.done = true
			ir.finalErr = Refuse(ReasonSize, "image_size", "stream ended after %d of %d image bytes", ir.n, ir.m.ImageSize)
			return n, ir.finalErr
		}
		err = nil
	}
	if err != nil {
		return n, &Error{Reason: ReasonIO, Msg: "reading image", Err: err}
	}
	return n, nil
}

// Written is how many image bytes passed through.
func (ir *ImageReader) Written() int64 { return ir.n }

func (ir *ImageReader) finish() error {
	var one [1]byte
	if n, _ := io.ReadFull(ir.r, one[:]); n > 0 {
		return Refuse(ReasonSize, "image_size", "data after the %d image bytes", ir.m.ImageSize)
	}
	if !hashEqual(ir.s256.Sum(nil), ir.m.ImageSHA256) {
		return Refuse(ReasonHash, "image_sha256", "image SHA-256 does not match the manifest")
	}
	if !hashEqual(ir.s512.Sum(nil), ir.m.ImageSHA512) {
		return Refuse(ReasonHash, "image_sha512", "image SHA-512 does not match the manifest")
	}
	return io.EOF
}

func hashEqual(sum []byte, want string) bool {
	w, err := hex.DecodeString(want)
	return err == nil && subtle.ConstantTimeCompare(sum, w) == 1
}

// HashImage returns the hex SHA-256 and SHA-512 of r and its length.
func HashImage(r io.Reader) (s256, s512 string, n int64, err error) {
	h256, h512 := sha256.New(), sha512.New()
	n, err = io.Copy(io.MultiWriter(h256, h512), r)
	return hex.EncodeToString(h256.Sum(nil)), hex.EncodeToString(h512.Sum(nil)), n, err
}

// WriteHeader signs m with priv and writes magic, manifest and signature.
// The image must follow; m must describe it (see HashImage).
func WriteHeader(w io.Writer, m Manifest, priv PrivateKey) error {
	if m.KeyID == "" {
		m.KeyID = priv.ID
	}
	if m.KeyID != priv.ID {
		return fmt.Errorf("bundle: manifest names key %s, signing with %s", m.KeyID, priv.ID)
	}
	if err := m.Validate(); err != nil {
		return err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("bundle: encode manifest: %w", err)
	}
	if len(raw) > MaxManifest {
		return fmt.Errorf("bundle: manifest of %d bytes over %d", len(raw), MaxManifest)
	}
	var b bytes.Buffer
	b.WriteString(Magic)
	binary.Write(&b, binary.BigEndian, uint32(len(raw)))
	b.Write(raw)
	b.Write(ed25519.Sign(priv.Private, signedMessage(raw)))
	_, err = w.Write(b.Bytes())
	return err
}
