//go:build !race

package sipedge

const raceEnabled = false
