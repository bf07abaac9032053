//go:build !amd64

package qemu

// hostTSCkHz is unknown on non-x86 hosts: the guest calibrates by itself.
func hostTSCkHz() int { return 0 }
