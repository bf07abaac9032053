package recording

import (
	"fmt"
	"maps"
	"time"
)

// SetRetention replaces the retention per category (the admin's
// settings); categories not named keep DefaultRetention. The next Sweep
// applies it.
func (s *Store) SetRetention(r map[string]time.Duration) error {
	for c, d := range r {
		if !categoryRE.MatchString(c) || d <= 0 {
			return fmt.Errorf("recording: retention %q: %v", c, d)
		}
	}
	s.mu.Lock()
	s.cfg.Retention = maps.Clone(r)
	s.mu.Unlock()
	return nil
}
