package media

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/pion/sdp/v3"
)

// Bounds on SDP from the network. Real audio offers are ~1 KiB.
const (
	MaxSDPBytes      = 8 << 10
	maxMedia         = 8
	maxAttributes    = 64 // per media and at session level
	maxFormats       = 32
	maxCryptoOffered = 8
)

// ErrSDP wraps every rejection of an SDP body.
var ErrSDP = errors.New("media: invalid SDP")

// Transport profiles of the audio stream.
const (
	ProtoRTP     = "RTP/AVP"
	ProtoSRTP    = "RTP/SAVP"
	ProtoDTLS    = "UDP/TLS/RTP/SAVP"
	protoAVPF    = "RTP/AVPF"
	protoSAVPF   = "RTP/SAVPF"
	protoDTLSF   = "UDP/TLS/RTP/SAVPF"
	directionDef = "sendrecv"
)

// Remote is what one leg's peer said about its audio stream.
type Remote struct {
	Addr     netip.Addr // unspecified (0.0.0.0) means "on hold, send nothing"
	RTPPort  uint16     // 0: stream rejected
	RTCPPort uint16     // a=rtcp, else RTPPort+1; equals RTPPort with rtcp-mux
	RTCPMux  bool
	Proto    string
	// Formats are the payload types in preference order, with their
	// rtpmap/fmtp lines (kept verbatim in the rewritten SDP).
	Formats   []string
	Rtpmap    map[string]string
	Fmtp      map[string]string
	Ptime     string
	Direction string
	// Crypto holds the raw a=crypto values (RTP/SAVP); parse with sdes.
	Crypto []string
	// Fingerprint and Setup are set for DTLS-SRTP (RFC 5763).
	Fingerprint *Fingerprint
	Setup       string

	// mlines keeps the shape of the whole offer (media, proto, first
	// format) so an answer can reject the other streams with port 0.
	mlines     []mline
	audioIndex int
}

type mline struct{ media, proto, format string }

// Secure reports whether the peer asked for SRTP (SDES or DTLS).
func (r Remote) Secure() bool { return r.Proto != ProtoRTP && r.Proto != protoAVPF }

// Codec returns the encoding name of the preferred format.
func (r Remote) Codec() string {
	if len(r.Formats) == 0 {
		return ""
	}
	return r.formatName(r.Formats[0])
}

// VoiceCodec is the encoding name of the first format that carries voice
// (not telephone-event, comfort noise or redundancy).
func (r Remote) VoiceCodec() string {
	for _, n := range r.voiceCodecs() {
		return n
	}
	return ""
}

func (r Remote) voiceCodecs() []string {
	var out []string
	for _, f := range r.Formats {
		n := r.formatName(f)
		enc, _, _ := strings.Cut(n, "/")
		switch strings.ToLower(enc) {
		case "telephone-event", "cn", "red":
			continue
		}
		out = append(out, n)
	}
	return out
}

// Negotiated is the voice codec an offer/answer exchange chose, for the
// CDR: the answer's first voice format that the offer has (RFC 3264 §6.1:
// the answerer lists what it accepts from the offer, the one it sends
// first). An answer naming nothing of the offer (sipp's built-in UAS
// always answers PCMU) leaves the offerer on its own first choice.
func Negotiated(offer, answer Remote) string {
	offered := offer.voiceCodecs()
	for _, a := range answer.voiceCodecs() {
		for _, o := range offered {
			if strings.EqualFold(a, o) {
				return a
			}
		}
	}
	if len(offered) > 0 {
		return offered[0]
	}
	return answer.VoiceCodec()
}

func (r Remote) formatName(pt string) string {
	if m, ok := r.Rtpmap[pt]; ok {
		return m
	}
	switch pt { // static payload types (RFC 3551)
	case "0":
		return "PCMU/8000"
	case "8":
		return "PCMA/8000"
	case "9":
		return "G722/8000"
	case "13":
		return "CN/8000"
	case "18":
		return "G729/8000"
	}
	return pt
}

// ParseSDP reads an SDP body from the network and extracts the first audio
// stream. Other streams are noted so Rewrite can reject them.
func ParseSDP(body []byte) (*sdp.SessionDescription, Remote, error) {
	var r Remote
	if len(body) > MaxSDPBytes {
		return nil, r, fmt.Errorf("%w: %d bytes (max %d)", ErrSDP, len(body), MaxSDPBytes)
	}
	sd, err := unmarshalSDP(body)
	if err != nil {
		return nil, r, err
	}
	if len(sd.MediaDescriptions) == 0 || len(sd.MediaDescriptions) > maxMedia {
		return nil, r, fmt.Errorf("%w: %d media sections", ErrSDP, len(sd.MediaDescriptions))
	}
	if len(sd.Attributes) > maxAttributes {
		return nil, r, fmt.Errorf("%w: too many session attributes", ErrSDP)
	}
	var audio *sdp.MediaDescription
	for i, m := range sd.MediaDescriptions {
		if len(m.Attributes) > maxAttributes || len(m.MediaName.Formats) > maxFormats {
			return nil, r, fmt.Errorf("%w: media section too large", ErrSDP)
		}
		if audio == nil && m.MediaName.Media == "audio" && m.MediaName.Port.Value != 0 {
			audio = m
			r.audioIndex = i
		}
		ml := mline{media: m.MediaName.Media, proto: strings.Join(m.MediaName.Protos, "/"), format: "0"}
		if len(m.MediaName.Formats) > 0 {
			ml.format = m.MediaName.Formats[0]
		}
		if !token(ml.media) || !token(ml.format) || len(ml.proto) > 32 {
			return nil, r, fmt.Errorf("%w: media line", ErrSDP)
		}
		r.mlines = append(r.mlines, ml)
	}
	if audio == nil {
		return nil, r, fmt.Errorf("%w: no audio stream", ErrSDP)
	}
	ci := audio.ConnectionInformation
	if ci == nil {
		ci = sd.ConnectionInformation
	}
	if ci == nil || ci.Address == nil || ci.NetworkType != "IN" {
		return nil, r, fmt.Errorf("%w: no connection address", ErrSDP)
	}
	addr, err := netip.ParseAddr(ci.Address.Address)
	if err != nil || addr.Zone() != "" || (ci.AddressType == "IP4") != addr.Is4() {
		// Host names would make us resolve attacker-chosen names.
		return nil, r, fmt.Errorf("%w: connection address must be an IP literal of its type", ErrSDP)
	}
	if addr.IsMulticast() || (!addr.IsUnspecified() && !addr.IsGlobalUnicast() && !addr.IsLoopback() && !addr.IsPrivate()) {
		return nil, r, fmt.Errorf("%w: connection address %s not unicast", ErrSDP, addr)
	}
	r.Addr = addr.Unmap()
	port := audio.MediaName.Port
	if port.Value < 0 || port.Value > 65535 || (port.Range != nil && *port.Range != 1) {
		return nil, r, fmt.Errorf("%w: bad port", ErrSDP)
	}
	r.RTPPort = uint16(port.Value)
	r.Proto = strings.Join(audio.MediaName.Protos, "/")
	switch r.Proto {
	case ProtoRTP, ProtoSRTP, ProtoDTLS, protoAVPF, protoSAVPF, protoDTLSF:
	default:
		return nil, r, fmt.Errorf("%w: transport %.32q", ErrSDP, r.Proto)
	}
	r.Rtpmap, r.Fmtp = map[string]string{}, map[string]string{}
	for _, f := range audio.MediaName.Formats {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || n > 127 || len(f) > 3 {
			return nil, r, fmt.Errorf("%w: payload type %.8q", ErrSDP, f)
		}
		r.Formats = append(r.Formats, f)
	}
	r.Direction = directionDef
	session := func(key string) (string, bool) {
		for _, a := range sd.Attributes {
			if a.Key == key {
				return a.Value, true
			}
		}
		return "", false
	}
	for _, d := range []string{"sendrecv", "sendonly", "recvonly", "inactive"} {
		if _, ok := session(d); ok {
			r.Direction = d
		}
	}
	if v, ok := session("fingerprint"); ok {
		fp, err := ParseFingerprint(v)
		if err != nil {
			return nil, r, err
		}
		r.Fingerprint = &fp
	}
	if v, ok := session("setup"); ok {
		r.Setup = v
	}
	for _, a := range audio.Attributes {
		switch a.Key {
		case "rtpmap", "fmtp":
			pt, rest, _ := strings.Cut(a.Value, " ")
			if !slices.Contains(r.Formats, pt) || len(a.Value) > 256 {
				continue
			}
			if a.Key == "rtpmap" {
				r.Rtpmap[pt] = rest
			} else {
				r.Fmtp[pt] = rest
			}
		case "ptime":
			if n, err := strconv.Atoi(a.Value); err == nil && n > 0 && n <= 1000 {
				r.Ptime = a.Value
			}
		case "sendrecv", "sendonly", "recvonly", "inactive":
			r.Direction = a.Key
		case "rtcp-mux":
			r.RTCPMux = true
		case "rtcp":
			p, _, _ := strings.Cut(a.Value, " ")
			n, err := strconv.ParseUint(p, 10, 16)
			if err != nil || n == 0 {
				return nil, r, fmt.Errorf("%w: a=rtcp", ErrSDP)
			}
			r.RTCPPort = uint16(n)
		case "crypto":
			if len(r.Crypto) < maxCryptoOffered {
				r.Crypto = append(r.Crypto, a.Value)
			}
		case "fingerprint":
			fp, err := ParseFingerprint(a.Value)
			if err != nil {
				return nil, r, err
			}
			r.Fingerprint = &fp
		case "setup":
			r.Setup = a.Value
		}
	}
	switch r.Setup {
	case "", "active", "passive", "actpass", "holdconn":
	default:
		return nil, r, fmt.Errorf("%w: a=setup", ErrSDP)
	}
	if r.RTPPort != 0 && r.RTCPPort == 0 {
		r.RTCPPort = r.RTPPort + 1
		if r.RTCPMux {
			r.RTCPPort = r.RTPPort
		}
	}
	if r.Proto == ProtoDTLS || r.Proto == protoDTLSF {
		if r.Fingerprint == nil {
			return nil, r, fmt.Errorf("%w: DTLS-SRTP without a=fingerprint", ErrSDP)
		}
	}
	return sd, r, nil
}

// Local is what the box says to one leg's peer about its anchored stream.
type Local struct {
	Addr           netip.Addr
	RTPPort        uint16 // 0 rejects the audio stream
	RTCPMux        bool
	SessionID      uint64 // stable per call leg (o= line)
	SessionVersion uint64 // incremented on every new offer/answer
	// Exactly one of Crypto (SDES) and Fingerprint (DTLS-SRTP) may be set;
	// neither means plain RTP.
	Crypto      *sdes.Crypto
	Fingerprint *Fingerprint
	Setup       string // for DTLS: "active", "passive" or "actpass"
	// BestEffort puts the SDES keys on RTP/AVP instead of RTP/SAVP
	// (best-effort SRTP, RFC 4568 §7.5 interop practice): a phone without
	// SRTP ignores a=crypto and answers plain RTP instead of 488.
	BestEffort bool
	// Answering is the offer this SDP answers (nil when the box offers):
	// the answer then keeps the offer's m-lines, other streams at port 0.
	Answering *Remote
}

// token reports whether s is a short SDP token (media type, payload type).
func token(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Rewrite builds the SDP the box sends to a peer: the peer's codecs, the
// box's address and port, and nothing else of the other side (no origin
// user or address, ICE candidates, session info, or vendor attributes).
func Rewrite(from Remote, l Local) ([]byte, error) {
	if !l.Addr.IsValid() {
		return nil, fmt.Errorf("media: rewrite: no local address")
	}
	if l.Crypto != nil && l.Fingerprint != nil {
		return nil, fmt.Errorf("media: rewrite: both SDES and DTLS requested")
	}
	at := "IP4"
	if l.Addr.Is6() {
		at = "IP6"
	}
	proto := ProtoRTP
	switch {
	case l.Crypto != nil && !l.BestEffort:
		proto = ProtoSRTP
	case l.Fingerprint != nil:
		proto = ProtoDTLS
	}
	m := &sdp.MediaDescription{MediaName: sdp.MediaName{
		Media:   "audio",
		Port:    sdp.RangedPort{Value: int(l.RTPPort)},
		Protos:  strings.Split(proto, "/"),
		Formats: append([]string(nil), from.Formats...),
	}}
	if len(m.MediaName.Formats) == 0 {
		m.MediaName.Formats = []string{"0"}
	}
	add := func(k, v string) { m.Attributes = append(m.Attributes, sdp.Attribute{Key: k, Value: v}) }
	for _, f := range from.Formats {
		if v, ok := from.Rtpmap[f]; ok {
			add("rtpmap", f+" "+v)
		}
		if v, ok := from.Fmtp[f]; ok {
			add("fmtp", f+" "+v)
		}
	}
	if from.Ptime != "" {
		add("ptime", from.Ptime)
	}
	dir := from.Direction
	if dir == "" {
		dir = directionDef
	}
	add(dir, "")
	if l.RTCPMux {
		add("rtcp-mux", "")
	} else if l.RTPPort != 0 {
		add("rtcp", strconv.Itoa(int(l.RTPPort)+1))
	}
	if l.Crypto != nil {
		add("crypto", l.Crypto.Marshal())
	}
	if l.Fingerprint != nil {
		add("fingerprint", l.Fingerprint.String())
		setup := l.Setup
		if setup == "" {
			setup = "actpass"
		}
		add("setup", setup)
	}
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
	if a := l.Answering; a != nil && len(a.mlines) > 1 {
		sd.MediaDescriptions = sd.MediaDescriptions[:0]
		for i, ml := range a.mlines {
			if i == a.audioIndex {
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
