package auth

import (
	"net/netip"
	"slices"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Lockout is per (account, source network), so a stranger who fails three
// logins locks only his own network out of the account, not its admin.
// Guessing from many networks is still bounded: every failure also counts
// account-wide, and once an account has AttackFailures of them within the
// lockout window it is "under attack" until they age out. Then:
//   - a network the account has logged in from before (Account.Networks)
//     logs in as usual (its own per-network lock still applies);
//   - an account with a second factor logs in from any network, but must
//     pass both factors at once: the password's verdict is not revealed
//     (a challenge is answered either way), so guessing the password alone
//     learns nothing;
//   - an account without a second factor cannot log in from a new network:
//     its admin uses a known network or the console recovery (Recover).
//
// A locked network is treated like "under attack" for that network: TOTP
// holders still get in with both factors at once.
const (
	// AttackFailures is the account-wide failure count (all networks,
	// within LockoutSeconds) that puts the account under attack.
	AttackFailures = 10
	// maxLocks and maxFailed bound what one account record keeps.
	maxLocks  = 64
	maxFailed = 4 * AttackFailures
)

// NetLock is the failure count of one source network against one account.
type NetLock struct {
	Failures    int       `json:"failures"`
	Last        time.Time `json:"last"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
}

// lockNet is the network a lockout covers: the IPv4 /24 or the IPv6 /64 (one
// SLAAC segment or one customer's prefix; an attacker with a /48 has 65536 of
// them, which is why failures also count account-wide).
func lockNet(a netip.Addr) string {
	a = a.Unmap()
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return "invalid"
	}
	return p.String()
}

// lockedFrom reports whether network n is locked out of the account now.
func (a *Account) lockedFrom(n string, now time.Time) bool {
	l, ok := a.Locks[n]
	return ok && now.Before(l.LockedUntil)
}

// underAttack reports whether the account failed AttackFailures times
// within the lockout window, from any networks.
func (a *Account) underAttack(p Policy, now time.Time) bool {
	n := 0
	for _, t := range a.Failed {
		if now.Sub(t) < secs(p.LockoutSeconds) {
			n++
		}
	}
	return n >= AttackFailures
}

// recordFailure counts one failure from network n. It reports whether this
// failure locked the network (not while it is already locked).
func (a *Account) recordFailure(n string, p Policy, now time.Time) bool {
	win := secs(p.LockoutSeconds)
	a.Failed = slices.DeleteFunc(a.Failed, func(t time.Time) bool { return now.Sub(t) >= win })
	a.Failed = append(a.Failed, now)
	if over := len(a.Failed) - maxFailed; over > 0 {
		a.Failed = slices.Delete(a.Failed, 0, over)
	}
	if a.Locks == nil {
		a.Locks = map[string]NetLock{}
	}
	l := a.Locks[n]
	if now.Before(l.LockedUntil) {
		return false
	}
	if !l.LockedUntil.IsZero() || now.Sub(l.Last) >= win { // an expired lock or old count starts afresh
		l = NetLock{}
	}
	l.Failures++
	l.Last = now
	locked := false
	if l.Failures >= p.LockoutThreshold {
		l.LockedUntil, locked = now.Add(win), true
	}
	a.Locks[n] = l
	a.pruneLocks(now)
	return locked
}

// pruneLocks drops spent entries and keeps at most maxLocks, oldest first
// out; a live lock is dropped last.
func (a *Account) pruneLocks(now time.Time) {
	for k, l := range a.Locks {
		if !now.Before(l.LockedUntil) && now.Sub(l.Last) >= 24*time.Hour {
			delete(a.Locks, k)
		}
	}
	for len(a.Locks) > maxLocks {
		var victim string
		var vl NetLock
		for k, l := range a.Locks {
			live := now.Before(l.LockedUntil)
			if victim == "" || (!live && now.Before(vl.LockedUntil)) || (live == now.Before(vl.LockedUntil) && l.Last.Before(vl.Last)) {
				victim, vl = k, l
			}
		}
		delete(a.Locks, victim)
	}
}

// AnyLockout reports whether some account is locked for a network or under
// attack now: PID 1 then shows the console recovery code.
func (s *Service) AnyLockout() (bool, error) {
	p, err := s.Policy()
	if err != nil {
		return false, err
	}
	now := s.clock.Now()
	found := false
	err = s.db.View(func(tx *store.Tx) error {
		return tx.ForEach(bAccounts, func(_ string, raw []byte) error {
			var a Account
			if err := jsonUnmarshal(raw, &a); err != nil {
				return err
			}
			if l, _ := a.lockedNetworks(now); len(l) > 0 || a.underAttack(p, now) {
				found = true
			}
			return nil
		})
	})
	return found, err
}

// clearLock forgets network n's failures (a successful login from it).
func (a *Account) clearLock(n string) { delete(a.Locks, n) }

// lockedNetworks lists the networks locked now and the latest expiry.
func (a *Account) lockedNetworks(now time.Time) ([]string, time.Time) {
	var out []string
	var until time.Time
	for n, l := range a.Locks {
		if now.Before(l.LockedUntil) {
			out = append(out, n)
			if l.LockedUntil.After(until) {
				until = l.LockedUntil
			}
		}
	}
	slices.Sort(out)
	return out, until
}
