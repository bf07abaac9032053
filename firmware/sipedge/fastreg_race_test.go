//go:build race

package sipedge

// raceEnabled: the race detector makes more values escape, so allocation
// counts are not checked under it.
const raceEnabled = true
