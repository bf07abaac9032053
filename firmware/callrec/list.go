package callrec

import (
	"encoding/json"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
)

// Item is one recording as the recordings list shows it: who, when, how
// long, category and size. Call recordings carry their Label; other
// categories (voicemail) only their free-text label.
type Item struct {
	ID       string    `json:"id"`
	Category string    `json:"category"`
	Created  time.Time `json:"created"`
	Size     int64     `json:"size"`
	Seconds  int64     `json:"seconds"` // from the stored audio's size (all codecs store 8,000 B/s)
	Codec    string    `json:"codec,omitempty"`
	From     string    `json:"from,omitempty"`
	To       string    `json:"to,omitempty"`
	Trunk    string    `json:"trunk,omitempty"`
	Call     string    `json:"call,omitempty"`
	Label    string    `json:"label,omitempty"`
	// Unreadable is set when the file's header does not open (another
	// box's key, damage): listed so it can be deleted.
	Unreadable bool `json:"unreadable,omitempty"`
}

// MaxList bounds one listing.
const MaxList = 1000

// List describes the newest recordings of category ("": all), newest
// first, at most limit (≤ MaxList). Only each file's sealed header is
// opened, not its audio.
func List(s *recording.Store, category string, limit int) []Item {
	if limit <= 0 || limit > MaxList {
		limit = MaxList
	}
	es := s.List(category)
	out := make([]Item, 0, min(limit, len(es)))
	for i := len(es) - 1; i >= 0 && len(out) < limit; i-- {
		e := es[i]
		it := Item{ID: e.ID, Category: e.Category, Created: e.Created, Size: e.Size}
		r, err := s.Open(e.ID)
		if err != nil {
			it.Unreadable = true
			out = append(out, it)
			continue
		}
		m := r.Meta()
		r.Close()
		it.Codec = m.Codec
		if audio := e.Size - recording.SealedSize(0, m); audio > 0 {
			it.Seconds = audio * recording.DefaultChunkSize / (recording.DefaultChunkSize + 20) / 8000
		}
		var lb Label
		if e.Category == Category && json.Unmarshal([]byte(m.Label), &lb) == nil {
			it.From, it.To, it.Trunk, it.Call = lb.From, lb.To, lb.Trunk, lb.Call
		} else {
			it.Label = m.Label
		}
		out = append(out, it)
	}
	return out
}
