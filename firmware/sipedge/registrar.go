package sipedge

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
)

// Binding is one registered contact of an extension.
type Binding struct {
	Contact   string    `json:"contact"` // the Contact URI as sent
	Expires   time.Time `json:"expires"`
	CallID    string    `json:"call_id"`
	CSeq      uint32    `json:"cseq"`
	Source    string    `json:"source"` // ip:port the REGISTER came from (NAT)
	Transport string    `json:"transport"`
	UserAgent string    `json:"user_agent"`
	// Previous are the sources this contact registered from before, the
	// newest first (a phone behind NAT that got a new port), so requests
	// in a dialog set up over an older flow follow it (Moved).
	Previous []string `json:"-"`
}

// maxPrevious bounds Binding.Previous.
const maxPrevious = 4

// Location is the registrar's location service (memory only: phones
// re-register after a restart).
type Location struct {
	// limits is replaced whole by SetLimits. Bindings already made keep
	// their expiry; new bounds apply when a phone next registers.
	limits atomic.Pointer[RegLimits]

	// onChange, when set, is told an extension's first binding and the
	// loss of its last (Server.OnRegistration); called after mu is
	// released, since its receiver may look bindings up.
	onChange atomic.Pointer[func(user string, registered bool)]

	mu      sync.RWMutex
	users   map[string][]Binding
	sources map[netip.Addr]time.Time // registered source -> latest expiry (OPTIONS gate)
}

// RegLimits are the registrar's bounds (RFC 3261 §10.3 steps 7 and 8).
type RegLimits struct {
	MinExpires  time.Duration // shorter requests get 423 Interval Too Brief
	MaxExpires  time.Duration // longer ones are cut to it; also the default
	MaxContacts int           // per extension; the oldest go first
}

// newLocation makes a location service with the default expiry bounds.
func newLocation(maxContacts int) *Location {
	l := &Location{users: map[string][]Binding{}, sources: map[netip.Addr]time.Time{}}
	d := pbxconfig.DefaultSIP()
	l.SetLimits(RegLimits{MinExpires: d.MinExpires, MaxExpires: d.MaxExpires, MaxContacts: maxContacts})
	return l
}

// SetLimits replaces the registrar's bounds.
func (l *Location) SetLimits(r RegLimits) { l.limits.Store(&r) }

// Limits returns the registrar's current bounds.
func (l *Location) Limits() RegLimits { return *l.limits.Load() }

// ContactUpdate is one Contact of a REGISTER: Expires 0 removes it.
type ContactUpdate struct {
	Contact string
	Expires time.Duration
}

// errOutOfOrder is a REGISTER older than the one that made the binding.
type registerResult int

const (
	regOK registerResult = iota
	regOutOfOrder
)

// Register applies a REGISTER's contacts for user. removeAll handles
// "Contact: *". When more than maxContacts remain the oldest are dropped
// (a rebooted phone behind NAT comes back with a new contact).
func (l *Location) Register(now time.Time, user string, b Binding, updates []ContactUpdate, removeAll bool, src netip.Addr) registerResult {
	return l.register(now, user, b, updates, removeAll, src, false)
}

// register is Register; retrans accepts the CSeq of the binding's own
// request again (RFC 3261 §10.3 step 7 refuses it for a new request, but a
// retransmission of that same request must get the same outcome).
func (l *Location) register(now time.Time, user string, b Binding, updates []ContactUpdate, removeAll bool, src netip.Addr, retrans bool) registerResult {
	var changed, has bool
	defer func() { // runs after the unlock below
		if f := l.onChange.Load(); f != nil && changed {
			(*f)(user, has)
		}
	}()
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.users[user]
	live := cur[:0:0]
	for _, old := range cur {
		if now.Before(old.Expires) {
			live = append(live, old)
		}
	}
	for _, old := range live {
		if old.CallID == b.CallID && (b.CSeq < old.CSeq || b.CSeq == old.CSeq && !retrans) {
			return regOutOfOrder
		}
	}
	had := len(live) > 0
	if removeAll {
		live = nil
	}
	for _, u := range updates {
		kept := live[:0]
		var prev []string
		for _, old := range live {
			if old.Contact != u.Contact {
				kept = append(kept, old)
				continue
			}
			prev = old.Previous
			if old.Source != b.Source && strings.EqualFold(old.Transport, b.Transport) {
				prev = append([]string{old.Source}, prev...)
			}
		}
		live = kept
		if u.Expires > 0 {
			nb := b
			nb.Contact = u.Contact
			nb.Expires = now.Add(u.Expires)
			nb.Previous = slices.DeleteFunc(slices.Clone(prev[:min(len(prev), maxPrevious)]), func(s string) bool { return s == b.Source })
			live = append(live, nb)
		}
	}
	slices.SortStableFunc(live, func(a, b Binding) int { return a.Expires.Compare(b.Expires) })
	if max := l.limits.Load().MaxContacts; len(live) > max {
		live = live[len(live)-max:]
	}
	if len(live) == 0 {
		delete(l.users, user)
	} else {
		l.users[user] = live
		if exp := live[len(live)-1].Expires; exp.After(l.sources[src]) {
			l.sources[src] = exp
		}
	}
	changed, has = had != (len(live) > 0), len(live) > 0
	return regOK
}

// Moved returns the source a contact registers from now, over transport,
// when it registered from src before (and no live binding still uses
// src): where requests of a dialog set up over the old flow must go.
// Only the phone itself moves its binding (an authenticated REGISTER of
// the same contact), so no other extension can divert them.
func (l *Location) Moved(now time.Time, transport, src string) (string, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	moved := ""
	for _, bs := range l.users {
		for _, b := range bs {
			if !now.Before(b.Expires) || !strings.EqualFold(b.Transport, transport) {
				continue
			}
			if b.Source == src {
				return "", false
			}
			if moved == "" && slices.Contains(b.Previous, src) {
				moved = b.Source
			}
		}
	}
	return moved, moved != ""
}

// Lookup returns the live bindings of user.
func (l *Location) Lookup(now time.Time, user string) []Binding {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out []Binding
	for _, b := range l.users[user] {
		if now.Before(b.Expires) {
			out = append(out, b)
		}
	}
	return out
}

// Count is how many extensions have a live binding and how many live
// bindings there are (metrics, at scrape time).
func (l *Location) Count(now time.Time) (users, bindings int) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, bs := range l.users {
		n := 0
		for _, b := range bs {
			if now.Before(b.Expires) {
				n++
			}
		}
		if n > 0 {
			users++
			bindings += n
		}
	}
	return users, bindings
}

// Registered reports whether src has a live registration (for OPTIONS).
func (l *Location) Registered(now time.Time, src netip.Addr) bool {
	l.mu.RLock()
	exp, ok := l.sources[src]
	l.mu.RUnlock()
	return ok && now.Before(exp)
}

// usersIn lists the extensions with a live binding whose source address
// is inside p, sorted.
func (l *Location) usersIn(now time.Time, p netip.Prefix) []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out []string
	for u, bs := range l.users {
		for _, b := range bs {
			ap, err := netip.ParseAddrPort(b.Source)
			if err == nil && now.Before(b.Expires) && p.Contains(ap.Addr().Unmap()) {
				out = append(out, u)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// Sweep drops expired bindings; it returns how many remain.
func (l *Location) Sweep(now time.Time) int {
	var gone []string
	defer func() { // runs after the unlock below
		if f := l.onChange.Load(); f != nil {
			for _, u := range gone {
				(*f)(u, false)
			}
		}
	}()
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for u, bs := range l.users {
		live := bs[:0]
		for _, b := range bs {
			if now.Before(b.Expires) {
				live = append(live, b)
			}
		}
		if len(live) == 0 {
			delete(l.users, u)
			gone = append(gone, u)
		} else {
			l.users[u] = live
			n += len(live)
		}
	}
	for a, exp := range l.sources {
		if !now.Before(exp) {
			delete(l.sources, a)
		}
	}
	return n
}

func secs(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }
