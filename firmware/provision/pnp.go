package provision

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// SIP plug and play: a factory-fresh phone multicasts
// SUBSCRIBE sip:<mac>@224.0.1.75 with "Event: ua-profile" and takes the URL
// in the NOTIFY that answers it as its provisioning server. The answer is
// the plain-HTTP bootstrap URL (never a secret, the same one DHCP option 66
// names), sent only to a phone the box already knows (pending or approved)
// and only to a source inside the phones' zone; every other SUBSCRIBE gets
// silence. Both messages go to the packet's source address and port, never
// to an address the packet names (Via, Contact), so the box cannot be made
// to reflect traffic at a third host.

// PnPGroup is the SIP multicast group (RFC 3261 §10.3 "sip.mcast.net").
var PnPGroup = netip.AddrFrom4([4]byte{224, 0, 1, 75})

// Bounds of the PnP responder.
const (
	maxPnPPacket   = 4096
	maxPnPHeaders  = 48
	maxPnPSources  = 4096
	pnpPerSource   = 1.0 // SUBSCRIBEs per second per source
	pnpBurst       = 5
	pnpGlobalRate  = 100.0
	pnpGlobalBurst = 200
)

// PnPConfig says where the responder listens.
type PnPConfig struct {
	// Interfaces join the group; empty: every up, multicast-capable,
	// non-loopback interface.
	Interfaces []string
	// Port is 5060; tests use another.
	Port int
	// Zone returns the phones' zone (the firewall's "lan" prefixes); only
	// sources inside it are answered.
	Zone func() []netip.Prefix
}

// PnPStats are the responders' counters (Phones page, metrics): the
// multicast listener and the SIP edge's unicast path share them.
type PnPStats struct {
	Listening   bool     `json:"listening"` // the multicast group is joined
	Unicast     bool     `json:"unicast"`   // the SIP edge hands unicast SUBSCRIBEs over
	Interfaces  []string `json:"interfaces,omitempty"`
	Answered    uint64   `json:"answered"`
	Unknown     uint64   `json:"unknown"`      // MAC not known: silence, listed as asking
	OutsideZone uint64   `json:"outside_zone"` // source not in the phones' zone: silence
	Bad         uint64   `json:"bad"`          // not a well-formed ua-profile SUBSCRIBE
	Limited     uint64   `json:"limited"`      // over a rate limit
}

// PnP is the SIP plug-and-play responder.
type PnP struct {
	svc    *Service
	conn   *net.UDPConn
	pkt    *ipv4.PacketConn
	reply  *net.UDPConn // unicast: answers leave from the box's address
	cfg    PnPConfig
	ifaces []string
	local  map[int]netip.Addr // interface index -> its IPv4 address (Via, Contact)
}

// pnpGate is what both PnP paths (multicast here, unicast through the SIP
// edge) share: the rate limits and the counters, so a phone or a prober
// gets one budget whichever way it asks. The Service owns one.
type pnpGate struct {
	mu      sync.Mutex
	sources map[netip.Addr]*bucket
	global  bucket
	unicast atomic.Bool // UnicastPnP was handed out

	answered, unknown, outside, bad, limited atomic.Uint64
}

// bucket is a token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time, rate float64, burst int) bool {
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else {
		b.tokens = min(float64(burst), b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// ListenPnP binds the group address and joins it on the interfaces. The
// socket is bound to the group address itself with SO_REUSEPORT, so it can
// sit beside the SIP edge's wildcard :5060 sockets (they are an
// SO_REUSEPORT group of the same user; checked: a socket without
// SO_REUSEPORT there makes this bind fail with EADDRINUSE). Those sockets
// keep IP_MULTICAST_ALL on, so they see the group's datagrams too; the
// edge must ignore them (its domain policy serves any IP host when no
// domain is set) before this is wired into edgepbxd.
func (s *Service) ListenPnP(cfg PnPConfig) (*PnP, error) {
	if cfg.Port == 0 {
		cfg.Port = 5060
	}
	if cfg.Zone == nil {
		return nil, errors.New("pnp: Zone is required")
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("pnp: socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "pnp")
	defer f.Close()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return nil, fmt.Errorf("pnp: SO_REUSEPORT: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0); err != nil {
		return nil, fmt.Errorf("pnp: IP_MULTICAST_ALL: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: cfg.Port, Addr: PnPGroup.As4()}); err != nil {
		return nil, fmt.Errorf("pnp: bind %s:%d: %w", PnPGroup, cfg.Port, err)
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("pnp: %w", err)
	}
	conn := pc.(*net.UDPConn)
	reply, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("pnp: reply socket: %w", err)
	}
	p := &PnP{svc: s, conn: conn, reply: reply, cfg: cfg, local: map[int]netip.Addr{}}
	names := cfg.Interfaces
	if len(names) == 0 {
		ifs, err := net.Interfaces()
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("pnp: interfaces: %w", err)
		}
		for _, ifi := range ifs {
			if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 && ifi.Flags&net.FlagLoopback == 0 {
				names = append(names, ifi.Name)
			}
		}
	}
	p.pkt = ipv4.NewPacketConn(conn)
	if err := p.pkt.SetControlMessage(ipv4.FlagInterface, true); err != nil {
		p.Close()
		return nil, fmt.Errorf("pnp: IP_PKTINFO: %w", err)
	}
	for _, n := range names {
		ifi, err := net.InterfaceByName(n)
		var self netip.Addr
		if err == nil {
			self, _, err = ifaceIPv4(ifi)
		}
		if err == nil {
			err = p.pkt.JoinGroup(ifi, &net.UDPAddr{IP: PnPGroup.AsSlice()})
		}
		if err != nil {
			s.log.Warn("pnp: cannot join the SIP multicast group", "iface", n, "err", err)
			continue
		}
		p.ifaces = append(p.ifaces, n)
		p.local[ifi.Index] = self
	}
	if len(p.ifaces) == 0 {
		p.Close()
		return nil, errors.New("pnp: joined the group on no interface")
	}
	s.mu.Lock()
	s.pnp = p
	s.mu.Unlock()
	return p, nil
}

// Serve answers until ctx ends or the socket closes.
func (p *PnP) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { p.conn.Close() })
	defer stop()
	buf := make([]byte, maxPnPPacket+1)
	for {
		n, cm, from, err := p.pkt.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("pnp: read: %w", err)
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok || cm == nil {
			continue
		}
		p.handle(buf[:n], ua.AddrPort(), cm.IfIndex)
	}
}

// Close stops the responder.
func (p *PnP) Close() error {
	p.svc.mu.Lock()
	if p.svc.pnp == p {
		p.svc.pnp = nil
	}
	p.svc.mu.Unlock()
	p.reply.Close()
	return p.conn.Close()
}

// Stats returns the counters.
func (p *PnP) Stats() PnPStats {
	st := p.svc.pnpGate.stats()
	st.Listening, st.Interfaces = true, append([]string(nil), p.ifaces...)
	return st
}

func (g *pnpGate) stats() PnPStats {
	return PnPStats{Unicast: g.unicast.Load(), Answered: g.answered.Load(), Unknown: g.unknown.Load(),
		OutsideZone: g.outside.Load(), Bad: g.bad.Load(), Limited: g.limited.Load()}
}

// PnPStats reports the responders' counters (Listening false when the
// multicast responder is off).
func (s *Service) PnPStats() PnPStats {
	s.mu.Lock()
	p := s.pnp
	s.mu.Unlock()
	if p == nil {
		return s.pnpGate.stats()
	}
	return p.Stats()
}

func inZone(zone []netip.Prefix, a netip.Addr) bool {
	for _, z := range zone {
		if z.Contains(a) {
			return true
		}
	}
	return false
}

func (g *pnpGate) allow(src netip.Addr) bool {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.global.take(now, pnpGlobalRate, pnpGlobalBurst) {
		return false
	}
	if g.sources == nil {
		g.sources = map[netip.Addr]*bucket{}
	}
	b, ok := g.sources[src]
	if !ok {
		if len(g.sources) >= maxPnPSources {
			for a, o := range g.sources {
				if now.Sub(o.last) > 10*time.Second {
					delete(g.sources, a)
				}
			}
			if len(g.sources) >= maxPnPSources {
				return false // a spread flood: the global bucket bounds the work anyway
			}
		}
		b = &bucket{}
		g.sources[src] = b
	}
	return b.take(now, pnpPerSource, pnpBurst)
}

// pnpDecide applies the rules both paths share to a SUBSCRIBE from src:
// an IPv4 source inside zone, within the rate limits, a well-formed
// ua-profile SUBSCRIBE, for a phone the box knows (pending or approved).
// ok false means silence, whatever the reason: an unknown MAC, a revoked
// one, a source outside the zone and a limited one are not told apart.
// Unknown MACs are listed as asking; refusals are logged as fetches.
func (s *Service) pnpDecide(data []byte, src netip.Addr, zone []netip.Prefix, path string) (PnPSubscribe, bool) {
	g := &s.pnpGate
	src = src.Unmap()
	if !src.Is4() || !inZone(zone, src) {
		g.outside.Add(1)
		return PnPSubscribe{}, false
	}
	if !g.allow(src) {
		g.limited.Add(1)
		return PnPSubscribe{}, false
	}
	if len(data) > maxPnPPacket {
		g.bad.Add(1)
		return PnPSubscribe{}, false
	}
	sub, err := ParsePnPSubscribe(data)
	if err != nil {
		g.bad.Add(1)
		s.log.Debug("pnp: dropped", "src", src, "path", path, "err", err)
		return PnPSubscribe{}, false
	}
	d, err := s.Get(sub.MAC)
	if err != nil || (d.State != Pending && d.State != Approved) {
		g.unknown.Add(1)
		if errors.Is(err, ErrNotFound) {
			s.noteAsking(Request{MAC: sub.MAC, Vendor: sub.Vendor, Model: sub.Model}, src.String(), "SIP PnP "+sub.UserAgent)
		}
		s.logFetch(sub.MAC, src, path, "refused", "unknown", sub.UserAgent)
		return PnPSubscribe{}, false
	}
	return sub, true
}

func (p *PnP) handle(data []byte, from netip.AddrPort, ifindex int) {
	src := from.Addr().Unmap()
	sub, ok := p.svc.pnpDecide(data, src, p.cfg.Zone(), "sip-pnp")
	if !ok {
		return
	}
	g := &p.svc.pnpGate
	local, ok := p.local[ifindex]
	if !ok {
		g.outside.Add(1) // arrived on an interface the group was not joined on
		return
	}
	if err := p.answer(sub, local, netip.AddrPortFrom(src, from.Port())); err != nil {
		p.svc.log.Warn("pnp: answer", "src", src, "err", err)
		return
	}
	g.answered.Add(1)
	p.svc.logFetch(sub.MAC, src, "sip-pnp", "pnp-url", "", sub.UserAgent)
}

// UnicastPnP answers the ua-profile SUBSCRIBEs phones send straight to
// the box's SIP port (Yealink and Snom do, besides the multicast one): the
// SIP edge hands them over (sipedge.Profiles) and sends the answer on the
// request's own flow. The rules, limits and counters are the multicast
// path's.
type UnicastPnP struct {
	svc  *Service
	zone func() []netip.Prefix
}

// UnicastPnP returns the unicast decision for the SIP edge; zone is the
// phones' zone, read at each request.
func (s *Service) UnicastPnP(zone func() []netip.Prefix) *UnicastPnP {
	s.pnpGate.unicast.Store(true)
	return &UnicastPnP{svc: s, zone: zone}
}

// ProfileURL decides on the SUBSCRIBE msg (as received) from src: the
// phone's MAC and the bootstrap URL to NOTIFY it with, or ok false for
// silence (see pnpDecide).
func (u *UnicastPnP) ProfileURL(msg []byte, src netip.Addr) (mac, url string, ok bool) {
	sub, ok := u.svc.pnpDecide(msg, src, u.zone(), "sip-pnp-unicast")
	if !ok {
		return "", "", false
	}
	u.svc.pnpGate.answered.Add(1)
	u.svc.logFetch(sub.MAC, src.Unmap(), "sip-pnp-unicast", "pnp-url", "", sub.UserAgent)
	return sub.MAC, u.svc.bootURL(), true
}

// answer sends 200 OK and the NOTIFY with the bootstrap URL to the source.
func (p *PnP) answer(sub PnPSubscribe, local netip.Addr, to netip.AddrPort) error {
	port := uint16(p.reply.LocalAddr().(*net.UDPAddr).Port)
	tag := randHex(8)
	if _, err := p.reply.WriteToUDPAddrPort(sub.OK(tag), to); err != nil {
		return err
	}
	_, err := p.reply.WriteToUDPAddrPort(sub.Notify(tag, randHex(10), netip.AddrPortFrom(local, port), to, p.svc.bootURL()), to)
	return err
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// PnPSubscribe is a parsed ua-profile SUBSCRIBE: the header values needed
// to answer it, each a single printable line.
type PnPSubscribe struct {
	MAC       string
	Vendor    Vendor
	Model     string
	UserAgent string
	Via       []string
	From, To  string
	CallID    string
	CSeq      string
	Event     string
}

// ErrPnP is the reason a PnP packet is dropped.
var ErrPnP = errors.New("pnp: not a ua-profile SUBSCRIBE")

func pnpErr(why string) error { return fmt.Errorf("%w: %s", ErrPnP, why) }

// compact header forms (RFC 3261 §7.3.3) a phone may use.
var compactHeader = map[string]string{"v": "via", "f": "from", "t": "to", "i": "call-id", "o": "event", "m": "contact", "l": "content-length"}

// ParsePnPSubscribe parses an untrusted datagram strictly: request line,
// at most maxPnPHeaders header lines of printable ASCII, no folding, the
// headers needed to answer present once (Via may repeat), Event ua-profile
// with profile-type "device", and the phone's MAC as the user part of the
// From URI or the request URI.
func ParsePnPSubscribe(data []byte) (PnPSubscribe, error) {
	var s PnPSubscribe
	if len(data) > maxPnPPacket {
		return s, pnpErr("too large")
	}
	head, _, ok := bytes.Cut(data, []byte("\r\n\r\n"))
	if !ok {
		return s, pnpErr("no end of headers")
	}
	lines := strings.Split(string(head), "\r\n")
	if len(lines) > maxPnPHeaders+1 {
		return s, pnpErr("too many headers")
	}
	rl := strings.Split(lines[0], " ")
	if len(rl) != 3 || rl[0] != "SUBSCRIBE" || rl[2] != "SIP/2.0" {
		return s, pnpErr("not a SUBSCRIBE request line")
	}
	ruriUser := uriUser(rl[1])
	seen := map[string]bool{}
	for _, ln := range lines[1:] {
		if !sipLine(ln) {
			return s, pnpErr("header not printable")
		}
		if ln[0] == ' ' || ln[0] == '\t' {
			return s, pnpErr("folded header")
		}
		name, val, ok := strings.Cut(ln, ":")
		if !ok {
			return s, pnpErr("header without colon")
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if c, ok := compactHeader[name]; ok {
			name = c
		}
		val = strings.TrimSpace(val)
		if name != "via" {
			if seen[name] && (name == "from" || name == "to" || name == "call-id" || name == "cseq" || name == "event") {
				return s, pnpErr("repeated " + name)
			}
			seen[name] = true
		}
		switch name {
		case "via":
			if len(s.Via) >= 8 {
				return s, pnpErr("too many Via")
			}
			s.Via = append(s.Via, val)
		case "from":
			s.From = val
		case "to":
			s.To = val
		case "call-id":
			s.CallID = val
		case "cseq":
			s.CSeq = val
		case "event":
			s.Event = val
		case "user-agent":
			s.UserAgent = truncate(val, 128)
		case "content-length":
			if n, err := strconv.Atoi(val); err != nil || n < 0 || n > 1024 {
				return s, pnpErr("bad Content-Length")
			}
		}
	}
	if len(s.Via) == 0 || s.From == "" || s.To == "" || s.CallID == "" || s.CSeq == "" || s.Event == "" {
		return s, pnpErr("missing header")
	}
	if num, method, ok := strings.Cut(s.CSeq, " "); !ok || strings.TrimSpace(method) != "SUBSCRIBE" || !allDigits(num) || len(num) > 10 {
		return s, pnpErr("bad CSeq")
	}
	ev, params, _ := strings.Cut(s.Event, ";")
	if !strings.EqualFold(strings.TrimSpace(ev), "ua-profile") {
		return s, pnpErr("event is not ua-profile")
	}
	pt := ""
	for _, prm := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(prm), "=")
		v = strings.Trim(v, `"`)
		switch strings.ToLower(k) {
		case "profile-type":
			pt = strings.ToLower(v)
		case "vendor":
			s.Vendor = pnpVendor(v)
		case "model":
			if validModel(v) {
				s.Model = v
			}
		}
	}
	if pt != "device" {
		return s, pnpErr("profile-type is not device")
	}
	mac := macToken(uriUser(s.From))
	if mac == "" {
		mac = macToken(ruriUser)
	}
	if m, err := NormalizeMAC(mac); err != nil {
		return s, pnpErr("no MAC in From or request URI")
	} else {
		s.MAC = m
	}
	return s, nil
}

// sipLine reports whether a header line is 1–1024 bytes of printable
// ASCII or tab: the answer echoes Via, From, To, Call-ID and CSeq, so no
// byte may end a line or start another message.
func sipLine(s string) bool {
	if s == "" || len(s) > 1024 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c > 0x7e {
			return false
		}
	}
	return true
}

func pnpVendor(v string) Vendor {
	v = strings.ToLower(v)
	for _, k := range vendorList {
		if strings.HasPrefix(v, string(k)) {
			return k
		}
	}
	if strings.HasPrefix(v, "polycom") {
		return Poly
	}
	return ""
}

// uriUser returns the user part of the first sip: URI in s.
func uriUser(s string) string {
	i := strings.Index(strings.ToLower(s), "sip:")
	if i < 0 {
		return ""
	}
	rest := s[i+4:]
	user, _, ok := strings.Cut(rest, "@")
	if !ok {
		return ""
	}
	return user
}

// OK is the 200 answering the SUBSCRIBE (Expires 0: nothing to keep).
func (s PnPSubscribe) OK(tag string) []byte {
	var b strings.Builder
	b.WriteString("SIP/2.0 200 OK\r\n")
	for _, v := range s.Via {
		b.WriteString("Via: " + v + "\r\n")
	}
	b.WriteString("From: " + s.From + "\r\nTo: " + withTag(s.To, tag) + "\r\nCall-ID: " + s.CallID + "\r\nCSeq: " + s.CSeq +
		"\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n")
	return []byte(b.String())
}

// Notify is the NOTIFY carrying the provisioning URL (application/url),
// addressed to the phone's source address, from the box's local address.
func (s PnPSubscribe) Notify(tag, branch string, local, phone netip.AddrPort, url string) []byte {
	var b strings.Builder
	b.WriteString("NOTIFY sip:" + s.MAC + "@" + phone.String() + " SIP/2.0\r\n")
	b.WriteString("Via: SIP/2.0/UDP " + local.String() + ";branch=z9hG4bK" + branch + ";rport\r\n")
	b.WriteString("Max-Forwards: 70\r\n")
	b.WriteString("From: " + withTag(s.To, tag) + "\r\nTo: " + s.From + "\r\nCall-ID: " + s.CallID + "\r\nCSeq: 1 NOTIFY\r\n")
	b.WriteString("Contact: <sip:" + local.String() + ">\r\nEvent: " + s.Event + "\r\nSubscription-State: terminated;reason=timeout\r\n")
	b.WriteString("Content-Type: application/url\r\nContent-Length: " + strconv.Itoa(len(url)) + "\r\n\r\n" + url)
	return []byte(b.String())
}

func withTag(h, tag string) string {
	if strings.Contains(strings.ToLower(h), ";tag=") {
		return h
	}
	return h + ";tag=" + tag
}
