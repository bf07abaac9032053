package pbxconfig

import (
	"fmt"
	"slices"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/ivr"
)

// ivrConcurrent is the concurrency limit of a menu's or time condition's
// number in the dial plan.
const ivrConcurrent = 64

// IVR returns a copy of the menus and time conditions in force (read per
// call).
func (s *TelephonyStore) IVR() ivr.Config {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur.IVR.Clone()
}

// validateIVR checks the menus and time conditions: their numbers are not
// extensions, groups or emergency numbers, their destinations exist, and
// an external destination is one its paying extension may call now (class
// of service, route, no premium or emergency number), as a forward is
// checked when it is set.
func (t Telephony) validateIVR(c dialplan.Country, isExt func(string) bool, groups map[string]bool) error {
	emergency := append(slices.Clone(c.Emergency), t.Emergency...)
	env := ivr.Env{
		Internal:  func(n string) bool { return isExt(n) || groups[n] },
		Emergency: func(n string) bool { return slices.Contains(emergency, n) },
		External: func(as, number string) error {
			if !isExt(as) {
				return fmt.Errorf("%s is not an extension", as)
			}
			var nums []string
			for _, x := range t.Extensions {
				nums = append(nums, x.Number)
			}
			if !slices.Contains(nums, as) {
				nums = append(nums, as)
			}
			// A throwaway engine: the check must not count against the
			// live extension's burst counter.
			eng, err := dialplan.New(t.Plan(nums), nil, nil)
			if err != nil {
				return err
			}
			d, err := eng.Check(as, number)
			if err != nil {
				return err
			}
			if d.Kind != dialplan.KindOutbound {
				return fmt.Errorf("%s is not an external number (name internal destinations directly)", number)
			}
			return nil
		},
	}
	if err := t.IVR.Validate(env); err != nil {
		return fmt.Errorf("%w: %w", ErrTelephony, err)
	}
	return nil
}
