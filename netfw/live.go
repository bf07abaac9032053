package netfw

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Live sets are updated element by element; rules are never rebuilt here.

// OpenPinhole lets UDP from p.Remote reach local port p.LocalPort (inside
// the RTP range) until the timeout; media flowing re-arms it. Opening an
// open pinhole refreshes its timeout.
func (f *Firewall) OpenPinhole(p Pinhole) error { return f.OpenPinholes(p) }

// OpenPinholes opens up to Bounds.MaxBatch pinholes in one atomic batch.
func (f *Firewall) OpenPinholes(ps ...Pinhole) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.ready(); err != nil {
		return err
	}
	if len(ps) == 0 || len(ps) > f.bounds.MaxBatch {
		return fmt.Errorf("netfw: open pinholes: batch of %d (1..%d): %w", len(ps), f.bounds.MaxBatch, ErrInvalid)
	}
	now := f.now()
	keys := make([]pinKey, len(ps))
	ttls := make([]time.Duration, len(ps))
	for i, p := range ps {
		k, err := f.pinholeKey(p)
		if err != nil {
			return fmt.Errorf("netfw: open pinhole: %w", err)
		}
		ttl := p.Timeout
		if ttl == 0 {
			ttl = f.bounds.PinholeTimeout
		}
		if ttl < time.Millisecond || ttl > f.bounds.MaxPinholeTTL {
			return fmt.Errorf("netfw: open pinhole: timeout %v outside 1ms..%v: %w", p.Timeout, f.bounds.MaxPinholeTTL, ErrInvalid)
		}
		keys[i], ttls[i] = k, ttl
	}
	f.prunePinholes(now)
	fresh := func() int {
		n := 0
		for _, k := range keys {
			if _, ok := f.pinholes[k]; !ok {
				n++
			}
		}
		return n
	}
	if len(f.pinholes)+fresh() > f.bounds.MaxPinholes {
		// Our expiry times are a cache: media re-arms pinholes in the
		// kernel, idle ones expire sooner. Ask the kernel before refusing.
		live, err := f.livePinholes()
		if err != nil {
			return fmt.Errorf("netfw: open pinhole: %w", err)
		}
		f.pinholes = live
		if len(f.pinholes)+fresh() > f.bounds.MaxPinholes {
			return fmt.Errorf("netfw: open pinhole: %d open: %w", len(f.pinholes), ErrLimit)
		}
	}
	if err := f.take(); err != nil {
		return err
	}
	err := f.nlDo(func(cc *nftables.Conn) error {
		for _, fam := range []family{fam4, fam6} {
			var elems []nftables.SetElement
			for i, k := range keys {
				if famOf(k.addr) == fam {
					elems = append(elems, nftables.SetElement{Key: pinholeKey(k.addr, k.port), Timeout: ttls[i]})
				}
			}
			if len(elems) > 0 {
				if err := cc.SetAddElements(f.pinSet(fam), elems); err != nil {
					return err
				}
			}
		}
		return cc.Flush()
	})
	if err != nil {
		return fmt.Errorf("netfw: open pinhole: %w", err)
	}
	for i, k := range keys {
		f.pinholes[k] = now.Add(ttls[i])
	}
	return nil
}

// ClosePinhole removes a pinhole; closing one that already timed out is
// not an error.
func (f *Firewall) ClosePinhole(p Pinhole) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.ready(); err != nil {
		return err
	}
	k, err := f.pinholeKey(p)
	if err != nil {
		return fmt.Errorf("netfw: close pinhole: %w", err)
	}
	if err := f.take(); err != nil {
		return err
	}
	err = f.nlDo(func(cc *nftables.Conn) error {
		if err := cc.SetDeleteElements(f.pinSet(famOf(k.addr)), []nftables.SetElement{{Key: pinholeKey(k.addr, k.port)}}); err != nil {
			return err
		}
		return cc.Flush()
	})
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("netfw: close pinhole: %w", err)
	}
	delete(f.pinholes, k)
	return nil
}

func (f *Firewall) pinholeKey(p Pinhole) (pinKey, error) {
	a, err := fwspec.PinholeRemote(p.Remote)
	if err != nil {
		return pinKey{}, err
	}
	if err := fwspec.PinholePort(p.LocalPort); err != nil {
		return pinKey{}, err
	}
	if !f.applied.RTP.Contains(p.LocalPort) {
		return pinKey{}, &fwspec.FieldError{Field: "local_port", Reason: fmt.Sprintf("%d outside the RTP range %s", p.LocalPort, f.applied.RTP)}
	}
	return pinKey{a, p.LocalPort}, nil
}

func (f *Firewall) pinSet(fam family) *nftables.Set {
	return &nftables.Set{Table: f.table(), Name: setPinhole + fam.suffix(), HasTimeout: true,
		KeyType: nftables.MustConcatSetType(fam.addrType(), nftables.TypeInetService)}
}

func (f *Firewall) banSet(fam family) *nftables.Set {
	return &nftables.Set{Table: f.table(), Name: setBan + fam.suffix(), HasTimeout: true, Interval: true, KeyType: fam.addrType()}
}

func (f *Firewall) prunePinholes(now time.Time) {
	for k, exp := range f.pinholes {
		if !exp.After(now) {
			delete(f.pinholes, k)
		}
	}
}

func (f *Firewall) pruneBans(now time.Time) {
	for k, b := range f.bans {
		if !b.Expires.After(now) {
			delete(f.bans, k)
		}
	}
}

func (f *Firewall) ready() error {
	if f.applied == nil {
		return fmt.Errorf("netfw: %w", ErrNotApplied)
	}
	return nil
}

// Ban drops everything from b.Prefix until it expires. A prefix already
// covered by a ban is a no-op; a ban covering smaller bans replaces them;
// banning the same prefix again refreshes it. Allowlisted addresses can
// never be banned. The new state is persisted before the kernel is told.
func (f *Firewall) Ban(b Ban) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.ready(); err != nil {
		return err
	}
	// The floors apply after unmapping: PID 1 does not rely on its caller.
	p, err := fwspec.BanPrefix(b.Prefix)
	if err != nil {
		return fmt.Errorf("netfw: ban %v: %w", b.Prefix, err)
	}
	p = p.Masked()
	if err := fwspec.Reason(b.Reason); err != nil {
		return fmt.Errorf("netfw: ban %s: %w", p, err)
	}
	ttl := b.Timeout
	if ttl == 0 {
		ttl = f.bounds.BanTimeout
	}
	if ttl < time.Second || ttl > f.bounds.MaxBanTTL {
		return fmt.Errorf("netfw: ban %s: timeout %v outside 1s..%v: %w", p, b.Timeout, f.bounds.MaxBanTTL, ErrInvalid)
	}
	if f.allowlisted(p) {
		return fmt.Errorf("netfw: ban %s: %w", p, ErrAllowlisted)
	}
	now := f.now()
	f.pruneBans(now)
	var replaced []netip.Prefix
	for k, old := range f.bans {
		switch {
		case k == p:
			replaced = append(replaced, k)
		case k.Overlaps(p) && k.Bits() < p.Bits():
			if !old.Expires.Before(now.Add(ttl)) {
				return nil // already banned for at least as long
			}
			// The wider ban ends sooner: extend the wider one instead.
			p = k
			replaced = append(replaced, k)
		case k.Overlaps(p):
			replaced = append(replaced, k)
		}
	}
	if len(f.bans)-len(replaced)+1 > f.bounds.MaxBans {
		return fmt.Errorf("netfw: ban %s: %d active: %w", p, len(f.bans), ErrLimit)
	}
	if err := f.take(); err != nil {
		return err
	}
	nb := Ban{Prefix: p, Timeout: ttl, Reason: b.Reason, Expires: now.Add(ttl).UTC().Truncate(time.Millisecond)}
	next := make(map[netip.Prefix]Ban, len(f.bans)+1)
	for k, v := range f.bans {
		if !slices.Contains(replaced, k) {
			next[k] = v
		}
	}
	next[p] = nb
	if err := f.persist(next); err != nil {
		return fmt.Errorf("netfw: ban %s: %w", p, err)
	}
	err = f.nlDo(func(cc *nftables.Conn) error {
		for _, k := range replaced {
			if err := cc.SetDeleteElements(f.banSet(famOf(k.Addr())), intervalElems([]addrRange{prefixRange(k)}, 0)); err != nil {
				return err
			}
		}
		if err := cc.SetAddElements(f.banSet(famOf(p.Addr())), intervalElems([]addrRange{prefixRange(p)}, ttl)); err != nil {
			return err
		}
		return cc.Flush()
	})
	if err != nil {
		if perr := f.persist(f.bans); perr != nil {
			f.log.Error("netfw: restore ban file", "err", perr)
		}
		return fmt.Errorf("netfw: ban %s: %w", p, err)
	}
	f.bans = next
	f.log.Warn("netfw: banned", "prefix", p, "reason", b.Reason, "expires", nb.Expires)
	return nil
}

// Unban lifts the ban of exactly this prefix.
func (f *Firewall) Unban(p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.ready(); err != nil {
		return err
	}
	if !p.IsValid() {
		return fmt.Errorf("netfw: unban: %w", &fwspec.FieldError{Field: "prefix", Reason: "not a valid prefix"})
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	p = p.Masked()
	f.pruneBans(f.now())
	if _, ok := f.bans[p]; !ok {
		return fmt.Errorf("netfw: unban %v: %w", p, ErrNotFound)
	}
	if err := f.take(); err != nil {
		return err
	}
	next := make(map[netip.Prefix]Ban, len(f.bans))
	for k, v := range f.bans {
		if k != p {
			next[k] = v
		}
	}
	if err := f.persist(next); err != nil {
		return fmt.Errorf("netfw: unban %s: %w", p, err)
	}
	err := f.nlDo(func(cc *nftables.Conn) error {
		if err := cc.SetDeleteElements(f.banSet(famOf(p.Addr())), intervalElems([]addrRange{prefixRange(p)}, 0)); err != nil {
			return err
		}
		return cc.Flush()
	})
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		if perr := f.persist(f.bans); perr != nil {
			f.log.Error("netfw: restore ban file", "err", perr)
		}
		return fmt.Errorf("netfw: unban %s: %w", p, err)
	}
	f.bans = next
	f.log.Info("netfw: unbanned", "prefix", p)
	return nil
}

// ListBans returns the active bans, sorted by prefix.
func (f *Firewall) ListBans() ([]Ban, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pruneBans(f.now())
	out := make([]Ban, 0, len(f.bans))
	for _, b := range f.bans {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b Ban) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out, nil
}

// Counters reads the per-rule counters and the sizes of the live sets.
func (f *Firewall) Counters() (Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.ready(); err != nil {
		return Counters{}, err
	}
	var out Counters
	t := f.table()
	err := f.nlDo(func(cc *nftables.Conn) error {
		rules, err := cc.GetRules(t, &nftables.Chain{Name: chainInput, Table: t})
		if err != nil {
			return err
		}
		for _, r := range rules {
			rc := RuleCounter{Name: commentOf(r)}
			for _, e := range r.Exprs {
				if c, ok := e.(*expr.Counter); ok {
					rc.Packets, rc.Bytes = c.Packets, c.Bytes
				}
			}
			out.Rules = append(out.Rules, rc)
		}
		for _, s := range []*nftables.Set{f.pinSet(fam4), f.pinSet(fam6), f.banSet(fam4), f.banSet(fam6)} {
			els, err := cc.GetSetElements(s)
			if err != nil {
				return err
			}
			n := 0
			for _, e := range els {
				if !e.IntervalEnd {
					n++
				}
			}
			out.Sets = append(out.Sets, SetCounter{Name: s.Name, Elements: n})
		}
		return nil
	})
	if err != nil {
		return Counters{}, fmt.Errorf("netfw: counters: %w", err)
	}
	return out, nil
}
