package sipedge

import (
	"errors"
	"fmt"
	"slices"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
)

// ErrNeedsRestart refuses an Apply that changes what the running edge
// cannot change: its listen addresses (the sockets are bound once).
var ErrNeedsRestart = errors.New("sip: change needs a restart of edgepbxd")

// guardConfig is the Guard's part of the SIP configuration.
func guardConfig(g pbxconfig.Guard) GuardConfig {
	return GuardConfig{
		RateWindow: g.RateWindow, RateLimit: g.RateLimit, FloodBan: g.FloodBan,
		FailWindow: g.FailWindow, MaxFailsPerSource: g.MaxFailsPerSource,
		MaxFailsPerUser: g.MaxFailsPerUser, MaxUsersPerSource: g.MaxUsersPerSource, AuthBan: g.AuthBan,
		BanBitsV4: g.BanBitsV4, BanBitsV6: g.BanBitsV6, MaxTracked: g.MaxTracked,
	}
}

// Apply switches the running edge to next without dropping registrations,
// calls or connections. next must pass Validate, and its listen addresses
// must be those the edge was built with (ErrNeedsRestart otherwise); on any
// error nothing changes.
//
// Live, from the next packet, request or connection on:
//   - read filter: scanner User-Agents;
//   - domain policy and zone ACL: domains, allowed zones, allowlist;
//   - guard: rate and failure thresholds, windows and ban times (counts and
//     bans already made are kept);
//   - registrar: expiry bounds and contacts per extension (bindings already
//     made keep their expiry; the new bounds apply at their next refresh);
//   - TLS and WSS: minimum and maximum version for new handshakes;
//   - stream connections: caps (connections already up stay) and idle
//     timeout (from each connection's next read).
//
// Each stage switches in one atomic step; a request already inside the
// chain may meet the old settings at one stage and the new at a later one.
//
// restart names, by their JSON field names, the settings in next that
// differ from what the edge was built with and take effect only when it is
// built again (they stay as they were until then): max_message_bytes
// (receive buffers and the parser are sized at start), algorithms and
// nonce_ttl (the digest stage is built once), guard.max_tracked (table
// sizes), retransmit_cache, realm (HA1s are bound to it) and trunks.
func (s *Server) Apply(next pbxconfig.SIP) (restart []string, err error) {
	if err := next.Validate(); err != nil {
		return nil, fmt.Errorf("sip: apply: %w", err)
	}
	boot := s.cfg
	for _, l := range []struct{ name, was, now string }{
		{"udp", boot.UDP, next.UDP}, {"tcp", boot.TCP, next.TCP}, {"tls", boot.TLS, next.TLS}, {"wss", boot.WSS, next.WSS},
	} {
		if l.was != l.now {
			return nil, fmt.Errorf("%w: %s listen address %q → %q", ErrNeedsRestart, l.name, l.was, l.now)
		}
	}
	lo, err := pbxconfig.TLSVersion(next.TLSMin)
	if err != nil {
		return nil, fmt.Errorf("sip: apply: %w", err)
	}
	hi, err := pbxconfig.TLSVersion(next.TLSMax)
	if err != nil {
		return nil, fmt.Errorf("sip: apply: %w", err)
	}
	restart = pbxconfig.SIPRestartFields(boot, next)
	next = cloneSIP(next)

	// Everything is checked and built; from here nothing can fail.
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if s.tlsBase != nil {
		t := s.tlsBase.Clone()
		t.MinVersion, t.MaxVersion = lo, hi
		s.tlsLive.Store(t)
	}
	s.limiter.set(next.MaxConns, next.MaxConnsPerSource, next.IdleTimeout)
	s.location.SetLimits(RegLimits{MinExpires: next.MinExpires, MaxExpires: next.MaxExpires, MaxContacts: next.MaxContacts})
	s.guard.setConfig(guardConfig(next.Guard))
	// Trunks need a restart (registrations and call routing run from the
	// start configuration), so their peers stay those of the start.
	s.policy.set(next.Domains, next.AllowedZones, next.Allowlist, boot.Trunks)
	s.filter.setScanners(next.ScannerUserAgents)
	s.live.Store(&next)
	s.logger.Info("sip: settings applied", "restart_pending", restart)
	return restart, nil
}

// Settings returns the configuration the edge last applied (its start
// configuration before any Apply). Fields Apply reports as needing a
// restart show what was asked for, not what runs.
func (s *Server) Settings() pbxconfig.SIP { return cloneSIP(*s.live.Load()) }

// cloneSIP copies c's lists so the caller's later changes cannot reach a
// running stage.
func cloneSIP(c pbxconfig.SIP) pbxconfig.SIP {
	c.Domains = slices.Clone(c.Domains)
	c.AllowedZones = slices.Clone(c.AllowedZones)
	c.Allowlist = slices.Clone(c.Allowlist)
	c.ScannerUserAgents = slices.Clone(c.ScannerUserAgents)
	c.Algorithms = slices.Clone(c.Algorithms)
	c.Trunks = slices.Clone(c.Trunks)
	return c
}

// SetTrunkPeers sets the IP-authenticated trunks of the stored telephony
// configuration: a request from one of their networks is identified as that
// trunk from the next packet on. The trunks of the edge settings stay.
func (s *Server) SetTrunkPeers(trunks []pbxconfig.Trunk) {
	s.policy.setLive(trunks)
}
