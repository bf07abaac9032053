package jitter

// Concealer fills lost frames in decoded PCM: the first lost frame after
// good audio repeats the last good frame at half level (a gap in speech is
// more audible than a short repeat), later ones are silence. One per leg.
type Concealer struct {
	last   []int16
	losses int
}

// Good records a frame that was decoded from a real packet.
func (c *Concealer) Good(pcm []int16) {
	c.last = append(c.last[:0], pcm...)
	c.losses = 0
}

// Lost appends n samples of concealment to dst.
func (c *Concealer) Lost(dst []int16, n int) []int16 {
	c.losses++
	if c.losses == 1 && len(c.last) > 0 {
		for i := range n {
			dst = append(dst, c.last[i%len(c.last)]/2)
		}
		return dst
	}
	for range n {
		dst = append(dst, 0)
	}
	return dst
}
