package dialplan

import (
	"errors"
	"fmt"
	"slices"

	"github.com/edgepbx/edgepbx/firmware/logs"
)

// KindFeature is a feature code the box acted on (a forward set, DND
// off, …): the B2BUA confirms it to the phone and hangs up. Target names
// the action.
const KindFeature Kind = "feature"

// ErrForwardEmergency refuses an emergency number as a forward target:
// forwarded calls would reach the emergency service without a caller who
// dialled it.
var ErrForwardEmergency = errors.New("dialplan: an emergency number cannot be a forward destination")

// Check decides whether extension from may call number now, as
// RouteOutbound would, without admitting a call: classes of service,
// suspension, licence, a route, no feature codes. Forward destinations are
// checked with it when they are set, so that a forward the extension could
// not dial itself is refused at once. A refused number counts towards the
// extension's burst like a refused call.
func (e *Engine) Check(from, number string) (Decision, error) {
	ext, ok := e.exts[from]
	if !ok {
		return Decision{}, ErrUnknownExtension
	}
	n, cl, err := e.Classify(number)
	if n.Core != "" && slices.Contains(e.emergency, n.Core) {
		return Decision{Kind: KindEmergency, Dialled: n.String()}, ErrForwardEmergency
	}
	if err != nil {
		return Decision{Dialled: n.String()}, err
	}
	if n.Codes != "" {
		err := fmt.Errorf("%w: %s in a forward destination", ErrFeatureCode, n.Codes)
		e.record(logs.Event{Kind: KindBlocked, User: from, Reason: err.Error()})
		e.refused(ext, "feature code "+n.Codes)
		return Decision{Dialled: n.String()}, err
	}
	if cl.Class == Internal {
		return Decision{Kind: KindInternal, Class: Internal, Target: n.Core, Dialled: n.String()}, nil
	}
	d := Decision{Class: cl.Class, Dialled: n.String()}
	e.st.mu.Lock()
	_, susp := e.st.suspended[from]
	e.st.mu.Unlock()
	if susp {
		return d, ErrSuspended
	}
	if !slices.Contains(ext.Classes, cl.Class) {
		e.record(logs.Event{Kind: KindBlocked, User: from, Reason: fmt.Sprintf("forward to %s number %s%s", cl.Class, n, label(cl))})
		e.refused(ext, string(cl.Class))
		return d, fmt.Errorf("%w (%s%s)", ErrBlocked, cl.Class, label(cl))
	}
	if e.gate != nil && !e.gate.AllowOutboundCall(n.Core) {
		return d, ErrLicence
	}
	r, ok := e.route(cl.National)
	if !ok {
		return d, ErrNoRoute
	}
	d.Kind, d.Trunk, d.Target = KindOutbound, r.Trunk, r.Add+cl.National[r.Strip:]
	return d, nil
}
