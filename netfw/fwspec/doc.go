// Package fwspec holds what the firewall is asked to hold, apart from the
// controller that applies it (netfw): pinholes, bans, the admin-editable
// zones and rules, counters, and the floors every request must meet.
//
// It is the control API's vocabulary, shared by PID 1 (init/control,
// netfw) and the unprivileged edgepbxd, so that edgepbxd never links
// nftables or netlink (the Talos split of resource specs and controllers).
// It imports nothing but the standard library and must stay that way;
// cmd/edgepbxd's TestNoFirewallLinked checks the result.
package fwspec
