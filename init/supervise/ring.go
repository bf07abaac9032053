package supervise

import (
	"bufio"
	"io"
	"strings"
	"sync"
)

// RingLines is how many output lines are kept per service.
const RingLines = 100

// maxLine bounds one line; longer output is split.
const maxLine = 1024

// Ring keeps the last n lines.
type Ring struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

// NewRing returns a ring of n lines.
func NewRing(n int) *Ring { return &Ring{lines: make([]string, n)} }

// Add appends a line, dropping the oldest when full.
func (r *Ring) Add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines[r.next] = line
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
}

// Lines returns the kept lines, oldest first.
func (r *Ring) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return append([]string(nil), r.lines[:r.next]...)
	}
	out := make([]string, 0, len(r.lines))
	out = append(out, r.lines[r.next:]...)
	return append(out, r.lines[:r.next]...)
}

// sanitize keeps a service from sending terminal control sequences to the console.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' || (r >= 0x20 && r != 0x7f && !(r >= 0x80 && r < 0xa0)) {
			return r
		}
		return '?'
	}, s)
}

func copyLines(r io.Reader, ring *Ring, console io.Writer, name string) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			s := sanitize(strings.TrimRight(string(line), "\r\n"))
			ring.Add(s)
			io.WriteString(console, name+": "+s+"\n")
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}
