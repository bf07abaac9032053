// Package config holds the appliance's typed settings with secure defaults and
// validation. A value that fails Validate is never applied. The telephony
// configuration (dial plan, trunks) is stored versioned in bucket
// config.telephony (TelephonyStore).
package pbxconfig

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// SIP configures the SIP edge (firmware/sipedge).
type SIP struct {
	// Listen addresses; "" disables a transport.
	UDP string `json:"udp"`
	TCP string `json:"tcp"`
	TLS string `json:"tls"`
	WSS string `json:"wss"`

	// TLS versions as "1.2" or "1.3"; the suites are Go's modern AEAD set.
	TLSMin string `json:"tls_min"`
	TLSMax string `json:"tls_max"`

	// Domains the box serves (host names or IP literals). Requests for other
	// domains are ignored unless they come from a trunk or the allowlist.
	Domains []string `json:"domains"`
	// Realm for digest authentication; HA1s are bound to it.
	Realm string `json:"realm"`

	// Zones allowed to speak SIP at all (ACL). Trunk peers are always allowed.
	AllowedZones []netip.Prefix `json:"allowed_zones"`
	// Allowlist is never banned and bypasses the domain policy.
	Allowlist []netip.Prefix `json:"allowlist"`

	MaxMessageBytes   int           `json:"max_message_bytes"`
	MaxConns          int           `json:"max_conns"`
	MaxConnsPerSource int           `json:"max_conns_per_source"`
	IdleTimeout       time.Duration `json:"idle_timeout"`

	// ScannerUserAgents are case-insensitive substrings of User-Agent values
	// whose packets are dropped without an answer.
	ScannerUserAgents []string `json:"scanner_user_agents"`

	// Digest algorithms offered, preferred first ("SHA-256", "MD5").
	Algorithms []string      `json:"algorithms"`
	NonceTTL   time.Duration `json:"nonce_ttl"`

	// RetransmitCache is how many answers to UDP REGISTERs are kept (32 s
	// each) so a retransmission gets the first answer again.
	RetransmitCache int `json:"retransmit_cache"`

	MinExpires  time.Duration `json:"min_expires"`
	MaxExpires  time.Duration `json:"max_expires"`
	MaxContacts int           `json:"max_contacts"`

	Guard Guard `json:"guard"`

	Trunks []Trunk `json:"trunks"`
}

// Guard sizes flood and brute-force detection (sliding windows).
type Guard struct {
	// Requests per source address per RateWindow before the source is banned
	// for FloodBan. Sized for an office of ~100 phones behind one NAT address
	// re-registering at once (two requests each with digest auth).
	RateWindow time.Duration `json:"rate_window"`
	RateLimit  int           `json:"rate_limit"`
	FloodBan   time.Duration `json:"flood_ban"`

	// Failed authentications within FailWindow. Only failures on a nonce
	// the box issued to that source count. A source failing
	// MaxFailsPerSource times for one extension is throttled for that
	// extension (not banned) for AuthBan; past MaxFailsPerUser failures of
	// one extension every failing source is throttled for it at once; a
	// source failing for MaxUsersPerSource extensions is a scan and is
	// banned for AuthBan (0: 5).
	FailWindow        time.Duration `json:"fail_window"`
	MaxFailsPerSource int           `json:"max_fails_per_source"`
	MaxFailsPerUser   int           `json:"max_fails_per_user"`
	MaxUsersPerSource int           `json:"max_users_per_source"`
	AuthBan           time.Duration `json:"auth_ban"`

	// BanBitsV4 and BanBitsV6 are how wide a ban inside the SIP zones is:
	// 0 bans the host (/32, /128), the default; an admin may ask for a
	// range (16..31, 48..127: PID 1's floors). Outside the zones IPv6 sources are counted
	// and banned per /64.
	BanBitsV4 int `json:"ban_bits_v4,omitempty"`
	BanBitsV6 int `json:"ban_bits_v6,omitempty"`

	// MaxTracked bounds the memory of the detectors (keys per table).
	MaxTracked int `json:"max_tracked"`
}

// Trunk is an ITSP. Peers authenticate it by source address; Register, when
// set, makes the box register to the ITSP with digest.
type Trunk struct {
	Name     string             `json:"name"`
	Peers    []netip.Prefix     `json:"peers"`
	Register *TrunkRegistration `json:"register,omitempty"`
}

// TrunkRegistration is an outbound REGISTER to an ITSP. The password lives
// sealed in the store (firmware/sipedge), never here.
type TrunkRegistration struct {
	Registrar string        `json:"registrar"` // host:port
	Transport string        `json:"transport"` // udp, tcp, tls
	Username  string        `json:"username"`
	Domain    string        `json:"domain"`
	Expires   time.Duration `json:"expires"`
}

// DefaultScannerUserAgents covers the common SIP scanners and crackers.
var defaultScannerUserAgents = []string{
	"friendly-scanner", "sipvicious", "sipcli", "vaxsipuseragent", "pplsip",
	"sip call", "sipsak", "sundayddr", "iwar", "sivus", "sip-scan", "smap",
	"voipbuster", "cpxcrawler", "nmap",
}

// DefaultSIP returns the secure defaults.
func DefaultSIP() SIP {
	return SIP{
		UDP:    ":5060",
		TCP:    ":5060",
		TLS:    ":5061",
		TLSMin: "1.2",
		TLSMax: "1.3",
		Realm:  "edgepbx",
		AllowedZones: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"),
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"),
			netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("fc00::/7"),
		},
		MaxMessageBytes:   8192,
		MaxConns:          2048,
		MaxConnsPerSource: 64,
		IdleTimeout:       2 * time.Minute,
		ScannerUserAgents: append([]string(nil), defaultScannerUserAgents...),
		Algorithms:        []string{"SHA-256", "MD5"},
		NonceTTL:          5 * time.Minute,
		RetransmitCache:   4096,
		MinExpires:        60 * time.Second,
		MaxExpires:        time.Hour,
		MaxContacts:       5,
		Guard: Guard{
			RateWindow:        10 * time.Second,
			RateLimit:         1000,
			FloodBan:          time.Hour,
			FailWindow:        time.Hour,
			MaxFailsPerSource: 3,
			MaxFailsPerUser:   10,
			MaxUsersPerSource: 5,
			AuthBan:           time.Hour,
			MaxTracked:        65536,
		},
	}
}

// TLSVersion maps "1.2"/"1.3" to crypto/tls constants.
func TLSVersion(s string) (uint16, error) {
	switch s {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("tls version %q: want 1.2 or 1.3", s)
}

// Validate reports the first problem with c; nil means c can be applied.
func (c SIP) Validate() error {
	if c.UDP == "" && c.TCP == "" && c.TLS == "" && c.WSS == "" {
		return errors.New("sip: no transport enabled")
	}
	lo, err := TLSVersion(c.TLSMin)
	if err != nil {
		return fmt.Errorf("sip: tls_min: %w", err)
	}
	hi, err := TLSVersion(c.TLSMax)
	if err != nil {
		return fmt.Errorf("sip: tls_max: %w", err)
	}
	if hi < lo {
		return errors.New("sip: tls_max below tls_min")
	}
	if c.Realm == "" || len(c.Realm) > 128 || strings.ContainsAny(c.Realm, "\"\\\r\n") {
		return fmt.Errorf("sip: realm %q: 1-128 characters, no quotes or line breaks", c.Realm)
	}
	for _, d := range c.Domains {
		if d == "" || len(d) > 253 || strings.ContainsAny(d, " \t\r\n:;@<>\"") {
			return fmt.Errorf("sip: domain %q invalid", d)
		}
	}
	if c.MaxMessageBytes < 1024 || c.MaxMessageBytes > 65535 {
		return fmt.Errorf("sip: max_message_bytes %d: want 1024..65535", c.MaxMessageBytes)
	}
	if c.MaxConns < 1 || c.MaxConnsPerSource < 1 || c.MaxConnsPerSource > c.MaxConns {
		return errors.New("sip: connection caps must be positive and per-source ≤ total")
	}
	if c.IdleTimeout < time.Second {
		return errors.New("sip: idle_timeout below 1s")
	}
	if len(c.Algorithms) == 0 {
		return errors.New("sip: no digest algorithm")
	}
	for _, a := range c.Algorithms {
		if a != "SHA-256" && a != "MD5" {
			return fmt.Errorf("sip: digest algorithm %q: want SHA-256 or MD5", a)
		}
	}
	if c.NonceTTL < 10*time.Second || c.NonceTTL > time.Hour {
		return errors.New("sip: nonce_ttl: want 10s..1h")
	}
	if c.MinExpires < time.Second || c.MaxExpires < c.MinExpires {
		return errors.New("sip: expiry bounds: want 1s ≤ min ≤ max")
	}
	if c.RetransmitCache < 1 || c.RetransmitCache > 1<<20 {
		return errors.New("sip: retransmit_cache: want 1..1048576")
	}
	if c.MaxContacts < 1 || c.MaxContacts > 100 {
		return errors.New("sip: max_contacts: want 1..100")
	}
	g := c.Guard
	if g.RateWindow <= 0 || g.RateLimit < 1 || g.FailWindow <= 0 || g.MaxFailsPerSource < 1 ||
		g.MaxFailsPerUser < 1 || g.FloodBan <= 0 || g.AuthBan <= 0 || g.MaxTracked < 16 {
		return errors.New("sip: guard: windows, limits and ban times must be positive")
	}
	if g.MaxUsersPerSource < 0 || g.MaxUsersPerSource == 1 || g.MaxUsersPerSource > 1000 {
		return errors.New("sip: guard.max_users_per_source: want 2..1000 (0: default 5)")
	}
	// PID 1 refuses bans wider than /16 and /48 (init/control).
	if g.BanBitsV4 != 0 && (g.BanBitsV4 < 16 || g.BanBitsV4 > 32) {
		return errors.New("sip: guard.ban_bits_v4: want 0 (the host) or 16..32")
	}
	if g.BanBitsV6 != 0 && (g.BanBitsV6 < 48 || g.BanBitsV6 > 128) {
		return errors.New("sip: guard.ban_bits_v6: want 0 (the host) or 48..128")
	}
	names := map[string]bool{}
	for _, t := range c.Trunks {
		if t.Name == "" || names[t.Name] {
			return fmt.Errorf("sip: trunk name %q empty or duplicate", t.Name)
		}
		names[t.Name] = true
		if len(t.Peers) == 0 && t.Register == nil {
			return fmt.Errorf("sip: trunk %s: needs peers or a registration", t.Name)
		}
		for _, p := range t.Peers {
			if !p.IsValid() {
				return fmt.Errorf("sip: trunk %s: invalid peer prefix", t.Name)
			}
		}
		if r := t.Register; r != nil {
			if r.Registrar == "" || r.Username == "" || r.Domain == "" {
				return fmt.Errorf("sip: trunk %s: registration needs registrar, username, domain", t.Name)
			}
			switch r.Transport {
			case "udp", "tcp", "tls":
			default:
				return fmt.Errorf("sip: trunk %s: transport %q", t.Name, r.Transport)
			}
			if r.Expires < time.Minute {
				return fmt.Errorf("sip: trunk %s: expires below 60s", t.Name)
			}
		}
	}
	return nil
}
