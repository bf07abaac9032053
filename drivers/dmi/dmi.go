// Package dmi reads what the board says about itself: its serial number
// (DMI product_serial on x86, the device tree's serial-number on arm64),
// the hardware identity for the licence fingerprint (DMI model names, NIC
// MACs), and the CPU and memory figures from /proc the check-in reports.
package dmi

import (
	"os"
	"path/filepath"
	"strings"
)

// Paths relative to the root of /sys and /proc.
const (
	dmiSerial = "sys/class/dmi/id/product_serial"
	dtSerial  = "proc/device-tree/serial-number"
	maxSerial = 32
)

// placeholders are what vendors leave in unprogrammed firmware tables.
var placeholders = []string{
	"to be filled by o.e.m.", "to be filled by oem", "default string", "system serial number",
	"not specified", "not applicable", "none", "n/a", "na", "unknown", "0123456789", "123456789",
	"serial", "chassis serial number", "invalid", "empty", "oem",
}

// Serial returns the board serial under root ("/" on the box) if one is
// present and sane, else "".
func Serial(root string) string {
	for _, p := range []string{dmiSerial, dtSerial} {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			continue
		}
		if s := strings.TrimSpace(strings.TrimRight(string(b), "\x00")); Sane(s) {
			return s
		}
	}
	return ""
}

// Sane reports whether s looks like a real serial number: 4 to 32 letters,
// digits or '-', not a vendor placeholder and not one repeated character.
func Sane(s string) bool {
	if len(s) < 4 || len(s) > maxSerial {
		return false
	}
	for _, r := range s {
		ok := r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-'
		if !ok {
			return false
		}
	}
	if strings.Count(s, s[:1]) == len(s) {
		return false
	}
	l := strings.ToLower(s)
	for _, p := range placeholders {
		if l == p {
			return false
		}
	}
	return true
}
