//go:build !testhook

package main

import (
	"time"

	"github.com/edgepbx/edgepbx/init/netconf"
)

// netRevertAfter is the network confirmation window: always 120 s in
// production builds.
func netRevertAfter(*box) time.Duration { return netconf.DefaultRevertAfter }

// startTestHook does nothing in production builds: there is no console
// command path at all (see testhook.go, built only with -tags testhook).
func startTestHook(*box) {}
