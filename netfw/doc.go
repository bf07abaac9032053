// Package netfw owns `table inet edgepbx`: it compiles a Policy (zones,
// services, rules) into one ruleset, applies it atomically in a single
// netlink batch and verifies it by reading it back, and keeps the live
// sets — per-call RTP pinholes, bans (persisted), per-source limit meters —
// updated element by element. No other table is ever touched.
//
// PID 1 calls New then Apply(DefaultPolicy()) before any interface is up;
// its control socket (init/control) dispatches OpenPinhole, ClosePinhole,
// Ban, Unban, ListBans and Counters to a *Firewall, and GetPolicy,
// SetPolicy and ConfirmPolicy to a *Committer: the admin edits the zones
// and rules (an Access; services, RTP range and limits stay PID 1's), a
// change is applied at once but stays pending until the admin confirms it
// over a connection opened under the new ruleset, else it reverts after
// DefaultRevertAfter. Only confirmed policies reach /data/netfw/policy.json
// (version 1: {"version":1,"access":{...}}, written atomically); at boot
// PID 1 applies DefaultPolicy, then Committer.Restore once /data is there.
//
// Input chain order (why): loopback; bans (before conntrack, so a ban cuts
// established flows); invalid; RTP pinholes, then every other RTP packet
// dropped (before conntrack, so closing a pinhole stops a flowing call);
// per-source limits (allowlist exempt); established/related; DHCP client
// replies; ICMP essentials; service rules by zone; counted drop. Nothing
// is rejected: dropped traffic gets no RST and no ICMP.
//
// Kernel modules the ruleset needs (no auto-loading in the image):
// nf_tables, nf_conntrack (+ nf_defrag_ipv4, nf_defrag_ipv6, libcrc32c
// after crc32c_generic), nft_ct, nft_limit, nft_connlimit, nf_conncount.
package netfw
