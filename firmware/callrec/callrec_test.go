package callrec

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/dtmf"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// loopbackPinholes is the dev-mode firewall of cmd/edgepbxd: loopback
// media needs no pinholes.
type loopbackPinholes struct{}

func (loopbackPinholes) OpenPinhole(context.Context, fwspec.Pinhole) error  { return nil }
func (loopbackPinholes) ClosePinhole(context.Context, fwspec.Pinhole) error { return nil }

func newStore(t testing.TB) *recording.Store {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	keys, err := recording.StaticKey(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := recording.OpenStore(recording.Config{Dir: filepath.Join(t.TempDir(), "rec"), Keys: keys, Quota: 64 << 20, MinFree: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// bridged is a real relay call between two loopback phones.
type bridged struct {
	c    *media.Call
	a, b *net.UDPConn
}

func newBridged(t testing.TB) *bridged {
	t.Helper()
	ports, err := media.NewPorts(46000, 46999)
	if err != nil {
		t.Fatal(err)
	}
	r, err := media.NewRelay(media.Config{Addr: netip.MustParseAddr("127.0.0.1"), Ports: ports, Pinholes: loopbackPinholes{}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.NewCall("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	br := &bridged{c: c}
	for i, conn := range []**net.UDPConn{&br.a, &br.b} {
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.Close() })
		*conn = u
		ap := u.LocalAddr().(*net.UDPAddr).AddrPort()
		if err := c.SetPeer(context.Background(), media.Side(i), media.Peer{Addr: ap.Addr(), RTPPort: ap.Port(), RTCPMux: true}); err != nil {
			t.Fatal(err)
		}
	}
	return br
}

// stream sends one side's RTP: audio frames of a tone, with RFC 4733
// digits typed at given frames.
type stream struct {
	conn    *net.UDPConn
	to      uint16
	pt, ev  uint8
	enc     codec.Codec
	pcm     []int16
	seq     uint16
	ts      uint32
	pending []dtmf.Packet
}

func (s *stream) send(t testing.TB, pt uint8, marker bool, ts uint32, payload []byte) {
	b := make([]byte, 12, 12+len(payload))
	b[0], b[1] = 0x80, pt
	if marker {
		b[1] |= 0x80
	}
	b[2], b[3] = byte(s.seq>>8), byte(s.seq)
	b[4], b[5], b[6], b[7] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
	b[8], b[11] = 0x12, byte(pt)
	b = append(b, payload...)
	s.seq++
	if _, err := s.conn.WriteToUDP(b, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(s.to)}); err != nil {
		t.Fatal(err)
	}
}

// frame sends frame i (20 ms): a pending DTMF packet instead of audio
// while a digit is being typed.
func (s *stream) frame(t testing.TB, i int) {
	if len(s.pending) > 0 {
		p := s.pending[0]
		s.pending = s.pending[1:]
		s.send(t, s.ev, p.Marker, p.Timestamp, p.Payload)
		s.ts += 160
		return
	}
	n := s.enc.FrameSamples()
	start := (i * n) % len(s.pcm) // one second of whole periods: no seam
	s.send(t, s.pt, false, s.ts, s.enc.Encode(nil, s.pcm[start:start+n]))
	s.ts += 160
}

func (s *stream) typeCode(t testing.TB, code string) {
	for _, d := range code {
		ps, err := dtmf.Packets(d, s.ts+uint32(len(s.pending))*160, 100*time.Millisecond, 10, 8000, 20*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		s.pending = append(s.pending, ps...)
		// A gap between digits (silence frames carry none).
		for range 3 {
			s.pending = append(s.pending, dtmf.Packet{Payload: []byte{0xff, 0xff, 0xff, 0xff}, Timestamp: 1}) // not an event: dropped by the receiver
		}
	}
}

func (br *bridged) streams(t testing.TB, name string, pt uint8) (*stream, *stream) {
	mk := func(conn *net.UDPConn, side media.Side, tone int) *stream {
		enc, err := codec.New(name)
		if err != nil {
			t.Fatal(err)
		}
		return &stream{conn: conn, to: br.c.LocalPort(side), pt: pt, ev: 101, enc: enc, pcm: baresiptest.Sine(tone, enc.SampleRate(), 1, 8000).Samples}
	}
	return mk(br.a, media.A, 440), mk(br.b, media.B, 1000)
}

// play paces frames in real time (the recorder mixes on a 20 ms clock);
// at[i] runs before frame i.
func play(t testing.TB, a, b *stream, frames int, at map[int]func()) {
	tk := time.NewTicker(20 * time.Millisecond)
	defer tk.Stop()
	for i := range frames {
		if f := at[i]; f != nil {
			f()
		}
		a.frame(t, i)
		b.frame(t, i)
		<-tk.C
	}
}

func formats(pt uint8, name string) map[uint8]string {
	return map[uint8]string{pt: name, 101: "telephone-event/8000"}
}

func TestPolicyResolve(t *testing.T) {
	p := Policy{
		Extensions: map[string]Mode{"201": Always, "202": Never, "203": OnDemand},
		Trunks:     map[string]Mode{"carrier": Always, "quiet": Never},
		Routes:     []RouteRule{{Prefix: "0", Mode: OnDemand}, {Prefix: "0049", Mode: Always}},
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		c      Parties
		want   Mode
		toggle [2]bool
	}{
		{"no rule", Parties{CallerExt: "300", CalleeExt: "301"}, Never, [2]bool{true, true}},
		{"always ext", Parties{CallerExt: "201", CalleeExt: "301"}, Always, [2]bool{true, true}},
		{"never beats always", Parties{CallerExt: "201", CalleeExt: "202"}, Never, [2]bool{true, true}},
		{"on demand beats always", Parties{CallerExt: "203", CalleeExt: "201"}, OnDemand, [2]bool{true, true}},
		{"never ext beats always trunk", Parties{CallerExt: "202", Trunk: "carrier", Outbound: true, Dialled: "0049301"}, Never, [2]bool{true, false}},
		{"inbound always trunk", Parties{CalleeExt: "300", Trunk: "carrier"}, Always, [2]bool{false, true}},
		{"longest route prefix", Parties{CallerExt: "300", Trunk: "other", Outbound: true, Dialled: "00493012"}, Always, [2]bool{true, false}},
		{"shorter route prefix", Parties{CallerExt: "300", Trunk: "other", Outbound: true, Dialled: "0033"}, OnDemand, [2]bool{true, false}},
		{"route only outbound", Parties{CalleeExt: "300", Trunk: "other", Dialled: "0049"}, Never, [2]bool{false, true}},
		{"never trunk", Parties{CallerExt: "201", Trunk: "quiet", Outbound: true, Dialled: "0049"}, Never, [2]bool{true, false}},
	}
	for _, tc := range cases {
		d := p.Resolve(tc.c)
		if d.Mode != tc.want || d.Toggle != tc.toggle {
			t.Errorf("%s: %+v, want %s toggle %v", tc.name, d, tc.want, tc.toggle)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	bad := []Policy{
		{Extensions: map[string]Mode{"201": "sometimes"}},
		{Extensions: map[string]Mode{"2 01": Always}},
		{Trunks: map[string]Mode{"": Always}},
		{Routes: []RouteRule{{Prefix: "0a", Mode: Always}}},
		{Routes: []RouteRule{{Prefix: "0", Mode: Always}, {Prefix: "0", Mode: Never}}},
		{RetentionDays: map[string]int{"call": 0}},
		{RetentionDays: map[string]int{"call": 4000}},
		{RetentionDays: map[string]int{"Call": 10}},
	}
	for i, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("%d: %+v accepted", i, p)
		}
	}
}

// TestRecordBridgedCall taps a real relay call (both directions, each its
// own tone) and decodes the sealed recording back: both tones are in it.
func TestRecordBridgedCall(t *testing.T) {
	for _, tc := range []struct {
		name string
		pt   uint8
	}{{"PCMA", 8}, {"G722", 9}} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			m, err := New(Config{Store: st, Policy: func() Policy { return Policy{Extensions: map[string]Mode{"201": Always}} }})
			if err != nil {
				t.Fatal(err)
			}
			br := newBridged(t)
			s, note := m.Start(Call{ID: "c1", From: "201", To: "202", Codec: tc.name + "/8000", Formats: formats(tc.pt, tc.name+"/8000"),
				Parties: Parties{CallerExt: "201", CalleeExt: "202"}, Media: br.c})
			if s == nil {
				t.Fatalf("not recording: %s", note)
			}
			a, b := br.streams(t, tc.name, tc.pt)
			play(t, a, b, 100, nil)
			got := s.Stop()
			ids := s.IDs()
			if len(ids) != 1 || !strings.Contains(got, ids[0]) {
				t.Fatalf("note %q, ids %v", got, ids)
			}
			pcm, meta, err := st.ReadAudio(ids[0])
			if err != nil {
				t.Fatal(err)
			}
			if meta.Codec != tc.name {
				t.Errorf("stored as %s", meta.Codec)
			}
			baresiptest.CheckMixed(t, "recording", baresiptest.PCM{Rate: meta.SampleRate, Samples: pcm}, 10, 440, 1000)
			items := List(st, "", 10)
			if len(items) != 1 || items[0].From != "201" || items[0].To != "202" || items[0].Call != "c1" || items[0].Seconds < 1 || items[0].Seconds > 3 {
				t.Errorf("list: %+v", items)
			}
		})
	}
}

// TestRecordOnDemand: the trunk's far end types the code (ignored), then
// the extension starts and stops the recording with it.
func TestRecordOnDemand(t *testing.T) {
	st := newStore(t)
	m, err := New(Config{Store: st, Policy: func() Policy { return Policy{Trunks: map[string]Mode{"carrier": OnDemand}} },
		Code: func() (string, bool) { return "*1", true }})
	if err != nil {
		t.Fatal(err)
	}
	br := newBridged(t)
	s, note := m.Start(Call{ID: "c2", From: "201", To: "0301234", Codec: "PCMU/8000", Formats: formats(0, "PCMU/8000"),
		Parties: Parties{CallerExt: "201", Trunk: "carrier", Outbound: true, Dialled: "0301234"}, Media: br.c})
	if s == nil {
		t.Fatalf("no session: %s", note)
	}
	a, b := br.streams(t, "PCMU", 0)
	play(t, a, b, 200, map[int]func(){
		5:   func() { b.typeCode(t, "*1") }, // the trunk side: may not toggle
		50:  func() { a.typeCode(t, "*1") },
		160: func() { a.typeCode(t, "*1") },
	})
	s.Stop()
	ids := s.IDs()
	if len(ids) != 1 {
		t.Fatalf("recordings %v, want 1", ids)
	}
	pcm, _, err := st.ReadAudio(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	// Started after frame 50 plus the code (~0.3 s), stopped at frame 160.
	if sec := float64(len(pcm)) / 8000; sec < 1.4 || sec > 2.4 {
		t.Errorf("recorded %.2f s, want about 1.9 s between the codes", sec)
	}
	// The last 0.3 s is the stop code, typed instead of the caller's audio.
	baresiptest.CheckMixed(t, "on-demand recording", baresiptest.PCM{Rate: 8000, Samples: pcm[:len(pcm)-2400]}, 10, 440, 1000)
}

// TestRecordNothing: a never rule, and a codec the box cannot decode,
// leave no file and say why.
func TestRecordNothing(t *testing.T) {
	st := newStore(t)
	pol := Policy{Extensions: map[string]Mode{"201": Never, "203": Always}, Trunks: map[string]Mode{"carrier": Always}}
	m, err := New(Config{Store: st, Policy: func() Policy { return pol }})
	if err != nil {
		t.Fatal(err)
	}
	br := newBridged(t)
	if s, note := m.Start(Call{ID: "c3", Codec: "PCMU/8000", Formats: formats(0, "PCMU/8000"), Media: br.c,
		Parties: Parties{CallerExt: "201", Trunk: "carrier", Outbound: true, Dialled: "0301"}}); s != nil || note != "" {
		t.Fatalf("never: session %v, note %q", s, note)
	}
	s, note := m.Start(Call{ID: "c4", Codec: "G729/8000", Formats: formats(18, "G729/8000"), Media: br.c,
		Parties: Parties{CallerExt: "203", CalleeExt: "204"}})
	if s != nil || !strings.Contains(note, "cannot be decoded") {
		t.Fatalf("G729: session %v, note %q", s, note)
	}
	a, b := br.streams(t, "PCMU", 0)
	play(t, a, b, 10, nil)
	if n := len(st.List("")); n != 0 {
		t.Fatalf("%d recordings stored", n)
	}
	if m.Active() != 0 {
		t.Fatalf("%d sessions active", m.Active())
	}
}

// TestRetentionPerCategory drives the clock: a call recording kept one
// day is there after 23 hours and gone, file and all, after 25.
func TestRetentionPerCategory(t *testing.T) {
	st := newStore(t)
	if err := st.SetRetention(Policy{RetentionDays: map[string]int{Category: 1}}.Retention()); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, cat := range []string{Category, "voicemail"} {
		f, err := st.Create(cat, recording.Meta{Codec: "PCMU", SampleRate: 8000, Created: now})
		if err != nil {
			t.Fatal(err)
		}
		f.Write(make([]byte, 8000))
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	call := st.List(Category)[0]
	if n, err := st.Sweep(now.Add(23 * time.Hour)); n != 0 || err != nil {
		t.Fatalf("23 h: %d deleted, %v", n, err)
	}
	if n, err := st.Sweep(now.Add(25 * time.Hour)); n != 1 || err != nil {
		t.Fatalf("25 h: %d deleted, %v", n, err)
	}
	if _, err := st.Open(call.ID); !errors.Is(err, recording.ErrNotFound) {
		t.Fatalf("expired recording: %v, want the file gone", err)
	}
	if len(st.List("voicemail")) != 1 {
		t.Fatal("the voicemail recording (default 183 days) was swept")
	}
}

// TestRecordAnnounce: the notice is asked for each time a recording
// starts (at the answer for always, on each start code on demand), only
// when the policy says so.
func TestRecordAnnounce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pol      Policy
		codes    map[int]bool // frame → the caller types *1
		announce int
	}{
		{"always", Policy{Extensions: map[string]Mode{"201": Always}, Announce: true}, nil, 1},
		{"always-silent", Policy{Extensions: map[string]Mode{"201": Always}}, nil, 0},
		{"on-demand", Policy{Extensions: map[string]Mode{"201": OnDemand}, Announce: true}, map[int]bool{10: true, 60: true, 110: true}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls []string
			var mu sync.Mutex
			m, err := New(Config{Store: newStore(t), Policy: func() Policy { return tc.pol },
				Code: func() (string, bool) { return "*1", true },
				Announce: func(c Call) {
					mu.Lock()
					calls = append(calls, c.ID)
					mu.Unlock()
				}})
			if err != nil {
				t.Fatal(err)
			}
			br := newBridged(t)
			s, note := m.Start(Call{ID: "c9", From: "201", To: "202", Codec: "PCMU/8000", Formats: formats(0, "PCMU/8000"),
				Parties: Parties{CallerExt: "201", CalleeExt: "202"}, Media: br.c})
			if s == nil {
				t.Fatalf("no session: %s", note)
			}
			a, b := br.streams(t, "PCMU", 0)
			at := map[int]func(){}
			for f := range tc.codes {
				at[f] = func() { a.typeCode(t, "*1") }
			}
			play(t, a, b, 150, at)
			s.Stop()
			mu.Lock()
			defer mu.Unlock()
			if len(calls) != tc.announce || (len(calls) > 0 && calls[0] != "c9") {
				t.Fatalf("announced %v, want %d times", calls, tc.announce)
			}
		})
	}
}
