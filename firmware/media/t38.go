package media

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// ErrNotFax means an SDP body holds no active T.38 stream (m=image udptl
// t38 with a port).
var ErrNotFax = errors.New("media: no T.38 stream")

// MaxUDPTLDatagram is the largest T38FaxMaxDatagram the box advertises:
// below an Ethernet MTU so nothing fragments, and inside what the relay
// carries (maxPacket); a peer asking for more is told less.
const MaxUDPTLDatagram = 1400

// t38Attr is one known T.38 SDP attribute (ITU-T T.38 Annex D, RFC 4612).
type t38Attr struct {
	name  string // canonical spelling, re-emitted as is
	check func(v string) (string, bool)
}

func intIn(lo, hi int) func(string) (string, bool) {
	return func(v string) (string, bool) {
		if len(v) > 7 {
			return "", false
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return "", false
		}
		return strconv.Itoa(n), true
	}
}

func oneOf(vals ...string) func(string) (string, bool) {
	return func(v string) (string, bool) {
		for _, x := range vals {
			if strings.EqualFold(v, x) {
				return x, true
			}
		}
		return "", false
	}
}

// flag attributes are a bare name (true) or 0/1 (old gateways write
// T38FaxFillBitRemoval:0 for false).
func flag(v string) (string, bool) {
	switch v {
	case "", "1":
		return "", true
	case "0":
		return "0", true
	}
	return "", false
}

// t38Attrs lists what is passed on, in the order it is written. Anything
// else (vendor info, ICE, crypto) is dropped like Rewrite drops it.
var t38Attrs = []t38Attr{
	{"T38FaxVersion", intIn(0, 3)},
	{"T38MaxBitRate", intIn(2400, 33600)},
	{"T38FaxFillBitRemoval", flag},
	{"T38FaxTranscodingMMR", flag},
	{"T38FaxTranscodingJBIG", flag},
	{"T38FaxRateManagement", oneOf("localTCF", "transferredTCF")},
	{"T38FaxMaxBuffer", intIn(1, 1<<20)},
	{"T38FaxMaxDatagram", intIn(1, 1<<20)},
	{"T38FaxUdpEC", oneOf("t38UDPRedundancy", "t38UDPFEC", "t38UDPNoEC")},
}

// Fax is what one leg's peer said about its T.38 stream.
type Fax struct {
	Addr netip.Addr // unspecified: on hold
	Port uint16
	// Attrs holds the known T.38 attributes present, canonical names and
	// values, in t38Attrs order ("" value: a flag set).
	Attrs     []sdp.Attribute
	Direction string

	mlines []mline
	index  int
}

// Attr returns the value of a T.38 attribute and whether it is present.
func (f Fax) Attr(name string) (string, bool) {
	for _, a := range f.Attrs {
		if strings.EqualFold(a.Key, name) {
			return a.Value, true
		}
	}
	return "", false
}

// ParseFax reads an SDP body from the network and extracts its T.38
// stream: the first m=image with transport udptl, format t38 and a port.
// A body with an active audio stream is an audio offer (the image stream,
// if any, is rejected by the answer): ParseFax then returns ErrNotFax, as
// for a body with no T.38 at all. Secure UDPTL (UDP/TLS/UDPTL, RFC 7345)
// is not relayed and is ErrNotFax too.
func ParseFax(body []byte) (Fax, error) {
	var f Fax
	if len(body) > MaxSDPBytes {
		return f, fmt.Errorf("%w: %d bytes (max %d)", ErrSDP, len(body), MaxSDPBytes)
	}
	sd, err := unmarshalSDP(body)
	if err != nil {
		return f, err
	}
	if len(sd.MediaDescriptions) == 0 || len(sd.MediaDescriptions) > maxMedia || len(sd.Attributes) > maxAttributes {
		return f, fmt.Errorf("%w: %d media sections", ErrSDP, len(sd.MediaDescriptions))
	}
	var img *sdp.MediaDescription
	for i, m := range sd.MediaDescriptions {
		if len(m.Attributes) > maxAttributes || len(m.MediaName.Formats) > maxFormats {
			return f, fmt.Errorf("%w: media section too large", ErrSDP)
		}
		ml := mline{media: m.MediaName.Media, proto: strings.Join(m.MediaName.Protos, "/"), format: "0"}
		if len(m.MediaName.Formats) > 0 {
			ml.format = m.MediaName.Formats[0]
		}
		if !token(ml.media) || !token(ml.format) || len(ml.proto) > 32 {
			return f, fmt.Errorf("%w: media line", ErrSDP)
		}
		f.mlines = append(f.mlines, ml)
		if m.MediaName.Port.Value == 0 {
			continue
		}
		if ml.media == "audio" {
			return f, ErrNotFax
		}
		if img == nil && ml.media == "image" && strings.EqualFold(ml.proto, "udptl") && len(m.MediaName.Formats) == 1 && strings.EqualFold(ml.format, "t38") {
			img = m
			f.index = i
		}
	}
	if img == nil {
		return f, ErrNotFax
	}
	ci := img.ConnectionInformation
	if ci == nil {
		ci = sd.ConnectionInformation
	}
	addr, err := connAddr(ci)
	if err != nil {
		return f, err
	}
	f.Addr = addr
	port := img.MediaName.Port
	if port.Value < 0 || port.Value > 65535 || (port.Range != nil && *port.Range != 1) {
		return f, fmt.Errorf("%w: bad port", ErrSDP)
	}
	f.Port = uint16(port.Value)
	f.Direction = directionDef
	for _, a := range sd.Attributes {
		switch a.Key {
		case "sendrecv", "sendonly", "recvonly", "inactive":
			f.Direction = a.Key
		}
	}
	seen := make([]string, len(t38Attrs))
	have := make([]bool, len(t38Attrs))
	for _, a := range img.Attributes {
		switch a.Key {
		case "sendrecv", "sendonly", "recvonly", "inactive":
			f.Direction = a.Key
			continue
		}
		for i, k := range t38Attrs {
			if !strings.EqualFold(a.Key, k.name) {
				continue
			}
			v, ok := k.check(a.Value)
			if !ok || have[i] {
				return f, fmt.Errorf("%w: a=%s:%.16q", ErrSDP, k.name, a.Value)
			}
			seen[i], have[i] = v, true
		}
	}
	for i, k := range t38Attrs {
		if have[i] {
			f.Attrs = append(f.Attrs, sdp.Attribute{Key: k.name, Value: seen[i]})
		}
	}
	return f, nil
}

// connAddr checks a c= line the way ParseSDP does: an IP literal of its
// type, unicast or unspecified (hold).
func connAddr(ci *sdp.ConnectionInformation) (netip.Addr, error) {
	if ci == nil || ci.Address == nil || ci.NetworkType != "IN" {
		return netip.Addr{}, fmt.Errorf("%w: no connection address", ErrSDP)
	}
	addr, err := netip.ParseAddr(ci.Address.Address)
	if err != nil || addr.Zone() != "" || (ci.AddressType == "IP4") != addr.Is4() {
		return netip.Addr{}, fmt.Errorf("%w: connection address must be an IP literal of its type", ErrSDP)
	}
	if addr.IsMulticast() || (!addr.IsUnspecified() && !addr.IsGlobalUnicast() && !addr.IsLoopback() && !addr.IsPrivate()) {
		return netip.Addr{}, fmt.Errorf("%w: connection address %s not unicast", ErrSDP, addr)
	}
	return addr.Unmap(), nil
}

// FaxPeer is the relay's view of a T.38 peer: UDPTL on one port.
func FaxPeer(f Fax) Peer {
	return Peer{Addr: f.Addr, RTPPort: f.Port, RTCPMux: true, UDPTL: true}
}

// RewriteFax builds the T.38 SDP the box sends to a peer: the other
// side's T.38 parameters (T38FaxMaxDatagram at most MaxUDPTLDatagram),
// the box's address and the leg's port, nothing else. answering is the
// offer this SDP answers (nil for an offer): its other streams are kept
// at port 0.
func RewriteFax(from Fax, l Local, answering *Fax) ([]byte, error) {
	if !l.Addr.IsValid() {
		return nil, fmt.Errorf("media: rewrite: no local address")
	}
	at := "IP4"
	if l.Addr.Is6() {
		at = "IP6"
	}
	m := &sdp.MediaDescription{MediaName: sdp.MediaName{
		Media: "image", Port: sdp.RangedPort{Value: int(l.RTPPort)}, Protos: []string{"udptl"}, Formats: []string{"t38"},
	}}
	for _, a := range from.Attrs {
		if a.Key == "T38FaxMaxDatagram" {
			if n, err := strconv.Atoi(a.Value); err == nil && n > MaxUDPTLDatagram {
				a.Value = strconv.Itoa(MaxUDPTLDatagram)
			}
		}
		m.Attributes = append(m.Attributes, a)
	}
	dir := from.Direction
	if dir == "" {
		dir = directionDef
	}
	m.Attributes = append(m.Attributes, sdp.Attribute{Key: dir})
	sd := &sdp.SessionDescription{
		Origin: sdp.Origin{
			Username: "-", SessionID: l.SessionID, SessionVersion: l.SessionVersion,
			NetworkType: "IN", AddressType: at, UnicastAddress: l.Addr.String(),
		},
		SessionName:           "-",
		ConnectionInformation: &sdp.ConnectionInformation{NetworkType: "IN", AddressType: at, Address: &sdp.Address{Address: l.Addr.String()}},
		TimeDescriptions:      []sdp.TimeDescription{{}},
		MediaDescriptions:     []*sdp.MediaDescription{m},
	}
	if a := answering; a != nil && len(a.mlines) > 1 {
		sd.MediaDescriptions = sd.MediaDescriptions[:0]
		for i, ml := range a.mlines {
			if i == a.index {
				sd.MediaDescriptions = append(sd.MediaDescriptions, m)
				continue
			}
			sd.MediaDescriptions = append(sd.MediaDescriptions, &sdp.MediaDescription{MediaName: sdp.MediaName{
				Media: ml.media, Port: sdp.RangedPort{Value: 0}, Protos: strings.Split(ml.proto, "/"), Formats: []string{ml.format},
			}})
		}
	}
	return sd.Marshal()
}

// unmarshalSDP parses an SDP body. pion/sdp knows neither the image media
// type nor the udptl transport (RFC 6466): m=image lines are parsed as
// application/UDP and given back their media type and transport after, so
// an offer with a T.38 stream is not refused as a whole.
func unmarshalSDP(body []byte) (*sdp.SessionDescription, error) {
	lines := strings.SplitAfter(string(body), "\n")
	protos := map[int]string{}
	idx := -1
	for i, ln := range lines {
		if !strings.HasPrefix(ln, "m=") {
			continue
		}
		if idx++; idx >= maxMedia {
			break // refused below by the media count
		}
		text := strings.TrimRight(ln, "\r\n")
		f := strings.Split(text[2:], " ")
		if len(f) < 3 || f[0] != "image" {
			continue
		}
		if !protoToken(f[2]) {
			return nil, fmt.Errorf("%w: media line", ErrSDP)
		}
		protos[idx] = f[2]
		f[0], f[2] = "application", "UDP"
		lines[i] = "m=" + strings.Join(f, " ") + ln[len(text):]
	}
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(strings.Join(lines, "")); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSDP, err)
	}
	for i, p := range protos {
		if i < len(sd.MediaDescriptions) {
			m := sd.MediaDescriptions[i]
			m.MediaName.Media, m.MediaName.Protos = "image", strings.Split(p, "/")
		}
	}
	return &sd, nil
}

// protoToken reports whether s is a short SDP transport (tokens and /).
func protoToken(s string) bool {
	for p := range strings.SplitSeq(s, "/") {
		if !token(p) {
			return false
		}
	}
	return len(s) <= 32
}
