package queue

import "time"

// Agent states in Stats.
const (
	StateLoggedOut = "logged-out"
	StateAvailable = "available"
	StateDND       = "dnd"
	StateRinging   = "ringing"
	StateTalking   = "talking"
	StateWrapUp    = "wrap-up"
)

// Stats is one queue's live state and its counts since the daemon
// started.
type Stats struct {
	Number   string   `json:"number"`
	Name     string   `json:"name,omitempty"`
	Strategy Strategy `json:"strategy"`
	// Waiting is each waiting caller's wait so far in seconds, first
	// come first (position 1 is index 0).
	Waiting []float64 `json:"waiting"`
	// Offered counts callers that entered; Refused those turned away
	// because the queue was full (not in Offered).
	Offered   int `json:"offered"`
	Answered  int `json:"answered"`
	Abandoned int `json:"abandoned"`
	TimedOut  int `json:"timed_out"`
	Refused   int `json:"refused"`
	// AvgWait is the mean wait of answered callers, LongestWait the
	// longest wait of any caller that left, TalkTime the agents' total
	// time on the queue's calls (seconds).
	AvgWait     float64      `json:"avg_wait"`
	LongestWait float64      `json:"longest_wait"`
	TalkTime    float64      `json:"talk_time"`
	Agents      []AgentStats `json:"agents"`
}

// AgentStats is one agent of a queue.
type AgentStats struct {
	Extension string `json:"extension"`
	Static    bool   `json:"static"`
	LoggedIn  bool   `json:"logged_in"`
	State     string `json:"state"`
	// Offered counts the times the agent was rung, Missed those it did
	// not answer.
	Offered  int        `json:"offered"`
	Answered int        `json:"answered"`
	Missed   int        `json:"missed"`
	TalkTime float64    `json:"talk_time"`
	LastCall *time.Time `json:"last_call,omitempty"`
}

// Stats reports the queues qs; dnd says whether an extension is in
// do-not-disturb.
func (m *Manager) Stats(qs []Queue, dnd func(string) bool) []Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	out := make([]Stats, 0, len(qs))
	for _, q := range qs {
		s := m.state(q.Number)
		st := Stats{Number: q.Number, Name: q.Name, Strategy: q.Strategy, Waiting: []float64{},
			Offered: s.stats.entered, Answered: s.stats.answered, Abandoned: s.stats.abandoned,
			TimedOut: s.stats.timedOut, Refused: s.stats.refused,
			LongestWait: s.stats.longest.Seconds(), TalkTime: s.stats.talk.Seconds(), Agents: []AgentStats{}}
		if s.stats.answered > 0 {
			st.AvgWait = s.stats.waitAnswered.Seconds() / float64(s.stats.answered)
		}
		for _, w := range s.waiting {
			st.Waiting = append(st.Waiting, now.Sub(w.entered).Seconds())
		}
		for _, a := range q.Agents {
			as := s.agent(a.Extension)
			in := a.Static || as.loggedIn
			r := AgentStats{Extension: a.Extension, Static: a.Static, LoggedIn: in, Offered: as.offered,
				Answered: as.answered, Missed: as.missed, TalkTime: as.talk.Seconds()}
			if !as.lastEnd.IsZero() {
				t := as.lastEnd.UTC()
				r.LastCall = &t
			}
			switch {
			case !in:
				r.State = StateLoggedOut
			case len(m.talking[a.Extension]) > 0:
				r.State = StateTalking
			case m.ringing[a.Extension] > 0:
				r.State = StateRinging
			case now.Before(as.wrapUntil):
				r.State = StateWrapUp
			case dnd != nil && dnd(a.Extension):
				r.State = StateDND
			default:
				r.State = StateAvailable
			}
			st.Agents = append(st.Agents, r)
		}
		out = append(out, st)
	}
	return out
}
