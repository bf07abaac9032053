// Package control is PID 1's control socket, /run/edgepbx/init.sock: a
// narrow, peer-credential-checked request/reply protocol through which the
// unprivileged edgepbxd asks PID 1 to act (firewall pinholes and bans,
// reboot, power off) and reports its health.
//
// Frame: version u8 (=1) | type u8 | length u16 big-endian | JSON payload
// (at most MaxPayload bytes). Every request gets exactly one Reply frame.
package control

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the only protocol version spoken.
const Version = 1

// MaxPayload bounds a frame's JSON payload.
const MaxPayload = 8192

// HeaderLen is the size of the fixed frame header.
const HeaderLen = 4

// Type is a frame type.
type Type uint8

// Request types and the one reply type.
const (
	TypeHealth       Type = 1
	TypeReboot       Type = 2
	TypePoweroff     Type = 3
	TypeOpenPinhole  Type = 4
	TypeClosePinhole Type = 5
	TypeBan          Type = 6
	TypeUnban        Type = 7
	TypeListBans     Type = 8
	TypeCounters     Type = 9
	TypeReply        Type = 0x80
)

var typeNames = map[Type]string{
	TypeHealth: "Health", TypeReboot: "Reboot", TypePoweroff: "Poweroff",
	TypeOpenPinhole: "OpenPinhole", TypeClosePinhole: "ClosePinhole", TypeBan: "Ban",
	TypeUnban: "Unban", TypeListBans: "ListBans", TypeCounters: "Counters", TypeReply: "Reply",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Frame errors. ErrVersion and ErrTooLarge leave the stream out of sync:
// the connection must be closed after the error reply.
var (
	ErrVersion  = errors.New("control: unsupported protocol version")
	ErrTooLarge = fmt.Errorf("control: payload larger than %d bytes", MaxPayload)
)

// Frame is one decoded message.
type Frame struct {
	Type    Type
	Payload []byte
}

// Header is a decoded frame header.
type Header struct {
	Version uint8
	Type    Type
	Length  uint16
}

// ParseHeader decodes and checks a header.
func ParseHeader(b [HeaderLen]byte) (Header, error) {
	h := Header{Version: b[0], Type: Type(b[1]), Length: binary.BigEndian.Uint16(b[2:])}
	if h.Version != Version {
		return h, fmt.Errorf("%w %d", ErrVersion, h.Version)
	}
	if int(h.Length) > MaxPayload {
		return h, fmt.Errorf("%w: %d", ErrTooLarge, h.Length)
	}
	return h, nil
}

// ReadFrame reads one frame. It never reads past a bad header, and never
// allocates more than MaxPayload.
func ReadFrame(r io.Reader) (Frame, error) {
	var hb [HeaderLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return Frame{}, err
	}
	h, err := ParseHeader(hb)
	if err != nil {
		return Frame{Type: h.Type}, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r, p); err != nil {
		return Frame{Type: h.Type}, fmt.Errorf("control: short payload: %w", err)
	}
	return Frame{Type: h.Type, Payload: p}, nil
}

// AppendFrame encodes a frame.
func AppendFrame(dst []byte, t Type, payload []byte) ([]byte, error) {
	if len(payload) > MaxPayload {
		return dst, ErrTooLarge
	}
	dst = append(dst, Version, byte(t), 0, 0)
	binary.BigEndian.PutUint16(dst[len(dst)-2:], uint16(len(payload)))
	return append(dst, payload...), nil
}

// WriteFrame writes one frame in a single write.
func WriteFrame(w io.Writer, t Type, payload []byte) error {
	b, err := AppendFrame(make([]byte, 0, HeaderLen+len(payload)), t, payload)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
