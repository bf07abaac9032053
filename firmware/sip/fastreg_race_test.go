//go:build race

package sip

// raceEnabled: the race detector makes more values escape, so allocation
// counts are not checked under it.
const raceEnabled = true
