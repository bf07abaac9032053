package callrec

import (
	"encoding/json"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/media"
)

// FuzzParseRTP: any bytes a peer sends through the relay; the payload
// must lie inside the packet.
func FuzzParseRTP(f *testing.F) {
	f.Add([]byte{0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 1, 0xff})
	f.Add([]byte{0xb1, 0x80, 0, 1, 0, 0, 0, 160, 0, 0, 0, 1, 0, 0, 0, 2, 0xbe, 0xde, 0, 1, 1, 2, 3, 4, 9, 9, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseRTP(b)
		if err != nil {
			return
		}
		if len(h.payload) > len(b)-12 {
			t.Fatalf("payload %d of a %d-byte packet", len(h.payload), len(b))
		}
	})
}

// FuzzPolicy: a policy as the admin API decodes it validates or is
// refused, and a valid one resolves any call without panicking.
func FuzzPolicy(f *testing.F) {
	f.Add([]byte(`{"extensions":{"201":"always"},"trunks":{"t":"never"},"routes":[{"prefix":"00","mode":"on-demand"}],"retention_days":{"call":30}}`), "201", "00")
	f.Fuzz(func(t *testing.T, raw []byte, ext, dialled string) {
		var p Policy
		if json.Unmarshal(raw, &p) != nil || p.Validate() != nil {
			return
		}
		d := p.Resolve(Parties{CallerExt: ext, Trunk: "t", Outbound: true, Dialled: dialled})
		if d.Mode.rank() == 0 {
			t.Fatalf("resolved to %q", d.Mode)
		}
	})
}

// FuzzSessionPacket: packets of any shape handed to a session's tap are
// dropped or queued, never a panic (the relay's loop calls it).
func FuzzSessionPacket(f *testing.F) {
	f.Add([]byte{0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 1, 0xff}, uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, side uint8) {
		s := &Session{ch: make(chan packet, 1)}
		s.voice[0] = 1
		s.event[1] = 1 << (101 - 64)
		s.Packet(media.Side(side), b)
		s.Packet(media.Side(side), b)
	})
}
