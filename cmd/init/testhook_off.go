//go:build !testhook

package main

// startTestHook does nothing in production builds: there is no console
// command path at all (see testhook.go, built only with -tags testhook).
func startTestHook(*box) {}
