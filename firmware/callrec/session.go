package callrec

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/dtmf"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
)

// Category is the retention category of call recordings.
const Category = "call"

// Tapper is the relay call a session taps (*media.Call).
type Tapper interface{ SetTap(media.Tap) }

// Config wires a Manager.
type Config struct {
	Store *recording.Store
	// Policy returns the policy in force (read at each call's answer).
	Policy func() Policy
	// Code returns the feature code that toggles an on-demand recording
	// during a call ("" or false: none configured).
	Code func() (string, bool)
	Log  *slog.Logger
	// Tick is the mixing interval (default 20 ms); tests keep the default.
	Tick time.Duration
	// Announce, when set, plays the recording notice to both parties of
	// c when a recording starts and the policy asks for it. It must not
	// block (the session's goroutine calls it).
	Announce func(c Call)
}

// Manager starts the recording session of each answered call. Safe for
// concurrent use.
type Manager struct {
	cfg    Config
	active atomic.Int64
}

// New checks cfg.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Policy == nil {
		return nil, errors.New("callrec: Store and Policy are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Code == nil {
		cfg.Code = func() (string, bool) { return "", false }
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 20 * time.Millisecond
	}
	return &Manager{cfg: cfg}, nil
}

// Active is the number of sessions recording now.
func (m *Manager) Active() int64 { return m.active.Load() }

// Call is an answered two-party call as the B2BUA describes it.
type Call struct {
	ID      string
	Parties Parties
	From    string // for the label: the caller and callee as the CDR names them
	To      string
	// Codec is the negotiated voice codec (rtpmap, "PCMU/8000").
	Codec string
	// Formats maps each payload type the legs' SDP named to its rtpmap
	// (both legs: the B2BUA keeps format numbers end to end).
	Formats map[uint8]string
	Media   Tapper
}

// Label is what a call recording stores (sealed) about its call.
type Label struct {
	Call  string `json:"call"`
	From  string `json:"from"`
	To    string `json:"to"`
	Trunk string `json:"trunk,omitempty"`
	Mode  Mode   `json:"mode"`
}

// Start applies the policy to c and, unless it says never, taps its
// media. The returned Session is nil when nothing is recorded and nothing
// can be toggled; its Note (and Stop's) says why for the CDR.
func (m *Manager) Start(c Call) (*Session, string) {
	dec := m.cfg.Policy().Resolve(c.Parties)
	if dec.Mode == Never {
		return nil, ""
	}
	if _, err := codec.New(c.Codec); err != nil {
		// A passthrough codec: the box cannot decode it, and stores
		// nothing rather than bytes nobody can play.
		m.cfg.Log.Info("callrec: not recorded", "call", c.ID, "codec", c.Codec, "why", dec.Why)
		return nil, "not recorded: codec " + clip(c.Codec, 32) + " cannot be decoded by the box"
	}
	s := &Session{m: m, c: c, dec: dec, ch: make(chan packet, 256), stop: make(chan struct{}), done: make(chan struct{})}
	s.code, _ = m.cfg.Code()
	for pt, name := range c.Formats {
		enc, _, _ := strings.Cut(name, "/")
		switch {
		case strings.EqualFold(enc, "telephone-event"):
			s.event[pt/64] |= 1 << (pt % 64)
		case sameCodec(name, c.Codec):
			s.voice[pt/64] |= 1 << (pt % 64)
		}
	}
	for i := range s.rx {
		s.rx[i] = dtmf.NewReceiver(8000)
	}
	if dec.Mode == OnDemand && (s.code == "" || !(dec.Toggle[0] || dec.Toggle[1])) {
		return nil, "not recorded: on demand, but no toggle code or no extension on the call"
	}
	m.active.Add(1)
	go s.run()
	c.Media.SetTap(s)
	return s, ""
}

func sameCodec(a, b string) bool {
	ca, ea := codec.New(a)
	cb, eb := codec.New(b)
	return ea == nil && eb == nil && ca.Name() == cb.Name()
}

// maxPayload is the largest audio payload recorded: 60 ms of G.711 or
// G.722. Larger packets are dropped (counted).
const maxPayload = 480

type packet struct {
	side   media.Side
	marker bool
	pt     uint8
	seq    uint16
	ts     uint32
	n      uint16
	buf    [maxPayload]byte
}

// Session is the recording of one call. The relay's loop calls Packet;
// one goroutine of its own mixes and seals.
type Session struct {
	m     *Manager
	c     Call
	dec   Decision
	code  string
	voice [2]uint64 // payload type bit sets
	event [2]uint64
	ch    chan packet
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	dropped atomic.Uint64 // queue full, malformed, oversize

	// Owned by run.
	rx     [2]*dtmf.Receiver
	typed  [2][]rune
	rec    *recording.Recorder
	ids    []string
	notes  []string
	frames uint64
}

func has(set [2]uint64, pt uint8) bool { return set[pt/64]&(1<<(pt%64)) != 0 }

// Packet implements media.Tap: it copies what a recording needs and
// returns at once; a full queue drops the packet.
func (s *Session) Packet(from media.Side, b []byte) {
	h, err := parseRTP(b)
	if err != nil || len(h.payload) > maxPayload || (!has(s.voice, h.pt) && !has(s.event, h.pt)) {
		s.dropped.Add(1)
		return
	}
	p := packet{side: from & 1, marker: h.marker, pt: h.pt, seq: h.seq, ts: h.ts, n: uint16(len(h.payload))}
	copy(p.buf[:], h.payload)
	select {
	case s.ch <- p:
	default:
		s.dropped.Add(1)
	}
}

func (s *Session) run() {
	defer close(s.done)
	defer s.m.active.Add(-1)
	if s.dec.Mode == Always {
		s.begin()
	}
	t := time.NewTicker(s.m.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case p := <-s.ch:
			s.handle(&p)
		case <-t.C:
			if s.rec != nil {
				if err := s.rec.Tick(); err != nil {
					s.end(err)
				}
			}
		case <-s.stop:
			for {
				select {
				case p := <-s.ch:
					s.handle(&p)
					continue
				default:
				}
				break
			}
			s.end(nil)
			return
		}
	}
}

func (s *Session) handle(p *packet) {
	pl := p.buf[:p.n]
	if has(s.event, p.pt) {
		if s.dec.Mode != OnDemand || !s.dec.Toggle[p.side] {
			return
		}
		rep, ok, err := s.rx[p.side].Packet(p.ts, pl)
		if err != nil || !ok || !rep.Begin {
			return
		}
		s.typed[p.side] = append(s.typed[p.side], rep.Digit)
		if n := len(s.typed[p.side]); n > len(s.code) {
			s.typed[p.side] = s.typed[p.side][n-len(s.code):]
		}
		if string(s.typed[p.side]) == s.code {
			s.typed[p.side] = s.typed[p.side][:0]
			if s.rec == nil {
				s.m.cfg.Log.Info("callrec: recording on demand", "call", s.c.ID, "side", p.side)
				s.begin()
			} else {
				s.m.cfg.Log.Info("callrec: recording stopped on demand", "call", s.c.ID, "side", p.side)
				s.end(nil)
			}
		}
		return
	}
	if s.rec != nil {
		s.rec.Packet(int(p.side), p.seq, p.ts, p.marker, pl)
	}
}

// begin opens a new recording file.
func (s *Session) begin() {
	lb, _ := json.Marshal(Label{Call: clip(s.c.ID, 40), From: clip(s.c.From, 48), To: clip(s.c.To, 48),
		Trunk: clip(s.c.Parties.Trunk, 48), Mode: s.dec.Mode})
	if len(lb) > 250 { // escapes grew it past the store's limit
		lb, _ = json.Marshal(Label{Call: clip(s.c.ID, 40), Mode: s.dec.Mode})
	}
	r, err := s.m.cfg.Store.NewRecorder(Category, recording.RecorderConfig{Tracks: []string{s.c.Codec, s.c.Codec}, Label: string(lb)})
	if err != nil {
		s.m.cfg.Log.Warn("callrec: cannot record", "call", s.c.ID, "err", err)
		s.notes = append(s.notes, "not recorded: "+clip(err.Error(), 80))
		return
	}
	s.rec = r
	s.ids = append(s.ids, r.ID())
	if s.dec.Announce && s.m.cfg.Announce != nil {
		s.m.cfg.Announce(s.c)
	}
}

// end closes the current recording file (err: why it stopped early).
func (s *Session) end(cause error) {
	if s.rec == nil {
		return
	}
	st := s.rec.Stats()
	s.frames += st.Frames
	if err := s.rec.Close(); err != nil && cause == nil {
		cause = err
	}
	if cause != nil {
		s.m.cfg.Log.Warn("callrec: recording stopped", "call", s.c.ID, "id", s.rec.ID(), "err", cause)
		s.notes = append(s.notes, "stopped: "+clip(cause.Error(), 80))
	}
	s.rec = nil
}

// Stop ends the tap and closes the recording; it returns the CDR note:
// the recordings' IDs, or why nothing was recorded. Idempotent.
func (s *Session) Stop() string {
	s.once.Do(func() {
		s.c.Media.SetTap(nil)
		close(s.stop)
	})
	<-s.done
	var b strings.Builder
	if len(s.ids) > 0 {
		b.WriteString("recorded " + strings.Join(s.ids, " "))
	} else if len(s.notes) == 0 {
		b.WriteString("not recorded: " + string(s.dec.Mode) + ", never started")
	}
	for _, n := range s.notes {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(n)
	}
	if d := s.dropped.Load(); d > 0 {
		b.WriteString("; " + strconv.FormatUint(d, 10) + " packets not recorded")
	}
	return b.String()
}

// IDs are the recordings of the session so far (after Stop: all).
func (s *Session) IDs() []string {
	<-s.done
	return append([]string(nil), s.ids...)
}

func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "?")
}

var _ media.Tap = (*Session)(nil)

// String is for logs.
func (s *Session) String() string { return fmt.Sprintf("callrec %s (%s)", s.c.ID, s.dec.Mode) }
