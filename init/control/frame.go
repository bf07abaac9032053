// Package control is PID 1's control socket, /run/edgepbx/init.sock: a
// narrow, peer-credential-checked request/reply protocol through which the
// unprivileged edgepbxd asks PID 1 to act (firewall pinholes and bans,
// reboot, power off) and reports its health.
//
// Frame: version u8 (=1) | type u8 | length u16 big-endian | JSON payload
// (at most MaxPayloadFor(type) bytes). Every request gets exactly one Reply
// frame.
//
// Payload bounds: every request is at most MaxPayload (8192) bytes except
// SetPolicy, which carries a whole zone layout and may use MaxPolicyPayload
// (32768; about 1,500 IPv4 CIDRs). Replies may use the whole u16 length
// (65535): GetPolicy answers with the confirmed and the pending policy,
// two of at most 32768 bytes each. A server therefore never allocates more
// than 32 KiB for an untrusted request; larger zone lists would need a
// chunked upload, which the protocol does not have.
package control

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the only protocol version spoken.
const Version = 1

// MaxPayload bounds the JSON payload of every request but SetPolicy.
const MaxPayload = 8192

// MaxPolicyPayload bounds a SetPolicy request.
const MaxPolicyPayload = 32768

// MaxReplyPayload bounds a Reply (the u16 length field's maximum).
const MaxReplyPayload = 0xffff

// MaxPayloadFor returns the payload bound of a frame type.
func MaxPayloadFor(t Type) int {
	switch t {
	case TypeSetPolicy:
		return MaxPolicyPayload
	case TypeReply:
		return MaxReplyPayload
	}
	return MaxPayload
}

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
	// Policy requests: the admin-editable zones and rules (netfw.Access).
	TypeGetPolicy     Type = 10
	TypeSetPolicy     Type = 11
	TypeConfirmPolicy Type = 12
	// Network and clock requests (init/netconf/netspec).
	TypeGetNetwork     Type = 13
	TypeSetNetwork     Type = 14
	TypeConfirmNetwork Type = 15
	TypeGetTime        Type = 16
	TypeSetTime        Type = 17

	TypeGetFloors  Type = 18
	TypeRaiseFloor Type = 19
	// Firmware updates (init/update): InstallUpdate turns its connection
	// into a bundle stream (see update.go).
	TypeInstallUpdate Type = 20
	TypeUpdateStatus  Type = 21
	// Factory reset, two steps (see reset.go): edgepbxd asks after it
	// re-authenticated the admin, PID 1 answers a single-use token, and
	// the reset starts only when that token comes back.
	// TypeDHCPServer opens or closes UDP 67 on a phones interface for
	// edgepbxd's DHCP server (PID 1 checks the interface itself).
	TypeDHCPServer          Type = 30
	TypeFactoryResetBegin   Type = 40
	TypeFactoryResetConfirm Type = 41
	TypeReply               Type = 0x80
)

var typeNames = map[Type]string{
	TypeHealth: "Health", TypeReboot: "Reboot", TypePoweroff: "Poweroff",
	TypeOpenPinhole: "OpenPinhole", TypeClosePinhole: "ClosePinhole", TypeBan: "Ban",
	TypeUnban: "Unban", TypeListBans: "ListBans", TypeCounters: "Counters", TypeGetPolicy: "GetPolicy",
	TypeSetPolicy: "SetPolicy", TypeConfirmPolicy: "ConfirmPolicy", TypeGetNetwork: "GetNetwork",
	TypeSetNetwork: "SetNetwork", TypeConfirmNetwork: "ConfirmNetwork", TypeGetTime: "GetTime", TypeSetTime: "SetTime",
	TypeGetFloors: "GetFloors", TypeRaiseFloor: "RaiseFloor",
	TypeInstallUpdate: "InstallUpdate", TypeUpdateStatus: "UpdateStatus",
	TypeFactoryResetBegin: "FactoryResetBegin", TypeFactoryResetConfirm: "FactoryResetConfirm",
	TypeDHCPServer: "DHCPServer",
	TypeReply:      "Reply",
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
	ErrTooLarge = errors.New("control: payload larger than its type allows")
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
	if max := MaxPayloadFor(h.Type); int(h.Length) > max {
		return h, fmt.Errorf("%w: %d > %d bytes for %v", ErrTooLarge, h.Length, max, h.Type)
	}
	return h, nil
}

// ReadFrame reads one frame. It never reads past a bad header, and never
// allocates more than its type's bound.
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
	if max := MaxPayloadFor(t); len(payload) > max {
		return dst, fmt.Errorf("%w: %d > %d bytes for %v", ErrTooLarge, len(payload), max, t)
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
