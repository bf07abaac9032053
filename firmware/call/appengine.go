package call

// Adapters to the media engine (firmware/mediaserver): codecs, RFC 4733
// telephone-events, SIP INFO DTMF bodies and in-band detection.

import (
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/dtmf"
)

// voiceCodec is what an application call needs of a codec
// (mediaserver/codec.Codec).
type voiceCodec interface {
	ClockRate() int
	SampleRate() int
	Encode(dst []byte, pcm []int16) []byte
	Decode(dst []int16, payload []byte) []int16
}

func newVoiceCodec(rtpmap string) (voiceCodec, error) { return codec.New(rtpmap) }

// inband finds DTMF tones in decoded audio: the fallback for phones that
// send neither RFC 4733 nor INFO. Once a leg has sent telephone-events
// the detector is switched off (the same keys may be audible too).
type inband struct {
	d       *dtmf.Detector
	off     bool
	reports []dtmf.Report
}

func newInband(rate int) *inband {
	d, err := dtmf.NewDetector(rate)
	if err != nil {
		return nil
	}
	return &inband{d: d}
}

// feed returns the keys that began in pcm.
func (b *inband) feed(pcm []int16, key func(byte)) {
	if b == nil || b.off {
		return
	}
	b.reports = b.d.Process(b.reports[:0], pcm)
	for _, r := range b.reports {
		if r.Begin && r.Digit < 128 && validDigit(byte(r.Digit)) {
			key(byte(r.Digit))
		}
	}
}

// events turns a leg's RFC 4733 packets into keys, once per event.
type events struct{ r *dtmf.Receiver }

func newEvents() events { return events{r: dtmf.NewReceiver(8000)} }

func (e events) packet(ts uint32, payload []byte) (byte, bool) {
	rep, ok, err := e.r.Packet(ts, payload)
	if err != nil || !ok || !rep.Begin || rep.Digit >= 128 || !validDigit(byte(rep.Digit)) {
		return 0, false
	}
	return byte(rep.Digit), true
}

// parseInfoDTMF reads the key of an INFO body (application/dtmf-relay,
// application/dtmf).
func parseInfoDTMF(contentType string, body []byte) (byte, error) {
	rep, err := dtmf.ParseINFO(contentType, body)
	if err != nil {
		return 0, err
	}
	if rep.Digit >= 128 || !validDigit(byte(rep.Digit)) {
		return 0, dtmf.ErrMalformed
	}
	return byte(rep.Digit), nil
}
