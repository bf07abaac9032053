package netfw

import "github.com/edgepbx/edgepbx/netfw/fwspec"

// The request and report types live in fwspec, a leaf package edgepbxd
// imports without linking nftables; these aliases keep netfw's API whole.
type (
	Pinhole     = fwspec.Pinhole
	Ban         = fwspec.Ban
	RuleCounter = fwspec.RuleCounter
	SetCounter  = fwspec.SetCounter
	Counters    = fwspec.Counters
	Proto       = fwspec.Proto
	PortRange   = fwspec.PortRange
	Zone        = fwspec.Zone
	Service     = fwspec.Service
	Rule        = fwspec.Rule
	Access      = fwspec.Access
	Pending     = fwspec.Pending
	PolicyState = fwspec.PolicyState
)

// Protocols a service may use.
const (
	UDP = fwspec.UDP
	TCP = fwspec.TCP
)

// ZoneAny is the predefined zone matching every address.
const ZoneAny = fwspec.ZoneAny

// Well-known service names of the standard catalogue.
const (
	SvcSIPUDP           = fwspec.SvcSIPUDP
	SvcSIPTCP           = fwspec.SvcSIPTCP
	SvcSIPTLS           = fwspec.SvcSIPTLS
	SvcSIPWSS           = fwspec.SvcSIPWSS
	SvcHTTPS            = fwspec.SvcHTTPS
	SvcProvisioning     = fwspec.SvcProvisioning
	SvcProvisioningHTTP = fwspec.SvcProvisioningHTTP
	SvcSSH              = fwspec.SvcSSH
	SvcMonitoring       = fwspec.SvcMonitoring
)

// Port is a PortRange of one port.
func Port(p uint16) PortRange { return fwspec.Port(p) }

// ValidPendingID reports whether s looks like an id Set hands out.
func ValidPendingID(s string) bool { return fwspec.ValidPendingID(s) }
