// Package media anchors call media on the box: RTP port allocation, SDP
// rewriting, and a relay that bridges RTP, SDES-SRTP and DTLS-SRTP legs
// with strict source checks and per-call firewall pinholes. A few reactor
// loops (reactor.go) serve the sockets of all calls.
package media

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
)

// ErrNoPorts means every RTP/RTCP pair of the range is in use.
var ErrNoPorts = errors.New("media: no free RTP ports")

// Ports hands out even RTP ports (RTCP is the odd port above) from a fixed
// range. A port is never handed out twice before Release. Allocation walks
// the range from a random start, round robin, so a released port is reused
// as late as possible (stray packets of the old call then hit nothing).
type Ports struct {
	min   uint16 // first even port
	pairs int

	mu    sync.Mutex
	used  []bool
	next  int
	inUse int
}

// NewPorts covers the pairs inside [lo, hi] (inclusive): lo is rounded up to
// an even port and the last pair must fit below hi.
func NewPorts(lo, hi uint16) (*Ports, error) {
	if lo < 1024 {
		return nil, fmt.Errorf("media: RTP range %d-%d: must not start below 1024", lo, hi)
	}
	first := int(lo) + int(lo)%2
	pairs := (int(hi) - first + 1) / 2
	if pairs < 1 {
		return nil, fmt.Errorf("media: RTP range %d-%d holds no even/odd pair", lo, hi)
	}
	var seed [8]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("media: seed port allocator: %w", err)
	}
	r := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:]), 0))
	return &Ports{min: uint16(first), pairs: pairs, used: make([]bool, pairs), next: r.IntN(pairs)}, nil
}

// Allocate returns a free even RTP port; RTCP uses port+1.
func (p *Ports) Allocate() (uint16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inUse == p.pairs {
		return 0, ErrNoPorts
	}
	for i := 0; i < p.pairs; i++ {
		j := (p.next + i) % p.pairs
		if !p.used[j] {
			p.used[j] = true
			p.inUse++
			p.next = (j + 1) % p.pairs
			return p.min + uint16(2*j), nil
		}
	}
	return 0, ErrNoPorts // unreachable while inUse is right
}

// Release returns the pair of rtpPort. Releasing a port that is not
// allocated is a bug in the caller and is reported, not ignored.
func (p *Ports) Release(rtpPort uint16) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	j := (int(rtpPort) - int(p.min)) / 2
	if rtpPort < p.min || (rtpPort-p.min)%2 != 0 || j >= p.pairs || !p.used[j] {
		return fmt.Errorf("media: release of unallocated RTP port %d", rtpPort)
	}
	p.used[j] = false
	p.inUse--
	return nil
}

// InUse reports the number of allocated pairs.
func (p *Ports) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse
}

// Capacity reports the number of pairs in the range.
func (p *Ports) Capacity() int { return p.pairs }
