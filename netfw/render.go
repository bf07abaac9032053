package netfw

import (
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// render.go turns compiled specs into google/nftables objects.

const (
	meterTimeout = 60 * time.Second
	meterSize    = 65536
	// elemChunk keeps one NEWSETELEM message well below the 64 KiB limit of
	// a netlink attribute.
	elemChunk = 800
)

func (f family) nfproto() byte {
	if f == fam4 {
		return unix.NFPROTO_IPV4
	}
	return unix.NFPROTO_IPV6
}

func (f family) addrType() nftables.SetDatatype {
	if f == fam4 {
		return nftables.TypeIPAddr
	}
	return nftables.TypeIP6Addr
}

// nftSet returns the nftables set for a spec (without elements).
func nftSet(t *nftables.Table, s setSpec, pinholeTimeout time.Duration) *nftables.Set {
	set := &nftables.Set{Table: t, Name: s.Name, KeyType: s.Family.addrType()}
	switch s.Kind {
	case kindZone:
		set.Interval = true
	case kindBan:
		set.Interval = true
		set.HasTimeout = true
	case kindPinhole:
		set.KeyType = nftables.MustConcatSetType(s.Family.addrType(), nftables.TypeInetService)
		set.Concatenation = true
		set.HasTimeout = true
		set.Timeout = pinholeTimeout
		set.Dynamic = true
	case kindMeter:
		set.HasTimeout = true
		set.Timeout = meterTimeout
		set.Dynamic = true
		set.Size = meterSize
	case kindConnMeter:
		set.Dynamic = true
		set.Size = meterSize
	case kindIfName:
		set.KeyType = nftables.TypeIFName
	}
	return set
}

// intervalElems encodes ranges for an rbtree interval set: a start element
// and an end element one past the last address (omitted at the top of the
// address space).
func intervalElems(rs []addrRange, timeout time.Duration) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(rs))
	for _, r := range rs {
		out = append(out, nftables.SetElement{Key: r.From.AsSlice(), Timeout: timeout})
		if n := r.To.Next(); n.IsValid() {
			out = append(out, nftables.SetElement{Key: n.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

func pinholeKey(a netip.Addr, port uint16) []byte {
	k := a.AsSlice()
	// inet_service is 2 bytes, padded to a 4-byte register in a concatenation.
	return append(k, byte(port>>8), byte(port), 0, 0)
}

// ruleExprs renders one rule spec; sets maps set names to the set objects
// of the same batch.
func ruleExprs(r ruleSpec, sets map[string]*nftables.Set) []expr.Any {
	var e []expr.Any
	cmp := func(reg uint32, data []byte) {
		e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: data})
	}
	ports := func(off uint32, pr PortRange) {
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2})
		if pr.First == pr.Last {
			cmp(1, be16(pr.First))
		} else {
			e = append(e, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: be16(pr.First), ToData: be16(pr.Last)})
		}
	}
	saddr := func(reg uint32) {
		if r.Family == fam4 {
			e = append(e, &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4})
		} else {
			e = append(e, &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16})
		}
	}
	lookup := func(name string, invert bool) {
		s := sets[name]
		e = append(e, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: invert})
	}

	if r.Iif != "" {
		name := make([]byte, unix.IFNAMSIZ)
		copy(name, r.Iif)
		e = append(e, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1})
		cmp(1, name)
	}
	if r.IifSet != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1})
		lookup(r.IifSet, false)
	}
	if r.Family != 0 {
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1})
		cmp(1, []byte{r.Family.nfproto()})
	}
	if r.ICMP != nil || r.ICMPv6 != nil {
		proto, rng := byte(unix.IPPROTO_ICMP), r.ICMP
		if r.ICMPv6 != nil {
			proto, rng = unix.IPPROTO_ICMPV6, r.ICMPv6
		}
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1})
		cmp(1, []byte{proto})
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1})
		e = append(e, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{rng[0]}, ToData: []byte{rng[1]}})
	}
	if r.SrcSet != "" {
		saddr(1)
		lookup(r.SrcSet, false)
	}
	if r.ExemptSet != "" {
		saddr(1)
		lookup(r.ExemptSet, true)
	}
	if r.Proto != "" {
		p := byte(unix.IPPROTO_UDP)
		if r.Proto == TCP {
			p = unix.IPPROTO_TCP
		}
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1})
		cmp(1, []byte{p})
	}
	if r.SPort.First != 0 {
		ports(0, r.SPort)
	}
	if r.DPort.First != 0 {
		ports(2, r.DPort)
	}
	if r.CtState != 0 {
		e = append(e,
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(r.CtState), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)})
	}
	if r.Pinhole != "" {
		// saddr . dport in the 32-bit registers starting at NFT_REG32_00 (8):
		// the address fills 1 (v4) or 4 (v6) of them, the port the next.
		portReg := uint32(unix.NFT_REG32_00 + 1)
		if r.Family == fam6 {
			portReg = unix.NFT_REG32_00 + 4
		}
		saddr(1)
		e = append(e, &expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		s := sets[r.Pinhole]
		e = append(e, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
		// Media flowing refreshes the element's timeout (lookup first, so
		// the update never creates an element).
		e = append(e, &expr.Dynset{SrcRegKey: 1, SetName: s.Name, SetID: s.ID, Operation: unix.NFT_DYNSET_OP_UPDATE})
	}
	if m := r.Meter; m != nil {
		saddr(1)
		s := sets[m.Set]
		ds := &expr.Dynset{SrcRegKey: 1, SetName: s.Name, SetID: s.ID, Operation: unix.NFT_DYNSET_OP_UPDATE}
		if m.ConnCount != 0 {
			ds.Operation = unix.NFT_DYNSET_OP_ADD
			ds.Exprs = []expr.Any{&expr.Connlimit{Count: m.ConnCount, Flags: expr.NFT_CONNLIMIT_F_INV}}
		} else {
			ds.Exprs = []expr.Any{&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(m.Rate), Unit: expr.LimitTimeSecond, Burst: m.Burst, Over: true}}
		}
		e = append(e, ds)
	}
	if r.RateLimit != 0 {
		e = append(e, &expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(r.RateLimit), Unit: expr.LimitTimeSecond, Burst: r.RateLimit})
	}
	e = append(e, &expr.Counter{})
	if r.Verdict == accept {
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	} else {
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	}
	return e
}

// ifNameKey is an ifname set key: the name NUL-padded to IFNAMSIZ.
func ifNameKey(name string) []byte {
	k := make([]byte, unix.IFNAMSIZ)
	copy(k, name)
	return k
}

func ruleComment(name string) []byte { return userdata.AppendString(nil, userdata.TypeComment, name) }

func commentOf(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}
