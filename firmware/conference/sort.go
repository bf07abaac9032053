package conference

import (
	"net/netip"
	"slices"
	"strconv"
)

type netipAddr = netip.Addr

// sortParticipants orders by join order (ids are increasing numbers).
func sortParticipants(ps []Participant) {
	slices.SortFunc(ps, func(a, b Participant) int {
		x, _ := strconv.ParseUint(a.ID, 10, 64)
		y, _ := strconv.ParseUint(b.ID, 10, 64)
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
}
