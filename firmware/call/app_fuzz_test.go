package call

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/media"
)

// FuzzAppFormat: an application call's codec choice and answer come from
// the caller's SDP. Whatever the offer, the answer names one codec the
// engine speaks (in the offer's payload type) and at most
// telephone-event, and it parses back.
func FuzzAppFormat(f *testing.F) {
	f.Add("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n")
	f.Add("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 96 0 9\r\na=rtpmap:96 opus/48000/2\r\na=sendonly\r\n")
	f.Add("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 100\r\na=rtpmap:100 G722/16000\r\n")
	f.Fuzz(func(t *testing.T, body string) {
		_, rem, err := media.ParseSDP([]byte(body))
		if err != nil {
			return
		}
		fm, err := chooseAppFormat(rem)
		if err != nil {
			return
		}
		if _, err := newVoiceCodec(fm.codec.name); err != nil {
			t.Fatalf("chose %q, which the engine does not speak", fm.codec.name)
		}
		if _, err := fm.keep(rem); err != nil {
			t.Fatalf("the same offer again: %v", err)
		}
		loc := media.Local{Addr: netip.MustParseAddr("192.0.2.9"), RTPPort: 30000, Answering: &rem}
		out, err := media.Rewrite(fm.answerFrom(rem), loc)
		if err != nil {
			t.Fatalf("answer: %v", err)
		}
		_, back, err := media.ParseSDP(out)
		if err != nil {
			t.Fatalf("answer does not parse: %v\n%s", err, out)
		}
		if len(back.Formats) == 0 || len(back.Formats) > 2 || back.Formats[0] != strconv.Itoa(int(fm.codec.pt)) {
			t.Fatalf("answer formats %v for %+v", back.Formats, fm)
		}
	})
}
