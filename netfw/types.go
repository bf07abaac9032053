package netfw

import (
	"net/netip"
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
