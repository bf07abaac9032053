package netfw

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Errors of the live-set API; returned errors wrap one of these.
var (
	ErrNotApplied  = errors.New("no policy applied yet")
	ErrInvalid     = fwspec.ErrInvalid
	ErrLimit       = errors.New("limit reached")
	ErrRate        = errors.New("too many requests")
	ErrAllowlisted = errors.New("address is allowlisted")
	ErrNotFound    = errors.New("not found")
	ErrVerify      = errors.New("ruleset read back differs from what was applied")
)

// Bounds limit what callers of the live-set API can make the firewall do.
type Bounds struct {
	MaxPinholes    int           // open pinholes
	MaxBans        int           // active bans
	MaxBatch       int           // elements per OpenPinholes call
	OpsPerSecond   float64       // control operations per second (token bucket)
	OpsBurst       float64       //
	PinholeTimeout time.Duration // default timeout of a pinhole
	PinholeIdle    time.Duration // timeout re-armed by every media packet
	MaxPinholeTTL  time.Duration //
	BanTimeout     time.Duration // default ban duration
	MaxBanTTL      time.Duration //
}

// DefaultBounds fit a small appliance.
func DefaultBounds() Bounds {
	return Bounds{
		MaxPinholes:    8192,
		MaxBans:        16384,
		MaxBatch:       64,
		OpsPerSecond:   5000,
		OpsBurst:       500,
		PinholeTimeout: 60 * time.Second,
		PinholeIdle:    30 * time.Second,
		MaxPinholeTTL:  24 * time.Hour,
		BanTimeout:     time.Hour,
		MaxBanTTL:      90 * 24 * time.Hour,
	}
}

// Firewall owns `table inet edgepbx` in one network namespace. It is safe
// for concurrent use; operations are serialized.
type Firewall struct {
	mu sync.Mutex

	log       *slog.Logger
	netnsFD   int
	timeout   time.Duration
	bufBytes  int
	banPath   string
	bounds    Bounds
	allowOpt  []netip.Prefix
	now       func() time.Time
	conn      *nftables.Conn
	nl        *netlink.Conn // the socket under conn, for deadlines
	applied   *compiled
	bans      map[netip.Prefix]Ban
	pinholes  map[pinKey]time.Time // expiry as far as we know
	dhcpIfs   map[string]bool      // interfaces the DHCP server rule admits
	tokens    float64
	tokensAt  time.Time
	failApply bool // test hook: inject a failing message mid-batch
}

type pinKey struct {
	addr netip.Addr
	port uint16
}

// Option configures New.
type Option func(*Firewall)

// WithNetNS makes the firewall manage the network namespace behind fd
// (tests); the default is the caller's namespace.
func WithNetNS(fd int) Option { return func(f *Firewall) { f.netnsFD = fd } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(f *Firewall) { f.log = l } }

// WithBanFile persists bans to path (e.g. /data/netfw/bans.json) so a
// reboot does not forgive an attacker.
func WithBanFile(path string) Option { return func(f *Firewall) { f.banPath = path } }

// WithBounds sets limits on the live-set API.
func WithBounds(b Bounds) Option { return func(f *Firewall) { f.bounds = b } }

// WithAllowlist adds prefixes that can never be banned and bypass the
// per-source limits, on top of the policy's allowlist zones.
func WithAllowlist(ps ...netip.Prefix) Option {
	return func(f *Firewall) { f.allowOpt = append(f.allowOpt, ps...) }
}

// WithNetlinkTimeout bounds every netlink call (default 2 s): with
// nf_tables missing a call can otherwise hang forever.
func WithNetlinkTimeout(d time.Duration) Option { return func(f *Firewall) { f.timeout = d } }

// New returns a firewall. It loads persisted bans but touches no ruleset
// until Apply.
func New(opts ...Option) (*Firewall, error) {
	f := &Firewall{
		log:      slog.Default(),
		timeout:  2 * time.Second,
		bufBytes: 8 << 20,
		bounds:   DefaultBounds(),
		now:      time.Now,
		bans:     map[netip.Prefix]Ban{},
		pinholes: map[pinKey]time.Time{},
		dhcpIfs:  map[string]bool{},
	}
	for _, o := range opts {
		o(f)
	}
	for _, p := range f.allowOpt {
		if !p.IsValid() || p.Addr().Is4In6() || p.Masked() != p {
			return nil, fmt.Errorf("netfw: allowlist prefix %v: %w", p, ErrInvalid)
		}
	}
	f.tokens, f.tokensAt = f.bounds.OpsBurst, f.now()
	if f.banPath != "" {
		bans, refused, err := loadBans(f.banPath, f.now())
		if err != nil {
			return nil, fmt.Errorf("netfw: %w", err)
		}
		for _, b := range refused {
			f.log.Warn("netfw: dropping persisted ban wider than the floor", "prefix", b.Prefix, "reason", b.Reason)
		}
		for _, b := range bans {
			if f.allowlisted(b.Prefix) {
				f.log.Warn("netfw: dropping persisted ban of allowlisted prefix", "prefix", b.Prefix)
				continue
			}
			f.bans[b.Prefix] = b
		}
	}
	return f, nil
}

// Close releases the netlink socket.
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resetConn()
	return nil
}

func (f *Firewall) resetConn() {
	if f.conn != nil {
		_ = f.conn.CloseLasting()
	}
	f.conn, f.nl = nil, nil
}

// nlDo runs fn on the lasting netlink connection with a deadline. Any
// error discards the connection: a timed-out or failed batch can leave
// replies queued that would confuse the next call.
func (f *Firewall) nlDo(fn func(c *nftables.Conn) error) error {
	if f.conn == nil {
		opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
			f.nl = c
			return raiseBuffers(c, f.bufBytes)
		})}
		if f.netnsFD != 0 {
			opts = append(opts, nftables.WithNetNSFd(f.netnsFD))
		}
		c, err := nftables.New(opts...)
		if err != nil {
			return fmt.Errorf("netfw: open nftables netlink socket: %w", err)
		}
		f.conn = c
	}
	if err := f.nl.SetDeadline(time.Now().Add(f.timeout)); err != nil {
		f.resetConn()
		return fmt.Errorf("netfw: netlink deadline: %w", err)
	}
	if err := fn(f.conn); err != nil {
		f.resetConn()
		return err
	}
	return nil
}

// raiseBuffers sizes the socket for large batches and dumps (ENOBUFS
// otherwise). As root the *FORCE options ignore rmem_max/wmem_max.
func raiseBuffers(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n); e != nil {
			serr = c.SetReadBuffer(n)
		}
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n); e != nil && serr == nil {
			serr = c.SetWriteBuffer(n)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func (f *Firewall) table() *nftables.Table {
	return &nftables.Table{Name: tableName, Family: nftables.TableFamilyINet}
}

// Apply validates p, compiles it and replaces our table in one atomic
// netlink batch, keeping live bans and pinholes. On any error the running
// ruleset is left as it was. It then reads the table back and verifies it.
func (f *Firewall) Apply(p Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := compile(&p, f.allowOpt)
	if err != nil {
		return fmt.Errorf("netfw: apply: %w", err)
	}
	now := f.now()
	pins, err := f.livePinholes()
	if err != nil {
		return fmt.Errorf("netfw: apply: read pinholes: %w", err)
	}
	// A new allowlist may cover existing bans: those are lifted.
	bans := map[netip.Prefix]Ban{}
	for k, b := range f.bans {
		if !b.Expires.After(now) {
			continue
		}
		if overlapsAny(k, c.Allow) {
			f.log.Warn("netfw: lifting ban of now allowlisted prefix", "prefix", k)
			continue
		}
		bans[k] = b
	}
	// An interface keeps the DHCP server rule only while it still lies
	// inside the new policy's phones zones.
	dhcpIfs := map[string]bool{}
	for name := range f.dhcpIfs {
		if err := f.phonesIface(name, c.Phones); err != nil {
			f.log.Warn("netfw: closing the DHCP server port", "iface", name, "err", err)
			continue
		}
		dhcpIfs[name] = true
	}
	t := f.table()
	err = f.nlDo(func(cc *nftables.Conn) error {
		// Add-then-delete makes the delete valid on a fresh box; the kernel
		// applies the whole batch or nothing.
		cc.AddTable(t)
		cc.DelTable(t)
		cc.AddTable(t)
		sets := map[string]*nftables.Set{}
		for _, s := range c.Sets {
			ns := nftSet(t, s, f.bounds.PinholeIdle)
			if err := cc.AddSet(ns, nil); err != nil {
				return err
			}
			sets[s.Name] = ns
			var elems []nftables.SetElement
			switch s.Kind {
			case kindZone:
				elems = intervalElems(s.Ranges, 0)
			case kindBan:
				for _, b := range bans {
					if famOf(b.Prefix.Addr()) == s.Family {
						elems = append(elems, intervalElems([]addrRange{prefixRange(b.Prefix)}, remaining(b.Expires, now))...)
					}
				}
			case kindIfName:
				for name := range dhcpIfs {
					elems = append(elems, nftables.SetElement{Key: ifNameKey(name)})
				}
			case kindPinhole:
				for k, exp := range pins {
					if famOf(k.addr) == s.Family {
						elems = append(elems, nftables.SetElement{Key: pinholeKey(k.addr, k.port), Timeout: remaining(exp, now)})
					}
				}
			}
			for chunk := range slices.Chunk(elems, elemChunk) {
				if err := cc.SetAddElements(ns, chunk); err != nil {
					return err
				}
			}
		}
		polDrop, polAccept := nftables.ChainPolicyDrop, nftables.ChainPolicyAccept
		in := cc.AddChain(&nftables.Chain{Name: chainInput, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &polDrop})
		cc.AddChain(&nftables.Chain{Name: chainFwd, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &polDrop})
		cc.AddChain(&nftables.Chain{Name: chainOutput, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &polAccept})
		for i, r := range c.Rules {
			if f.failApply && i == len(c.Rules)/2 {
				// A lookup in a set that does not exist: the kernel rejects
				// the batch after it has processed half of it.
				cc.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: ruleExprs(ruleSpec{Family: fam4, SrcSet: "missing", Verdict: drop},
					map[string]*nftables.Set{"missing": {Name: "missing", Table: t}})})
			}
			cc.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: ruleExprs(r, sets), UserData: ruleComment(r.Name)})
		}
		return cc.Flush()
	})
	if err != nil {
		return fmt.Errorf("netfw: apply batch: %w", err)
	}
	f.applied = c
	if len(bans) != len(f.bans) {
		// Expired or now-allowlisted bans are gone: keep the file in step.
		if err := f.persist(bans); err != nil {
			f.log.Error("netfw: persist bans after apply", "err", err)
		}
	}
	f.bans = bans
	f.pinholes = pins
	f.dhcpIfs = dhcpIfs
	if err := f.verify(c); err != nil {
		return fmt.Errorf("netfw: apply: %w", err)
	}
	f.log.Info("netfw: policy applied", "rules", len(c.Rules), "sets", len(c.Sets), "bans", len(bans), "pinholes", len(pins))
	return nil
}

func remaining(exp, now time.Time) time.Duration {
	d := exp.Sub(now)
	// Element timeouts are in milliseconds; never let one round to 0
	// (which would mean "the set's default" or "forever").
	return max(d, time.Second)
}

// livePinholes reads the pinholes the kernel still holds so Apply can carry
// them over; a missing table means there are none.
func (f *Firewall) livePinholes() (map[pinKey]time.Time, error) {
	out := map[pinKey]time.Time{}
	if f.applied == nil {
		return out, nil
	}
	now := f.now()
	t := f.table()
	// The table may be gone (flushed by hand, or a fresh namespace); the
	// dump of set elements would then fail with an errno the library
	// does not wrap, so ask for the table list first.
	var exists bool
	if err := f.nlDo(func(cc *nftables.Conn) error {
		tables, err := cc.ListTablesOfFamily(nftables.TableFamilyINet)
		exists = slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == tableName })
		return err
	}); err != nil {
		return nil, err
	}
	if !exists {
		return out, nil
	}
	for _, fam := range []family{fam4, fam6} {
		var elems []nftables.SetElement
		err := f.nlDo(func(cc *nftables.Conn) error {
			var err error
			elems, err = cc.GetSetElements(&nftables.Set{Table: t, Name: setPinhole + fam.suffix(),
				KeyType: nftables.MustConcatSetType(fam.addrType(), nftables.TypeInetService)})
			return err
		})
		if err != nil {
			return nil, err
		}
		alen := 4
		if fam == fam6 {
			alen = 16
		}
		for _, e := range elems {
			if len(e.Key) < alen+2 {
				continue
			}
			a, _ := netip.AddrFromSlice(e.Key[:alen])
			port := uint16(e.Key[alen])<<8 | uint16(e.Key[alen+1])
			if e.Expires > 0 {
				out[pinKey{a, port}] = now.Add(e.Expires)
			}
		}
	}
	return out, nil
}

// verify reads our table back and compares chains, sets, set sizes and the
// named rules in order with what was compiled.
func (f *Firewall) verify(c *compiled) error {
	t := f.table()
	var rules []*nftables.Rule
	var sets []*nftables.Set
	counts := map[string]int{}
	err := f.nlDo(func(cc *nftables.Conn) error {
		var err error
		if rules, err = cc.GetRules(t, &nftables.Chain{Name: chainInput, Table: t}); err != nil {
			return err
		}
		if sets, err = cc.GetSets(t); err != nil {
			return err
		}
		for _, want := range c.Sets {
			if want.Kind == kindZone {
				if counts[want.Name], err = f.countElements(want.Name); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if len(rules) != len(c.Rules) {
		return fmt.Errorf("%w: %d rules, want %d", ErrVerify, len(rules), len(c.Rules))
	}
	for i, r := range rules {
		if got := commentOf(r); got != c.Rules[i].Name {
			return fmt.Errorf("%w: rule %d is %q, want %q", ErrVerify, i, got, c.Rules[i].Name)
		}
	}
	have := map[string]bool{}
	for _, s := range sets {
		have[s.Name] = true
	}
	for _, s := range c.Sets {
		if !have[s.Name] {
			return fmt.Errorf("%w: set %q missing", ErrVerify, s.Name)
		}
		if s.Kind == kindZone {
			if want := len(intervalElems(s.Ranges, 0)); counts[s.Name] != want {
				return fmt.Errorf("%w: set %q has %d elements, want %d", ErrVerify, s.Name, counts[s.Name], want)
			}
		}
	}
	return nil
}

// countElements dumps a set of our table and counts its elements (start
// and end elements of intervals alike) without decoding them: reading back
// a 10k-CIDR zone this way costs a fraction of a full decode.
func (f *Firewall) countElements(set string) (int, error) {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: []byte(tableName + "\x00")},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: []byte(set + "\x00")},
	})
	if err != nil {
		return 0, err
	}
	// nfgenmsg: family, version, resource id.
	data := append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...)
	msgs, err := f.nl.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: data,
	})
	if err != nil {
		return 0, fmt.Errorf("dump set %s: %w", set, err)
	}
	n := 0
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				n += countAttrs(ad.Bytes())
			}
		}
		if err := ad.Err(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// countAttrs counts the netlink attributes in b by walking their headers.
func countAttrs(b []byte) int {
	n := 0
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		if l < 4 || l > len(b) {
			break
		}
		n++
		b = b[min((l+3)&^3, len(b)):]
	}
	return n
}

// take spends one control-operation token.
func (f *Firewall) take() error {
	now := f.now()
	f.tokens = min(f.bounds.OpsBurst, f.tokens+now.Sub(f.tokensAt).Seconds()*f.bounds.OpsPerSecond)
	f.tokensAt = now
	if f.tokens < 1 {
		return fmt.Errorf("netfw: %w", ErrRate)
	}
	f.tokens--
	return nil
}

func (f *Firewall) allowlisted(p netip.Prefix) bool {
	if overlapsAny(p, f.allowOpt) {
		return true
	}
	return f.applied != nil && overlapsAny(p, f.applied.Allow)
}

func overlapsAny(p netip.Prefix, list []netip.Prefix) bool {
	for _, a := range list {
		if a.Overlaps(p) {
			return true
		}
	}
	return false
}
