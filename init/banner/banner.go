// Package banner renders PID 1's console status banner: what an installer
// needs standing in front of the box.
package banner

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Info is everything the banner shows.
type Info struct {
	Version   string
	Board     string
	Hostname  string
	Serial    string
	Addresses []netip.Prefix
	HTTPSPort int // 443 when zero
	// SetupCode is shown until the box is claimed.
	SetupCode string
	Claimed   bool
	// Recovery shows the setup code as the recovery code on a claimed box
	// while an admin account is locked out (edgepbxd's health says so).
	Recovery       bool
	TLSFingerprint string
	Health         string
	// Live warns that /data is a RAM disk.
	Live bool
}

// AdminURLs returns one admin URL per usable (global or private unicast,
// non-loopback) address.
func (i Info) AdminURLs() []string {
	port := ""
	if i.HTTPSPort != 0 && i.HTTPSPort != 443 {
		port = ":" + strconv.Itoa(i.HTTPSPort)
	}
	var out []string
	for _, p := range i.Addresses {
		a := p.Addr()
		if !a.IsValid() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		host := a.String()
		if a.Is6() && !a.Is4In6() {
			host = "[" + host + "]"
		}
		if port != "" {
			out = append(out, "https://"+host+port+"/")
		} else {
			out = append(out, "https://"+host+"/")
		}
	}
	return out
}

// clean keeps strings from other sources from writing terminal controls.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

// Render writes the banner.
func Render(w io.Writer, i Info) error {
	var b strings.Builder
	// One space after the colon: tests and `edgepbx run` match "admin: https://"
	// and "setup code: ".
	line := func(k, v string) { fmt.Fprintf(&b, "%s: %s\n", k, clean(v)) }
	b.WriteString("================ edgepbx ================\n")
	line("version", i.Version)
	line("board", i.Board)
	if i.Hostname != "" {
		line("hostname", i.Hostname)
	}
	if i.Serial != "" {
		line("serial", i.Serial)
	}
	if len(i.Addresses) == 0 {
		line("address", "none (no network)")
	}
	for _, a := range i.Addresses {
		if !a.Addr().IsLoopback() && !a.Addr().IsLinkLocalUnicast() {
			line("address", a.String())
		}
	}
	urls := i.AdminURLs()
	if len(urls) == 0 {
		line("admin", "unavailable until the box has an address")
	}
	for _, u := range urls {
		line("admin", u)
	}
	if i.TLSFingerprint != "" {
		line("tls sha256", i.TLSFingerprint)
	}
	if !i.Claimed && i.SetupCode != "" {
		line("setup code", i.SetupCode)
	}
	if i.Claimed {
		line("claimed", "yes")
	}
	if i.Claimed && i.Recovery && i.SetupCode != "" {
		line("recovery code", i.SetupCode+" (an account is locked out: Locked out? on the login page)")
	}
	if i.Health != "" {
		line("health", i.Health)
	}
	if i.Live {
		b.WriteString("WARNING: live mode: /data is in RAM, nothing survives a reboot\n")
	}
	b.WriteString("=========================================\n")
	_, err := io.WriteString(w, b.String())
	return err
}
