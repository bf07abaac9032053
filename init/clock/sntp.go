// Package clock keeps PID 1's wall clock and time configuration: the NTP
// servers and the time zone the admin chose (persisted on /data), and a
// small SNTP client (RFC 4330) that sets the clock only from answers that
// pass sanity checks: the answer must echo our random transmit time (an
// off-path spoofer cannot), come from a synchronised server, and agree
// with the other servers; the clock is never stepped by more than MaxStep
// once it is plausible.
package clock

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// PacketLen is the size of an NTP packet without extensions.
const PacketLen = 48

// ntpEpochOffset is 1900-01-01 to 1970-01-01 in seconds.
const ntpEpochOffset = 2208988800

// Errors of ParseResponse; each wraps ErrAnswer.
var (
	ErrAnswer = errors.New("ntp answer refused")
)

func answerErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrAnswer, fmt.Sprintf(format, a...))
}

// ntpTime is a 64-bit NTP timestamp.
type ntpTime uint64

func toNTP(t time.Time) ntpTime {
	ns := t.UnixNano()
	sec := uint64(ns/1e9) + ntpEpochOffset
	frac := (uint64(ns%1e9) << 32) / 1e9
	return ntpTime(sec<<32 | frac)
}

func (t ntpTime) time() time.Time {
	sec := int64(t>>32) - ntpEpochOffset
	ns := (int64(t&0xffffffff) * 1e9) >> 32
	return time.Unix(sec, ns)
}

// Request builds a client request whose transmit timestamp is random: the
// server echoes it as the origin, and only an on-path attacker sees it.
func Request() (pkt [PacketLen]byte, nonce uint64) {
	var b [8]byte
	rand.Read(b[:])
	nonce = binary.BigEndian.Uint64(b[:])
	pkt[0] = 0<<6 | 4<<3 | 3 // LI 0, version 4, mode 3 (client)
	binary.BigEndian.PutUint64(pkt[40:], nonce)
	return pkt, nonce
}

// Answer is what a valid server response says.
type Answer struct {
	Stratum  uint8
	Receive  time.Time // server's receive time (T2)
	Transmit time.Time // server's transmit time (T3)
	RootDist time.Duration
}

// MaxRootDistance bounds root delay/2 + dispersion: a server further from
// its reference than this does not know the time well enough.
const MaxRootDistance = 1500 * time.Millisecond

// ParseResponse checks one datagram against the request's nonce. It reads
// exactly PacketLen bytes (extensions and MACs are ignored) and allocates
// nothing.
func ParseResponse(b []byte, nonce uint64) (Answer, error) {
	if len(b) < PacketLen {
		return Answer{}, answerErr("%d bytes, want at least %d", len(b), PacketLen)
	}
	li, vn, mode := b[0]>>6, b[0]>>3&7, b[0]&7
	if mode != 4 {
		return Answer{}, answerErr("mode %d, want 4 (server)", mode)
	}
	if vn < 3 || vn > 4 {
		return Answer{}, answerErr("version %d", vn)
	}
	if li == 3 {
		return Answer{}, answerErr("server not synchronised (leap indicator 3)")
	}
	stratum := b[1]
	if stratum == 0 || stratum > 15 {
		return Answer{}, answerErr("stratum %d (kiss-o'-death or unsynchronised)", stratum)
	}
	if origin := binary.BigEndian.Uint64(b[24:]); origin != nonce {
		return Answer{}, answerErr("origin timestamp does not echo our request")
	}
	rootDelay := short(binary.BigEndian.Uint32(b[4:]))
	rootDisp := short(binary.BigEndian.Uint32(b[8:]))
	dist := rootDelay/2 + rootDisp
	if dist > MaxRootDistance {
		return Answer{}, answerErr("root distance %v", dist)
	}
	recv, xmit := ntpTime(binary.BigEndian.Uint64(b[32:])), ntpTime(binary.BigEndian.Uint64(b[40:]))
	if recv == 0 || xmit == 0 {
		return Answer{}, answerErr("zero timestamp")
	}
	a := Answer{Stratum: stratum, Receive: recv.time(), Transmit: xmit.time(), RootDist: dist}
	if a.Transmit.Before(a.Receive) || a.Transmit.Sub(a.Receive) > time.Second {
		return Answer{}, answerErr("server transmit before receive, or held the request over a second")
	}
	return a, nil
}

// short decodes an NTP short format (16.16 seconds).
func short(v uint32) time.Duration {
	return time.Duration(v>>16)*time.Second + time.Duration(uint64(v&0xffff)*uint64(time.Second)>>16)
}

// Sample is one server's measurement.
type Sample struct {
	Server string
	Offset time.Duration // server clock minus ours
	Delay  time.Duration // round trip less the server's hold
}

// MaxDelay refuses samples whose round trip says little about the offset.
const MaxDelay = 2 * time.Second

// Query asks one server (host:port or address) once.
func Query(ctx context.Context, server string) (Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", server)
	if err != nil {
		return Sample{}, fmt.Errorf("ntp %s: %w", server, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	req, nonce := Request()
	t1 := time.Now()
	if _, err := c.Write(req[:]); err != nil {
		return Sample{}, fmt.Errorf("ntp %s: %w", server, err)
	}
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return Sample{}, fmt.Errorf("ntp %s: %w", server, err)
		}
		t4 := time.Now()
		a, err := ParseResponse(buf[:n], nonce)
		if err != nil {
			continue // a stray or spoofed datagram: wait for the real answer
		}
		s := sample(server, t1, t4, a)
		if s.Delay < 0 || s.Delay > MaxDelay {
			return Sample{}, fmt.Errorf("ntp %s: %w: round trip %v", server, ErrAnswer, s.Delay)
		}
		return s, nil
	}
}

func sample(server string, t1, t4 time.Time, a Answer) Sample {
	// RFC 4330: offset = ((T2-T1) + (T3-T4)) / 2, delay = (T4-T1) - (T3-T2).
	off := (a.Receive.Sub(t1) + a.Transmit.Sub(t4)) / 2
	delay := t4.Sub(t1) - a.Transmit.Sub(a.Receive)
	return Sample{Server: server, Offset: off, Delay: delay}
}
