package fwspec

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrInvalid is wrapped by every refusal of a request's content.
var ErrInvalid = errors.New("invalid request")

// FieldError refuses one field of a request. Field is its JSON name
// ("prefix", "local_port"); Reason says what is wrong with it.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap makes every FieldError an ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, a...)}
}

// Floors every ban and pinhole must meet, wherever it comes from: a
// compromised edgepbxd may ask for anything, and PID 1 checks these both at
// the control socket and again inside netfw.
const (
	// MinBanBits4 and MinBanBits6 are the widest bans (/16, /48): no single
	// request cuts off more than one site's worth of addresses.
	MinBanBits4 = 16
	MinBanBits6 = 48
	// MinPinholePort keeps pinholes off the privileged ports.
	MinPinholePort = 1024
	// MaxReasonLen bounds a ban's reason (printable ASCII, no spaces).
	MaxReasonLen = 64
)

// BanPrefix returns p as the firewall holds it and checks it against the
// floors. An IPv4-mapped prefix (::ffff:a.b.c.d/n, n ≥ 96) becomes the IPv4
// prefix /n-96 *before* the floor is checked: ::ffff:0.0.0.0/96 is
// 0.0.0.0/0 and is refused. Host bits are left alone: callers decide
// whether they are an error (the control socket) or masked off (netfw).
func BanPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, fieldErr("prefix", "not a valid prefix")
	}
	a := p.Addr()
	if a.Zone() != "" {
		return p, fieldErr("prefix", "%s has an interface zone", p)
	}
	if a.Is4In6() {
		if p.Bits() < 96 {
			return p, fieldErr("prefix", "%s mixes IPv4-mapped and IPv6 space", p)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	min := MinBanBits6
	if p.Addr().Is4() {
		min = MinBanBits4
	}
	if p.Bits() < min {
		return p, fieldErr("prefix", "%s is wider than /%d", p, min)
	}
	return p, nil
}

// Reason checks a ban's reason: 1..MaxReasonLen printable ASCII characters
// without spaces (it ends up in logs and the ban file).
func Reason(s string) error {
	if len(s) == 0 || len(s) > MaxReasonLen {
		return fieldErr("reason", "must be 1..%d characters", MaxReasonLen)
	}
	for _, c := range []byte(s) {
		if c < 0x21 || c > 0x7e {
			return fieldErr("reason", "must be printable ASCII without spaces")
		}
	}
	return nil
}

// PinholeRemote returns a pinhole's remote address as the firewall holds
// it (IPv4-mapped addresses unmapped first) and refuses what is not one
// host's unicast address: unspecified, multicast, broadcast, loopback or
// zoned addresses.
func PinholeRemote(a netip.Addr) (netip.Addr, error) {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return a, fieldErr("remote", "not a valid address")
	case a.Zone() != "":
		return a, fieldErr("remote", "%s has an interface zone", a)
	case a.IsUnspecified(), a.IsMulticast(), a.IsLoopback(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return a, fieldErr("remote", "%s is not a unicast host address", a)
	}
	return a, nil
}

// PinholePort checks a pinhole's local port against the floor; the
// firewall also requires it inside its RTP range.
func PinholePort(p uint16) error {
	if p < MinPinholePort {
		return fieldErr("local_port", "%d is below %d", p, MinPinholePort)
	}
	return nil
}
