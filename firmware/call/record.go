package call

// Call recording: when a two-party call is answered the B2BUA hands its
// relay call to Config.Recorder, which applies the recording policy and
// taps the relay's plaintext RTP (firmware/callrec). The CDR says whether
// and where the call was recorded, or why not.

import "github.com/edgepbx/edgepbx/firmware/media"

// RecordCall describes an answered two-party call to the Recorder.
type RecordCall struct {
	ID             string
	Caller, Callee Identity
	Trunk          string // the trunk of an inbound or outbound call
	Direction      string // dialplan kind: internal, inbound, outbound, emergency
	Dialled        string
	From, To       string // as the CDR names them
	Codec          string // negotiated voice codec (rtpmap)
	// Formats maps the payload types of both legs' SDP to their rtpmap.
	Formats map[uint8]string
	Media   *media.Call
}

// Recorder records bridged calls (*callrec.Manager through an adapter in
// cmd/edgepbxd). Record returns stop (nil: nothing is recorded or can be
// started) and a note for the CDR when it records nothing. stop ends the
// recording and returns the CDR note; it is called once, before the relay
// call closes.
type Recorder interface {
	Record(RecordCall) (stop func() string, note string)
}

// startRecording applies the recording policy once the call is answered.
func (c *call) startRecording() {
	r := c.b.cfg.Recorder
	if r == nil || c.m == nil {
		return
	}
	c.mu.Lock()
	a, b := c.legs[media.A], c.legs[media.B]
	if c.state != stConfirmed || a == nil || b == nil || c.app != nil || c.recStop != nil {
		c.mu.Unlock()
		return
	}
	rc := RecordCall{ID: c.id, Caller: c.caller, Callee: c.callee, Trunk: c.rec.Trunk, Direction: c.rec.Direction,
		Dialled: c.rec.Dialled, From: c.rec.From, To: c.rec.To, Codec: c.rec.Codec, Media: c.m, Formats: map[uint8]string{}}
	for _, l := range []*leg{b, a} { // the caller's names win
		for pt, n := range l.peer.PayloadNames() {
			rc.Formats[pt] = n
		}
	}
	c.mu.Unlock()
	stop, note := r.Record(rc)
	c.mu.Lock()
	if c.state == stEnded { // hung up meanwhile: finish has run
		c.mu.Unlock()
		if stop != nil {
			stop()
		}
		return
	}
	c.recStop, c.rec.Recording = stop, note
	c.mu.Unlock()
}

// stopRecording ends the recording (finish, before the relay call closes).
func (c *call) stopRecording() {
	c.mu.Lock()
	stop := c.recStop
	c.recStop = nil
	c.mu.Unlock()
	if stop != nil {
		note := stop()
		c.mu.Lock()
		c.rec.Recording = note
		c.mu.Unlock()
	}
}
