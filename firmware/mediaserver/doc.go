// Package mediaserver is the box's own media engine: the parts an
// application endpoint (voicemail, IVR, conference, music on hold, call
// recording) needs to play, record, detect and mix audio on its RTP legs.
// The relay and SRTP/DTLS stay in firmware/media; this tree only turns
// payloads into PCM and back, and stores what it records encrypted.
//
// Subpackages:
//   - codec: G.711 µ-law/A-law, G.722, 8k<->16k resampling, lookup by rtpmap name
//   - dtmf: RFC 4733 telephone-events, SIP INFO bodies, in-band Goertzel detection
//   - jitter: reordering buffer with loss concealment for recorded/mixed legs
//   - mix: N-party conference mixer with join/leave tones
//   - wav: bounded WAV parser for admin uploads, and a writer
//   - recording: encrypted-at-rest chunked recording files, retention, quota
//   - prompts: the default (tone) prompt set and per-language replacements
package mediaserver
