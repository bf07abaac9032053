package pbxconfig

import "github.com/edgepbx/edgepbx/firmware/features"

// Features returns a copy of the features configuration in force (read
// per call by firmware/features; cheaper than Current).
func (s *TelephonyStore) Features() features.Config {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur.Features.Clone()
}
