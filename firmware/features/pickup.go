package features

import (
	"slices"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
)

// pickup routes a pickup code to the B2BUA (call.PickupApp) with the
// extensions whose ringing calls from may take: every extension it may
// see (group pickup), or the one dialled after the code when it may see
// it (directed pickup). An extension it may not see is simply left out, so
// the B2BUA answers such a picker as one who found nothing ringing.
func (e *Engine) pickup(from string, a Action, arg string) dialplan.Decision {
	conf := e.conf()
	var exts []string
	switch a {
	case GroupPickup:
		exts = conf.Visible(from)
	case DirectedPickup:
		if digits(arg) && conf.MaySee(from, arg) {
			exts = []string{arg}
		}
	}
	return dialplan.Decision{Kind: dialplan.KindApp, Class: dialplan.Internal, Target: call.PickupApp + strings.Join(exts, ",")}
}

// Visible lists the extensions ext may see (MaySee), itself included,
// sorted and without repeats.
func (c Config) Visible(ext string) []string {
	if ext == "" {
		return nil
	}
	out := []string{ext}
	for _, p := range c.PickupGroups {
		if slices.Contains(p.Members, ext) {
			out = append(out, p.Members...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
