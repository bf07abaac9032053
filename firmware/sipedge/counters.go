package sipedge

// Counters is a snapshot of every stage's counters, in chain order, for
// metrics and the admin UI. Names are stable.
func (s *Server) Counters() map[string]uint64 {
	f, v, p, g, c := &s.filter.Counters, &s.validator.Counters, &s.policy.Counters, &s.guard.Counters, &s.conns
	return map[string]uint64{
		"filter_passed":           f.Passed.Load(),
		"filter_banned":           f.Banned.Load(),
		"filter_limited":          f.Limited.Load(),
		"filter_scanner":          f.Scanner.Load(),
		"filter_oversize":         f.Oversize.Load(),
		"filter_malformed":        f.Malformed.Load(),
		"validate_passed":         v.Passed.Load(),
		"validate_rejected":       v.Rejected.Load(),
		"policy_foreign":          p.ForeignDomain.Load(),
		"policy_outside_zone":     p.OutsideZone.Load(),
		"auth_ok":                 s.auth.Counters.OK.Load(),
		"auth_challenged":         s.auth.Counters.Challenged.Load(),
		"auth_failed":             s.auth.Counters.Failed.Load(),
		"auth_replayed":           s.auth.Counters.Replayed.Load(),
		"auth_forged":             s.auth.Counters.Forged.Load(),
		"auth_invalid":            s.auth.Counters.Invalid.Load(),
		"auth_stale":              s.auth.Counters.Stale.Load(),
		"auth_nonce_evicted":      s.auth.Nonces.Evicted.Load(),
		"auth_nonce_quota":        s.auth.Nonces.OwnerEvicted.Load(),
		"auth_nonce_forgotten":    s.auth.Nonces.Forgotten.Load(),
		"guard_flood_bans":        g.FloodBans.Load(),
		"guard_auth_bans":         g.AuthBans.Load(),
		"guard_scan_bans":         g.ScanBans.Load(),
		"guard_throttles":         g.Throttles.Load(),
		"guard_throttled":         g.ThrottledRequests.Load(),
		"guard_throttle_full":     g.ThrottleFull.Load(),
		"guard_ban_queue_full":    g.BanQueueFull.Load(),
		"guard_exempt":            g.Exempt.Load(),
		"guard_flood_limited":     g.FloodLimited.Load(),
		"guard_flood_dropped":     g.FloodDropped.Load(),
		"guard_flood_flow_passed": g.FloodFlowPassed.Load(),
		"conn_accepted":           c.Accepted.Load(),
		"conn_over_total":         c.OverTotal.Load(),
		"conn_over_source":        c.OverSource.Load(),
		"conn_banned":             c.Banned.Load(),
		"retrans_hits":            s.retrans.Counters.Hits.Load(),
		"retrans_stored":          s.retrans.Counters.Stored.Load(),
		"retrans_evicted":         s.retrans.Counters.Evicted.Load(),
		"stateful_requests":       s.stateful.Load(),
		"udp_slow_path":           s.udpCounter(func(c *UDPCounters) uint64 { return c.SlowPath.Load() }),
		"udp_slow_dropped":        s.udpCounter(func(c *UDPCounters) uint64 { return c.SlowDropped.Load() }),
		"udp_work_dropped":        s.udpCounter(func(c *UDPCounters) uint64 { return c.WorkDropped.Load() }),
		"udp_read_errors":         s.udpCounter(func(c *UDPCounters) uint64 { return c.ReadErrors.Load() }),
	}
}

func (s *Server) udpCounter(get func(*UDPCounters) uint64) uint64 {
	if s.front == nil {
		return 0
	}
	return get(&s.front.Counters)
}
