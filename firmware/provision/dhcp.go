package provision

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// The optional DHCPv4 server for a phones VLAN. It hands out an address
// from the admin's pool, the subnet mask, the router and DNS servers the
// admin set, the lease time and option 66 (the plain-HTTP bootstrap URL,
// never a secret) — nothing else: no option 43 vendor blobs, no routes, no
// boot files. It runs in edgepbxd, not PID 1 (docs/architecture.md): the
// socket is bound to the interface (SO_BINDTODEVICE, allowed unprivileged
// since Linux 5.7), port 67 needs only CAP_NET_BIND_SERVICE, and answers to
// clients without an address go to the broadcast address, so no raw socket
// is needed and the packet parser stays out of the process that holds
// CAP_NET_ADMIN.

const bucketLeases = "provision.dhcp" // IP -> Lease

// Bounds of the DHCP server.
const (
	maxPoolSize     = 1024
	maxDHCPPacket   = 1500
	maxDNS          = 3
	maxDHCPClients  = 4096
	dhcpPerMAC      = 1.0 // messages per second per client hardware address
	dhcpBurst       = 6
	dhcpGlobalRate  = 200.0
	dhcpGlobalBurst = 400
	offerHold       = time.Minute
	// ProbeWait is how long the start-up probe listens for another server:
	// servers ARP-check an address before offering it (busybox udhcpd
	// waits up to 2 s, ISC dhcpd pings for 1 s), so well beyond that.
	ProbeWait = 5 * time.Second
)

// DHCPSettings are the admin's DHCP server settings (off by default).
type DHCPSettings struct {
	Enabled   bool   `json:"enabled"`
	Interface string `json:"interface,omitempty"` // the phones VLAN's interface, e.g. "eth0.20"
	// PoolStart and PoolEnd bound the addresses handed out (inside the
	// interface's subnet, at most 1024).
	PoolStart netip.Addr   `json:"pool_start,omitzero"`
	PoolEnd   netip.Addr   `json:"pool_end,omitzero"`
	Router    netip.Addr   `json:"router,omitzero"` // option 3; unset: none
	DNS       []netip.Addr `json:"dns,omitempty"`   // option 6, at most 3
	// LeaseMinutes is the lease time (5–10080, default 60).
	LeaseMinutes int `json:"lease_minutes,omitempty"`
}

// Validate checks the settings; an error names the field.
func (d DHCPSettings) Validate() error {
	if !d.Enabled && d.Interface == "" && !d.PoolStart.IsValid() && !d.PoolEnd.IsValid() {
		return nil
	}
	if !ValidInterfaceName(d.Interface) {
		return &FieldError{"dhcp.interface", errors.New("must be an interface name (1–15 of A-Z a-z 0-9 . _ -)")}
	}
	if !d.PoolStart.Is4() || !d.PoolEnd.Is4() {
		return &FieldError{"dhcp.pool_start", errors.New("pool bounds must be IPv4 addresses")}
	}
	if d.PoolEnd.Less(d.PoolStart) {
		return &FieldError{"dhcp.pool_end", errors.New("pool end is before its start")}
	}
	if poolSize(d.PoolStart, d.PoolEnd) > maxPoolSize {
		return &FieldError{"dhcp.pool_end", fmt.Errorf("pool larger than %d addresses", maxPoolSize)}
	}
	if d.Router.IsValid() && !d.Router.Is4() {
		return &FieldError{"dhcp.router", errors.New("must be an IPv4 address")}
	}
	if len(d.DNS) > maxDNS {
		return &FieldError{"dhcp.dns", fmt.Errorf("at most %d servers", maxDNS)}
	}
	for _, a := range d.DNS {
		if !a.Is4() {
			return &FieldError{"dhcp.dns", errors.New("must be IPv4 addresses")}
		}
	}
	if d.LeaseMinutes != 0 && (d.LeaseMinutes < 5 || d.LeaseMinutes > 10080) {
		return &FieldError{"dhcp.lease_minutes", errors.New("must be 5–10080")}
	}
	return nil
}

func (d DHCPSettings) equal(o DHCPSettings) bool {
	return d.Enabled == o.Enabled && d.Interface == o.Interface && d.PoolStart == o.PoolStart && d.PoolEnd == o.PoolEnd &&
		d.Router == o.Router && slices.Equal(d.DNS, o.DNS) && d.LeaseMinutes == o.LeaseMinutes
}

func (d DHCPSettings) lease() time.Duration {
	if d.LeaseMinutes == 0 {
		return time.Hour
	}
	return time.Duration(d.LeaseMinutes) * time.Minute
}

// ValidInterfaceName reports whether s can name a Linux interface.
func ValidInterfaceName(s string) bool {
	if len(s) == 0 || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func poolSize(a, b netip.Addr) int {
	x, y := a.As4(), b.As4()
	n := int(be32(y)) - int(be32(x)) + 1
	return n
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// Lease is one address handed to one phone.
type Lease struct {
	IP      netip.Addr `json:"ip"`
	MAC     string     `json:"mac"`
	Expires time.Time  `json:"expires"`
}

// DHCPStatus is what the Phones page shows.
type DHCPStatus struct {
	// State: off, probing, running, refused (another server answered),
	// failed.
	State     string  `json:"state"`
	Detail    string  `json:"detail,omitempty"`
	Interface string  `json:"interface,omitempty"`
	Leases    []Lease `json:"leases,omitempty"`
	Offers    uint64  `json:"offers"`
	Acks      uint64  `json:"acks"`
	Naks      uint64  `json:"naks"`
	Bad       uint64  `json:"bad"`       // malformed or not for us: dropped
	Limited   uint64  `json:"limited"`   // over a rate limit: dropped
	Exhausted uint64  `json:"exhausted"` // no free address
}

// ErrOtherDHCPServer refuses to start a server where one already answers.
var ErrOtherDHCPServer = errors.New("provision: another DHCP server answers on this link")

// DHCP is the server while it runs on one interface.
type DHCP struct {
	svc    *Service
	set    DHCPSettings
	conn   *net.UDPConn
	self   netip.Addr
	mask   net.IPMask
	ifname string

	mu      sync.Mutex
	leases  map[netip.Addr]Lease // persisted
	offers  map[netip.Addr]Lease // in memory, offerHold
	clients map[string]*bucket
	global  bucket
	state   string
	detail  string

	offersN, acks, naks, bad, limited, exhausted atomic.Uint64
}

// DHCPConfig is how edgepbxd lets the server run.
type DHCPConfig struct {
	// Port and ClientPort are 67 and 68; tests may use others.
	Port, ClientPort int
	// Probe is how long to listen for another server (0: ProbeWait).
	Probe time.Duration
	// Firewall asks PID 1 to admit DHCP requests (UDP 68→67) on the
	// interface (open) before the server answers, and to stop admitting
	// them (!open) when it stops; nil in tests without a firewall.
	Firewall func(ctx context.Context, iface string, open bool) error
}

// DHCPStatus reports the server's state.
func (s *Service) DHCPStatus() DHCPStatus {
	s.mu.Lock()
	d := s.dhcp
	state, detail := s.dhcpState, s.dhcpDetail
	s.mu.Unlock()
	if d == nil {
		return DHCPStatus{State: state, Detail: detail}
	}
	d.mu.Lock()
	st := DHCPStatus{State: d.state, Detail: d.detail, Interface: d.ifname}
	for _, l := range d.leases {
		st.Leases = append(st.Leases, l)
	}
	d.mu.Unlock()
	slices.SortFunc(st.Leases, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	st.Offers, st.Acks, st.Naks, st.Bad, st.Limited, st.Exhausted = d.offersN.Load(), d.acks.Load(), d.naks.Load(), d.bad.Load(), d.limited.Load(), d.exhausted.Load()
	return st
}

func (s *Service) setDHCPState(state, detail string) {
	s.mu.Lock()
	s.dhcpState, s.dhcpDetail = state, detail
	s.mu.Unlock()
}

// errIfaceChanged ends a serving run: the interface's address or subnet
// is not what the server started with.
var errIfaceChanged = errors.New("dhcp: the interface's address changed")

// RunDHCP runs the DHCP server as the settings say, restarting it when
// they change and when the interface's IPv4 address, subnet or identity
// changes (it then re-checks the pool against the new subnet, probes and
// asks PID 1 to open UDP 67 again), until ctx ends. A server that could
// not start is retried after the next address change. The server runs on
// the calling goroutine, so its sockets belong to the caller's network
// namespace.
func (s *Service) RunDHCP(ctx context.Context, cfg DHCPConfig) {
	w, err := newIfWatch()
	if err != nil {
		s.log.Warn("dhcp: address changes seen by polling only", "err", err)
	} else {
		defer w.Close()
	}
	for ctx.Err() == nil {
		set := s.settings().DHCP
		runCtx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-s.dhcpChanged:
				cancel()
			case <-runCtx.Done():
			}
		}()
		if !set.Enabled {
			s.setDHCPState("off", "")
			<-runCtx.Done()
			cancel()
			continue
		}
		err := s.serveDHCP(runCtx, set, cfg, w)
		switch {
		case errors.Is(err, errIfaceChanged):
			s.log.Info("dhcp: the interface's address changed: starting again", "iface", set.Interface)
			cancel()
			continue
		case errors.Is(err, ErrOtherDHCPServer):
			s.setDHCPState("refused", err.Error())
			if s.deps.Security != nil {
				s.deps.Security.Record(logs.Event{Kind: KindDHCPRefused, Reason: err.Error()})
			}
			s.log.Warn("dhcp: not started", "iface", set.Interface, "err", err)
		case err != nil:
			s.setDHCPState("failed", err.Error())
			s.log.Warn("dhcp: server stopped", "iface", set.Interface, "err", err)
		}
		if err != nil {
			// Not serving: try again when the settings or the
			// addresses change.
			select {
			case <-runCtx.Done():
			case <-w.changes():
			}
		} else {
			<-runCtx.Done()
		}
		cancel()
	}
}

// serveDHCP probes the link, then serves until ctx ends or the interface
// changes (errIfaceChanged).
func (s *Service) serveDHCP(ctx context.Context, set DHCPSettings, cfg DHCPConfig, w *ifWatch) error {
	if cfg.Port == 0 {
		cfg.Port = dhcpv4.ServerPort
	}
	if cfg.ClientPort == 0 {
		cfg.ClientPort = dhcpv4.ClientPort
	}
	if cfg.Probe == 0 {
		cfg.Probe = ProbeWait
	}
	ifi, err := net.InterfaceByName(set.Interface)
	if err != nil {
		return fmt.Errorf("dhcp: interface %s: %w", set.Interface, err)
	}
	self, mask, err := ifaceIPv4(ifi)
	if err != nil {
		return err
	}
	started := ifaceState{index: ifi.Index, self: self, bits: maskBits(mask)}
	subnet := netip.PrefixFrom(self, maskBits(mask)).Masked()
	if !subnet.Contains(set.PoolStart) || !subnet.Contains(set.PoolEnd) {
		return fmt.Errorf("dhcp: pool %s–%s is not inside %s's subnet %s", set.PoolStart, set.PoolEnd, set.Interface, subnet)
	}
	s.setDHCPState("probing", "")
	if other, err := ProbeDHCP(ctx, set.Interface, ifi.HardwareAddr, cfg.Port, cfg.ClientPort, cfg.Probe); err != nil {
		return err
	} else if other.IsValid() {
		return fmt.Errorf("%w: %s offered an address on %s; not starting", ErrOtherDHCPServer, other, set.Interface)
	}
	if cur, err := readIface(set.Interface); err != nil || cur != started {
		return errIfaceChanged // during the probe
	}
	if cfg.Firewall != nil {
		if err := cfg.Firewall(ctx, set.Interface, true); err != nil {
			return fmt.Errorf("dhcp: open UDP %d on %s: %w", cfg.Port, set.Interface, err)
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := cfg.Firewall(cctx, set.Interface, false); err != nil {
				s.log.Warn("dhcp: close UDP 67", "iface", set.Interface, "err", err)
			}
		}()
	}
	conn, err := server4.NewIPv4UDPConn(set.Interface, &net.UDPAddr{Port: cfg.Port})
	if err != nil {
		return fmt.Errorf("dhcp: listen on %s: %w", set.Interface, err)
	}
	d := &DHCP{svc: s, set: set, conn: conn, self: self, mask: mask, ifname: set.Interface,
		leases: map[netip.Addr]Lease{}, offers: map[netip.Addr]Lease{}, clients: map[string]*bucket{}, state: "running"}
	if err := d.load(); err != nil {
		conn.Close()
		return err
	}
	s.mu.Lock()
	s.dhcp = d
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.dhcp = nil
		s.mu.Unlock()
	}()
	s.log.Info("dhcp: serving", "iface", set.Interface, "pool", set.PoolStart.String()+"-"+set.PoolEnd.String(), "option66", s.bootURL())
	// The socket is bound: it reads on another goroutine, while this one
	// (in the server's namespace) re-reads the interface when it changes.
	// The socket closes before the firewall opening (deferred above).
	read := make(chan error, 1)
	go func() { read <- d.serve(cfg.ClientPort) }()
	defer func() { conn.Close(); <-read }()
	poll := time.NewTicker(ifPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-read:
			read <- nil // for the deferred wait
			return err
		case <-w.changes():
		case <-poll.C:
		}
		if cur, err := readIface(set.Interface); err != nil || cur != started {
			return errIfaceChanged
		}
	}
}

// serve answers datagrams until the socket closes.
func (d *DHCP) serve(clientPort int) error {
	buf := make([]byte, maxDHCPPacket+1)
	for {
		n, from, err := d.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dhcp: read: %w", err)
		}
		if reply, to := d.Handle(buf[:n], from, clientPort); reply != nil {
			if _, err := d.conn.WriteToUDPAddrPort(reply, to); err != nil {
				d.svc.log.Debug("dhcp: send", "to", to, "err", err)
			}
		}
	}
}

func ifaceIPv4(ifi *net.Interface) (netip.Addr, net.IPMask, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("dhcp: addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			ip, _ := netip.AddrFromSlice(n.IP.To4())
			return ip, n.Mask, nil
		}
	}
	return netip.Addr{}, nil, fmt.Errorf("dhcp: %s has no IPv4 address", ifi.Name)
}

func maskBits(m net.IPMask) int {
	ones, _ := m.Size()
	return ones
}

func (d *DHCP) load() error {
	now := d.svc.now()
	return d.svc.deps.Store.View(func(tx *store.Tx) error {
		return tx.ForEach(bucketLeases, func(k string, v []byte) error {
			var l Lease
			if err := json.Unmarshal(v, &l); err != nil || !d.inPool(l.IP) || l.Expires.Before(now) {
				return nil // stale or outside today's pool: forgotten
			}
			d.leases[l.IP] = l
			return nil
		})
	})
}

func (d *DHCP) inPool(a netip.Addr) bool {
	return a.Is4() && !a.Less(d.set.PoolStart) && !d.set.PoolEnd.Less(a) && a != d.self
}

func (d *DHCP) allow(mac string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.global.take(now, dhcpGlobalRate, dhcpGlobalBurst) {
		return false
	}
	b, ok := d.clients[mac]
	if !ok {
		if len(d.clients) >= maxDHCPClients {
			for k, o := range d.clients {
				if now.Sub(o.last) > 10*time.Second {
					delete(d.clients, k)
				}
			}
			if len(d.clients) >= maxDHCPClients {
				return false
			}
		}
		b = &bucket{}
		d.clients[mac] = b
	}
	return b.take(now, dhcpPerMAC, dhcpBurst)
}

// Handle answers one datagram: the reply and where to send it, or nil.
// Relayed requests (giaddr set) are not ours: this server serves one link.
func (d *DHCP) Handle(data []byte, from netip.AddrPort, clientPort int) ([]byte, netip.AddrPort) {
	m, err := parseDHCPRequest(data)
	if err != nil {
		d.bad.Add(1)
		return nil, netip.AddrPort{}
	}
	mac := macKey(m.ClientHWAddr)
	now := d.svc.now()
	if !d.allow(mac, now) {
		d.limited.Add(1)
		return nil, netip.AddrPort{}
	}
	var reply *dhcpv4.DHCPv4
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		ip, ok := d.offer(mac, now)
		if !ok {
			d.exhausted.Add(1)
			return nil, netip.AddrPort{}
		}
		reply = d.reply(m, dhcpv4.MessageTypeOffer, ip)
		d.offersN.Add(1)
	case dhcpv4.MessageTypeRequest:
		if sid := m.ServerIdentifier(); sid != nil && !sid.Equal(d.self.AsSlice()) {
			d.mu.Lock()
			for ip, o := range d.offers {
				if o.MAC == mac {
					delete(d.offers, ip)
				}
			}
			d.mu.Unlock()
			return nil, netip.AddrPort{} // the phone chose another server
		}
		want, _ := netip.AddrFromSlice(m.RequestedIPAddress().To4())
		if !want.IsValid() {
			want, _ = netip.AddrFromSlice(m.ClientIPAddr.To4())
		}
		if ok, err := d.ack(mac, want, now); err != nil {
			d.svc.log.Warn("dhcp: lease not stored", "err", err)
			return nil, netip.AddrPort{}
		} else if !ok {
			reply = d.reply(m, dhcpv4.MessageTypeNak, netip.Addr{})
			d.naks.Add(1)
		} else {
			reply = d.reply(m, dhcpv4.MessageTypeAck, want)
			d.acks.Add(1)
			// In the fetch log beside the HTTP fetches: which phone got
			// which address and the bootstrap URL.
			d.svc.logFetch(mac, want, "dhcp", "lease", "option66", "")
		}
	case dhcpv4.MessageTypeRelease:
		ip, _ := netip.AddrFromSlice(m.ClientIPAddr.To4())
		d.release(mac, ip)
		return nil, netip.AddrPort{}
	case dhcpv4.MessageTypeDecline:
		// The address is in use by someone else: keep it out of the pool
		// for a lease time under a marker no phone has.
		ip, _ := netip.AddrFromSlice(m.RequestedIPAddress().To4())
		if d.inPool(ip) {
			_ = d.store(Lease{IP: ip, MAC: "declined", Expires: now.Add(d.set.lease())}, netip.Addr{})
		}
		return nil, netip.AddrPort{}
	default:
		d.bad.Add(1)
		return nil, netip.AddrPort{}
	}
	to := netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), uint16(clientPort))
	if ci, ok := netip.AddrFromSlice(m.ClientIPAddr.To4()); ok && !ci.IsUnspecified() && !m.IsBroadcast() && reply.MessageType() != dhcpv4.MessageTypeNak {
		to = netip.AddrPortFrom(ci, uint16(clientPort))
	}
	return reply.ToBytes(), to
}

// macKey is a hardware address as the device records spell it.
func macKey(hw net.HardwareAddr) string {
	return fmt.Sprintf("%x", []byte(hw))
}

// parseDHCPRequest accepts only what a phone on the link sends.
func parseDHCPRequest(data []byte) (*dhcpv4.DHCPv4, error) {
	if len(data) > maxDHCPPacket {
		return nil, errors.New("dhcp: too large")
	}
	m, err := dhcpv4.FromBytes(data)
	if err != nil {
		return nil, err
	}
	if m.OpCode != dhcpv4.OpcodeBootRequest || len(m.ClientHWAddr) != 6 || m.HWType != 1 {
		return nil, errors.New("dhcp: not an Ethernet client request")
	}
	if bytes.Equal(m.ClientHWAddr, make([]byte, 6)) || m.ClientHWAddr[0]&1 != 0 {
		return nil, errors.New("dhcp: bad client hardware address")
	}
	if g := m.GatewayIPAddr.To4(); g != nil && !g.Equal(net.IPv4zero) {
		return nil, errors.New("dhcp: relayed request")
	}
	return m, nil
}

// offer picks the phone's address: its lease, its pending offer, or the
// lowest free one.
func (d *DHCP) offer(mac string, now time.Time) (netip.Addr, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for ip, l := range d.leases {
		if l.MAC == mac {
			return ip, true
		}
	}
	for ip, o := range d.offers {
		if o.MAC == mac && o.Expires.After(now) {
			return ip, true
		}
	}
	for ip := d.set.PoolStart; d.inPool(ip) || ip == d.self; ip = ip.Next() {
		if ip == d.self {
			continue
		}
		if l, ok := d.leases[ip]; ok && l.Expires.After(now) {
			continue
		}
		if o, ok := d.offers[ip]; ok && o.Expires.After(now) {
			continue
		}
		d.offers[ip] = Lease{IP: ip, MAC: mac, Expires: now.Add(offerHold)}
		return ip, true
	}
	return netip.Addr{}, false
}

// ack confirms ip for mac when it is the phone's offer or lease, or free.
func (d *DHCP) ack(mac string, ip netip.Addr, now time.Time) (bool, error) {
	if !d.inPool(ip) {
		return false, nil
	}
	d.mu.Lock()
	if l, ok := d.leases[ip]; ok && l.MAC != mac && l.Expires.After(now) {
		d.mu.Unlock()
		return false, nil
	}
	if o, ok := d.offers[ip]; ok && o.MAC != mac && o.Expires.After(now) {
		d.mu.Unlock()
		return false, nil
	}
	var old netip.Addr
	for oip, l := range d.leases {
		if l.MAC == mac && oip != ip {
			old = oip
		}
	}
	d.mu.Unlock()
	return true, d.store(Lease{IP: ip, MAC: mac, Expires: now.Add(d.set.lease())}, old)
}

// store persists a lease (a bbolt transaction: atomic, fsynced) and
// drops the phone's previous one.
func (d *DHCP) store(l Lease, old netip.Addr) error {
	err := d.svc.deps.Store.Update(func(tx *store.Tx) error {
		if old.IsValid() {
			if err := tx.Delete(bucketLeases, old.String()); err != nil {
				return err
			}
		}
		return tx.Put(bucketLeases, l.IP.String(), l)
	})
	if err != nil {
		return err
	}
	d.mu.Lock()
	if old.IsValid() {
		delete(d.leases, old)
	}
	d.leases[l.IP] = l
	delete(d.offers, l.IP)
	d.mu.Unlock()
	return nil
}

func (d *DHCP) release(mac string, ip netip.Addr) {
	d.mu.Lock()
	l, ok := d.leases[ip]
	d.mu.Unlock()
	if !ok || l.MAC != mac {
		return
	}
	if err := d.svc.deps.Store.Update(func(tx *store.Tx) error { return tx.Delete(bucketLeases, ip.String()) }); err != nil {
		return
	}
	d.mu.Lock()
	delete(d.leases, ip)
	d.mu.Unlock()
}

// reply builds an answer with only the options this server gives.
func (d *DHCP) reply(m *dhcpv4.DHCPv4, t dhcpv4.MessageType, ip netip.Addr) *dhcpv4.DHCPv4 {
	// No siaddr/file (network boot) and no option 43: option 66 is the
	// only pointer a phone gets, and it names the bootstrap (no secret).
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(t), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(d.self.AsSlice()))}
	if t != dhcpv4.MessageTypeNak {
		mods = append(mods, dhcpv4.WithYourIP(ip.AsSlice()), dhcpv4.WithNetmask(d.mask),
			dhcpv4.WithLeaseTime(uint32(d.set.lease()/time.Second)),
			dhcpv4.WithOption(dhcpv4.OptTFTPServerName(d.svc.bootURL())))
		if d.set.Router.IsValid() {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(d.set.Router.AsSlice())))
		}
		if len(d.set.DNS) > 0 {
			var dns []net.IP
			for _, a := range d.set.DNS {
				dns = append(dns, a.AsSlice())
			}
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(dns...)))
		}
	}
	r, err := dhcpv4.NewReplyFromRequest(m, mods...)
	if err != nil {
		return nil
	}
	// NewReplyFromRequest copies nothing risky, but the relay agent
	// option would echo the client's bytes: drop it.
	r.Options.Del(dhcpv4.OptionRelayAgentInformation)
	return r
}

// ProbeDHCP sends one DISCOVER on iface and reports the server that
// offered an address within wait (invalid: none answered).
func ProbeDHCP(ctx context.Context, iface string, hw net.HardwareAddr, serverPort, clientPort int, wait time.Duration) (netip.Addr, error) {
	conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: clientPort})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("dhcp: probe socket on %s: %w", iface, err)
	}
	defer conn.Close()
	if len(hw) != 6 {
		hw = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	}
	disc, err := dhcpv4.NewDiscovery(hw, dhcpv4.WithBroadcast(true))
	if err != nil {
		return netip.Addr{}, err
	}
	if _, err := conn.WriteToUDPAddrPort(disc.ToBytes(), netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), uint16(serverPort))); err != nil {
		return netip.Addr{}, fmt.Errorf("dhcp: probe on %s: %w", iface, err)
	}
	deadline := time.Now().Add(wait)
	buf := make([]byte, maxDHCPPacket)
	for {
		if ctx.Err() != nil {
			return netip.Addr{}, ctx.Err()
		}
		rd := time.Now().Add(200 * time.Millisecond)
		if deadline.Before(rd) {
			rd = deadline
		}
		_ = conn.SetReadDeadline(rd)
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if time.Now().Before(deadline) {
					continue
				}
				return netip.Addr{}, nil
			}
			return netip.Addr{}, fmt.Errorf("dhcp: probe read: %w", err)
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply || m.TransactionID != disc.TransactionID {
			continue
		}
		if sid := m.ServerIdentifier(); sid != nil {
			a, _ := netip.AddrFromSlice(sid.To4())
			return a, nil
		}
		return from.Addr().Unmap(), nil
	}
}
