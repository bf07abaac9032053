package media

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
)

const offerSDES = "v=0\r\n" +
	"o=alice 2890844526 2890844526 IN IP4 10.1.2.3\r\n" +
	"s=Secret meeting\r\n" +
	"i=internal info\r\n" +
	"c=IN IP4 10.1.2.3\r\n" +
	"t=0 0\r\n" +
	"m=audio 49170 RTP/SAVP 0 8 101\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=fmtp:101 0-16\r\n" +
	"a=ptime:20\r\n" +
	"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20\r\n" +
	"a=candidate:1 1 UDP 2130706431 192.168.7.7 49170 typ host\r\n" +
	"a=x-internal-routing:pbx7.corp.example\r\n" +
	"a=sendrecv\r\n" +
	"m=video 49172 RTP/AVP 96\r\n" +
	"a=rtpmap:96 H264/90000\r\n"

const offerDTLS = "v=0\r\n" +
	"o=- 1 1 IN IP6 fd00::5\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=fingerprint:sha-256 " + fp32 + "\r\n" +
	"m=audio 5004 UDP/TLS/RTP/SAVPF 111\r\n" +
	"c=IN IP6 fd00::5\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n" +
	"a=setup:actpass\r\n" +
	"a=rtcp-mux\r\n" +
	"a=sendonly\r\n"

const fp32 = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"

func TestParseSDP(t *testing.T) {
	_, r, err := ParseSDP([]byte(offerSDES))
	if err != nil {
		t.Fatal(err)
	}
	if r.Addr != netip.MustParseAddr("10.1.2.3") || r.RTPPort != 49170 || r.RTCPPort != 49171 || r.Proto != ProtoSRTP || !r.Secure() {
		t.Fatalf("remote %+v", r)
	}
	if strings.Join(r.Formats, " ") != "0 8 101" || r.Codec() != "PCMU/8000" || len(r.Crypto) != 1 || r.Ptime != "20" {
		t.Fatalf("remote %+v", r)
	}
	_, d, err := ParseSDP([]byte(offerDTLS))
	if err != nil {
		t.Fatal(err)
	}
	if d.Fingerprint == nil || d.Setup != "actpass" || !d.RTCPMux || d.RTCPPort != 5004 || d.Direction != "sendonly" || d.Codec() != "opus/48000/2" {
		t.Fatalf("remote %+v", d)
	}
}

func TestParseSDPRejects(t *testing.T) {
	base := offerSDES
	tests := []struct{ name, sdp string }{
		{"too big", base + strings.Repeat("a=x:y\r\n", MaxSDPBytes/7)},
		{"hostname", strings.Replace(base, "c=IN IP4 10.1.2.3", "c=IN IP4 evil.example", 1)},
		{"multicast", strings.Replace(base, "c=IN IP4 10.1.2.3", "c=IN IP4 224.0.0.1", 1)},
		{"type mismatch", strings.Replace(base, "c=IN IP4 10.1.2.3", "c=IN IP6 10.1.2.3", 1)},
		{"bad proto", strings.Replace(base, "RTP/SAVP", "TCP/MSRP", 1)},
		{"bad pt", strings.Replace(base, "RTP/SAVP 0 8 101", "RTP/SAVP 0 300", 1)},
		{"no audio", strings.Replace(base, "m=audio", "m=text", 1)},
		{"dtls without fingerprint", strings.Replace(offerDTLS, "a=fingerprint:sha-256 "+fp32+"\r\n", "", 1)},
		{"sha-1 fingerprint", strings.Replace(offerDTLS, "sha-256 "+fp32, "sha-1 "+fp32[:59], 1)},
		{"bad setup", strings.Replace(offerDTLS, "actpass", "sideways", 1)},
		{"bad rtcp", strings.Replace(base, "a=ptime:20", "a=rtcp:70000", 1)},
	}
	for _, tc := range tests {
		if _, _, err := ParseSDP([]byte(tc.sdp)); !errors.Is(err, ErrSDP) {
			t.Errorf("%s: err = %v, want ErrSDP", tc.name, err)
		}
	}
}

func TestRewriteHidesTopology(t *testing.T) {
	_, r, err := ParseSDP([]byte(offerSDES))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := sdes.New(1, sdes.AES128CMSHA1_80)
	box := netip.MustParseAddr("203.0.113.10")
	tests := []struct {
		name  string
		local Local
		want  []string
	}{
		{"offer to trunk plain", Local{Addr: box, RTPPort: 30000, SessionID: 7, SessionVersion: 1},
			[]string{"c=IN IP4 203.0.113.10", "m=audio 30000 RTP/AVP 0 8 101", "a=rtcp:30001", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "o=- 7 1 IN IP4 203.0.113.10"}},
		{"answer with SDES", Local{Addr: box, RTPPort: 30002, Crypto: &c, Answering: &r},
			[]string{"m=audio 30002 RTP/SAVP 0 8 101", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:", "m=video 0 RTP/AVP 96"}},
		{"DTLS", Local{Addr: netip.MustParseAddr("2001:db8::1"), RTPPort: 30004, RTCPMux: true, Fingerprint: &Fingerprint{Hash: "sha-256", Value: make([]byte, 32)}, Setup: "passive"},
			[]string{"c=IN IP6 2001:db8::1", "m=audio 30004 UDP/TLS/RTP/SAVP", "a=rtcp-mux", "a=setup:passive", "a=fingerprint:sha-256 00:00"}},
	}
	for _, tc := range tests {
		out, err := Rewrite(r, tc.local)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		s := string(out)
		for _, w := range tc.want {
			if !strings.Contains(s, w) {
				t.Errorf("%s: missing %q in\n%s", tc.name, w, s)
			}
		}
		for _, leak := range []string{"10.1.2.3", "192.168.7.7", "alice", "Secret", "internal", "candidate", "PS1uQCVe", "H264"} {
			if strings.Contains(s, leak) {
				t.Errorf("%s: %q leaked:\n%s", tc.name, leak, s)
			}
		}
		if _, _, err := ParseSDP(out); err != nil {
			t.Errorf("%s: our own SDP does not parse: %v", tc.name, err)
		}
	}
}

func TestFingerprint(t *testing.T) {
	cert, fp, err := NewDTLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseFingerprint(fp.String())
	if err != nil || !got.Matches(cert.Certificate[0]) {
		t.Fatalf("round trip: %v", err)
	}
	got.Value[0] ^= 1
	if got.Matches(cert.Certificate[0]) {
		t.Fatal("altered fingerprint matches")
	}
	for _, bad := range []string{"", "sha-256", "md5 AB:CD", "sha-256 " + fp32[:len(fp32)-3], "sha-256 " + strings.Replace(fp32, "AB", "XY", 1)} {
		if _, err := ParseFingerprint(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseSDP(f *testing.F) {
	f.Add([]byte(offerSDES))
	f.Add([]byte(offerDTLS))
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nm=image 6004 udptl t38\r\n"))
	box := netip.MustParseAddr("198.51.100.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		_, r, err := ParseSDP(b)
		if err != nil {
			return
		}
		if !r.Addr.IsValid() || r.Addr.IsMulticast() || len(r.Formats) > maxFormats {
			t.Fatalf("accepted %+v", r)
		}
		out, err := Rewrite(r, Local{Addr: box, RTPPort: 20000, Answering: &r})
		if err != nil {
			t.Fatalf("rewrite of accepted SDP failed: %v", err)
		}
		if _, _, err := ParseSDP(out); err != nil {
			t.Fatalf("our rewrite does not parse: %v\n%s", err, out)
		}
	})
}

func FuzzParseFingerprint(f *testing.F) {
	f.Add("sha-256 " + fp32)
	f.Fuzz(func(t *testing.T, s string) {
		fp, err := ParseFingerprint(s)
		if err != nil {
			return
		}
		again, err := ParseFingerprint(fp.String())
		if err != nil || again.String() != fp.String() {
			t.Fatalf("not stable: %v", err)
		}
	})
}

// TestVoiceCodec: the codec an answer chose is its first voice format;
// DTMF, comfort noise and redundancy listed before it are skipped.
func TestVoiceCodec(t *testing.T) {
	for _, tc := range []struct {
		formats []string
		rtpmap  map[string]string
		want    string
	}{
		{[]string{"0"}, nil, "PCMU/8000"},
		{[]string{"101", "0"}, map[string]string{"101": "telephone-event/8000"}, "PCMU/8000"},
		{[]string{"13", "8"}, nil, "PCMA/8000"},
		{[]string{"98", "96"}, map[string]string{"98": "RED/48000/2", "96": "opus/48000/2"}, "opus/48000/2"},
		{[]string{"101"}, map[string]string{"101": "TELEPHONE-EVENT/8000"}, ""},
		{nil, nil, ""},
		{[]string{"77"}, nil, "77"},
	} {
		if got := (Remote{Formats: tc.formats, Rtpmap: tc.rtpmap}).VoiceCodec(); got != tc.want {
			t.Errorf("%v %v: got %q, want %q", tc.formats, tc.rtpmap, got, tc.want)
		}
	}
}

// TestNegotiated: the CDR codec is the answer's first voice format the
// offer has; an answer outside the offer leaves the offer's first.
func TestNegotiated(t *testing.T) {
	opus := Remote{Formats: []string{"96", "0", "8", "101"}, Rtpmap: map[string]string{"96": "opus/48000/2", "101": "telephone-event/8000"}}
	pcma := Remote{Formats: []string{"8", "101"}, Rtpmap: map[string]string{"101": "telephone-event/8000"}}
	for _, tc := range []struct {
		name          string
		offer, answer Remote
		want          string
	}{
		{"linphone to baresip", opus, Remote{Formats: []string{"0", "101"}, Rtpmap: map[string]string{"101": "telephone-event/8000"}}, "PCMU/8000"},
		{"DTMF listed first", opus, Remote{Formats: []string{"101", "8"}, Rtpmap: map[string]string{"101": "telephone-event/8000"}}, "PCMA/8000"},
		{"answer keeps opus", opus, Remote{Formats: []string{"111"}, Rtpmap: map[string]string{"111": "OPUS/48000/2"}}, "OPUS/48000/2"},
		{"answer outside the offer", pcma, Remote{Formats: []string{"0"}}, "PCMA/8000"},
		{"empty offer", Remote{}, Remote{Formats: []string{"9"}}, "G722/8000"},
		{"nothing", Remote{}, Remote{}, ""},
	} {
		if got := Negotiated(tc.offer, tc.answer); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
