package conference

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/mix"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
)

// Input bounds of a caller.
const (
	digitTimeout = 10 * time.Second
	maxPINTries  = 3
	maxEntry     = 16
	// maxBacklog frames of a caller wait for the mixer; beyond that the
	// oldest are dropped (latency stays bounded when a leg bursts).
	maxBacklog = 3
)

// Open implements call.Apps for conference/<room>.
func (s *Service) Open(app, arg string, caller call.Caller) (call.App, error) {
	if app != dialplan.AppConference {
		return nil, fmt.Errorf("%w: %q", call.ErrNoApp, app)
	}
	r, err := s.Room(arg)
	if err != nil {
		return nil, fmt.Errorf("%w: room %q", call.ErrNoApp, arg)
	}
	s.mu.Lock()
	lr := s.live[arg]
	s.mu.Unlock()
	if lr != nil && lr.count() >= r.MaxParticipants {
		return nil, fmt.Errorf("%w: room %s full", call.ErrAppRefused, arg)
	}
	return roomApp{s: s, number: arg}, nil
}

type roomApp struct {
	s      *Service
	number string
}

// Run asks for the PIN (if the room has one), then puts the caller in
// the room until it hangs up, is kicked or the room is deleted.
func (a roomApp) Run(ctx context.Context, leg call.Leg) error {
	s := a.s
	r, err := s.Room(a.number)
	if err != nil {
		return nil
	}
	rate := leg.Rate()
	moderator := false
	if r.PINHash != "" || r.ModeratorHash != "" {
		ok, mod, err := s.askPIN(ctx, leg, r)
		if err != nil || !ok {
			return ignoreEnd(err)
		}
		moderator = mod
	}
	lr, m, err := s.join(r, leg, moderator)
	if errors.Is(err, ErrFull) {
		_ = leg.Play(ctx, s.prompt(prompts.ConferenceFull, rate))
		return nil
	}
	if err != nil {
		return err
	}
	defer s.leave(lr, m)
	// One context for the member's whole stay: it ends with the call or
	// when the member is kicked.
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-m.done:
			cancel()
		case <-mctx.Done():
		}
	}()
	if lr.count() == 1 {
		_ = leg.Play(mctx, s.prompt(prompts.ConferenceAlone, rate))
	}
	// The room's ticker does the mixing; this goroutine sends what the
	// caller hears, paced by Play.
	for {
		select {
		case <-mctx.Done():
			return nil
		case pcm := <-m.out:
			if err := leg.Play(mctx, pcm); err != nil {
				return ignoreEnd(err)
			}
		}
	}
}

func ignoreEnd(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

func (s *Service) prompt(name string, rate int) []int16 {
	if s.cfg.Prompts != nil {
		if pcm := s.cfg.Prompts.Prompt(name, rate); len(pcm) > 0 {
			return pcm
		}
	}
	pcm, err := prompts.Default(name)
	if err != nil {
		return nil
	}
	if rate == prompts.Rate {
		return pcm
	}
	out := make([]int16, 0, len(pcm)/2)
	for i := 0; i < len(pcm); i += 2 {
		out = append(out, pcm[i])
	}
	return out
}

// askPIN prompts for the PIN up to maxPINTries times. A wrong PIN is
// charged to the SIP guard under the room's account; a throttled source
// is refused without a try.
func (s *Service) askPIN(ctx context.Context, leg call.Leg, r Room) (ok, moderator bool, err error) {
	rate := leg.Rate()
	src := leg.Caller().Source
	account := pinAccount(r.Number)
	charge := src.IsValid()
	for range maxPINTries {
		if charge && s.cfg.Guard != nil && s.cfg.Guard.PINThrottled(src, account) {
			_ = leg.Play(ctx, s.prompt(prompts.Locked, rate))
			return false, false, nil
		}
		entry, err := readEntry(ctx, leg, s.prompt(prompts.ConferencePIN, rate))
		if err != nil {
			return false, false, err
		}
		if entry != "" {
			if r.ModeratorHash != "" {
				if good, _, err := s.cfg.Hasher.Verify(ctx, entry, r.ModeratorHash); err == nil && good {
					s.pinOK(charge, src, account)
					return true, true, nil
				}
			}
			if r.PINHash == "" {
				// Only a moderator PIN: anyone may join without one by an
				// empty entry, which is handled below.
			} else if good, _, err := s.cfg.Hasher.Verify(ctx, entry, r.PINHash); err == nil && good {
				s.pinOK(charge, src, account)
				return true, false, nil
			}
		} else if r.PINHash == "" {
			return true, false, nil // '#' alone: join as a participant
		}
		s.cfg.Log.Warn("conference: wrong PIN", "room", r.Number, "caller", leg.Caller().Number, "source", sourceString(src))
		if charge && s.cfg.Guard != nil {
			s.cfg.Guard.PINFailed(src, account)
		}
		if err := leg.Play(ctx, s.prompt(prompts.InvalidPIN, rate)); err != nil {
			return false, false, err
		}
	}
	return false, false, nil
}

func (s *Service) pinOK(charge bool, src netipAddr, account string) {
	if charge && s.cfg.Guard != nil {
		s.cfg.Guard.PINOK(src, account)
	}
}

// readEntry plays prompt (a key interrupts it) and reads keys up to '#'.
func readEntry(ctx context.Context, leg call.Leg, prompt []int16) (string, error) {
	pctx, cancel := context.WithCancel(ctx)
	var first []byte
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = leg.Play(pctx, prompt)
	}()
	t := time.NewTimer(digitTimeout + time.Duration(len(prompt))*time.Second/time.Duration(max(1, leg.Rate())))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			cancel()
			wg.Wait()
			return "", ctx.Err()
		case <-t.C:
			cancel()
			wg.Wait()
			return string(first), nil
		case d := <-leg.DTMF():
			cancel() // stop the prompt at the first key
			if d.Key == '#' {
				wg.Wait()
				return string(first), nil
			}
			if len(first) < maxEntry {
				first = append(first, d.Key)
			}
			t.Reset(digitTimeout)
		case <-leg.Frames():
			// not heard while keying in
		}
	}
}

// member is one caller in a live room.
type member struct {
	id        string
	caller    call.Caller
	leg       call.Leg
	part      *mix.Participant
	joined    time.Time
	moderator bool
	out       chan []int16
	done      chan struct{}
	stop      sync.Once
	music     func() []int16 // while waiting for the moderator; nil: silence
}

func (m *member) cancel() { m.stop.Do(func() { close(m.done) }) }

// liveRoom is a room with callers: one mixer and one ticker goroutine.
type liveRoom struct {
	number  string
	room    Room
	mixer   *mix.Mixer
	mu      sync.Mutex
	members map[string]*member
	stop    chan struct{}
}

func (lr *liveRoom) count() int {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	return len(lr.members)
}

func (lr *liveRoom) find(id string) *member {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	return lr.members[id]
}

func (lr *liveRoom) kickAll() {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	for _, m := range lr.members {
		m.cancel()
	}
}

func (lr *liveRoom) list() []Participant {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	waiting := lr.waitingLocked()
	out := make([]Participant, 0, len(lr.members))
	for _, m := range lr.members {
		out = append(out, Participant{ID: m.id, Caller: m.caller.Number, Source: sourceString(m.caller.Source),
			Joined: m.joined, Moderator: m.moderator, Wideband: m.leg.Rate() == 16000, Waiting: waiting && !m.moderator})
	}
	sortParticipants(out)
	return out
}

// waitingLocked: the room waits for a moderator that is not there.
func (lr *liveRoom) waitingLocked() bool {
	if !lr.room.WaitModerator {
		return false
	}
	for _, m := range lr.members {
		if m.moderator {
			return false
		}
	}
	return true
}

// join puts leg into room r's live room, starting it if needed.
func (s *Service) join(r Room, leg call.Leg, moderator bool) (*liveRoom, *member, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lr := s.live[r.Number]
	if lr == nil {
		rate := 8000
		if r.Wideband {
			rate = 16000
		}
		mx, err := mix.New(mix.Config{SampleRate: rate, MaxParticipants: r.MaxParticipants, Tones: r.Tones})
		if err != nil {
			return nil, nil, err
		}
		lr = &liveRoom{number: r.Number, room: r, mixer: mx, members: map[string]*member{}, stop: make(chan struct{})}
		s.live[r.Number] = lr
		go lr.run()
	}
	lr.mu.Lock()
	defer lr.mu.Unlock()
	if len(lr.members) >= lr.room.MaxParticipants {
		return nil, nil, ErrFull
	}
	p, err := lr.mixer.Join(leg.Rate())
	if errors.Is(err, mix.ErrFull) {
		return nil, nil, ErrFull
	}
	if err != nil {
		return nil, nil, err
	}
	s.seq++
	m := &member{id: strconv.FormatUint(s.seq, 10), caller: leg.Caller(), leg: leg, part: p, joined: s.cfg.Now(),
		moderator: moderator, out: make(chan []int16, 4), done: make(chan struct{})}
	if lr.room.WaitModerator && s.cfg.Music != nil {
		m.music, _ = s.cfg.Music.Frames(leg.Rate())
	}
	lr.members[m.id] = m
	s.cfg.Log.Info("conference: joined", "room", r.Number, "caller", m.caller.Number, "moderator", moderator)
	return lr, m, nil
}

// leave takes m out; the last one out stops the room.
func (s *Service) leave(lr *liveRoom, m *member) {
	m.part.Leave()
	s.mu.Lock()
	defer s.mu.Unlock()
	lr.mu.Lock()
	delete(lr.members, m.id)
	empty := len(lr.members) == 0
	lr.mu.Unlock()
	if empty && s.live[lr.number] == lr {
		delete(s.live, lr.number)
		close(lr.stop)
	}
	s.cfg.Log.Info("conference: left", "room", lr.number, "caller", m.caller.Number)
}

// run mixes every 20 ms: one frame in from each caller (bounded backlog),
// one frame out to each.
func (lr *liveRoom) run() {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var ms []*member
	for {
		select {
		case <-lr.stop:
			return
		case <-t.C:
		}
		lr.mu.Lock()
		ms = ms[:0]
		for _, m := range lr.members {
			ms = append(ms, m)
		}
		waiting := lr.waitingLocked()
		lr.mu.Unlock()
		for _, m := range ms {
			in := m.leg.Frames()
			for len(in) > maxBacklog {
				<-in
			}
			select {
			case pcm := <-in:
				if !waiting {
					m.part.Write(pcm)
				}
			default:
			}
		}
		lr.mixer.Mix()
		for _, m := range ms {
			var pcm []int16
			if waiting && !m.moderator {
				if m.music != nil {
					pcm = append(pcm, m.music()...)
				} else {
					pcm = make([]int16, mix.FrameSamples(m.leg.Rate()))
				}
			} else {
				pcm = m.part.Read(make([]int16, 0, mix.FrameSamples(m.leg.Rate())))
			}
			select {
			case m.out <- pcm:
			default: // the sender lags: drop the oldest
				select {
				case <-m.out:
				default:
				}
				m.out <- pcm
			}
		}
	}
}
