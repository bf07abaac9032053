package fwspec

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Pinhole lets RTP/RTCP from one remote address reach one local media port.
// The media service opens one per call leg from the SDP and closes it at call end.
type Pinhole struct {
	Remote    netip.Addr    `json:"remote"`
	LocalPort uint16        `json:"local_port"`
	Timeout   time.Duration `json:"timeout"` // 0 means the firewall's default
}

// Ban cuts a source address or prefix off entirely until it expires.
type Ban struct {
	Prefix  netip.Prefix  `json:"prefix"`
	Timeout time.Duration `json:"timeout"`           // 0 means the firewall's default
	Reason  string        `json:"reason"`            // e.g. "sip-bruteforce"
	Expires time.Time     `json:"expires,omitempty"` // filled in by the firewall
}

// RuleCounter is the packet/byte counter of one named rule.
type RuleCounter struct {
	Name    string `json:"name"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// SetCounter reports how many elements a live set holds.
type SetCounter struct {
	Name     string `json:"name"`
	Elements int    `json:"elements"`
}

// Counters is a snapshot for metrics and the admin UI's firewall page.
type Counters struct {
	Rules []RuleCounter `json:"rules"`
	Sets  []SetCounter  `json:"sets"`
}

// Proto is a transport protocol a service listens on.
type Proto string

// Protocols a service may use.
const (
	UDP Proto = "udp"
	TCP Proto = "tcp"
)

// PortRange is an inclusive range of ports; a single port has First == Last.
type PortRange struct {
	First uint16 `json:"first"`
	Last  uint16 `json:"last"`
}

// Port is a PortRange of one port.
func Port(p uint16) PortRange { return PortRange{First: p, Last: p} }

// Contains reports whether p lies inside the range.
func (r PortRange) Contains(p uint16) bool { return p >= r.First && p <= r.Last }

// Overlaps reports whether the two ranges share a port.
func (r PortRange) Overlaps(o PortRange) bool { return r.First <= o.Last && o.First <= r.Last }

func (r PortRange) String() string {
	if r.First == r.Last {
		return fmt.Sprint(r.First)
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// DefaultRTP is the media port range the default policy opens only
// through pinholes.
func DefaultRTP() PortRange { return PortRange{First: 10000, Last: 20000} }

// Zone is a named list of networks (IPv4 and IPv6).
type Zone struct {
	Name     string         `json:"name"`
	Prefixes []netip.Prefix `json:"prefixes"`
}

func (z Zone) String() string {
	s := make([]string, len(z.Prefixes))
	for i, p := range z.Prefixes {
		s[i] = p.String()
	}
	return z.Name + "{" + strings.Join(s, ",") + "}"
}

// Service is something the appliance listens on.
type Service struct {
	Name  string    `json:"name"`
	Proto Proto     `json:"proto"`
	Ports PortRange `json:"ports"`
	// Admin marks management-plane services: they may not be open to the
	// zone "any" without AllowAdminFromAny, and at least one of them
	// must stay reachable so a policy cannot lock the admin out.
	Admin bool `json:"admin,omitempty"`
}

// Rule opens one service to some zones.
type Rule struct {
	Service string   `json:"service"`
	Zones   []string `json:"zones"`
}

// ZoneAny is the predefined zone matching every address.
const ZoneAny = "any"

// Well-known service names of the standard catalogue.
const (
	SvcSIPUDP       = "sip-udp"
	SvcSIPTCP       = "sip-tcp"
	SvcSIPTLS       = "sip-tls"
	SvcSIPWSS       = "sip-wss"
	SvcHTTPS        = "https-admin"
	SvcProvisioning = "provisioning"
	// SvcProvisioningHTTP is the phones' plain-HTTP bootstrap (the box's CA
	// and the HTTPS address; never a secret).
	SvcProvisioningHTTP = "prov-http"
	SvcSSH              = "ssh"
	SvcMonitoring       = "monitoring"
)

// Access is the part of the firewall policy an admin edits: the zones and
// which service is open to which zones. The service catalogue, the RTP
// range and the DoS limits stay PID 1's: a compromised edgepbxd may ask
// for a different zone layout, never for new ports.
type Access struct {
	Zones             []Zone   `json:"zones"`
	Rules             []Rule   `json:"rules"`
	Allowlist         []string `json:"allowlist"`
	AllowAdminFromAny bool     `json:"allow_admin_from_any"`
}

// Pending describes a policy change waiting for its confirmation.
type Pending struct {
	ID       string    `json:"id"` // must be echoed by Confirm
	Access   Access    `json:"access"`
	Deadline time.Time `json:"deadline"` // reverted at this time unless confirmed
	// Remaining is Deadline less PID 1's clock when reported, so a
	// reader need not share that clock.
	Remaining time.Duration `json:"remaining"`
}

// PolicyState is what GetPolicy reports: the confirmed policy, the change
// in flight if any, and the service catalogue rules may name.
type PolicyState struct {
	Confirmed Access    `json:"confirmed"`
	Pending   *Pending  `json:"pending,omitempty"`
	Services  []Service `json:"services"`
	// RevertAfter is how long a change waits for confirmation.
	RevertAfter time.Duration `json:"revert_after"`
}

// ValidPendingID reports whether s looks like an id a policy change is
// given (32 hex digits).
func ValidPendingID(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// DHCPServer asks PID 1 to admit DHCPv4 requests (UDP 68→67, sent from
// 0.0.0.0 so in no zone) on one interface while edgepbxd's phones DHCP
// server runs there (Open), or to stop (!Open). PID 1 admits only an
// existing interface whose IPv4 subnets all lie inside a zone the
// provisioning service is open to.
type DHCPServer struct {
	Interface string `json:"interface"`
	Open      bool   `json:"open"`
}

// MaxIfName is the longest Linux interface name (IFNAMSIZ less the NUL).
const MaxIfName = 15

// Validate checks the interface name's shape (not that it exists).
func (d DHCPServer) Validate() error {
	if d.Interface == "" || len(d.Interface) > MaxIfName {
		return &FieldError{Field: "interface", Reason: fmt.Sprintf("must be 1..%d characters", MaxIfName)}
	}
	for _, c := range d.Interface {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return &FieldError{Field: "interface", Reason: "letters, digits, '.', '-' and '_' only"}
		}
	}
	if d.Interface == "lo" {
		return &FieldError{Field: "interface", Reason: "not the loopback"}
	}
	return nil
}
